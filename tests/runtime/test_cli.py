"""nncc-run: outputs, report, trace, exit codes and one-line messages."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nncc.runtime.assembler import assemble
from nncc.runtime.cli import main
from nncc.runtime.program_file import save

EXAMPLES = Path(__file__).parents[2] / "examples" / "programs"


def test_run_with_inputs_outputs_report_and_trace(tmp_path, capsys):
    x = np.random.default_rng(3).standard_normal((8, 8, 16), dtype=np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    program = tmp_path / "pool.nnbin"
    save(assemble((EXAMPLES / "maxpool.s").read_text()), program)
    code = main([str(program), "--inputs", str(tmp_path / "in.npz"), "--outputs", str(tmp_path / "out.npz"),
                 "--report", str(tmp_path / "r.json"), "--trace", str(tmp_path / "t.json")])  # fmt: skip
    assert code == 0
    assert "630 cycles" in capsys.readouterr().out
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    want = np.stack([[padded[2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max(axis=(0, 1)) for j in range(4)] for i in range(4)])
    np.testing.assert_array_equal(np.load(tmp_path / "out.npz")["y"], want)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["cycles"] == 630 and report["target"] == "vector" and "check" not in report
    trace = json.loads((tmp_path / "t.json").read_text())
    tracks = {e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    assert tracks == {"dma0", "core0.main"}


def test_expect_adds_check_and_sets_exit_code(tmp_path, capsys):
    a = np.ones((64, 32), np.float32)
    b = np.full((32, 32), 2, np.float32)
    np.savez(tmp_path / "in.npz", A=a, B=b)
    np.savez(tmp_path / "good.npz", C=a @ b)
    np.savez(tmp_path / "bad.npz", C=a @ b + 1)
    program = str(EXAMPLES / "gemm_2core.s")
    common = ["--inputs", str(tmp_path / "in.npz"), "--report", str(tmp_path / "r.json")]
    assert main([program, *common, "--expect", str(tmp_path / "good.npz")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["check"] == {"passed": True, "max_abs_err": 0.0, "max_rel_err": 0.0}
    assert main([program, *common, "--expect", str(tmp_path / "bad.npz")]) == 1
    assert "CHECK FAILED" in capsys.readouterr().out


@pytest.mark.parametrize(
    "text, message",
    [
        (".nncc 1\n.target vector\nvfill shape=1,1,1 z=AM[0x3] z_stride=0,0,1\n",
         "nncc-run: {path}: fault at instruction 0 (vfill): misaligned address AM[0x3] (must be a multiple of 4)"),
        (".nncc 1\n.target vector\nbarrier\nvsqrt\n",  # the assembler's message names file:line itself
         "nncc-run: fault at instruction 1 (vsqrt): {path}:4: unknown opcode 'vsqrt'"),
        (".nncc 1\n.target vector\nvfill shape=1,1,1 z=AM[0x0] z_stride=0,0,1 wait=3\n",
         "nncc-run: {path}: fault at instruction 0 (vfill): deadlock: waits on semaphore 3"),
    ],
)
def test_faults_exit_3_with_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "bad.s"
    path.write_text(text)
    assert main([str(path)]) == 3
    err = capsys.readouterr().err
    assert err.startswith(message.format(path=path)) and err.count("\n") == 1


def test_corrupt_binary_exits_3(tmp_path, capsys):
    path = tmp_path / "p.nnbin"
    save(assemble((EXAMPLES / "maxpool.s").read_text()), path)
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 1
    path.write_bytes(bytes(blob))
    assert main([str(path)]) == 3
    assert capsys.readouterr().err == f"nncc-run: {path}: fault at instruction 0 (header): corrupt file: checksum mismatch\n"


def test_bad_command_line_input_exits_2(tmp_path, capsys):
    assert main([str(tmp_path / "none.nnbin")]) == 2
    assert capsys.readouterr().err == f"nncc-run: error: {tmp_path / 'none.nnbin'}: no such program file\n"
    (tmp_path / "junk.npz").write_text("junk")
    assert main([str(EXAMPLES / "maxpool.s"), "--inputs", str(tmp_path / "junk.npz")]) == 2
    assert "--inputs is not an .npz archive" in capsys.readouterr().err
    np.savez(tmp_path / "wrong.npz", x=np.zeros(3))
    assert main([str(EXAMPLES / "maxpool.s"), "--inputs", str(tmp_path / "wrong.npz")]) == 2
    assert "input x: shape (3,) does not match" in capsys.readouterr().err
    assert main(["--bogus"]) == 2
    assert main([str(EXAMPLES / "maxpool.s"), "--report", str(tmp_path / "no" / "dir" / "r.json")]) == 2
    assert f"folder {tmp_path / 'no' / 'dir'} does not exist" in capsys.readouterr().err


def test_console_script_runs_without_traceback(tmp_path):
    path = tmp_path / "bad.s"
    path.write_text(".nncc 1\n.target vector\nvfill shape=1,1,1 z=AM[0x3] z_stride=0,0,1\n")
    process = subprocess.run([sys.executable, "-m", "nncc.runtime.cli", str(path)], capture_output=True, text=True)
    assert process.returncode == 3 and "Traceback" not in process.stderr


def test_target_set_overrides_the_program_target(tmp_path):
    program = str(EXAMPLES / "maxpool.s")
    assert main([program, "--report", str(tmp_path / "a.json")]) == 0
    # the DRAM latency of the two DMAs (100 cycles each) disappears
    assert main([program, "--report", str(tmp_path / "b.json"), "--target-set", "dram.latency_ns=0"]) == 0
    slow, fast = (json.loads((tmp_path / f"{n}.json").read_text())["cycles"] for n in "ab")
    assert slow - fast == 200
    assert main([program, "--target-set", "dram.bogus=1"]) == 2
