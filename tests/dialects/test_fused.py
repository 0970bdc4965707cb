"""The `fused` dialect's verifiers: bad epilogues and shapes are rejected with a
sentence naming the op and the problem. (The printed form is tested by
tests/filecheck/dialects/fused_roundtrip.mlir.)"""

import pytest
from xdsl.parser import Parser
from xdsl.utils.exceptions import VerifyException

from nncc.compiler.registry import Registry
from nncc.dialects import fused, nn
from nncc.dialects.fused import Activation, Epilogue

CONV = """func.func @f(%x: tensor<1x3x8x8xf32>, %w: tensor<4x3x3x3xf32>, %r: tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32> {
  %c = fused.conv2d %x, %w {residual}strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 {epilogue} : (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>) -> tensor<1x4x8x8xf32>
  func.return %c : tensor<1x4x8x8xf32>
}"""


def parse(epilogue: str, residual: str = ""):
    text = CONV.replace("{epilogue}", epilogue).replace("{residual}", residual)
    module = Parser(Registry.default().context(), text).parse_module()
    module.verify()
    return module


@pytest.mark.parametrize("epilogue", [
    "act none", "act relu", "act clip min 0.0", "act clip max 6.0", "act clip min 0.0 max 6.0",
    "act leaky_relu alpha 0.01", "act hard_swish", "act hard_sigmoid alpha 0.2 beta 0.5", "act sigmoid",
    "act tanh", "act erf", "act gelu", "act gelu_tanh", "act silu",
])
def test_valid_epilogues(epilogue):
    parse(epilogue)
    parse(epilogue, "residual %r ")


@pytest.mark.parametrize("epilogue, message", [
    ("act relu min 0.0", "act relu takes no min (act_min)"),
    ("act none alpha 1.0", "act none takes no alpha (act_alpha)"),
    ("act clip", "act clip needs min or max"),
    ("act leaky_relu", "act leaky_relu needs alpha (act_alpha)"),
    ("act hard_sigmoid alpha 0.2", "act hard_sigmoid needs beta (act_beta)"),
    ("act sigmoid beta 1.0", "act sigmoid takes no beta (act_beta)"),
])
def test_bad_epilogue_parameters(epilogue, message):
    with pytest.raises(VerifyException, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(epilogue)


def test_infinite_parameters_are_rejected():
    x = nn.WeightOp("x", (1, 3, 8, 8))
    w = nn.WeightOp("w", (4, 3, 3, 3))
    op = fused.Conv2dOp(x.result, w.result, None, None, [1, 1], [1, 1, 1, 1], [1, 1], 1,
                        Epilogue(Activation.CLIP, max=float("inf")))
    with pytest.raises(VerifyException, match="act_max must be finite"):
        op.verify()


def test_residual_must_have_the_result_shape():
    x = nn.WeightOp("x", (1, 3, 8, 8))
    w = nn.WeightOp("w", (4, 3, 3, 3))
    r = nn.WeightOp("r", (1, 4, 1, 1))
    op = fused.Conv2dOp(x.result, w.result, None, r.result, [1, 1], [1, 1, 1, 1], [1, 1], 1)
    with pytest.raises(VerifyException):
        op.verify()


def test_unknown_activation_is_a_parse_error():
    with pytest.raises(Exception, match="relu6|expected|Expected"):
        parse("act relu6")


def test_gemm_shape_rule_and_macs():
    a = nn.WeightOp("a", (2, 8))
    b = nn.WeightOp("b", (5, 8))
    c = nn.WeightOp("c", (3,))
    op = fused.GemmOp(a.result, b.result, None, None, False, True, 1.0, 1.0, Epilogue(Activation.RELU))
    op.verify()
    assert nn.shape_of(op.result) == (2, 5) and op.macs == 2 * 5 * 8
    bad = fused.GemmOp(a.result, b.result, c.result, None, False, True, 1.0, 1.0)
    with pytest.raises(VerifyException, match="do not broadcast"):
        bad.verify()
