"""nncc-sweep: points, rows, failed points, Pareto marks, resume, the local pool and Dask.

The models are tiny (onnx.helper): a 3x3 conv + ReLU, a depthwise 3x3, a 1x1 and an FC, so a
point compiles and simulates in well under a second once the compiler is imported.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nncc.compiler import sweep, sweep_exec
from nncc.compiler.sweep import Point, mark_pareto, parse_vary, target_value

BUFFER_SIZES = "256,8KiB,64KiB"  # 256 bytes: the 3x3 conv cannot fit even one output element


def tiny_model(channels: int = 8, size: int = 16, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    weights = {"w1": rng.standard_normal((16, channels, 3, 3)), "w2": rng.standard_normal((16, 1, 3, 3)),
               "w3": rng.standard_normal((32, 16, 1, 1)), "fc": rng.standard_normal((10, 32))}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv3x3", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["b"], name="relu"),
             helper.make_node("Conv", ["b", "w2"], ["c"], name="dw3x3", pads=[1, 1, 1, 1], group=16),
             helper.make_node("Conv", ["c", "w3"], ["d"], name="pw1x1"),
             helper.make_node("GlobalAveragePool", ["d"], ["e"], name="gap"),
             helper.make_node("Flatten", ["e"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(array.astype(np.float32), name) for name, array in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("sweep-models")
    paths = [folder / "tiny.onnx", folder / "small.onnx"]
    onnx.save(tiny_model(), str(paths[0]))
    onnx.save(tiny_model(channels=4, size=8, seed=1), str(paths[1]))
    return paths


def read_rows(folder: Path) -> list[dict]:
    with open(folder / "results.csv", newline="") as file:
        return list(csv.DictReader(file))


def sweep_args(models: list[Path], out: Path, *extra: str) -> list[str]:
    return [*map(str, models), "--target=edge", "--vary", f"memory.BUF.size_bytes={BUFFER_SIZES}",
            "--vary", "tile-order=naive,scan", "-o", str(out), "--no-plots", *extra]


@pytest.fixture(scope="module")
def pool_sweep(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("pool") / "sweep"
    assert sweep.main(sweep_args(models, out, "--workers", "2")) == 0
    return out


def test_rows_are_the_reports_of_nncc(pool_sweep, models, tmp_path, capsys):
    rows = read_rows(pool_sweep)
    assert len(rows) == 2 * 3 * 2
    assert [(r["model"], r["memory.BUF.size_bytes"], r["tile-order"]) for r in rows][:6] == [
        ("tiny", size, order) for size in BUFFER_SIZES.split(",") for order in ("naive", "scan")]
    failed = [r for r in rows if r["status"] == "failed"]
    assert {(r["model"], r["memory.BUF.size_bytes"]) for r in failed} == {("tiny", "256"), ("small", "256")}
    assert all("does not fit" in r["reason"] and "\n" not in r["reason"] and r["cycles"] == "" for r in failed)
    # an ok row holds the figures `nncc --report` gives for the same configuration
    row = next(r for r in rows if r["model"] == "tiny" and r["memory.BUF.size_bytes"] == "8KiB"
               and r["tile-order"] == "naive")
    from nncc.compiler import cli

    report_path = tmp_path / "r.json"
    assert cli.main([str(models[0]), "--target=edge", "--target-set", "memory.BUF.size_bytes=8192",
                     "--tile-order=naive", "--report", str(report_path), "--program", str(tmp_path / "p"),
                     "-q"]) == 0
    report = json.loads(report_path.read_text())
    assert int(row["cycles"]) == report["cycles"]
    assert int(row["dram_bytes"]) == report["dram"]["read_bytes"] + report["dram"]["write_bytes"]
    assert float(row["energy_pj.total"]) == pytest.approx(report["energy_pj"]["total"])
    assert int(row["onchip_capacity_bytes"]) == 8192
    assert row["target_set"] == "memory.BUF.size_bytes=8192" and row["tile_order"] == "naive"
    # the point file holds the whole report, per-layer rows included
    saved = json.loads((pool_sweep / "points" / f"tiny-{row['point']}.json").read_text())
    assert [layer["cycles"] for layer in saved["outcome"]["report"]["layers"]] == [
        layer["cycles"] for layer in report["layers"]]


def test_pareto_marks(pool_sweep):
    rows = read_rows(pool_sweep)
    metrics = ("cycles", "energy_pj.total", "onchip_capacity_bytes")
    for model in ("tiny", "small"):
        ok = [r for r in rows if r["model"] == model and r["status"] == "ok"]
        values = {r["point"]: tuple(float(r[m]) for m in metrics) for r in ok}
        for r in ok:
            dominated = any(all(o <= m for o, m in zip(other, values[r["point"]])) and other != values[r["point"]]
                            for other in values.values())
            assert (r["pareto"] == "True") == (not dominated)
        assert any(r["pareto"] == "True" for r in ok)
    assert all(r["pareto"] == "False" for r in rows if r["status"] == "failed")


def test_pareto_by_hand():
    def row(model, cycles, energy, capacity, status="ok"):
        return {"model": model, "status": status, "cycles": cycles, "energy_pj.total": energy,
                "onchip_capacity_bytes": capacity}

    rows = [row("a", 10, 10, 4), row("a", 5, 20, 4), row("a", 10, 20, 4), row("a", 10, 10, 8),
            row("a", 1, 1, 1, status="failed"), row("b", 100, 100, 100)]
    mark_pareto(rows)
    assert [r["pareto"] for r in rows] == [True, True, False, False, False, True]


def test_resume_runs_only_the_missing_points(pool_sweep, models, tmp_path, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "points").mkdir()
    kept = sorted((pool_sweep / "points").iterdir())
    for path in kept[1:]:
        (out / "points" / path.name).write_bytes(path.read_bytes())
    (out / "points" / kept[2].name).write_text('{"format": 1, "trun')  # a point cut short: run again
    capsys.readouterr()
    assert sweep.main(sweep_args(models, out, "--workers", "1")) == 0
    assert "(8 ok, 4 failed, 0 lost; 10 from an earlier run)" in capsys.readouterr().out
    timing = ("worker", "cpu_s", "wall_compile_s", "wall_simulate_s")
    for before, after in zip(read_rows(pool_sweep), read_rows(out), strict=True):
        assert {k: v for k, v in before.items() if k not in timing} == {
            k: v for k, v in after.items() if k not in timing}
    assert [(out / "points" / path.name).read_bytes() == path.read_bytes() for path in kept].count(False) == 2


def test_plots_and_a_chosen_point(pool_sweep, models, tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "points").mkdir()
    for path in (pool_sweep / "points").iterdir():
        (out / "points" / path.name).write_bytes(path.read_bytes())
    chosen = next(r["point"] for r in read_rows(pool_sweep) if r["model"] == "small" and r["status"] == "ok")
    args = [a for a in sweep_args(models, out) if a != "--no-plots"]
    assert sweep.main([*args, "--plot-point", chosen, "-q"]) == 0
    names = sorted(p.name for p in (out / "plots").iterdir())
    for stem in ("tiny-vs-memory.BUF.size_bytes", "tiny-vs-tile-order", "tiny-pareto", "small-pareto",
                 f"roofline-small-{chosen}"):
        assert f"{stem}.png" in names and f"{stem}.svg" in names
    assert (out / "plots" / "tiny-pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (out / "plots" / "tiny-pareto.svg").read_bytes()[:1000]


def test_dask_cluster_on_loopback(pool_sweep, models, tmp_path):
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "sweep"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp://", host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert sweep.main(sweep_args(models, out, "--scheduler", cluster.scheduler_address, "-q")) == 0
    by_point = {r["point"]: r for r in read_rows(pool_sweep)}
    rows = read_rows(out)
    assert len(rows) == len(by_point)
    for row in rows:
        same = by_point[row["point"]]
        assert (row["status"], row["reason"], row["cycles"], row["energy_pj.total"], row["pareto"]) == (
            same["status"], same["reason"], same["cycles"], same["energy_pj.total"], same["pareto"])


CRASHING_WORK = textwrap.dedent("""
    import os

    def work(point):
        if point.model == "crash":
            os._exit(7)  # the worker process dies, as under the OOM killer
        return {"status": "ok", "model": point.model}
