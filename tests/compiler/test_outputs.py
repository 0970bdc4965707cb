"""No output overwrites an input or another output; outputs are written atomically; unwritable
outputs and bad arguments are one line and exit 2 (issue: every entry point hardened)."""

import os

import numpy as np
import pytest

from nncc.compiler import cli as nncc_cli
from nncc.compiler import opt as nncc_opt
from nncc.runtime import cli as run_cli
from nncc.support.user_files import UserFiles, write_atomically

ROOT = os.geteuid() == 0


def call(capsys, main, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, main, *argv, says: str) -> str:
    """Run a command that must be refused: exit 2, one stderr line containing `says`."""
    code, _, err = call(capsys, main, *argv)
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert says in err, err
    return err


@pytest.fixture
def program(capsys, small_model_path, tmp_path):
    """A compiled program of the small model (P.nnbin), and the model's bytes."""
    code, _, err = call(capsys, nncc_cli.main, small_model_path, "--target=vector", "--program", tmp_path / "P")
    assert code == 0, err
    return tmp_path / "P.nnbin"


@pytest.mark.parametrize("flag", ["--report", "--trace", "--outputs"])
def test_a_run_output_naming_the_model_is_refused_and_the_model_survives(capsys, small_model_path, tmp_path, flag):
    before = small_model_path.read_bytes()
    refused(capsys, nncc_cli.main, small_model_path, "--target=vector", "--check", "--program", tmp_path / "p",
            flag, small_model_path, says=f"{flag} {small_model_path}: is the input the model")
    assert small_model_path.read_bytes() == before
    assert not (tmp_path / "p.nnbin").exists()  # refused before any work


def test_hard_links_and_symlinks_of_the_model_are_the_model(capsys, small_model_path, tmp_path):
    before = small_model_path.read_bytes()
    os.link(small_model_path, tmp_path / "hard.mlir")
    (tmp_path / "soft.mlir").symlink_to(small_model_path)
    for alias in ("hard.mlir", "soft.mlir"):
        refused(capsys, nncc_cli.main, small_model_path, "--emit=nn", "-o", tmp_path / alias,
                says="is the input the model")
    refused(capsys, nncc_cli.main, small_model_path, "--target=reference", "--run", "--report", tmp_path / "hard.mlir",
            says="is the input the model")
    assert small_model_path.read_bytes() == before


def test_the_weights_written_beside_ir_may_not_be_the_model(capsys, small_model_path, tmp_path):
    model = tmp_path / "m.weights.npz"  # an ONNX model with an unlucky name
    model.write_bytes(small_model_path.read_bytes())
    refused(capsys, nncc_cli.main, model, "--emit=nn", "-o", tmp_path / "m.mlir",
            says=f"-o (its weights) {model}: is the input the model")
    assert model.read_bytes() == small_model_path.read_bytes()
    assert not (tmp_path / "m.mlir").exists()


def test_nncc_opt_never_writes_over_its_input_or_the_input_weights(capsys, small_model_path, tmp_path):
    ir = tmp_path / "m.nn.mlir"
    assert call(capsys, nncc_cli.main, small_model_path, "--emit=nn", "-o", ir)[0] == 0
    weights = tmp_path / "m.nn.weights.npz"
    saved = ir.read_bytes(), weights.read_bytes()
    refused(capsys, nncc_opt.main, ir, "-o", weights, says="is the input")
    refused(capsys, nncc_opt.main, ir, "-o", ir, says="is the input")
    assert (ir.read_bytes(), weights.read_bytes()) == saved
    code, _, err = call(capsys, nncc_opt.main, ir, "-p", "canonicalize-nn", "-o", tmp_path / "out.mlir")
    assert code == 0, err
    assert (tmp_path / "out.weights.npz").exists() and 'nn.weights = "out.weights.npz"' in (tmp_path / "out.mlir").read_text()


def test_nncc_run_never_writes_over_its_program(capsys, program, tmp_path):
    before = program.read_bytes()
    for flag in ("--report", "--outputs", "--trace"):
        refused(capsys, run_cli.main, program, flag, program, says=f"{flag} {program}: is the input program")
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 3, 16, 16), np.float32))
    refused(capsys, run_cli.main, program, "--inputs", tmp_path / "in.npz", "--outputs", tmp_path / "in.npz",
            says="is the input --inputs")
    assert program.read_bytes() == before


