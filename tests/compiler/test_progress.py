"""Progress on stderr: off by default, stage names and layer counts when on, the same output either way."""

import io
import subprocess
import sys
import time

import pytest
from rich.console import Console

from nncc.compiler.codegen.lower import lower_module, pipeline_decisions
from nncc.compiler.pipeline import Options, compile_model
from nncc.compiler.registry import Registry
from nncc.runtime import isa
from nncc.runtime.interpreter import run
from nncc.runtime.target import load_target
from nncc.support import progress

PASSES = ("import-onnx", "canonicalize-nn", "fold-batch-norm", "fuse-epilogues", "partition-cores",
          "tile-layers", "double-buffer")


def compile_and_run(model_path):
    """The small model through the pipeline, lowered and simulated: the program's text and outputs."""
    options = Options(target_options={"target": "vector"})
    compilation = compile_model(model_path, Registry.default(), options, until="vector")
    program = lower_module(compilation.module, compilation.store, load_target("vector", ()),
                           **pipeline_decisions(compilation.module))
    result = run(program)
    return [isa.format_instr(ins) for ins in program.instructions], result.outputs


def terminal() -> tuple[Console, io.StringIO]:
    screen = io.StringIO()
    return Console(file=screen, force_terminal=True, width=120), screen


def test_off_by_default_nothing_written(small_model_path, capfd):
    assert not progress.active()
    with progress.stage("lowering", total=3, unit="layers") as task:
        assert task is progress.NULL_TASK
        task.advance(detail="conv1")
    compile_and_run(small_model_path)
    assert capfd.readouterr() == ("", "")


def test_disabled_reporting_writes_nothing(small_model_path, capfd):
    console, screen = terminal()
    with progress.reporting(False, console, delay=0):
        assert not progress.active()
        compile_and_run(small_model_path)
    assert screen.getvalue() == ""
    assert capfd.readouterr() == ("", "")


def test_quick_work_shows_no_bar(small_model_path):
    console, screen = terminal()
    with progress.reporting(True, console, delay=60):
        assert progress.active()
        compile_and_run(small_model_path)
    assert screen.getvalue() == ""
    assert not progress.active()


def test_stages_and_layer_counts_on_a_terminal(small_model_path):
    console, screen = terminal()
    with progress.reporting(True, console, delay=0):
        compile_and_run(small_model_path)
    shown = screen.getvalue()
    for name in PASSES:
        assert f" {name} " in shown
    assert "tiling" in shown and "lowering" in shown and "simulation" in shown
    assert "0/4 layers" in shown  # conv (BN and ReLU folded into it), max pool, flatten, gemm
    assert "0/36 instructions" in shown
    assert shown.endswith("\x1b[?25h\r") or shown.endswith("\x1b[?25h")  # erased, cursor back


def test_output_is_the_same_with_and_without_progress(small_model_path):
    quiet = compile_and_run(small_model_path)
    with progress.reporting(True, terminal()[0], delay=0):
        reported = compile_and_run(small_model_path)
    assert reported[0] == quiet[0]
    assert reported[1].keys() == quiet[1].keys()
    for name in quiet[1]:
        assert (reported[1][name] == quiet[1][name]).all()


def test_counts_and_details_reach_the_bar(monkeypatch):
    monkeypatch.setattr(progress, "SHOW_EVERY", 0)  # every count is sent (a new detail redraws)
    console, screen = terminal()
    with progress.reporting(True, console, delay=0):
        with progress.stage("lowering", total=2, unit="layers") as task:
            task.update(detail="conv1")
            task.advance()
            with progress.stage("inner") as inner:
                inner.advance(5)
            task.update(detail="fc")
            task.advance()
    shown = screen.getvalue()
    assert "1/2 layers" in shown and "conv1" in shown and "fc" in shown
    assert "  inner" in shown  # nested stages are indented


def test_bar_appears_after_the_delay_for_a_stage_already_running():
    console, screen = terminal()
    with progress.reporting(True, console, delay=0.2):
        with progress.stage("simulation", total=10, unit="instructions") as task:
            task.advance(3)
            assert screen.getvalue() == ""  # nothing drawn before the delay
            time.sleep(0.5)
            assert "simulation" in screen.getvalue() and "3/10 instructions" in screen.getvalue()
            assert "0:00" in screen.getvalue()  # elapsed time


def test_bar_is_gone_between_stages(capsys):
    console, screen = terminal()
    with progress.reporting(True, console, delay=0):
        with progress.stage("import-onnx"):
            pass
        drawn = len(screen.getvalue())
        print("nncc: summary")  # a tool's line between stages
        assert len(screen.getvalue()) == drawn  # nothing redrawn while no stage is open
    assert capsys.readouterr().out == "nncc: summary\n"
    assert screen.getvalue().endswith("\x1b[?25h\r") or screen.getvalue().endswith("\x1b[?25h")


def test_nested_reporting_keeps_the_outer_one():
    console, screen = terminal()
    with progress.reporting(True, console, delay=0):
        with progress.reporting(True, terminal()[0], delay=0):
            with progress.stage("simulation"):
                pass
        assert progress.active()
    assert "simulation" in screen.getvalue()


@pytest.mark.parametrize("quiet, tty, expected", [(False, True, True), (True, True, False), (False, False, False)])
def test_wanted_on_a_terminal_unless_quiet(quiet, tty, expected):
    class Stream(io.StringIO):
        def isatty(self):
            return tty

    assert progress.wanted(quiet, Stream()) is expected


def test_rich_is_imported_only_when_the_bar_appears():
    code = ("import sys\nfrom nncc.support import progress\n"
            "with progress.reporting(True, delay=60):\n    with progress.stage('quick'):\n        pass\n"
            "print('rich' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
