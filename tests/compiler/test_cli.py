"""`nncc` end to end on small models: emission, reference runs, checks, reports, errors."""

import json

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import helper

from nncc.compiler.cli import main


def run_nncc(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_emit_nn_prints_static_shapes_and_weight_names(capsys, small_model_path):
    code, out, err = run_nncc(capsys, small_model_path, "--emit=nn")
    assert code == 0, err
    assert 'nn.weight "W" : tensor<8x3x3x3xf32>' in out
    assert "nn.conv2d %x, %W, %B strides [2, 2] pads [1, 1, 1, 1]" in out
    assert "tensor<1x8x5x5xf32>" in out  # the ceil-mode pooling output, inferred
    assert "dense" not in out  # weights are never inlined
    assert "?" not in out  # every shape is static
    # The shape arithmetic (Shape, Gather, Unsqueeze, Concat) folded away at import.
    for folded in ("Gather", "gather", "nn.concat"):
        assert folded not in out


def test_emit_to_file_writes_weights_beside_and_reparses(capsys, small_model_path, tmp_path):
    ir_path = tmp_path / "small.nn.mlir"
    code, _, err = run_nncc(capsys, small_model_path, "--emit=nn", "-o", ir_path)
    assert code == 0, err
    weights = np.load(tmp_path / "small.nn.weights.npz")
    model = onnx.load(small_model_path)
    expected = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for name in ("W", "B", "FW"):
        np.testing.assert_array_equal(weights[name], expected[name])
    assert "zero" not in weights.files  # int shape constants are folded, never weights
    assert 'nn.weights = "small.nn.weights.npz"' in ir_path.read_text()


def test_reference_run_matches_onnxruntime_and_writes_report(capsys, small_model_path, tmp_path):
    inputs = {"x": np.random.default_rng(5).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    np.savez(tmp_path / "in.npz", **inputs)
    report_path = tmp_path / "r.json"
    code, out, err = run_nncc(capsys, small_model_path, "--target=reference", "--run", "--check",
                              "--inputs", tmp_path / "in.npz", "--outputs", tmp_path / "out.npz",
                              "--report", report_path)
    assert code == 0, err
    assert "check passed" in out
    expected = onnxruntime.InferenceSession(str(small_model_path)).run(None, inputs)[0]
    actual = np.load(tmp_path / "out.npz")["y"]
    assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max()
    report = json.loads(report_path.read_text())
    assert report["target"] == "reference" and report["mode"] == "inference"
    assert report["check"]["passed"] is True
    assert report["check"]["max_abs_err"] <= 1e-4 * np.abs(expected).max()
    rows = {row["onnx_nodes"][0]: row for row in report["layers"]}
    assert rows["conv1"]["macs"] == 8 * 8 * 8 * 3 * 3 * 3  # 8 channels x 8x8 outputs x 27 taps
    assert rows["fc"]["macs"] == 10 * 200
    assert report["macs"] == 8 * 8 * 8 * 27 + 10 * 200
    assert all(row["phase"] == "forward" for row in report["layers"])


def test_seeded_inputs_are_reproducible(capsys, small_model_path, tmp_path):
    for name in ("a", "b"):
        assert run_nncc(capsys, small_model_path, "--target=reference", "--seed", 3,
                        "--outputs", tmp_path / f"{name}.npz")[0] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npz")["y"], np.load(tmp_path / "b.npz")["y"])


def test_print_ir_after_all_and_before(capsys, small_model_path):
    code, out, err = run_nncc(capsys, small_model_path, "--emit=fused", "--print-ir-after-all",
                              "--print-ir-before=canonicalize-nn")
    assert code == 0
    assert "// -----// IR Dump After import-onnx //----- //" in err
    assert "// -----// IR Dump Before canonicalize-nn //----- //" in err
    assert "// -----// IR Dump After canonicalize-nn //----- //" in err
    assert err.index("Before canonicalize-nn") < err.index("After canonicalize-nn")
    assert out.startswith("builtin.module")


MISMATCH_PLUGIN = '''
from dataclasses import dataclass
from xdsl.dialects import func
from xdsl.passes import ModulePass
from nncc.dialects import nn

@dataclass(frozen=True)
class ReluOnOutputs(ModulePass):
    """A deliberately wrong pass: it clips the outputs at zero; the check must catch it."""
    name = "relu-on-outputs"

    def apply(self, ctx, module):
        returned = [op for op in module.walk() if isinstance(op, func.ReturnOp)][0]
        for index, value in enumerate(returned.operands):
            relu = nn.ReluOp(value)
            returned.parent_block().insert_op_before(relu, returned)
            returned.operands[index] = relu.result
'''


def test_mismatch_exits_1_with_per_output_summary(capsys, small_model_path, tmp_path):
    plugin = tmp_path / "wrong_pass.py"
    plugin.write_text(MISMATCH_PLUGIN)
    code, out, err = run_nncc(capsys, small_model_path, "--target=reference", "--check",
                              "--pass-plugin", plugin, "--add-passes", "relu-on-outputs",
                              "--report", tmp_path / "r.json")
    assert code == 1
    assert "CHECK FAILED" in out
    assert "y: MISMATCH" in err
    assert json.loads((tmp_path / "r.json").read_text())["check"]["passed"] is False


def test_disable_pass_unknown_is_an_error(capsys, small_model_path):
    code, _, err = run_nncc(capsys, small_model_path, "--emit=fused", "--disable-pass=no-such-pass")
    assert code == 2
    assert err.strip() == "nncc: error: --disable-pass: unknown pass no-such-pass"


def test_disable_pass_keeps_the_ir_unchanged(capsys, small_model_path):
    _, imported, _ = run_nncc(capsys, small_model_path, "--emit=nn")
    _, fused, _ = run_nncc(capsys, small_model_path, "--emit=fused", "--disable-pass=canonicalize-nn",
                           "--disable-pass=fold-batch-norm", "--disable-pass=fuse-epilogues")
    assert imported.replace('nn.stage = "nn"', "") == fused.replace('nn.stage = "fused"', "")  # the stage it is at


def test_emit_isa_needs_a_target_and_says_so(capsys, small_model_path):
    code, _, err = run_nncc(capsys, small_model_path, "--emit=isa", "--target=reference")
    assert code == 2 and "reference" in err
    assert len(err.strip().splitlines()) == 1


def test_inputs_file_with_wrong_shape(capsys, small_model_path, tmp_path):
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 3, 8, 8), np.float32))
    code, _, err = run_nncc(capsys, small_model_path, "--target=reference", "--run",
                            "--inputs", tmp_path / "in.npz")
    assert code == 2
    assert "input 'x' has shape [1, 3, 8, 8], the model expects [1, 3, 16, 16]" in err


