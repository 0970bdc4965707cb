"""`nncc --train` on the accelerator targets: the training step lowered (lower-training-ops,
then tiling, vectorisation, double-buffered DMA) into one program, run on the interpreter,
checked against PyTorch autograd (`--check`), on every preset target."""

import json

import onnx
import pytest

from nncc.compiler import zoo
from nncc.compiler.cli import main

pytest.importorskip("torch")

SMALL = [("se", "vector", ()), ("cat", "vector", ("--steps", "2", "--momentum", "0.9")), ("tiny", "vector", ()),
         ("gemm", "vector", ("--loss", "mse")), ("matmul", "vector", ()), ("feature_map", "vector", ("--loss", "mse")),
         ("split", "vector", ()), ("smooth", "vector", ()), ("pools", "fusion", ()), ("pools", "edge", ()), ("se", "fusion", ()), ("cat", "fusion", ()), ("se", "edge", ()), ("cat", "edge", ()),
         ("norms", "vector", ()), ("norms", "edge", ()), ("reversed", "vector", ()), ("reversed", "fusion", ()), ("dropout", "fusion", ("--steps", "2"))]


def train(tmp_path, capsys, model, target, *flags):
    report = tmp_path / "r.json"
    code = main([str(model), "--train", f"--target={target}", "--check", "--report", str(report), *flags])
    out, err = capsys.readouterr()
    assert report.exists(), (code, out, err)
    data = json.loads(report.read_text())
    failures = {k: v for k, v in data["check"]["tensors"].items() if not v["passed"]}
    assert code == 0 and not failures, (out, err, failures)
    return data


@pytest.mark.parametrize("name, target, flags", SMALL, ids=[f"{m}-{t}" for m, t, _ in SMALL])
def test_small_graphs_train_on_the_targets(name, target, flags, tmp_path, capsys, model_file):
    model = model_file(name)
    data = train(tmp_path, capsys, model, target, *flags)
    assert data["target"] == target and data["mode"] == "training" and data["cycles"] > 0
    assert {row["phase"] for row in data["layers"]} == {"forward", "backward", "update"}
    assert all(row["mode"] == "training" for row in data["layers"])
    assert model.with_name(f"{model.stem}.train.{target}.nnbin").exists()
    phases = data["phases"]
    assert sum(p["cycles"] for p in phases.values()) <= data["cycles"] and phases["backward"]["macs"] > 0


def test_backward_nests_and_one_pass_update(tmp_path, capsys, model_file):
    """The pools model on vector with momentum and weight decay: the stride-1 backward convs
    run as their own nests, per-channel sums as row reductions, and each weight's update reads weight, gradient and velocity once
    and writes weight and velocity once (4 bytes each), plus its three factors per tile."""
    import math

    import onnx

    model = model_file("pools")
    data = train(tmp_path, capsys, model, "vector", "--momentum", "0.9", "--weight-decay", "1e-3")
    ops = [row["op"] for row in data["layers"]]
    # backward-filter of every conv but the grouped one; backward-data of every conv but the first
    filters = {row["name"].removesuffix("_parts") for row in data["layers"] if row["op"] == "nn.conv2d_backward_filter"}
    assert len(filters) == 4 and ops.count("nn.conv2d_backward_data") == 4
    assert "nn.matmul" not in ops  # no ones-column sums, no 0/1 spreads
    sizes = {init.name: math.prod(init.dims) for init in onnx.load(str(model)).graph.initializer}
    updates = [row for row in data["layers"] if row["op"] == "nn.sgd"]
    assert len(updates) == len(sizes)
    for row in updates:
        count = sizes[row["name"].removesuffix("_updated").replace("_", ".")]
        assert row["dram_write_bytes"] == 8 * count
        assert row["dram_read_bytes"] == 12 * count + 12  # one tile: the factors once


def test_steps_and_saved_weights_on_a_target(tmp_path, capsys, model_file):
    import numpy as np
    import onnxruntime
    from onnx import numpy_helper

    model, saved = model_file("tiny"), tmp_path / "trained.onnx"
    data = train(tmp_path, capsys, model, "vector", "--steps", "3", "--momentum", "0.9", "--lr", "0.05",
                 "--save-weights", str(saved))
    assert len(data["losses"]) == 3 and data["losses"][2] < data["losses"][0]
    trained = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(saved)).graph.initializer}
    assert not np.array_equal(trained["c"], {i.name: numpy_helper.to_array(i)
                                             for i in onnx.load(str(model)).graph.initializer}["c"])
    session = onnxruntime.InferenceSession(str(saved), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.zeros((8, 3, 6, 6), np.float32)})[0].shape == (8, 4)
    # the program's layer markers carry the phases (nncc-run's report rows show them)
    from nncc.runtime.program_file import load

    program = load(model.with_name("tiny.train.vector.nnbin"))
    phases = {i.phase for i in program.instructions if type(i).__name__ == "Layer"}
    assert phases == {"forward", "backward", "update"} and program.mode == "training"


ZOO = [
    pytest.param("squeezenet1_1", 32, "vector", id="squeezenet1_1-vector"),
    pytest.param("squeezenet1_1", 32, "fusion", id="squeezenet1_1-fusion"),
    pytest.param("squeezenet1_1", 32, "edge", id="squeezenet1_1-edge"),
    pytest.param("resnet18", 64, "vector", id="resnet18-vector", marks=pytest.mark.big_memory),
    pytest.param("mobilenet_v2", 64, "vector", id="mobilenet_v2-vector", marks=pytest.mark.big_memory),
]


@pytest.mark.parametrize("name, resolution, target", ZOO)
def test_zoo_training_step_on_the_targets(name, resolution, target, tmp_path, capsys):
    model = tmp_path / f"{name}.onnx"
    onnx.save(zoo.build_model(name, batch=2, resolution=resolution), str(model))
    data = train(tmp_path, capsys, model, target, "--momentum", "0.9")
    backward = [row for row in data["layers"] if row["phase"] == "backward"]
    assert backward and sum(row["macs"] for row in backward) > data["macs_by_phase"]["forward"]
