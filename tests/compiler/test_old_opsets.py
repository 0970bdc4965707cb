"""Issue 10, item 5: ops whose meaning changed across opsets, in models of opset 7-12.

nncc upgrades such models to opset 13 (`upgrade_opset`: `rewrite_old_forms`, then onnx's version
converter). Each case is a tiny model at an old opset, compiled with `nncc --check`, which compares
with onnxruntime run on the ORIGINAL model; the refusals are one-line errors naming the node.
Opset-13+ twins of some cases are controls."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nncc.compiler import cli
from nncc.compiler.onnx_import import import_model

X4 = (2, 3, 4, 5)
RNG = np.random.default_rng(7)


def w(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def positive(*shape):
    return np.abs(w(*shape)) + 0.5


def i64(*values):
    return np.array(values, dtype=np.int64)


def model(nodes, inputs, outputs, initializers=(), opset=11):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in initializers])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)
    outputs = onnx.shape_inference.infer_shapes(m).graph.output  # declared output shapes
    m.graph.ClearField("output")
    m.graph.output.extend(outputs)
    return m


def single(op, opset, shape, attrs=None, extra=(), initializers=(), relu=True):
    """x -> [Relu] -> op -> y, op named 'n'."""
    nodes = [helper.make_node("Relu", ["x"], ["r"])] if relu else []
    nodes.append(helper.make_node(op, ["r" if relu else "x", *extra], ["y"], name="n", **(attrs or {})))
    return model(nodes, [("x", shape)], ["y"], initializers, opset)


def folded(op, opset, attrs, constant, x_shape, extra=(), initializers=()):
    """y = x + op(constant): the old-opset op is evaluated at import."""
    nodes = [helper.make_node(op, ["c", *extra], ["f"], name="n", **attrs), helper.make_node("Add", ["x", "f"], ["y"])]
    return model(nodes, [("x", x_shape)], ["y"], [("c", constant), *initializers], opset)


def batch_norm(opset, shape, params, attrs=None):
    names = ["scale", "bias", "mean", "var"]
    arrays = [w(*params), w(*params), w(*params), positive(*params)]
    return single("BatchNormalization", opset, shape, attrs, names, list(zip(names, arrays)))


def pool(op, opset, shape, **attrs):
    return single(op, opset, shape, attrs)


CASES = {
    # Softmax: opset < 13 coerces to 2-D at axis (default 1); opset 13 is over axis (default -1)
    "softmax-7-4d-default": single("Softmax", 7, X4),
    "softmax-9-4d-axis2": single("Softmax", 9, X4, {"axis": 2}),
    "softmax-11-4d-axis0": single("Softmax", 11, X4, {"axis": 0}),
    "softmax-11-4d-axis-2": single("Softmax", 11, X4, {"axis": -2}),
    "softmax-12-4d-last-axis": single("Softmax", 12, X4, {"axis": 3}),
    "softmax-12-2d-axis0": single("Softmax", 12, (3, 5), {"axis": 0}),
    "softmax-9-3d-default": single("Softmax", 9, (2, 3, 4)),
    "softmax-13-4d-axis1": single("Softmax", 13, X4, {"axis": 1}),
    # SqueezeNet's head at opset 9: GlobalAveragePool -> Softmax on N x 1000 x 1 x 1
    "softmax-9-squeezenet-head": model(
        [helper.make_node("Conv", ["x", "W"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("GlobalAveragePool", ["r"], ["g"]), helper.make_node("Softmax", ["g"], ["y"])],
        [("x", (1, 8, 5, 5))], ["y"], [("W", w(100, 8, 1, 1))], opset=9),
    # Softmax/LogSoftmax/Hardmax of constants, folded at import (onnx's converter keeps Hardmax's
    # opset-13 meaning and its reference evaluator has no old one: nncc rewrites them first)
    "hardmax-11-folded-3d": folded("Hardmax", 11, {"axis": 1}, w(2, 3, 4), (2, 3, 4)),
    "hardmax-9-folded-default": folded("Hardmax", 9, {}, w(2, 3, 4), (2, 3, 4)),
    "logsoftmax-11-folded-3d": folded("LogSoftmax", 11, {"axis": 1}, w(2, 3, 4), (2, 3, 4)),
    "softmax-11-folded-3d": folded("Softmax", 11, {"axis": 0}, w(2, 3, 4), (2, 3, 4)),
    # Clip: min/max attributes (<= 10), inputs (>= 11)
    "clip-7-attributes": single("Clip", 7, X4, {"min": -0.2, "max": 0.9}, relu=False),
    "clip-10-min-only": single("Clip", 10, X4, {"min": -0.3}, relu=False),
    "clip-11-max-input-only": single("Clip", 11, X4, {}, ["", "hi"], [("hi", np.float32(0.7))], relu=False),
    # Squeeze/Unsqueeze: axes attribute (<= 12, negative from 11), input (>= 13)
    "squeeze-7-axes": single("Squeeze", 7, (1, 3, 1, 5), {"axes": [0, 2]}),
    "squeeze-11-negative-axes": single("Squeeze", 11, (1, 3, 1, 5), {"axes": [-2]}),
    "squeeze-12-no-axes": single("Squeeze", 12, (1, 3, 1, 5)),
    "unsqueeze-7-axes": single("Unsqueeze", 7, (3, 5), {"axes": [0, 3]}),
    "unsqueeze-11-negative-axes": single("Unsqueeze", 11, (3, 5), {"axes": [-1, 0]}),
    # Dropout: ratio attribute (<= 11), input (>= 12)
    "dropout-7-ratio": single("Dropout", 7, X4, {"ratio": 0.3}),
    "dropout-12-ratio-input": single("Dropout", 12, X4, {}, ["ratio"], [("ratio", np.float32(0.3))]),
    # BatchNormalization: spatial (<= 8; spatial=0: per C x H x W position), no spatial from 9
    "batchnorm-7-spatial1": batch_norm(7, X4, (3,), {"epsilon": 1e-3}),
    "batchnorm-7-spatial0": batch_norm(7, X4, (3, 4, 5), {"spatial": 0}),
    "batchnorm-8-spatial0-2d": batch_norm(8, (4, 3), (3,), {"spatial": 0}),
    "batchnorm-9-3d": batch_norm(9, (2, 3, 7), (3,)),
    # Flatten, Gemm (C required before 11), MatMul
    "flatten-7-axis0": single("Flatten", 7, X4, {"axis": 0}),
    "flatten-11-negative-axis": single("Flatten", 11, X4, {"axis": -1}),
    "gemm-7-row-bias": single("Gemm", 7, (4, 6), {"transB": 1, "alpha": 0.5, "beta": 2.0}, ["W", "C"],
                              [("W", w(5, 6)), ("C", w(5))]),
    "gemm-9-column-bias-transA": single("Gemm", 9, (6, 4), {"transA": 1}, ["W", "C"], [("W", w(6, 5)), ("C", w(4, 1))]),
    "matmul-7-batched": single("MatMul", 7, (2, 4, 6), {}, ["W"], [("W", w(6, 5))]),
    # pooling: count_include_pad (7), ceil_mode and dilations (10), storage_order (8)
    "averagepool-7-count-include-pad": pool("AveragePool", 7, (1, 2, 7, 7), kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                            strides=[2, 2], count_include_pad=1),
    "averagepool-10-ceil-pads": pool("AveragePool", 10, (1, 2, 8, 8), kernel_shape=[3, 3], strides=[2, 2],
                                     pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
    "averagepool-11-same-upper": pool("AveragePool", 11, (1, 2, 7, 7), kernel_shape=[3, 3], strides=[2, 2],
                                      auto_pad="SAME_UPPER"),
    "maxpool-8-storage-order": pool("MaxPool", 8, (1, 2, 7, 7), kernel_shape=[3, 3], storage_order=1),
    "maxpool-10-dilations-ceil": pool("MaxPool", 10, (1, 2, 9, 9), kernel_shape=[2, 2], dilations=[2, 2],
                                      strides=[2, 2], ceil_mode=1),
    "maxpool-7-pads": pool("MaxPool", 7, (1, 2, 7, 7), kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
    # the rest of nncc's ops at opset 7
    "conv-7-group": single("Conv", 7, (1, 4, 6, 6), {"group": 2, "pads": [1, 1, 1, 1]}, ["W", "B"],
                           [("W", w(6, 2, 3, 3)), ("B", w(6))]),
    "concat-reshape-transpose-7": model(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Concat", ["r", "x"], ["c"], axis=1),
         helper.make_node("Reshape", ["c", "s"], ["s2"]), helper.make_node("Transpose", ["s2"], ["y"], perm=[0, 2, 1])],
        [("x", (2, 3, 4))], ["y"], [("s", i64(0, -1, 4))], opset=7),
    "lrn-leakyrelu-hardsigmoid-7": model(
        [helper.make_node("LRN", ["x"], ["l"], size=3, alpha=0.01),
         helper.make_node("LeakyRelu", ["l"], ["k"], alpha=0.2),
         helper.make_node("HardSigmoid", ["k"], ["y"], alpha=0.3, beta=0.4)], [("x", (1, 5, 3, 3))], ["y"], opset=7),
    "sum-8-broadcast": single("Sum", 8, X4, {}, ["c"], [("c", positive(5))]),
    # Split's `split` attribute (<= 12) and Slice's attributes (< 10) on run-time tensors: the
    # version converter moves them to inputs (tests/compiler/test_split_slice.py has the rest)
    "slice-9": single("Slice", 9, (4, 6), {"starts": [1, -3], "ends": [3, 100], "axes": [0, 1]}),
    "split-11-attribute": model([helper.make_node("Split", ["x"], ["f", "g"], axis=1, split=[2, 4]),
                                 helper.make_node("Relu", ["g"], ["y"])], [("x", (4, 6))], ["f", "y"]),
    # old forms of ops nncc has no converter for, evaluated at import
    "split-11-attribute-folded": model(
        [helper.make_node("Split", ["c"], ["f", "g"], axis=1, split=[2, 4]),
         helper.make_node("Add", ["x", "f"], ["y"])],
        [("x", (4, 2))], ["y"], [("c", w(4, 6))], opset=11),
    "slice-9-attributes-folded": folded("Slice", 9, {"starts": [1, 1], "ends": [3, 100], "axes": [0, 1]},
                                        w(4, 6), (2, 5)),
    "pad-10-reflect-folded": folded("Pad", 10, {"pads": [1, 0, 0, 2], "mode": "reflect"}, w(4, 6), (5, 8)),
    "upsample-9-folded": folded("Upsample", 9, {"mode": "nearest"}, w(1, 1, 4, 6), (1, 1, 8, 12), ["sc"],
                                [("sc", np.array([1, 1, 2, 2], np.float32))]),
    "reducesum-11-axes-attribute-folded": folded("ReduceSum", 11, {"axes": [1], "keepdims": 0}, w(4, 6), (4,)),
}

REFUSED = {
    # spatial=0 with per-channel statistics: onnxruntime refuses it too
    "batchnorm-7-spatial0-channel-params": (
        batch_norm(7, X4, (3,), {"spatial": 0}),
        "node 'n' (BatchNormalization): spatial=0 normalises each position of the C x D1 x ... x Dn axes and "
        "needs scale, B, mean and var of shape [3, 4, 5]; got [3], [3], [3], [3]"),
    # Upsample becomes a Resize node of another name at opset 13: named as the user wrote it
    "upsample-9": (
        single("Upsample", 9, (1, 2, 4, 4), {"mode": "nearest"}, ["sc"], [("sc", np.array([1, 1, 2, 2], np.float32))]),
        "node 'n' (Upsample): op Upsample is not supported by nncc (at opset 13 it is Resize"),
    "hardmax-11": (single("Hardmax", 11, X4), "node 'n' (Hardmax): op Hardmax is not supported"),
}


def nncc(path, target, capsys):
    code = cli.main([str(path), f"--target={target}", "--check", "-q"])
    out, err = capsys.readouterr()
    return code, out + err


def save(tmp_path, name, m):
    onnx.checker.check_model(m)
    path = tmp_path / f"{name}.onnx"
    onnx.save(m, path)
    return path


@pytest.mark.parametrize("target", ["reference", "vector"])
@pytest.mark.parametrize("name", CASES)
def test_old_opset_matches_onnxruntime(name, target, tmp_path, capsys):
    code, text = nncc(save(tmp_path, name, CASES[name]), target, capsys)
    assert code == 0 and "check passed" in text, text


@pytest.mark.parametrize("target", ["fusion", "edge"])
@pytest.mark.parametrize("name", ["softmax-7-4d-default", "softmax-11-4d-axis0", "batchnorm-7-spatial0",
                                  "hardmax-11-folded-3d"])
def test_old_opset_other_targets(name, target, tmp_path, capsys):
    code, text = nncc(save(tmp_path, name, CASES[name]), target, capsys)
    assert code == 0 and "check passed" in text, text


@pytest.mark.parametrize("name", REFUSED)
def test_old_form_refused_in_one_line(name, tmp_path, capsys):
    m, message = REFUSED[name]
    code, text = nncc(save(tmp_path, name, m), "reference", capsys)
    assert code == 2, text
    assert text.count("\n") == 1 and text.startswith("nncc: error: ") and message in text, text


def test_old_softmax_keeps_its_node_name():
    """The rewritten Softmax is still the user's node 'n' in onnx_nodes (per-layer report rows)."""
    module, _ = import_model(single("Softmax", 9, X4), "m.onnx")
    text = str(module)
    assert 'nn.softmax' in text and '"n"' in text and '"n/flatten"' in text and '"n/reshape"' in text


def test_rewrite_leaves_the_callers_model_alone():
    m = single("Softmax", 11, X4)
    before = m.SerializeToString()
    import_model(m, "m.onnx")
    assert m.SerializeToString() == before
