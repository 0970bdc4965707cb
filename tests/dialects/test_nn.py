"""The nn dialect's verifiers: each shape rule rejects IR that breaks it, with a message naming it."""

import pytest
from xdsl.dialects import builtin, func
from xdsl.context import Context
from xdsl.parser import Parser
from xdsl.utils.exceptions import VerifyException

from nncc.dialects import nn


def parse(body: str, args: str, result: str):
    ctx = Context()
    for dialect in (builtin.Builtin, func.Func, nn.NN):
        ctx.load_dialect(dialect)
    text = f"func.func @f({args}) -> {result} {{\n{body}\n}}"
    return Parser(ctx, text).parse_module()


X = "%x: tensor<1x4x8x8xf32>"


@pytest.mark.parametrize("body, args, result, message", [
    ('%w = nn.weight "w" : tensor<6x3x3x3xf32>\n'
     "%y = nn.conv2d %x, %w strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 2 "
     ": (tensor<1x4x8x8xf32>, tensor<6x3x3x3xf32>) -> tensor<1x6x8x8xf32>",
     X, "tensor<1x6x8x8xf32>", "weight expects 6 input channels, input has 4"),
    ('%w = nn.weight "w" : tensor<6x4x3x3xf32>\n%b = nn.weight "b" : tensor<4xf32>\n'
     "%y = nn.conv2d %x, %w, %b strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 "
     ": (tensor<1x4x8x8xf32>, tensor<6x4x3x3xf32>, tensor<4xf32>) -> tensor<1x6x8x8xf32>",
     X, "tensor<1x6x8x8xf32>", "bias must have shape [6]"),
    ('%w = nn.weight "w" : tensor<6x4x3x3xf32>\n'
     "%y = nn.conv2d %x, %w strides [1] pads [1, 1, 1, 1] dilations [1, 1] group 1 "
     ": (tensor<1x4x8x8xf32>, tensor<6x4x3x3xf32>) -> tensor<1x6x8x8xf32>",
     X, "tensor<1x6x8x8xf32>", "strides needs 2 values"),
    ('%w = nn.weight "w" : tensor<6x4x9x9xf32>\n'
     "%y = nn.conv2d %x, %w strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 "
     ": (tensor<1x4x8x8xf32>, tensor<6x4x9x9xf32>) -> tensor<1x6x1x1xf32>",
     X, "tensor<1x6x1x1xf32>", "window 9 is larger than the padded input 8"),
    ("%y = nn.max_pool %x kernel [2, 2] strides [2, 2] pads [0, 0, 0, 0] dilations [1, 1] ceil_mode false "
     ": (tensor<1x4x8x8xf32>) -> tensor<1x4x5x5xf32>",
     X, "tensor<1x4x5x5xf32>", "result shape [1, 4, 5, 5] does not match the expected [1, 4, 4, 4]"),
    ("%y = nn.avg_pool %x kernel [3, 3] strides [2, 2] pads [0, 0, 0, 0] dilations [1, 1] ceil_mode true "
     "count_include_pad false : (tensor<1x4x8x8xf32>) -> tensor<1x4x3x3xf32>",
     X, "tensor<1x4x3x3xf32>", "does not match the expected [1, 4, 4, 4]"),
    ('%s = nn.weight "s" : tensor<3xf32>\n'
     "%y = nn.batch_norm %x, %s, %s, %s, %s epsilon 1.0e-05 : (tensor<1x4x8x8xf32>, tensor<3xf32>, "
     "tensor<3xf32>, tensor<3xf32>, tensor<3xf32>) -> tensor<1x4x8x8xf32>",
     X, "tensor<1x4x8x8xf32>", "scale must have shape [4]"),
    ("%y = nn.reshape %x : (tensor<1x4x8x8xf32>) -> tensor<4x10xf32>",
     X, "tensor<4x10xf32>", "cannot reshape [1, 4, 8, 8] into [4, 10]: element counts differ"),
    ("%y = nn.transpose %x perm [0, 1, 1, 2] : (tensor<1x4x8x8xf32>) -> tensor<1x4x4x8xf32>",
     X, "tensor<1x4x4x8xf32>", "perm [0, 1, 1, 2] is not a permutation of rank 4"),
    ("%y = nn.concat %x, %z axis 1 : (tensor<1x4x8x8xf32>, tensor<1x4x7x8xf32>) -> tensor<1x8x8x8xf32>",
     X + ", %z: tensor<1x4x7x8xf32>", "tensor<1x8x8x8xf32>", "differ off the concat axis"),
    ("%y = nn.softmax %x axis 4 : tensor<1x4x8x8xf32>",
     X, "tensor<1x4x8x8xf32>", "axis 4 is out of range"),
    ("%y = nn.add %x, %z : (tensor<1x4x8x8xf32>, tensor<3x1x1xf32>) -> tensor<1x4x8x8xf32>",
     X + ", %z: tensor<3x1x1xf32>", "tensor<1x4x8x8xf32>", "do not broadcast"),
    ('%w = nn.weight "w" : tensor<5x7xf32>\n'
     "%y = nn.gemm %a, %w trans_a false trans_b false alpha 1.0 beta 1.0 "
     ": (tensor<2x6xf32>, tensor<5x7xf32>) -> tensor<2x7xf32>",
     "%a: tensor<2x6xf32>", "tensor<2x7xf32>", "inner dimensions differ: 6 and 5"),
    ("%y = nn.global_avg_pool %x : (tensor<1x4x8x8xf32>) -> tensor<1x4xf32>",
     X, "tensor<1x4xf32>", "does not match the expected [1, 4, 1, 1]"),
    ("%y = nn.relu %d : tensor<?x4xf32>", "%d: tensor<?x4xf32>", "tensor<?x4xf32>", "dynamic shape"),
])
def test_verifier_rejects(body, args, result, message):
    module = parse(f"{body}\nfunc.return %y : {result}", args, result)
    with pytest.raises(VerifyException, match=None) as error:
        module.verify()
    assert message in str(error.value)


def test_shape_rules_match_onnx_pooling_ceil_mode():
    # 8 wide, kernel 3, stride 2, pad 1: floor gives 4, ceil gives 5 (last window starts in the pad).
    assert nn.window_output_size(8, 3, 2, 1, 1) == 4
    assert nn.window_output_size(8, 3, 2, 1, 1, ceil_mode=True) == 5
    # 6 wide, kernel 2, stride 2, no pad: ceil adds no window that would start past the input.
    assert nn.window_output_size(6, 2, 2, 0, 0, ceil_mode=True) == 3
    # SqueezeNet's pool: 111 wide, kernel 3, stride 2, ceil -> 55.
    assert nn.window_output_size(111, 3, 2, 0, 0, ceil_mode=True) == 55
    assert nn.window_output_size(7, 3, 1, 0, 0, dilation=2) == 3


def test_matmul_and_broadcast_rules():
    assert nn.matmul_output_shape((2, 1, 3, 4), (5, 4, 6)) == (2, 5, 3, 6)
    assert nn.matmul_output_shape((4,), (4, 6)) == (6,)
    assert nn.matmul_output_shape((3, 4), (4,)) == (3,)
    assert nn.broadcast_shapes((8, 1, 6, 1), (7, 1, 5)) == (8, 7, 6, 5)
