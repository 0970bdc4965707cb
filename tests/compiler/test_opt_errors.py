"""Bad pipelines, failing passes and unknown pass names: one stderr line naming them, exit 2,
in nncc-opt and in nncc (`--add-passes`, `--print-ir-*`); `nncc-opt --list-passes`."""

import pytest
from onnx import helper

from nncc.compiler import opt
from nncc.compiler.cli import main as nncc_main

RELU_IR = """
builtin.module {
  func.func @main(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %a = nn.relu %x : tensor<2x3xf32>
    func.return %a : tensor<2x3xf32>
  }
}
"""

# A user's plugin whose passes fail in every way a pass can.
PLUGIN = '''
from dataclasses import dataclass

from xdsl.dialects.builtin import Float64Type, TensorType
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import PassFailedException

from nncc.dialects import nn


@dataclass(frozen=True)
class Explode(ModulePass):
    """Raise the exception named by `error`."""

    name = "explode"
    error: str = "ValueError"

    def apply(self, ctx, op):
        if self.error == "ZeroDivisionError":
            return 1 / 0
        if self.error == "KeyError":
            return {}["conv1"]
        if self.error == "AssertionError":
            assert op is None
        raise {"ValueError": ValueError("threshold must be positive"),
               "PassFailedException": PassFailedException("cannot fold conv1: no weights"),
               "MemoryError": MemoryError(),
               "KeyboardInterrupt": KeyboardInterrupt(),
               "SystemExit": SystemExit(7)}[self.error]


@dataclass(frozen=True)
class BreakTypes(ModulePass):
    """Give every ReLU a float64 result: the IR no longer verifies."""

    name = "break-types"

    def apply(self, ctx, op):
        for relu in list(op.walk()):
            if isinstance(relu, nn.ReluOp):
                shape = relu.results[0].type.get_shape()
                bad = nn.ReluOp.create(operands=[relu.input], result_types=[TensorType(Float64Type(), shape)])
                relu.parent.insert_op_before(bad, relu)
                relu.results[0].replace_all_uses_with(bad.results[0])
                relu.detach()
'''

BAD_PIPELINES = [  # (pipeline, what the error must name)
    ("canonicalize-nn{", "bad pass pipeline 'canonicalize-nn{': column 17: expected argument name"),
    (",,", "bad pass pipeline ',,': column 1: expected pass name"),
    ("cse}", "bad pass pipeline 'cse}'"),
    ("no-such-pass", "unknown pass 'no-such-pass'"),
    ("tile-layer", "unknown pass 'tile-layer'; did you mean 'tile-layers'?"),
    ("tile-layers{bogus=1}", "pass 'tile-layers': bad options in 'tile-layers{bogus=1}'"),
    ("tile-layers{buffers=x}", "pass 'tile-layers': bad options in 'tile-layers{buffers=\"x\"}'"),
]

FAILING_PASSES = [  # (pipeline, what the error must say after "pass NAME failed: ")
    ("explode", "ValueError: threshold must be positive (raised at plugin.py:"),
    ("explode{error=KeyError}", "KeyError: 'conv1' (raised at plugin.py:"),
    ("explode{error=ZeroDivisionError}", "ZeroDivisionError: division by zero (raised at plugin.py:"),
    ("explode{error=AssertionError}", "AssertionError (raised at plugin.py:"),
    ("explode{error=PassFailedException}", "cannot fold conv1: no weights"),
    ("explode{error=MemoryError}", "out of memory (MemoryError)"),
    ("transform-interpreter", "could not find a nested named sequence with name: __transform_main"),
    ("mlir-opt", "mlir-opt is not available"),  # xDSL's pass that shells out to mlir-opt
    ('apply-pdl{pdl_file="no-such.pdl.mlir"}', "AssertionError (raised at apply_pdl.py:"),
]


def one_error_line(capsys, main, argv, tool: str) -> str:
    """Run `main(argv)`; it must fail with exit 2 and one `tool: error: ...` line; returns it."""
    code = main([str(a) for a in argv])
    _, err = capsys.readouterr()
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{tool}: error: ")
    return lines[0]