def test_does_not_overwrite_the_model(capsys, small_model_path):
    before = small_model_path.read_bytes()
    code, _, err = run_nncc(capsys, small_model_path, "--emit=nn", "-o", small_model_path)
    assert code == 2 and "refusing to overwrite" in err
    assert small_model_path.read_bytes() == before


# ----------------------------------------------------------------------------- bad input


def bad_models(make_model):
    """(label, model builder, expected fragments of the one-line error)."""
    relu = helper.make_node("Relu", ["x"], ["y"], name="r")
    return {
        "unsupported op": (
            make_model([helper.make_node("Einsum", ["x", "x"], ["y"], name="mix", equation="ij,ij->ij")],
                       [("x", [2, 2])], [("y", [2, 2])]),
            ["node 'mix' (Einsum)", "op Einsum is not supported"]),
        "unsupported attribute": (
            make_model([helper.make_node("BatchNormalization", ["x", "s", "s", "s", "s"], ["y"], name="bn",
                                         training_mode=1)],
                       [("x", [1, 2, 4, 4])], [("y", [1, 2, 4, 4])], [("s", np.ones(2, np.float32))]),
            ["node 'bn' (BatchNormalization)", "training_mode=1 is not supported"]),
        "inconsistent shapes": (
            make_model([helper.make_node("Add", ["x", "z"], ["y"], name="add")],
                       [("x", [2, 3]), ("z", [4, 3])], [("y", [2, 3])]),
            ["node 'add' (Add)", "do not broadcast"]),
        "declared output shape differs": (
            make_model([relu], [("x", [2, 3])], [("y", [2, 4])]),
            ["graph output 'y'", "declared with size 4 on axis 1"]),
        "too large": (
            make_model([relu], [("x", [65536, 65536])], [("y", [65536, 65536])]),
            ["input 'x'", "too large to represent"]),
    }