""")


def test_a_dying_worker_loses_only_its_point(tmp_path, monkeypatch):
    (tmp_path / "crashing_work.py").write_text(CRASHING_WORK)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers get this process's sys.path
    import crashing_work

    points = [Point(name, f"{name}.onnx", "0" * 64, "edge") for name in ("a", "b", "crash", "c", "d", "e")]
    finished, lost = [], []
    sweep_exec.run_on_pool(points, 2, crashing_work.work, lambda point, outcome: finished.append(outcome["model"]),
                           lambda point, reason: lost.append((point.model, reason)))
    assert sorted(finished) == ["a", "b", "c", "d", "e"]
    assert lost == [("crash", f"a worker process died while running it, {sweep_exec.ATTEMPTS} times")]


def test_values_and_keys():
    assert target_value("64KiB") == "65536" and target_value("1.5MiB") == str(3 * 2**19)
    assert target_value("4") == "4" and target_value("naive") == "naive"
    assert parse_vary(["cores=1,2,4", "tile_order=naive,scan"]) == [("cores", ["1", "2", "4"]),
                                                                     ("tile-order", ["naive", "scan"])]
    a = Point("m", "m.onnx", "1" * 64, "edge", ("cores=2", "memory.BUF.size_bytes=8192"))
    b = Point("m", "other/m.onnx", "1" * 64, "edge", ("memory.BUF.size_bytes=8192", "cores=2"),
              varied=(("cores", "2"),))
    assert a.id == b.id  # the configuration names the point, not the order of the sweep


@pytest.mark.parametrize("extra, message", [
    (["--vary", "memory.BUF.sise_bytes=1,2"], "--vary memory.BUF.sise_bytes=1: --target-set on edge.toml: "
                                              "memory.BUF.sise_bytes: unknown key"),
    (["--vary", "cores=1,0"], "--vary cores=0: --target-set on edge.toml: cores: 0 is impossible"),
    (["--vary", "tile-order=naive,zigzag"], "--vary tile-order=zigzag: choose from naive, scan, tsp"),
    (["--vary", "cores=1,2", "--vary", "cores=4"], "--vary cores is given twice"),
    (["--vary", "cores"], "--vary 'cores': expected KEY=V1,V2,..."),
    (["--vary", "cores=1,,2"], "an empty value"),
    (["--vary", "disable-pass=none,fuse-epilogue"], "unknown pass 'fuse-epilogue'"),
    (["--vary", "target=edge,reference"], "--target reference has no machine to sweep"),
    (["--scheduler", "localhost:8786"], "expected an address such as tcp://HOST:8786"),
    (["--lr", "0.1"], "--lr is a training option: add --train"),
    (["--vary", "batch=2,4"], "--vary batch sizes the training steps: add --train"),
    (["--train", "--vary", "batch=2,x"], "--vary batch=2,x: batch sizes are positive integers"),
    (["--train", "--momentum", "-1"], "--momentum -1.0: must be a finite number >= 0"),
    (["--vary", "cp-rank=none,0"], "--vary cp-rank=0: 0: an absolute rank must be an integer >= 1"),
    (["--train", "--vary", "cp-rank=none,2"], "--cp-rank decomposes the convs of an inference model"),
    (["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "--workers sizes the local pool"),
])
def test_bad_input_is_one_line(models, tmp_path, capsys, extra, message):
    assert sweep.main([str(models[0]), "--target=edge", "-o", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nncc-sweep: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_training_points_are_the_reports_of_nncc_train(models, tmp_path):
    out = tmp_path / "train"
    assert sweep.main([str(models[1]), "--target=edge", "--train", "--momentum", "0.9", "--vary", "batch=2,3",
                       "-o", str(out), "--no-plots", "--workers", "1"]) == 0
    rows = read_rows(out)
    assert [(r["batch"], r["mode"], r["status"]) for r in rows] == [("2", "training", "ok"), ("3", "training", "ok")]
    from nncc.compiler import cli

    report_path = tmp_path / "r.json"
    assert cli.main([str(models[1]), "--target=edge", "--train", "--momentum", "0.9", "--batch", "3", "--run",
                     "--report", str(report_path), "--program", str(tmp_path / "p"), "-q"]) == 0
    report = json.loads(report_path.read_text())
    row = rows[1]
    assert int(row["cycles"]) == report["cycles"] and float(row["training.momentum"]) == 0.9
    assert int(row["training.batch"]) == 3
    for phase in ("forward", "backward", "update"):
        assert int(row[f"phases.{phase}.cycles"]) == report["phases"][phase]["cycles"] > 0
    forward = [int(r["macs_by_phase.forward"]) for r in rows]
    assert forward[0] * 3 == forward[1] * 2 > 0  # the forward MACs scale with the batch
    inference = Point("small", "small.onnx", "1" * 64, "edge")
    assert len({inference.id, rows[0]["point"], rows[1]["point"]}) == 3


def test_cp_rank_points_give_the_decomposition_and_its_error(models, tmp_path):
    out = tmp_path / "cp"
    assert sweep.main([str(models[0]), "--target=edge", "--vary", "cp-rank=none,2", "-o", str(out), "--no-plots",
                       "--workers", "1"]) == 0
    plain, decomposed = read_rows(out)
    assert (plain["cp_rank"], plain["cp-rank"], decomposed["cp_rank"]) == ("", "none", "2")
    assert "cp_decompose.output_rel_l2_error" not in plain or plain["cp_decompose.output_rel_l2_error"] == ""
    from nncc.compiler import cli

    report_path = tmp_path / "r.json"
    assert cli.main([str(models[0]), "--target=edge", "--cp-rank", "2", "--run", "--report", str(report_path),
                     "--program", str(tmp_path / "p"), "-q"]) == 0
    report = json.loads(report_path.read_text())
    assert int(decomposed["cycles"]) == report["cycles"] != int(plain["cycles"])
    assert float(decomposed["cp_decompose.output_rel_l2_error"]) == pytest.approx(
        report["cp_decompose"]["output_rel_l2_error"], rel=1e-6)
    assert int(decomposed["cp_decompose.weights_after"]) < int(decomposed["cp_decompose.weights_before"])


def test_missing_model_and_unreachable_scheduler(models, tmp_path, capsys):
    assert sweep.main([str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "out")]) == 2
    assert "nope.onnx: no such model file" in capsys.readouterr().err
    pytest.importorskip("distributed")
    code = sweep.main([str(models[1]), "--target=edge", "-o", str(tmp_path / "out"), "--no-plots",
                       "--scheduler", "tcp://127.0.0.1:9", "--scheduler-timeout", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "--scheduler tcp://127.0.0.1:9: cannot connect" in err and err.count("\n") == 1, err


def test_the_console_script_is_declared():
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["nncc-sweep"] == "nncc.compiler.sweep:main"
    assert os.path.basename(sys.executable)  # the tests run in the installed environment


def test_a_cluster_without_workers(models, tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        code = sweep.main([str(models[1]), "--target=edge", "-o", str(tmp_path / "out"), "--no-plots",
                           "--scheduler", cluster.scheduler_address, "--scheduler-timeout", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "no worker took the model" in err and err.count("\n") == 1, err


def test_sigterm_stops_the_sweep_and_it_resumes(models, tmp_path, capsys):
    """A batch system's SIGTERM: exit 130, results.csv of what finished, no worker left running;
    the same command then runs only the rest."""
    import signal
    import subprocess
    import time

    out = tmp_path / "sweep"
    args = [str(models[1]), "--target=edge", "--vary", "memory.BUF.size_bytes=" + ",".join(
        f"{k}KiB" for k in range(4, 68, 4)), "-o", str(out), "--workers", "1", "--no-plots", "-q"]
    process = subprocess.Popen([sys.executable, "-m", "nncc.compiler.sweep", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "points").is_dir() or not list((out / "points").glob("*.json")):  # not .tmp files
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "run the same command again to resume" in stderr
    rows = read_rows(out)
    done = sum(row["status"] == "ok" for row in rows)
    assert len(rows) == 16 and 1 <= done < 16
    assert all(row["status"] == "not run" for row in rows if row["status"] != "ok")
    assert sweep.main(args) == 0
    assert f"({16} ok, 0 failed, 0 lost; {done} from an earlier run)" in capsys.readouterr().out
