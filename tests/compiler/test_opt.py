"""nncc-opt: parsing, verification, pipelines, IR printing, weights beside the IR."""

import numpy as np
import pytest

from nncc.compiler import opt
from nncc.compiler.cli import main as nncc_main


def run_opt(capsys, *argv):
    code = opt.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def model_ir(capsys, small_model_path, tmp_path):
    path = tmp_path / "small.nn.mlir"
    assert nncc_main([str(small_model_path), "--emit=nn", "-o", str(path)]) == 0
    capsys.readouterr()
    return path


def test_output_parses_again_to_the_same_ir(capsys, model_ir, tmp_path):
    code, first, err = run_opt(capsys, model_ir)
    assert code == 0, err
    again = tmp_path / "again.mlir"
    again.write_text(first)
    code, second, _ = run_opt(capsys, again)
    assert code == 0 and first == second


def test_pipeline_with_upstream_and_nncc_passes(capsys, model_ir):
    code, out, err = run_opt(capsys, model_ir, "-p", "canonicalize-nn,cse,dce", "--print-ir-after-all")
    assert code == 0, err
    for name in ("canonicalize-nn", "cse", "dce"):
        assert f"// -----// IR Dump After {name} //----- //" in err
    assert "nn.conv2d" in out


def test_written_output_keeps_its_weights(capsys, model_ir, tmp_path):
    out_path = tmp_path / "out" / "copy.mlir"
    out_path.parent.mkdir()
    code, _, err = run_opt(capsys, model_ir, "-p", "canonicalize-nn", "-o", out_path)
    assert code == 0, err
    copied = np.load(out_path.parent / "copy.weights.npz")
    original = np.load(model_ir.parent / "small.nn.weights.npz")
    assert sorted(copied.files) == sorted(original.files)
    np.testing.assert_array_equal(copied["W"], original["W"])
    # The copy runs on its own: same outputs from the reference interpreter.
    from xdsl.parser import Parser

    from nncc.compiler.nn_interpreter import run_reference
    from nncc.compiler.registry import Registry
    from nncc.compiler.weights import open_beside

    x = {"x": np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    results = []
    for path in (model_ir, out_path):
        module = Parser(Registry.default().context(), path.read_text()).parse_module()
        open_beside(module, path.parent)
        results.append(run_reference(module, x)[0]["y"])
    np.testing.assert_array_equal(results[0], results[1])


def test_writing_over_the_input_is_refused_and_keeps_ir_and_weights(capsys, model_ir):
    weights = model_ir.parent / "small.nn.weights.npz"
    before = model_ir.read_bytes(), weights.read_bytes()
    code, _, err = run_opt(capsys, model_ir, "-p", "canonicalize-nn", "-o", model_ir)
    assert code == 2 and f"-o {model_ir}: is the input IR ({model_ir})" in err
    assert (model_ir.read_bytes(), weights.read_bytes()) == before


@pytest.mark.parametrize("ir, fragment", [
    ("builtin.module {\n  %x = nn.relu\n}", "input.mlir:3:1: operand expected"),
    ("builtin.module { func.func @f(%x: tensor<2xf32>) -> tensor<3xf32> {\n"
     "  %y = nn.relu %x : tensor<3xf32>\n  func.return %y : tensor<3xf32> } }", "input.mlir:2:"),
    ("builtin.module { func.func @f(%x: tensor<1x3x8x8xf32>, %w: tensor<4x3x3x3xf32>) -> tensor<1x4x7x7xf32> {\n"
     "  %y = nn.conv2d %x, %w strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 "
     ": (tensor<1x3x8x8xf32>, tensor<4x3x3x3xf32>) -> tensor<1x4x7x7xf32>\n"
     "  func.return %y : tensor<1x4x7x7xf32> } }",
     "nn.conv2d: result shape [1, 4, 7, 7] does not match the expected [1, 4, 6, 6]"),
    ("builtin.module { func.func @f(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {\n"
     "  %y = nn.relu %x : tensor<2x3xf64>\n  func.return %x : tensor<2x3xf32> } }", "input.mlir:2:"),
])
def test_bad_ir_is_one_line_error(capsys, tmp_path, ir, fragment):
    path = tmp_path / "input.mlir"
    path.write_text(ir)
    code, out, err = run_opt(capsys, path)
    assert code == 2
    assert err.startswith("nncc-opt: error: ") and fragment in err
    assert len(err.strip().splitlines()) == 1 and out == ""


def test_unknown_pass_and_bad_options(capsys, model_ir):
    code, _, err = run_opt(capsys, model_ir, "-p", "no-such-pass")
    assert code == 2 and "unknown pass 'no-such-pass'" in err
    code, _, err = run_opt(capsys, model_ir, "-p", "canonicalize-nn{bogus=1}")
    assert code == 2 and "canonicalize-nn" in err


def test_missing_weight_file_is_reported_when_needed(capsys, model_ir, tmp_path):
    (model_ir.parent / "small.nn.weights.npz").unlink()
    code, out, err = run_opt(capsys, model_ir, "-p", "canonicalize-nn")
    assert code == 0  # no pass needed the values
    code, _, err = run_opt(capsys, model_ir, "-o", tmp_path / "elsewhere.mlir")
    assert code == 2 and "small.nn.weights.npz: weight file not found" in err


def test_list_passes(capsys):
    code, out, _ = run_opt(capsys, "--list-passes")
    names = out.split()
    assert code == 0 and "canonicalize-nn" in names and "cse" in names
