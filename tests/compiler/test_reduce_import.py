"""ReduceMean/Max/Min/Sum/SumSquare import onto the global pooling ops, in both exporters' forms.

PyTorch's dynamo exporter (opset 18) writes global average pooling as ReduceMean with the axes as
an int64 initializer input ([2, 3] or [-2, -1]), keepdims=1 then Flatten, or keepdims=0; the
legacy exporter (opset 13-17) writes `x.mean([2, 3])` as ReduceMean with an `axes` attribute.
Each model is compiled and run with --check against onnxruntime on every target, in-process.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nncc.compiler.onnx_import import import_model
from nncc.dialects import nn
from nncc.support.errors import NnccError
from tests.compiler.imported_ops import op_names

TARGETS = ("reference", "vector", "fusion", "edge")


def make_model(nodes, x_shape, y_shape, initializers=(), opset: int = 18, check: bool = True) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "reduce",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    if check:  # the shape inference of a valid model (models for error messages are not)
        onnx.checker.check_model(model, full_check=True)
    return model


def axes_input(values, name: str = "axes") -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def dynamo_head(axes=(-2, -1)) -> onnx.ModelProto:
    """torchvision's tail as the dynamo exporter writes it: conv, relu, ReduceMean(x, axes)
    keepdims=1, Flatten, Gemm."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "conv.w"),
             numpy_helper.from_array(rng.standard_normal((5, 4)).astype(np.float32), "fc.w"),
             numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "fc.b"),
             axes_input(axes)]
    nodes = [helper.make_node("Conv", ["x", "conv.w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("ReduceMean", ["r", "axes"], ["m"], name="mean", keepdims=1),
             helper.make_node("Flatten", ["m"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc", transB=1)]
    return make_model(nodes, [1, 3, 6, 6], [1, 5], inits)


def single(op: str, x_shape, y_shape, axes=None, opset: int = 18, axes_as_input: bool = True, check=True, **attrs):
    """One reduction node: axes as an initializer input (opset 18 form, and ReduceSum >= 13) or as
    the `axes` attribute (opset <= 17 form)."""
    inputs, inits = ["x"], []
    if axes is not None and axes_as_input:
        inputs.append("axes")
        inits.append(axes_input(axes))
    elif axes is not None:
        attrs["axes"] = list(axes)
    return make_model([helper.make_node(op, inputs, ["y"], name="reduce", **attrs)], x_shape, y_shape, inits, opset,
                      check)


MODELS = {
    # the dynamo exporter (opset 18): axes input, keepdims 1 then Flatten, or keepdims 0
    "dynamo_mean_keepdims_flatten": dynamo_head(),
    "dynamo_mean_keepdims_flatten_positive_axes": dynamo_head((2, 3)),
    "dynamo_mean_no_keepdims": single("ReduceMean", [2, 4, 3, 3], [2, 4], [-2, -1], keepdims=0),
    "dynamo_max_no_keepdims": single("ReduceMax", [1, 4, 3, 5], [1, 4], [2, 3], keepdims=0),
    # the legacy exporter: x.mean([2, 3]) is an axes attribute (opset 13 and 17)
    "legacy13_mean_attr": single("ReduceMean", [1, 4, 3, 3], [1, 4], [2, 3], 13, False, keepdims=0),
    "legacy17_mean_attr_keepdims": single("ReduceMean", [1, 4, 3, 3], [1, 4, 1, 1], [-2, -1], 17, False),
    "legacy13_max_attr": single("ReduceMax", [1, 4, 3, 3], [1, 4], [2, 3], 13, False, keepdims=0),
    "legacy13_sum_input": single("ReduceSum", [1, 4, 3, 3], [1, 4], [2, 3], 13, keepdims=0),
    "legacy11_sum_attr": single("ReduceSum", [1, 4, 3, 3], [1, 4], [2, 3], 11, False, keepdims=0),  # upgraded
    # 1-D: N x C x L
    "mean_3d_last_axis": single("ReduceMean", [2, 4, 5], [2, 4, 1], [-1]),
    # other axes: transpose + global pooling
    "mean_channel_axis": single("ReduceMean", [2, 4, 3, 3], [2, 3, 3], [1], keepdims=0),
    "sum_2d_last_axis": single("ReduceSum", [3, 5], [3], [1], 13, keepdims=0),
    "min_axes_0_2": single("ReduceMin", [2, 3, 4, 2], [1, 3, 1, 2], [0, 2]),
    "sum_square_every_axis": single("ReduceSumSquare", [2, 3, 4], [1, 1, 1]),
    "mean_noop_with_empty_axes": single("ReduceMean", [2, 3, 4], [2, 3, 4], [], noop_with_empty_axes=1),
}


@pytest.fixture(scope="module")
def model_paths(saved_models):
    return saved_models(MODELS)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", MODELS)
def test_reduction_checks_on_every_target(passes_check, model_paths, name, target):
    passes_check(model_paths[name], target)


def test_spatial_mean_is_one_global_pool():
    assert op_names(MODELS["dynamo_mean_keepdims_flatten"]) == [
        "nn.conv2d", "nn.relu", "nn.global_avg_pool", "nn.reshape", "nn.gemm"]
    assert op_names(MODELS["dynamo_mean_no_keepdims"]) == ["nn.global_avg_pool", "nn.reshape"]
    assert op_names(MODELS["legacy17_mean_attr_keepdims"]) == ["nn.global_avg_pool"]
    assert op_names(MODELS["dynamo_max_no_keepdims"]) == ["nn.global_max_pool", "nn.reshape"]
    assert op_names(MODELS["legacy13_sum_input"]) == ["nn.global_avg_pool", "nn.mul", "nn.reshape"]
    assert op_names(MODELS["mean_noop_with_empty_axes"]) == []


def test_other_axes_go_through_a_transpose():
    assert op_names(MODELS["mean_channel_axis"]) == [
        "nn.reshape", "nn.transpose", "nn.reshape", "nn.global_avg_pool", "nn.reshape"]
    # the trailing axis of a 2-D tensor needs no transpose: 3 x 5 is viewed as 1 x 3 x 5
    assert op_names(MODELS["sum_2d_last_axis"]) == ["nn.reshape", "nn.global_avg_pool", "nn.mul", "nn.reshape"]


def test_keepdims_shapes():
    module, _ = import_model(MODELS["min_axes_0_2"])
    ret = next(op for op in module.walk() if op.name == "func.return")
    assert nn.shape_of(ret.operands[0]) == (1, 3, 1, 2)


def error_of(model: onnx.ModelProto) -> str:
    with pytest.raises(NnccError) as info:
        import_model(model, "m.onnx")
    return str(info.value)


def test_repeated_axis_is_a_one_line_error():
    message = error_of(single("ReduceMean", [1, 4, 3, 3], [1, 4], [2, -2], check=False, keepdims=0))
    assert message == "m.onnx: node 'reduce' (ReduceMean): axes [2, -2] name an axis twice"


def test_axes_out_of_range_is_a_one_line_error():
    message = error_of(single("ReduceMean", [1, 4, 3, 3], [1, 4], [2, 4], 13, False, False, keepdims=0))
    assert message == "m.onnx: node 'reduce' (ReduceMean): axis 4 is out of range for rank 4"


def test_run_time_axes_are_refused():
    # nncc compiles for constant axes; an int64 graph input is refused before the node is reached
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="reduce", keepdims=0)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3, 3]),
         helper.make_tensor_value_info("axes", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    message = error_of(model)
    assert message == "m.onnx: input 'axes' has element type int64; nncc compiles float32 tensors"


def test_an_unsupported_reduction_says_so_plainly():
    message = error_of(single("ReduceL2", [1, 4, 3, 3], [1, 4], [2, 3], keepdims=0))
    assert message == ("m.onnx: node 'reduce' (ReduceL2): op ReduceL2 is not supported by nncc; "
                       "supported ops: docs/conformance.md")


def test_every_unsupported_op_is_named_with_counts():
    nodes = [helper.make_node("Sin", ["x"], ["a"], name="a"),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Sin", ["b"], ["c"]),
             helper.make_node("Cos", ["c"], ["d"]),
             helper.make_node("Sin", ["d"], ["y"])]
    message = error_of(make_model(nodes, [1, 4], [1, 4], opset=13))
    assert message == ("m.onnx: node 'a' (Sin): op Sin is not supported by nncc; unsupported ops: Sin x3, Cos x1; "
                       "see docs/conformance.md for the supported ops")


def test_unsupported_ops_on_constants_are_folded_not_reported():
    # Erf of an initializer and Shape -> Cast of a run-time tensor are constants: folded at import.
    nodes = [helper.make_node("Erf", ["k"], ["e"]),
             helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["sf"], ["n"], keepdims=1),
             helper.make_node("Mul", ["x", "e"], ["m"]),
             helper.make_node("Add", ["m", "n"], ["y"])]
    model = make_model(nodes, [1, 4], [1, 4], [numpy_helper.from_array(np.ones(4, np.float32), "k")], opset=13)
    assert op_names(model) == ["nn.mul", "nn.add"]
