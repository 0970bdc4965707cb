"""Importer behaviour beyond single ops: old opsets, PyTorch-style exports, constant folding."""

import multiprocessing

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from nncc.compiler.nn_interpreter import run_reference
from nncc.compiler import onnx_import
from nncc.compiler.onnx_import import CheckerProcess, OnnxImportError, import_model, load_onnx
from nncc.dialects import nn


def run_both(model: onnx.ModelProto, inputs: dict[str, np.ndarray]):
    module, store = import_model(model, "m.onnx")
    module.verify()
    ours, _ = run_reference(module, inputs, store)
    session = onnxruntime.InferenceSession(model.SerializeToString())
    names = [o.name for o in session.get_outputs()]
    return module, ours, dict(zip(names, session.run(names, inputs)))


def assert_close(ours, theirs):
    for name, expected in theirs.items():
        assert ours[name].shape == expected.shape
        assert np.abs(ours[name] - expected).max() <= 1e-4 * max(np.abs(expected).max(), 1e-30)


def test_opset_9_model_is_upgraded(make_model):
    """Opset 9: Unsqueeze axes and Clip bounds are attributes, Softmax flattens to 2-D."""
    nodes = [
        helper.make_node("Clip", ["x"], ["c"], name="clip", min=-0.5, max=0.5),
        helper.make_node("Unsqueeze", ["c"], ["u"], name="unsq", axes=[0]),
        helper.make_node("Softmax", ["u"], ["y"], name="softmax", axis=2),
    ]
    model = make_model(nodes, [("x", [2, 3, 4])], [("y", [1, 2, 3, 4])], opset=9)
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    module, ours, theirs = run_both(model, {"x": x})
    assert_close(ours, theirs)


def test_pytorch_style_export(make_model):
    """Initializers also listed as graph inputs, Constant and Identity nodes, shape arithmetic."""
    rng = np.random.default_rng(1)
    w, b = rng.standard_normal((4, 6)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["two"], name="const",
                         value=numpy_helper.from_array(np.array(2.0, np.float32))),
        helper.make_node("Identity", ["w"], ["w_id"], name="id"),
        helper.make_node("Mul", ["x", "two"], ["x2"], name="mul"),
        helper.make_node("Shape", ["x2"], ["s"], name="shape"),
        helper.make_node("Slice", ["s", "start", "end"], ["batch"], name="slice"),
        helper.make_node("Concat", ["batch", "minus1"], ["new_shape"], name="cat", axis=0),
        helper.make_node("Reshape", ["x2", "new_shape"], ["flat"], name="reshape"),
        helper.make_node("Gemm", ["flat", "w_id", "b"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "torch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2, 3]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 6]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
        [numpy_helper.from_array(a, n) for n, a in [
            ("w", w), ("b", b), ("start", np.array([0])), ("end", np.array([1])),
            ("minus1", np.array([-1]))]])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    x = rng.standard_normal((3, 2, 3)).astype(np.float32)
    module, ours, theirs = run_both(model, {"x": x})
    assert_close(ours, theirs)
    ops = [op.name for op in module.walk() if op.name.startswith("nn.")]
    # Only x is an input; the shape arithmetic folded; the scalar 2.0 became a weight.
    assert ops.count("nn.weight") == 3
    assert sorted(set(ops) - {"nn.weight"}) == ["nn.gemm", "nn.mul", "nn.reshape"]


def test_auto_pad_same_upper_and_lower(make_model):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((3, 2, 4, 3)).astype(np.float32)
    for mode in ("SAME_UPPER", "SAME_LOWER"):
        node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", auto_pad=mode, strides=[2, 1])
        model = make_model([node], [("x", [1, 2, 7, 5])], [("y", [1, 3, 4, 5])], [("w", w)])
        x = rng.standard_normal((1, 2, 7, 5)).astype(np.float32)
        module, ours, theirs = run_both(model, {"x": x})
        assert_close(ours, theirs)


def test_constant_subexpression_is_folded_into_one_weight(make_model):
    """transpose(w) * 3 on constants becomes a single weight, computed at import."""
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    nodes = [
        helper.make_node("Transpose", ["w"], ["wt"], name="t"),
        helper.make_node("Mul", ["wt", "three"], ["w3"], name="scale"),
        helper.make_node("MatMul", ["x", "w3"], ["y"], name="mm"),
    ]
    model = make_model(nodes, [("x", [4, 3])], [("y", [4, 2])],
                       [("w", w), ("three", np.array(3.0, np.float32))])
    module, store = import_model(model, "m.onnx")
    weights = [op for op in module.walk() if isinstance(op, nn.WeightOp)]
    assert len(weights) == 1
    np.testing.assert_array_equal(store[weights[0].ref.data], w.T * 3)


def test_value_names_ending_in_a_number_stay_distinct(make_model):
    """xDSL drops a trailing `_<digits>` from name hints: `features_0` and `features_2` would both
    print as `%features` (and name the same layer in reports)."""
    nodes = [helper.make_node("Relu", ["x"], ["features.0"], name="relu0"),
             helper.make_node("Relu", ["features.0"], ["features_2"], name="relu2")]
    model = make_model(nodes, [("x", [1, 4])], [("features_2", [1, 4])])
    module, _ = import_model(model)
    names = [op.results[0].name_hint for op in module.walk() if op.name == "nn.relu"]
    assert names == ["features.0", "features.2"]
    assert "%features.0 = " in str(module) and "%features.2 = " in str(module)


def checked_models(tmp_path):
    """A valid model, and one the ONNX checker refuses (a node reads a value nothing defines)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "w")
    good = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w])
    bad = helper.make_graph([helper.make_node("MatMul", ["x", "nowhere"], ["y"])], "g", [x], [y], [w])
    paths = []
    for name, graph in (("good", good), ("bad", bad)):
        path = tmp_path / f"{name}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
        paths.append(path)
    return paths


def test_a_large_file_is_checked_on_another_process_with_the_same_verdict(tmp_path, monkeypatch):
    good, bad = checked_models(tmp_path)
    (tmp_path / "garbage.onnx").write_bytes(b"\xff" * 64)
    verdicts = {}
    for min_bytes in (1 << 40, 0):  # checked here, then every file checked on a forked process
        monkeypatch.setattr(CheckerProcess, "MIN_BYTES", min_bytes)
        started = []
        monkeypatch.setattr(onnx_import.CheckerProcess, "__init__", recording(CheckerProcess.__init__, started))
        loaded = load_onnx(good)
        messages = []
        for path in (bad, tmp_path / "garbage.onnx"):
            with pytest.raises(OnnxImportError) as error:
                load_onnx(path)
            messages.append(str(error.value))
        verdicts[min_bytes] = (loaded.SerializeToString(), messages)
        assert len(started) == (3 if min_bytes == 0 else 0)
        assert multiprocessing.active_children() == []  # each checker joined or ended
    assert verdicts[0] == verdicts[1 << 40]
    assert "invalid ONNX model" in verdicts[0][1][0] and "nowhere" in verdicts[0][1][0]
    assert "not a readable ONNX model" in verdicts[0][1][1]


def recording(init, started):
    def wrapped(self, path):
        started.append(path)
        init(self, path)
    return wrapped