@pytest.fixture
def relu_ir(tmp_path):
    path = tmp_path / "relu.mlir"
    path.write_text(RELU_IR)
    return path


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "plugin.py"
    path.write_text(PLUGIN)
    return path


@pytest.fixture
def relu_model(make_model, write_model):
    return write_model(make_model([helper.make_node("Relu", ["x"], ["y"], name="relu1")],
                                  [("x", [2, 3])], [("y", [2, 3])]))


def nncc_reference(model, *argv):
    return [model, "--target=reference", *argv]


@pytest.mark.parametrize("pipeline, fragment", BAD_PIPELINES)
def test_bad_pipeline_in_nncc_opt(capsys, relu_ir, pipeline, fragment):
    line = one_error_line(capsys, opt.main, [relu_ir, "-p", pipeline], "nncc-opt")
    assert fragment in line


@pytest.mark.parametrize("pipeline, fragment", BAD_PIPELINES)
def test_bad_pipeline_in_nncc_add_passes(capsys, relu_model, pipeline, fragment):
    line = one_error_line(capsys, nncc_main, nncc_reference(relu_model, "--add-passes", pipeline), "nncc")
    assert line.startswith("nncc: error: --add-passes: ") and fragment in line


def test_bad_add_passes_fail_before_the_import(capsys, tmp_path):
    """The pipeline is checked first: a missing model is not what the user hears about."""
    line = one_error_line(capsys, nncc_main, nncc_reference(tmp_path / "missing.onnx", "--add-passes", ",,"),
                          "nncc")
    assert "--add-passes: bad pass pipeline ',,'" in line


@pytest.mark.parametrize("pipeline, reason", FAILING_PASSES)
def test_failing_pass_in_nncc_opt(capsys, relu_ir, plugin, pipeline, reason):
    line = one_error_line(capsys, opt.main, [relu_ir, "--pass-plugin", plugin, "-p", pipeline], "nncc-opt")
    name = pipeline.split("{")[0]
    assert f"nncc-opt: error: pass {name} failed: " in line and reason in line


@pytest.mark.parametrize("pipeline, reason", [case for case in FAILING_PASSES if "explode" in case[0]])
def test_failing_plugin_pass_in_nncc(capsys, relu_model, plugin, pipeline, reason):
    argv = nncc_reference(relu_model, "--pass-plugin", plugin, "--add-passes", pipeline)
    line = one_error_line(capsys, nncc_main, argv, "nncc")
    assert "nncc: error: pass explode failed: " in line and reason in line


def test_pass_that_breaks_the_ir_is_named(capsys, relu_ir, relu_model, plugin):
    line = one_error_line(capsys, opt.main, [relu_ir, "--pass-plugin", plugin, "-p", "break-types"], "nncc-opt")
    assert "IR verification failed after pass break-types" in line
    argv = nncc_reference(relu_model, "--pass-plugin", plugin, "--add-passes", "break-types")
    line = one_error_line(capsys, nncc_main, argv, "nncc")
    assert "IR verification failed after pass break-types" in line


def test_our_own_pass_errors_keep_their_message(capsys, relu_ir):
    """nncc's passes raise NnccError naming what is wrong; it is printed unchanged."""
    line = one_error_line(capsys, opt.main, [relu_ir, "-p", "tile-layers"], "nncc-opt")
    assert line == ("nncc-opt: error: tile-layers needs weight values, but the module names no weight file "
                    "(attribute nn.weights)")


def test_interrupts_and_exits_are_not_pass_errors(capsys, relu_ir, plugin):
    code = opt.main([str(relu_ir), "--pass-plugin", str(plugin), "-p", "explode{error=KeyboardInterrupt}"])
    assert code == 130 and capsys.readouterr().err == "nncc-opt: interrupted\n"
    with pytest.raises(SystemExit) as exit_info:
        opt.main([str(relu_ir), "--pass-plugin", str(plugin), "-p", "explode{error=SystemExit}"])
    assert exit_info.value.code == 7


