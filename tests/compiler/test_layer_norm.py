"""LayerNormalization (opset 17) and the ConvNeXt patterns around it, on every target.

PyTorch exports ConvNeXt's block as conv -> Transpose [0, 2, 3, 1] -> LayerNormalization over the
channels (the last axis) -> MatMul/Add ... -> Transpose [0, 3, 1, 2]; the legacy exporter writes a
custom channels-first LayerNorm2d as ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add. nncc
imports LayerNormalization as a composition of ops every target lowers (global average pooling,
sub, mul, add, sqrt, div; see docs/nn-dialect.md). Each model is compiled and run with --check
against onnxruntime on every target, in-process.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nncc.compiler.onnx_import import import_model
from tests.compiler.imported_ops import op_names

TARGETS = ("reference", "vector", "fusion", "edge")
RNG = np.random.default_rng(7)


def tensor(name: str, shape, scale: float = 1.0, offset: float = 0.0) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale + offset).astype(np.float32), name)


def make_model(nodes, x_shape, y_shape, initializers=(), opset: int = 17, outputs=None) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "layer_norm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    return model


def convnext_block(channels: int = 8, size: int = 5, bias: bool = True) -> onnx.ModelProto:
    """torchvision's CNBlock as exported: depthwise 7x7 conv, permute to NHWC, LayerNorm(C) eps 1e-6,
    Linear (MatMul + Add), ReLU (GELU in ConvNeXt), Linear, layer scale, permute back, residual."""
    c, h = channels, 4 * channels
    inits = [tensor("dw.w", (c, 1, 7, 7), 0.2), tensor("dw.b", (c,), 0.1),
             tensor("ln.w", (c,), 0.3, 1.0), tensor("fc1.w", (c, h), 0.3), tensor("fc1.b", (h,), 0.1),
             tensor("fc2.w", (h, c), 0.3), tensor("fc2.b", (c,), 0.1), tensor("gamma", (c, 1, 1), 0.5)]
    if bias:
        inits.append(tensor("ln.b", (c,), 0.2))
    nodes = [helper.make_node("Conv", ["x", "dw.w", "dw.b"], ["dw"], name="dwconv", pads=[3, 3, 3, 3], group=c),
             helper.make_node("Transpose", ["dw"], ["nhwc"], name="permute", perm=[0, 2, 3, 1]),
             helper.make_node("LayerNormalization", ["nhwc", "ln.w"] + (["ln.b"] if bias else []), ["ln"],
                              name="norm", axis=-1, epsilon=1e-6),
             helper.make_node("MatMul", ["ln", "fc1.w"], ["m1"], name="fc1"),
             helper.make_node("Add", ["m1", "fc1.b"], ["a1"], name="fc1_bias"),
             helper.make_node("Relu", ["a1"], ["r"], name="act"),
             helper.make_node("MatMul", ["r", "fc2.w"], ["m2"], name="fc2"),
             helper.make_node("Add", ["m2", "fc2.b"], ["a2"], name="fc2_bias"),
             helper.make_node("Transpose", ["a2"], ["nchw"], name="permute_back", perm=[0, 3, 1, 2]),
             helper.make_node("Mul", ["nchw", "gamma"], ["scaled"], name="layer_scale"),
             helper.make_node("Add", ["scaled", "x"], ["y"], name="residual")]
    return make_model(nodes, [1, c, size, size], [1, c, size, size], inits)


def last_two_axes(bias: bool) -> onnx.ModelProto:
    inits = [tensor("w", (5, 6), 0.3, 1.0)] + ([tensor("b", (5, 6), 0.2)] if bias else [])
    node = helper.make_node("LayerNormalization", ["x", "w"] + (["b"] if bias else []), ["y"], name="norm",
                            axis=-2, epsilon=1e-6)
    return make_model([node], [1, 4, 5, 6], [1, 4, 5, 6], inits)


def layer_norm_2d_legacy(channels: int = 6) -> onnx.ModelProto:
    """ConvNeXt's channels-first LayerNorm2d (u = x.mean(1); s = (x - u).pow(2).mean(1);
    (x - u) / sqrt(s + eps) * w[:, None, None] + b[:, None, None]) as the legacy exporter writes it."""
    c = channels
    inits = [tensor("conv.w", (c, 3, 3, 3), 0.3), tensor("ln.w", (c, 1, 1), 0.3, 1.0), tensor("ln.b", (c, 1, 1), 0.2),
             numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(1e-6, np.float32), "eps")]
    nodes = [helper.make_node("Conv", ["x", "conv.w"], ["c"], name="stem", pads=[1, 1, 1, 1]),
             helper.make_node("ReduceMean", ["c"], ["u"], name="mean", axes=[1], keepdims=1),
             helper.make_node("Sub", ["c", "u"], ["d"], name="sub"),
             helper.make_node("Pow", ["d", "two"], ["d2"], name="pow"),
             helper.make_node("ReduceMean", ["d2"], ["s"], name="var", axes=[1], keepdims=1),
             helper.make_node("Add", ["s", "eps"], ["se"], name="add_eps"),
             helper.make_node("Sqrt", ["se"], ["std"], name="sqrt"),
             helper.make_node("Div", ["d", "std"], ["n"], name="div"),
             helper.make_node("Mul", ["n", "ln.w"], ["nw"], name="scale"),
             helper.make_node("Add", ["nw", "ln.b"], ["y"], name="shift")]
    return make_model(nodes, [1, 3, 5, 5], [1, c, 5, 5], inits)


def with_statistics() -> onnx.ModelProto:
    """The Mean and InvStdDev outputs used (graph outputs)."""
    node = helper.make_node("LayerNormalization", ["x", "w", "b"], ["y", "mean", "inv_std"], name="norm", axis=1)
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4]),
               helper.make_tensor_value_info("mean", TensorProto.FLOAT, [2, 1, 1]),
               helper.make_tensor_value_info("inv_std", TensorProto.FLOAT, [2, 1, 1])]
    return make_model([node], [2, 3, 4], None, [tensor("w", (3, 4), 0.3, 1.0), tensor("b", (4,), 0.2)],
                      outputs=outputs)


MODELS = {
    "convnext_block": convnext_block(),
    "convnext_block_no_bias": convnext_block(bias=False),
    "last_two_axes": last_two_axes(bias=True),
    "last_two_axes_no_bias": last_two_axes(bias=False),
    "layer_norm_2d_legacy_decomposition": layer_norm_2d_legacy(),
    "mean_and_inv_std_outputs": with_statistics(),
}


@pytest.fixture(scope="module")
def model_paths(saved_models):
    return saved_models(MODELS)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", MODELS)
def test_layer_norm_checks_on_every_target(passes_check, model_paths, name, target):
    passes_check(model_paths[name], target)


def test_layer_norm_is_a_composition_of_lowered_ops():
    assert op_names(last_two_axes(bias=True)) == [
        "nn.reshape", "nn.global_avg_pool", "nn.sub", "nn.mul", "nn.global_avg_pool", "nn.add", "nn.sqrt",
        "nn.div", "nn.mul", "nn.reshape", "nn.mul", "nn.add"]
    assert op_names(last_two_axes(bias=False))[-2:] == ["nn.reshape", "nn.mul"]


def test_pow_2_is_a_square_and_sqrt_imports():
    names = op_names(layer_norm_2d_legacy())
    assert "nn.sqrt" in names and "nn.div" in names
    pow_index = names.index("nn.sub") + 1
    assert names[pow_index] == "nn.mul"


def test_other_exponents_import_too():
    # x ** 3 is products now (tests/compiler/test_pow_exp_cast.py checks Pow on every target)
    nodes = [helper.make_node("Pow", ["x", "three"], ["y"], name="cube")]
    model = make_model(nodes, [1, 4], [1, 4], [numpy_helper.from_array(np.array(3.0, np.float32), "three")])
    module, _ = import_model(model, "m.onnx")
    assert [op.name for op in module.walk() if op.name.startswith("nn.") and op.name != "nn.weight"] == [
        "nn.mul", "nn.mul"]