@pytest.mark.parametrize("label", ["unsupported op", "unsupported attribute", "inconsistent shapes",
                                   "declared output shape differs", "too large"])
def test_bad_models_give_one_line_errors(capsys, make_model, write_model, label):
    model, fragments = bad_models(make_model)[label]
    path = write_model(model)
    code, out, err = run_nncc(capsys, path, "--emit=nn")
    assert code == 2
    assert err.startswith(f"nncc: error: {path.name}: ")
    assert len(err.strip().splitlines()) == 1
    for fragment in fragments:
        assert fragment in err


def test_dynamic_dimension_is_named(capsys, write_model):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 3])])
    path = write_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9))
    code, _, err = run_nncc(capsys, path, "--emit=nn")
    assert code == 2
    assert "input 'x' has a dynamic dimension 'batch' (axis 0)" in err and "--input-shape x=" in err


def dynamic_batch_conv(write_model):
    """Conv + ReLU with a dynamic batch, as torch.onnx.export(dynamic_axes=...) writes them."""
    rng = np.random.default_rng(3)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 4, 8, 8])],
        [onnx.numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")])
    return write_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9))


@pytest.mark.parametrize("shape", ["x=2x3x8x8", "2x3x8x8"])
@pytest.mark.parametrize("target", ["reference", "vector"])
def test_input_shape_fixes_a_dynamic_batch(capsys, write_model, tmp_path, shape, target):
    path = dynamic_batch_conv(write_model)
    report = tmp_path / "r.json"
    program = () if target == "reference" else ("--program", tmp_path / "p")
    code, out, err = run_nncc(capsys, path, f"--target={target}", "--input-shape", shape, "--check",
                              "--report", report, *program)
    assert code == 0, err
    assert json.loads(report.read_text())["check"]["passed"]
    code, out, _ = run_nncc(capsys, path, "--emit=nn", "--input-shape", shape)
    assert "tensor<2x3x8x8xf32>" in out and "tensor<2x4x8x8xf32>" in out


@pytest.mark.parametrize("shape, fragment", [
    ("y=2x3x8x8", "the model has no input 'y' (inputs: x)"),
    ("x=2x4x8x8", "input 'x' has size 3 on axis 1, not 4"),
    ("x=2x3x8", "input 'x' has rank 4, not 3"),
    ("x=2x3xAx8", "expected NAME=D0xD1x..."),
    ("x=0x3x8x8", "expected NAME=D0xD1x..."),
])
def test_input_shape_errors(capsys, write_model, shape, fragment):
    code, _, err = run_nncc(capsys, dynamic_batch_conv(write_model), "--emit=nn", "--input-shape", shape)
    assert code == 2
    assert fragment in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("content, fragment", [
    (None, "no such file"),
    (b"", "the file is empty"),
    (b"this is not a model at all \x00\x01\x02", "not"),
    ("truncated", "not"),
])
def test_unreadable_files(capsys, tmp_path, small_model_path, content, fragment):
    path = tmp_path / "broken.onnx"
    if content == "truncated":
        path.write_bytes(small_model_path.read_bytes()[:300])
    elif content is not None:
        path.write_bytes(content)
    code, _, err = run_nncc(capsys, path, "--emit=nn")
    assert code == 2
    assert err.startswith(f"nncc: error: {path}") and fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_no_traceback_from_the_installed_command(small_model_path, tmp_path):
    import subprocess
    import sys

    missing = tmp_path / "missing.onnx"
    result = subprocess.run([sys.executable, "-m", "nncc.compiler.cli", str(missing)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == f"nncc: error: {missing}: no such file\n"