def test_two_outputs_of_one_command_may_not_be_one_file(capsys, small_model_path, program, tmp_path):
    refused(capsys, nncc_cli.main, small_model_path, "--target=vector", "--program", tmp_path / "q",
            "--report", tmp_path / "same.json", "--trace", tmp_path / "same.json",
            says="is also the output --report")
    refused(capsys, nncc_cli.main, small_model_path, "--target=vector", "--program", tmp_path / "q",
            "--report", tmp_path / "q.nnbin", says="is also the output --program")
    refused(capsys, run_cli.main, program, "--report", tmp_path / "r.json", "--outputs", tmp_path / "r.json",
            says="is also the output --outputs")


def test_a_failed_run_leaves_the_previous_output_intact(capsys, small_model_path, tmp_path):
    report = tmp_path / "r.json"
    report.write_text("previous report\n")
    np.savez(tmp_path / "wrong.npz", x=np.zeros((2, 2), np.float32))
    code, _, err = call(capsys, nncc_cli.main, small_model_path, "--target=reference", "--run",
                        "--inputs", tmp_path / "wrong.npz", "--report", report)
    assert code == 2 and "shape [2, 2]" in err
    assert report.read_text() == "previous report\n"


def test_an_interrupted_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")

    def interrupted(file):
        file.write(b"half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, interrupted)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_writes_keep_the_mode_and_go_through_symlinks(tmp_path):
    real, link = tmp_path / "real.json", tmp_path / "link.json"
    real.write_text("old")
    real.chmod(0o640)
    link.symlink_to(real)
    files = UserFiles()
    files.write_text(files.writes("--report", link), "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert real.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("flags", [
    ("--target=vector", "--program", "{missing}/p"),
    ("--target=vector", "--program", "{file}/p"),
    ("--target=vector", "--program", "{tmp}/p", "--report", "{folder}"),
    ("--target=vector", "--program", "{tmp}/p", "--outputs", "{missing}/o.npz"),
    ("--target=vector", "--program", "{tmp}/p", "--trace", "{file}/t.json"),
    ("--emit=fused", "-o", "{missing}/m.mlir"),
    ("--emit=fused", "-o", "{folder}"),
])
def test_unwritable_outputs_are_one_line(capsys, small_model_path, tmp_path, flags):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("a file, not a folder")
    places = {"missing": tmp_path / "missing", "file": tmp_path / "file", "folder": tmp_path / "folder",
              "tmp": tmp_path}
    argv = [flag.format(**places) for flag in flags]
    err = refused(capsys, nncc_cli.main, small_model_path, *argv, says=str(tmp_path))
    assert any(reason in err for reason in ("does not exist", "is not a folder", "is a folder")), err


@pytest.mark.skipif(ROOT, reason="root may write into read-only folders: permissions cannot be tested as root")
def test_the_default_program_beside_a_model_in_a_read_only_folder(capsys, small_model_path, tmp_path):
    tmp_path.chmod(0o555)
    try:
        refused(capsys, nncc_cli.main, small_model_path, "--target=vector", says="choose with --program PREFIX")
    finally:
        tmp_path.chmod(0o755)


def test_only_the_binary_program_is_written_unless_asm_is_asked(capsys, small_model_path, tmp_path):
    code, out, _ = call(capsys, nncc_cli.main, small_model_path, "--target=edge", "--program", tmp_path / "p")
    assert code == 0 and (tmp_path / "p.nnbin").exists() and not (tmp_path / "p.s").exists()
    code, out, _ = call(capsys, nncc_cli.main, small_model_path, "--target=edge", "--program", tmp_path / "p", "-S")
    assert code == 0 and (tmp_path / "p.s").read_text().startswith(".nncc")


