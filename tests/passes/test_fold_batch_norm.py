"""fold-batch-norm: the folded conv/gemm computes what conv/gemm + BN computed."""

import numpy as np
import pytest

from nncc.dialects import nn

CONV_BN = """
builtin.module {
  func.func @main(%x: tensor<2x8x9x9xf32>) -> tensor<2x8x5x5xf32> {
    %w = nn.weight "w" : tensor<8x%CIN%x3x3xf32>
    %BIAS_WEIGHT%
    %g = nn.weight "g" : tensor<8xf32>
    %beta = nn.weight "beta" : tensor<8xf32>
    %m = nn.weight "m" : tensor<8xf32>
    %v = nn.weight "v" : tensor<8xf32>
    %c = nn.conv2d %x, %w%BIAS% strides [2, 2] pads [1, 1, 1, 1] dilations [1, 1] group %GROUP% {onnx_nodes = ["conv"]} : (tensor<2x8x9x9xf32>, tensor<8x%CIN%x3x3xf32>%BIAS_TYPE%) -> tensor<2x8x5x5xf32>
    %y = nn.batch_norm %c, %g, %beta, %m, %v epsilon 1.0e-03 {onnx_nodes = ["bn"]} : (tensor<2x8x5x5xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x8x5x5xf32>
    func.return %y : tensor<2x8x5x5xf32>
  }
}
"""

GEMM_BN = """
builtin.module {
  func.func @main(%a: tensor<3x6xf32>) -> tensor<3x4xf32> {
    %b = nn.weight "b" : tensor<%B%xf32>
    %c = nn.weight "c" : tensor<%C%xf32>
    %g = nn.weight "g" : tensor<4xf32>
    %beta = nn.weight "beta" : tensor<4xf32>
    %m = nn.weight "m" : tensor<4xf32>
    %v = nn.weight "v" : tensor<4xf32>
    %y = nn.gemm %a, %b, %c trans_a false trans_b %T% alpha 1.5 beta 0.5 : (tensor<3x6xf32>, tensor<%B%xf32>, tensor<%C%xf32>) -> tensor<3x4xf32>
    %z = nn.batch_norm %y, %g, %beta, %m, %v epsilon 1.0e-05 : (tensor<3x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<3x4xf32>
    func.return %z : tensor<3x4xf32>
  }
}
"""


def fill(template: str, **values) -> str:
    """Replace each %KEY% of `template`."""
    for key, value in values.items():
        template = template.replace(f"%{key.upper()}%", str(value))
    return template


def bn_weights(rng, channels):
    return {"g": rng.uniform(0.5, 1.5, channels), "beta": rng.normal(0, 0.5, channels),
            "m": rng.normal(0, 0.5, channels), "v": rng.uniform(0.1, 2.0, channels)}


def run(module, inputs):
    from nncc.compiler.nn_interpreter import run_reference

    return next(iter(run_reference(module, inputs)[0].values()))


def ops_of(module, op_type):
    return [op for op in module.walk() if isinstance(op, op_type)]


@pytest.mark.parametrize("group, bias", [(1, False), (1, True), (8, True), (2, False)])
def test_conv_bn_folds_to_the_same_numbers(parse_ir, run_pipeline, group, bias):
    rng = np.random.default_rng(group + bias)
    cin = 8 // group
    weights = {"w": rng.standard_normal((8, cin, 3, 3)), "bb": rng.standard_normal(8), **bn_weights(rng, 8)}
    text = fill(CONV_BN, cin=cin, group=group, bias=", %bb" if bias else "",
                bias_type=", tensor<8xf32>" if bias else "",
                bias_weight='%bb = nn.weight "bb" : tensor<8xf32>' if bias else "")
    x = {"input0": rng.standard_normal((2, 8, 9, 9)).astype(np.float32)}
    expected = run(parse_ir(text, weights), x)
    module = run_pipeline(parse_ir(text, weights), "fold-batch-norm")
    assert not ops_of(module, nn.BatchNormOp)
    (conv,) = ops_of(module, nn.Conv2dOp)
    assert conv.bias is not None and nn.onnx_nodes_of(conv) == ["conv", "bn"]
    actual = run(module, x)
    assert np.abs(actual - expected).max() <= 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize("trans_b, c_shape", [(True, "4"), (False, "4"), (True, "3x4"), (False, "1x4")])
