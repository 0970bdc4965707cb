"""Gather, GatherND and Where with constant indices / conditions, in the dynamo exporter's forms.

PyTorch's dynamo exporter decomposes `adaptive_avg_pool2d` whose output size does not divide the
input (VGG and AlexNet below 224x224) into Transpose -> GatherND (constant indices of the pooling
windows) -> Transpose, then either ReduceMean over the window axes (windows of one size) or
Where (masking the padding of the shorter windows with a constant mask) -> Gather (`select`) and
Add per window element -> Div by the window sizes. ConvNeXt's classifier reads its pooled vector
back through `as_strided` (Reshape [-1] -> Gather with an index tensor). `pytorch_adaptive_pool`
builds that graph with the index arithmetic of torch._decomp's `adaptive_avg_pool2d`, so these
tests need no torch. Every model is compiled and run with --check against onnxruntime on every
target, in-process.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nncc.compiler.onnx_import import import_model, index_runs
from nncc.support.errors import NnccError
from tests.compiler.imported_ops import op_names

TARGETS = ("reference", "vector", "fusion", "edge")
RNG = np.random.default_rng(11)


def const(values, name: str, dtype=np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype), name)


def weight(shape, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * 0.5).astype(np.float32), name)


def make_model(nodes, x_shape, y_shape, initializers=(), opset: int = 18) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "gather", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    return model


def window_indices(in_size: int, out_size: int):
    """torch._decomp's compute_idx: each output's window start + range(maxlength) (clamped), the
    window lengths (None when all are equal) and range(maxlength)."""
    out = np.arange(out_size)
    start = out * in_size // out_size
    maxlength = in_size // out_size + 1
    mod = in_size % out_size
    adaptive = not (mod == 0 or out_size % mod == 0)
    maxlength += 1 if adaptive else (-1 if mod == 0 else 0)
    index = start[:, None] + np.arange(maxlength)
    if not adaptive:
        return index, None, np.arange(maxlength)
    end = ((out + 1) * in_size + out_size - 1) // out_size
    return np.minimum(index, in_size - 1), end - start, np.arange(maxlength)


def pytorch_adaptive_pool(channels: int, in_hw, out_hw) -> onnx.ModelProto:
    """Conv 3x3 (to `in_hw`, `channels` channels) -> adaptive_avg_pool2d(out_hw) as the dynamo
    exporter writes it -> Reshape [1, C*oh*ow] (VGG's flatten)."""
    (ih, iw), (oh, ow) = in_hw, out_hw
    idx_h, len_h, range_h = window_indices(ih, oh)
    idx_w, len_w, range_w = window_indices(iw, ow)
    kh, kw = idx_h.shape[1], idx_w.shape[1]
    # vals = x[..., idx_h[:, :, None, None], idx_w]: (oh, kh, ow, kw) pairs of (h, w)
    pairs = np.stack(np.broadcast_arrays(idx_h[:, :, None, None], idx_w[None, None]), axis=-1)
    inits = [weight((channels, 3, 3, 3), "conv.w"), const(pairs, "pairs"), const([1, channels * oh * ow], "flat")]
    nodes = [helper.make_node("Conv", ["x", "conv.w"], ["features"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Transpose", ["features"], ["hw_first"], name="node_Transpose", perm=[2, 3, 0, 1]),
             helper.make_node("GatherND", ["hw_first", "pairs"], ["windows"], name="node_GatherND", batch_dims=0),
             helper.make_node("Transpose", ["windows"], ["index"], name="node_index", perm=[4, 5, 0, 1, 2, 3])]
    if len_h is None and len_w is None:
        inits.append(const([-3, -1], "window_axes"))
        nodes.append(helper.make_node("ReduceMean", ["index", "window_axes"], ["pooled"], name="node_mean",
                                      keepdims=0))
    else:
        values = "index"
        for axis, (length, span) in enumerate(((len_h, range_h), (len_w, range_w))):
            if length is None:
                continue
            mask = span >= length[:, None]  # (out, k): the padding of the shorter windows, zeroed
            inits.append(const(mask[:, :, None, None] if axis == 0 else mask, f"mask{axis}", bool))
            nodes.append(helper.make_node("Where", [f"mask{axis}", "zero", values], [f"masked{axis}"],
                                          name=f"node_masked_fill_{axis}"))
            values = f"masked{axis}"
        rows = len_h[:, None] if len_h is not None else np.full((oh, 1), kh)
        columns = len_w[None, :] if len_w is not None else np.full((1, ow), kw)
        inits += [const(0.0, "zero", np.float32), const(rows * columns, "count", np.float32)]
        inits += [const(i, f"i{i}") for i in range(max(kh, kw))]
        total = None
        for i in range(kh):
            nodes.append(helper.make_node("Gather", [values, f"i{i}"], [f"row{i}"], name=f"node_select_{i}", axis=3))
            for j in range(kw):
                name = f"v{i}_{j}"
                nodes.append(helper.make_node("Gather", [f"row{i}", f"i{j}"], [name], name=f"node_select_{i}_{j}",
                                              axis=4))
                if total is not None:
                    nodes.append(helper.make_node("Add", [total, name], [f"sum{i}_{j}"], name=f"node_add_{i}_{j}"))
                    name = f"sum{i}_{j}"
                total = name
        nodes.append(helper.make_node("Div", [total, "count"], ["pooled"], name="node_div"))
    nodes.append(helper.make_node("Reshape", ["pooled", "flat"], ["y"], name="node_view"))
    return make_model(nodes, [1, 3, ih, iw], [1, channels * oh * ow], inits)


def convnext_as_strided(channels: int = 8) -> onnx.ModelProto:
    """ConvNeXt's head: ReduceMean over H, W (keepdims) -> Reshape [-1] -> Gather with the
    index tensor [1, C, 1, 1] of `as_strided` -> Relu."""
    inits = [weight((channels, 3, 3, 3), "conv.w"), const([-1, -2], "axes"), const([-1], "flat"),
             const(np.arange(channels).reshape(1, channels, 1, 1), "strided")]
    nodes = [helper.make_node("Conv", ["x", "conv.w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("ReduceMean", ["c", "axes"], ["m"], name="node_mean", keepdims=1),
             helper.make_node("Reshape", ["m", "flat"], ["v"], name="node_Reshape"),
             helper.make_node("Gather", ["v", "strided"], ["g"], name="node_as_strided", axis=0),
             helper.make_node("Relu", ["g"], ["y"], name="relu")]
    return make_model(nodes, [1, 3, 6, 6], [1, channels, 1, 1], inits)


def gather_model(x_shape, indices, axis: int, y_shape) -> onnx.ModelProto:
    """Sigmoid -> Gather(constant indices, axis) -> Relu."""
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"], name="sigmoid"),
             helper.make_node("Gather", ["s", "indices"], ["g"], name="gather", axis=axis),
             helper.make_node("Relu", ["g"], ["y"], name="relu")]
    return make_model(nodes, x_shape, y_shape, [const(indices, "indices")], opset=13)


def gather_nd_model(x_shape, indices, batch_dims: int, y_shape) -> onnx.ModelProto:
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"], name="sigmoid"),
             helper.make_node("GatherND", ["s", "indices"], ["y"], name="gather_nd", batch_dims=batch_dims)]
    return make_model(nodes, x_shape, y_shape, [const(indices, "indices")], opset=13)


def where_model(condition, x_const=None, y_const=None, shape=(1, 3, 4, 4)) -> onnx.ModelProto:
    """Where(constant condition, X, Y): X and Y the two halves of a run-time tensor, or constants."""
    inits = [const(condition, "cond", bool)]
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Sigmoid", ["x"], ["b"], name="sigmoid")]
    operands = []
    for name, value in (("a", x_const), ("b", y_const)):
        if value is None:
            operands.append(name)
        else:
            inits.append(const(value, f"{name}_const", np.float32))
            operands.append(f"{name}_const")
    nodes.append(helper.make_node("Where", ["cond", *operands], ["y"], name="where"))
    return make_model(nodes, list(shape), list(shape), inits, opset=16)


MODELS = {
    # VGG at 64x64: 2x2 features -> 7x7 (windows of 1 and 2 rows: Where masks, Gather, Add, Div)
    "adaptive_pool_2_to_7": pytorch_adaptive_pool(4, (2, 2), (7, 7)),
    # AlexNet at 64x64: 1x1 -> 6x6 (windows of one size: GatherND of one pixel, ReduceMean)
    "adaptive_pool_1_to_6": pytorch_adaptive_pool(4, (1, 1), (6, 6)),
    "adaptive_pool_5x3_to_3x2": pytorch_adaptive_pool(3, (5, 3), (3, 2)),
    "convnext_as_strided": convnext_as_strided(),
    "gather_scalar_channel": gather_model([1, 5, 3, 4], 2, 1, [1, 3, 4]),
    "gather_repeats_negative": gather_model([1, 5, 3, 4], [[0, 1, 2], [-1, -1, 1]], 3, [1, 5, 3, 2, 3]),
    "gather_rows_steps": gather_model([2, 3, 9], [8, 6, 4, 0, 3, 6], 2, [2, 3, 6]),
    "gather_nd_pairs": gather_nd_model([3, 4, 2], [[[0, 1], [2, 3]], [[1, 1], [0, 0]]], 0, [2, 2, 2]),
    "gather_nd_batch_dims": gather_nd_model([2, 3, 4], [[[2], [0]], [[1], [1]]], 1, [2, 2, 4]),
    "where_masked_fill": where_model(np.arange(16).reshape(4, 4) % 3 == 0, y_const=0.0),
    "where_both_run_time": where_model(np.array([True, False, True]).reshape(3, 1, 1)),
    "where_constant_x": where_model(np.arange(4) < 2, x_const=np.full((4,), 2.5, np.float32)),
}


@pytest.fixture(scope="module")
def model_paths(saved_models):
    return saved_models(MODELS)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", MODELS)
def test_checks_on_every_target(passes_check, model_paths, name, target):
    passes_check(model_paths[name], target)


def test_index_runs():
    assert index_runs([0, 1, 2, 3, 3, 5, 7, 0]) == [(0, 1, 4), (3, 2, 3), (0, 1, 1)]
    assert index_runs([4, 4, 4]) == [(4, 1, 1)] * 3
    assert index_runs([5, 2]) == [(5, 1, 1), (2, 1, 1)]
    assert index_runs([]) == []


def test_gather_is_slices_concat_and_reshape():
    # [[0, 1, 2], [-1, -1, 1]] on an axis of 4: [0, 1, 2, 3] is the whole axis (the input itself),
    # then 3 (one slice, shared with the next 3) and 1
    names = op_names(MODELS["gather_repeats_negative"])
    assert names.count("nn.slice") == 2 and names.count("nn.concat") == 1 and "nn.reshape" in names
    # as_strided over the whole vector in order: reshapes only, no copy
    assert "nn.slice" not in op_names(MODELS["convnext_as_strided"])
    assert "nn.concat" not in op_names(MODELS["convnext_as_strided"])


def test_where_with_a_zero_fill_is_one_mul():
    names = op_names(MODELS["where_masked_fill"])
    assert names.count("nn.mul") == 1 and "nn.add" not in names


@pytest.mark.parametrize("model, message", [
    (gather_model([1, 5, 3, 4], [5], 1, [1, 1, 3, 4]), r"indices out of range for axes of size \[5\]"),
    (gather_nd_model([3, 4, 2], [[0, 4]], 0, [1, 2]), r"indices out of range for axes of size \[3, 4\]"),
])
def test_out_of_range_indices_are_refused(model, message):
    with pytest.raises(NnccError, match=message):
        import_model(model)


def test_run_time_indices_and_conditions_are_refused():
    graph = helper.make_graph(
        [helper.make_node("Gather", ["x", "i"], ["y"], name="g", axis=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("i", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=9)
    with pytest.raises(NnccError, match="input 'i' has element type int64; nncc compiles float32"):
        import_model(model)
    graph = helper.make_graph(
        [helper.make_node("Where", ["c", "x", "x"], ["y"], name="w")], "w",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, [2, 3]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=9)
    with pytest.raises(NnccError, match="input 'c' has element type bool; nncc compiles float32"):
        import_model(model)


def adaptive_avg_pool(x: np.ndarray, out_hw) -> np.ndarray:
    """PyTorch's adaptive_avg_pool2d: window [floor(i*in/out), ceil((i+1)*in/out))."""
    (ih, iw), (oh, ow) = x.shape[-2:], out_hw
    y = np.zeros(x.shape[:-2] + (oh, ow), np.float64)
    for i in range(oh):
        for j in range(ow):
            rows = slice(i * ih // oh, -(-(i + 1) * ih // oh))
            columns = slice(j * iw // ow, -(-(j + 1) * iw // ow))
            y[..., i, j] = x[..., rows, columns].mean(axis=(-2, -1))
    return y


@pytest.mark.parametrize("name, out_hw", [("adaptive_pool_2_to_7", (7, 7)), ("adaptive_pool_1_to_6", (6, 6)),
                                          ("adaptive_pool_5x3_to_3x2", (3, 2))])
def test_the_exporter_form_is_adaptive_average_pooling(name, out_hw):
    """The test models compute what torch's adaptive_avg_pool2d does (onnxruntime on the model,
    its conv output exposed as a second graph output)."""
    import onnxruntime

    model = onnx.ModelProto.FromString(MODELS[name].SerializeToString())
    model.graph.output.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    y, features = session.run(None, {"x": RNG.standard_normal(shape).astype(np.float32)})
    np.testing.assert_allclose(y, adaptive_avg_pool(features, out_hw).reshape(y.shape), rtol=1e-5, atol=1e-6)