@pytest.mark.parametrize("argv, says", [
    (["--seed", "-1"], "argument --seed: -1 is negative"),
    (["--seed", "x"], "argument --seed: 'x' is not an integer"),
    (["--target-set", "cores=100000"], "cores: 100000 is more than the simulator supports (at most 1024)"),
    (["--target-set", "cores=1024", "--target-set", "memory.AM.size_bytes=8388608"],
     "GiB of on-chip memory in all (1024 cores); the simulator holds at most 4 GiB"),
    (["--target-set", "core.main.lanes=1000000"], "core.main.lanes: 1000000 is more than the simulator supports"),
    (["-o", "m.mlir"], "-o writes IR and needs --emit=STAGE"),
    (["--emit=nn", "--run"], "--emit=nn stops after that stage: --run"),
    (["--target=reference", "--trace", "t.json"], "--trace needs an accelerator target"),
])
def test_bad_arguments_are_one_line(capsys, small_model_path, argv, says):
    if argv[0] == "--seed":
        with pytest.raises(SystemExit) as exit_:  # argparse's own exit, after its one line
            nncc_cli.main([str(small_model_path), *argv])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err
        return
    refused(capsys, nncc_cli.main, small_model_path, "--target=vector", *argv, says=says)


def test_inputs_must_be_an_npz_archive(capsys, small_model_path, program, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 16, 16), np.float32))
    refused(capsys, nncc_cli.main, small_model_path, "--target=reference", "--run", "--inputs", tmp_path / "x.npy",
            says="--inputs must be an .npz archive of named arrays")
    refused(capsys, run_cli.main, program, "--inputs", tmp_path / "x.npy", says="not a single .npy array")


@pytest.mark.parametrize("dtype", [np.int32, np.bool_, np.complex64])
def test_nncc_run_refuses_inputs_that_are_not_floats(capsys, program, tmp_path, dtype):
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 3, 16, 16), dtype))
    refused(capsys, run_cli.main, program, "--inputs", tmp_path / "in.npz",
            says=f"array 'x' has dtype {np.dtype(dtype)}; the program computes float32")


@pytest.mark.parametrize("value, says", [("nan", "nan is not a finite number >= 0"),
                                         ("-1", "-1 is not a finite number >= 0"),
                                         ("x", "'x' is not a number")])
def test_nncc_run_tolerance_is_a_finite_non_negative_number(capsys, program, value, says):
    refused(capsys, run_cli.main, program, "--tolerance", value, says=f"argument --tolerance: {says}")


def test_a_target_file_that_is_not_utf8(capsys, small_model_path, tmp_path):
    target = tmp_path / "t.toml"
    target.write_bytes(b'name = "caf\xe9"\n')
    refused(capsys, nncc_cli.main, small_model_path, f"--target={target}", "--program", tmp_path / "p",
            says=f"{target}: target file is not UTF-8 text")


def test_the_report_says_what_was_run(capsys, small_model_path, program, tmp_path):
    import hashlib
    import json
    from importlib.metadata import version

    from nncc.runtime.target import load_target

    report_path = tmp_path / "r.json"
    code, _, err = call(capsys, nncc_cli.main, small_model_path, "--target=vector", "--target-set", "cores=2",
                        "--run", "--report", report_path, "--program", tmp_path / "q")
    assert code == 0, err
    report = json.loads(report_path.read_text())
    assert report["nncc_version"] == version("nncc")
    assert report["model"] == {"file": str(small_model_path),
                               "sha256": hashlib.sha256(small_model_path.read_bytes()).hexdigest()}
    assert report["inputs"] == {"x": [1, 3, 16, 16]}
    assert report["target_description"] == load_target("vector", ["cores=2"]).raw
    assert set(report["wall_seconds"]) == {"compile", "simulate"}  # no --check: no check phase
    assert all(seconds > 0 for seconds in report["wall_seconds"].values())
    assert [row["op"] for row in report["layers"]] == ["fused.conv2d", "nn.max_pool", "fused.gemm"]
    code, _, err = call(capsys, run_cli.main, program, "--report", report_path)
    assert code == 0, err
    report = json.loads(report_path.read_text())
    assert report["program"]["sha256"] == hashlib.sha256(program.read_bytes()).hexdigest()
    assert report["target_description"]["cores"] == 4 and set(report["wall_seconds"]) == {"simulate"}


def test_dash_output_is_stdout(capsys, small_model_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = call(capsys, nncc_cli.main, small_model_path, "--emit=nn", "-o", "-")
    assert code == 0, err
    assert out.startswith("builtin.module") and not (tmp_path / "-").exists()