def test_gemm_bn_folds_to_the_same_numbers(parse_ir, run_pipeline, trans_b, c_shape):
    rng = np.random.default_rng(3)
    b_shape = "4x6" if trans_b else "6x4"
    weights = {"b": rng.standard_normal([int(d) for d in b_shape.split("x")]),
               "c": rng.standard_normal([int(d) for d in c_shape.split("x")]), **bn_weights(rng, 4)}
    text = fill(GEMM_BN, b=b_shape, c=c_shape, t="true" if trans_b else "false")
    x = {"input0": rng.standard_normal((3, 6)).astype(np.float32)}
    expected = run(parse_ir(text, weights), x)
    module = run_pipeline(parse_ir(text, weights), "fold-batch-norm")
    assert not ops_of(module, nn.BatchNormOp)
    (gemm,) = ops_of(module, nn.GemmOp)
    assert gemm.beta.value.data == 1.0 and gemm.alpha.value.data == 1.5
    actual = run(module, x)
    assert np.abs(actual - expected).max() <= 1e-5 * np.abs(expected).max()


def test_folded_weights_are_new_store_entries(parse_ir, run_pipeline):
    """The original arrays stay untouched (another op may still read them)."""
    rng = np.random.default_rng(0)
    weights = {"w": rng.standard_normal((8, 8, 3, 3)), "bb": np.zeros(8), **bn_weights(rng, 8)}
    text = fill(CONV_BN, cin=8, group=1, bias="", bias_type="", bias_weight="")
    module = parse_ir(text, weights)
    from nncc.compiler.weights import store_of

    store = store_of(module)
    original = store["w"].copy()
    run_pipeline(module, "fold-batch-norm")
    (conv,) = ops_of(module, nn.Conv2dOp)
    assert conv.weight.owner.ref.data == "conv.weight.bn"
    assert conv.bias.owner.ref.data == "conv.bias.bn"
    assert np.array_equal(store["w"], original)
    assert store["conv.weight.bn"].dtype == np.float32
    g, v = weights["g"], weights["v"]
    np.testing.assert_allclose(store["conv.weight.bn"],
                               original * (g / np.sqrt(v + 1e-3)).reshape(-1, 1, 1, 1), rtol=1e-6)


def test_without_batch_norm_needs_no_weight_store(parse_ir, run_pipeline):
    from xdsl.parser import Parser

    from nncc.compiler.registry import Registry

    text = "builtin.module { func.func @f(%x: tensor<2xf32>) -> tensor<2xf32> { func.return %x : tensor<2xf32> } }"
    module = Parser(Registry.default().context(), text).parse_module()  # no store attached, no nn.weights
    run_pipeline(module, "fold-batch-norm")


@pytest.mark.parametrize("name", ["resnet18", pytest.param("resnet50", marks=pytest.mark.big_memory), "mobilenet_v2"])
def test_zoo_models_lose_every_batch_norm(zoo_run, name):
    run = zoo_run(name, "canonicalize-nn,fold-batch-norm")
    assert run.before["nn.batch_norm"] == run.before["nn.conv2d"] > 0
    assert run.after["nn.batch_norm"] == 0
    assert run.after["nn.conv2d"] == run.before["nn.conv2d"]
    assert run.error <= 1e-4 * run.scale, (run.error, run.scale)
    # BN node names live on in the convs they were folded into.
    names = {n for op in run.module.walk() for n in nn.onnx_nodes_of(op)}
    assert {n.name for n in run.model.graph.node if n.op_type == "BatchNormalization"} <= names