def test_a_very_long_reason_is_shortened(capsys, tmp_path, plugin):
    """transform-interpreter puts the whole module in its message; the line stays readable."""
    big = tmp_path / "big.mlir"
    relus = "".join(f"    %a{i} = nn.relu %x : tensor<2x3xf32>\n" for i in range(200))
    big.write_text(RELU_IR.replace("    func.return", relus + "    func.return"))
    line = one_error_line(capsys, opt.main, [big, "-p", "transform-interpreter"], "nncc-opt")
    assert len(line) < 600 and line.endswith("could not find a nested named sequence with name: __transform_main")


@pytest.mark.parametrize("flag", ["--print-ir-after", "--print-ir-before", "--disable-pass"])
def test_unknown_pass_names_of_flags(capsys, relu_ir, relu_model, flag):
    line = one_error_line(capsys, opt.main, [relu_ir, f"{flag}=cannonicalize-nn"], "nncc-opt")
    assert line == f"nncc-opt: error: {flag}: unknown pass cannonicalize-nn; did you mean 'canonicalize-nn'?"
    line = one_error_line(capsys, nncc_main, nncc_reference(relu_model, f"{flag}=no-such-pass"), "nncc")
    assert line == f"nncc: error: {flag}: unknown pass no-such-pass"


def test_printing_names_valid_only_in_nncc(capsys, relu_ir, relu_model):
    """`import-onnx` is a pass of nncc's pipeline, not one nncc-opt can run."""
    assert nncc_main([str(relu_model), "--target=reference", "--print-ir-after=import-onnx"]) == 0
    assert "// -----// IR Dump After import-onnx //----- //" in capsys.readouterr().err
    line = one_error_line(capsys, opt.main, [relu_ir, "--print-ir-after=import-onnx"], "nncc-opt")
    assert "--print-ir-after: unknown pass import-onnx" in line


def test_nncc_opt_honours_disable_and_add_passes(capsys, relu_ir, plugin):
    code = opt.main([str(relu_ir), "--pass-plugin", str(plugin), "-p", "explode,cse",
                     "--disable-pass=explode", "--add-passes=dce", "--print-ir-after-all"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "After explode" not in err and "After cse" in err and "After dce" in err


def test_list_passes_nncc_first_with_summaries_then_xdsl(capsys, plugin):
    assert opt.main(["--list-passes", "--pass-plugin", str(plugin)]) == 0
    out = capsys.readouterr().out
    nncc, plugins, xdsl = out.split("\n\n")
    assert nncc.splitlines()[0] == "nncc passes:"
    assert nncc.splitlines()[1].split(None, 1) == ["canonicalize-nn",
                                                   "Simplify `nn` IR without changing what it computes."]
    assert plugins.splitlines() == ["plugin passes:",
                                    "  break-types  Give every ReLU a float64 result: the IR no longer verifies.",
                                    "  explode      Raise the exception named by `error`."]
    assert xdsl.splitlines()[0] == "xDSL passes:"
    names = [line.strip() for line in xdsl.splitlines()[1:]]
    assert "cse" in names and names == sorted(names) and "canonicalize-nn" not in names


def test_pass_that_cannot_be_imported(capsys, relu_ir, tmp_path):
    plugin = tmp_path / "lazy.py"
    plugin.write_text("from xdsl.universe import Universe\n"
                      "UNIVERSE = Universe(all_passes={'needs-jax': lambda: __import__('no_such_jax')})\n")
    line = one_error_line(capsys, opt.main, [relu_ir, "--pass-plugin", plugin, "-p", "needs-jax"], "nncc-opt")
    assert line.endswith("pass 'needs-jax': cannot load it: ModuleNotFoundError: No module named 'no_such_jax'")
    assert opt.main(["--list-passes", "--pass-plugin", str(plugin)]) == 0
    assert "  needs-jax  (pass 'needs-jax': cannot load it: " in capsys.readouterr().out
