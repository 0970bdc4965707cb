"""The training ops' verifiers: shapes that do not follow from the forward op are refused with
a message naming the op and the shapes."""

import pytest
from xdsl.dialects.builtin import TensorType
from xdsl.ir import Block
from xdsl.utils.exceptions import VerifyException

from nncc.dialects import nn


def values(*shapes):
    return Block(arg_types=[nn.tensor_type(s) for s in shapes]).args


def test_conv_backward_data_checks_the_forward_output_shape():
    dy, w = values((2, 16, 4, 4), (16, 8, 3, 3))
    nn.Conv2dBackwardDataOp(dy, w, (2, 8, 8, 8), (2, 2), (1, 1, 1, 1), (1, 1), 1).verify()
    nn.Conv2dBackwardDataOp(dy, w, (2, 8, 9, 9), (2, 2), (1, 1, 0, 0), (1, 1), 1).verify()  # row 8 never read
    with pytest.raises(VerifyException, match=r"output gradient shape \[2, 16, 4, 4\] does not match .* \[2, 16, 5, 5\]"):
        nn.Conv2dBackwardDataOp(dy, w, (2, 8, 10, 10), (2, 2), (1, 1, 1, 1), (1, 1), 1).verify()


def test_conv_backward_filter_checks_groups():
    x, dy = values((2, 8, 8, 8), (2, 8, 8, 8))
    nn.Conv2dBackwardFilterOp(x, dy, (8, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8).verify()
    with pytest.raises(VerifyException, match="weight expects 16 input channels"):
        nn.Conv2dBackwardFilterOp(x, dy, (8, 2, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8).verify()


def test_sgd_needs_a_velocity_for_momentum():
    w, g = values((4, 3), (4, 3))
    nn.SgdOp(w, g, None, 0.1, 0.0, 0.0).verify()
    with pytest.raises(VerifyException, match="momentum 0.9 needs a velocity operand"):
        nn.SgdOp(w, g, None, 0.1, 0.9, 0.0).verify()


def test_pool_backward_and_losses_check_shapes():
    dy, x = values((2, 3, 4, 4), (2, 3, 8, 8))
    nn.MaxPool2dBackwardOp(dy, x, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False).verify()
    with pytest.raises(VerifyException, match="does not match the forward pooling's output"):
        nn.MaxPool2dBackwardOp(dy, x, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), False).verify()
    logits, target = values((2, 10), (2, 9))
    with pytest.raises(VerifyException, match="target shape"):
        nn.SoftmaxCrossEntropyOp(logits, target).verify()
    (single,) = values((1, 3, 1, 1))
    with pytest.raises(VerifyException, match="more than one value per channel"):
        nn.BatchNormTrainOp(single, *values((3,), (3,), (3,), (3,)), 1e-5, 0.9).verify()
    assert isinstance(nn.ReduceSumOp(x, [0, 2, 3]).result.type, TensorType)
