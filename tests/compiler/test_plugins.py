"""Users' passes: loaded by --pass-plugin (file or module) and through the xdsl.universe entry point."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from nncc.compiler import opt
from nncc.compiler.cli import main as nncc_main

EXAMPLE = Path(__file__).parents[2] / "examples" / "plugins" / "fold_relu_chains.py"

RELU_CHAIN_IR = """
builtin.module {
  func.func @main(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %a = nn.relu %x : tensor<2x3xf32>
    %b = nn.relu %a : tensor<2x3xf32>
    %c = nn.clip %b min 0.0 max 6.0 : tensor<2x3xf32>
    %d = nn.relu %c : tensor<2x3xf32>
    func.return %d : tensor<2x3xf32>
  }
}
"""


def run_opt(capsys, *argv):
    code = opt.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def relu_chain(tmp_path):
    path = tmp_path / "chain.mlir"
    path.write_text(RELU_CHAIN_IR)
    return path


def assert_folded(ir: str) -> None:
    assert ir.count("nn.relu") == 1
    assert "nn.clip %a min" in ir
    assert "func.return %c" in ir


def test_pass_plugin_file(capsys, relu_chain):
    code, out, err = run_opt(capsys, relu_chain, "--pass-plugin", EXAMPLE, "-p", "fold-relu-chains")
    assert code == 0, err
    assert_folded(out)


def test_pass_plugin_module(capsys, relu_chain, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    code, out, err = run_opt(capsys, relu_chain, "--pass-plugin", "fold_relu_chains", "-p", "fold-relu-chains")
    assert code == 0, err
    assert_folded(out)


def test_pass_plugin_that_does_not_exist(capsys, relu_chain, tmp_path):
    code, _, err = run_opt(capsys, relu_chain, "--pass-plugin", tmp_path / "nope.py", "-p", "x")
    assert code == 2 and "nope.py: no such file" in err
    code, _, err = run_opt(capsys, relu_chain, "--pass-plugin", "no_such_module_xyz", "-p", "x")
    assert code == 2 and "No module named 'no_such_module_xyz'" in err


def test_xdsl_universe_entry_point(tmp_path, relu_chain):
    """An installed package publishing a Universe is seen without any flag."""
    package = tmp_path / "site" / "relu_plugin"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(EXAMPLE.read_text())
    dist = tmp_path / "site" / "relu_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: relu-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[xdsl.universe]\nrelu_plugin = relu_plugin:UNIVERSE\n")
    env = {"PYTHONPATH": str(tmp_path / "site"), "PATH": str(Path(sys.executable).parent)}
    command = [sys.executable, "-m", "nncc.compiler.opt", str(relu_chain), "-p", "fold-relu-chains"]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert_folded(result.stdout)


def test_plugin_pass_inside_the_nncc_pipeline_keeps_outputs_right(capsys, make_model, write_model, tmp_path):
    model = make_model(
        [helper.make_node("Relu", ["x"], ["a"], name="r1"), helper.make_node("Relu", ["a"], ["y"], name="r2")],
        [("x", [4, 5])], [("y", [4, 5])])
    path = write_model(model)
    argv = [str(path), "--target=reference", "--check", "--pass-plugin", str(EXAMPLE),
            "--add-passes", "fold-relu-chains", "--print-ir-after=fold-relu-chains"]
    assert nncc_main(argv) == 0
    out, err = capsys.readouterr()
    dump = err.split("IR Dump After fold-relu-chains")[1]
    assert dump.count("nn.relu") == 1
    assert "check passed" in out
