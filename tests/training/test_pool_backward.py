"""Max and average pooling's gradient as one nest (`compiler/codegen/pool_backward_nest.py`):
each window's maximum recomputed, the first maximum's mask from running maxima, dy scattered
into dx tiles on chip. Against PyTorch autograd on the reference and the preset targets (kernels
2 and 3, strides 1, 2 and 3, odd sizes, asymmetric pads, dilation, ceil mode, average pooling
with and without the padding counted), exact ties (integer inputs and weights: PyTorch's and
onnxruntime's first maximum, checked on their own too), and its cycles and DRAM bytes as the
cost model predicts them."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.training.conftest import train_mse as train

pytest.importorskip("torch")

CASES = {
    # name: (input NCHW, kernel, strides, pads [t, l, b, r], extra ONNX attributes, op)
    "k3s2p1_odd": ((2, 8, 9, 9), (3, 3), (2, 2), (1, 1, 1, 1), {}, "MaxPool"),  # ResNet's stem pool
    "k2s2_odd": ((2, 8, 9, 7), (2, 2), (2, 2), (0, 0, 0, 0), {}, "MaxPool"),  # the last row and column in no window
    "k3s2_asym": ((2, 8, 12, 12), (3, 3), (2, 2), (1, 0, 1, 1), {}, "MaxPool"),
    "k3s1p1": ((2, 4, 7, 7), (3, 3), (1, 1), (1, 1, 1, 1), {}, "MaxPool"),
    "k3s2_ceil": ((2, 8, 10, 10), (3, 3), (2, 2), (0, 0, 0, 0), {"ceil_mode": 1}, "MaxPool"),
    "k2s3_gap": ((2, 8, 11, 11), (2, 2), (3, 3), (0, 0, 0, 0), {}, "MaxPool"),  # rows no window reaches: zeros
    "k3s2_dil": ((2, 8, 11, 11), (3, 3), (2, 2), (2, 2, 2, 2), {"dilations": [2, 2]}, "MaxPool"),
    "avg_k3s2": ((2, 8, 9, 9), (3, 3), (2, 2), (1, 1, 1, 1), {"count_include_pad": 0}, "AveragePool"),
    "avg_ceil": ((2, 8, 11, 11), (2, 2), (2, 2), (0, 0, 1, 1), {"count_include_pad": 0, "ceil_mode": 1},
                 "AveragePool"),
    "avg_incl": ((2, 8, 10, 9), (3, 3), (2, 2), (1, 1, 1, 1), {"count_include_pad": 1}, "AveragePool"),
}


def pool_model(graph, tmp_path, name):
    """A 1x1 conv makes x (8 or 4 channels), ReLU, the pooling, a 1x1 conv to one channel (MSE)."""
    (n, c, h, w), kernel, strides, pads, extra, op = CASES[name]
    g = graph(0)
    x = g.node("Relu", [g.node("Conv", ["x", g.init("pre", (c, 2, 1, 1))], "pre")], "relu")
    y = g.node(op, [x], "pool", kernel_shape=list(kernel), strides=list(strides), pads=list(pads), **extra)
    y = g.node("Conv", [y, g.init("post", (1, c, 1, 1))], "post")
    return g.save(tmp_path / f"{name}.onnx", [n, 2, h, w], y, output_rank=4)


RUNS = [(name, "fusion") for name in CASES] + [(name, "reference") for name in CASES] + \
    [(name, "vector") for name in ("k3s2_asym", "k3s2_dil", "avg_ceil")] + \
    [(name, "edge") for name in ("k3s2p1_odd", "k2s3_gap", "avg_incl")]


@pytest.mark.parametrize("name, target", RUNS)
def test_pool_gradient_matches_torch(name, target, graph, tmp_path):
    data = train(pool_model(graph, tmp_path, name), target, tmp_path / "r.json")
    if target != "reference":  # one layer: the nest, no masks, transposes or scatter convs of its own
        ops = [row["op"] for row in data["layers"] if row["name"] == "pool_y_grad"]
        assert ops == [f"nn.{'max' if CASES[name][5] == 'MaxPool' else 'avg'}_pool_backward"]


def test_torch_and_onnxruntime_take_the_first_maximum():
    """The rule the nest follows: on a window of equal values PyTorch's gradient and
    onnxruntime's MaxPool indices go to its first element in window (row-major) order."""
    import onnxruntime as ort
    import torch

    x = np.array([[[[1, 1, 0], [1, 1, 2], [0, 2, 2]]]], dtype=np.float32)  # windows 2x2, stride 1
    tx = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(tx, 2, 1).sum().backward()
    assert tx.grad.numpy()[0, 0].tolist() == [[1, 0, 0], [0, 0, 2], [0, 1, 0]]
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], strides=[1, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("i", TensorProto.INT64, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    _, indices = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    assert indices[0, 0].tolist() == [[0, 5], [7, 5]]  # flat indices into the 3x3 plane


def tie_model(graph, tmp_path):
    """Integer 1x1 weights (-1, 0, 1) on integer inputs: the pooled values tie exactly, and
    their gradients flow into the weights (a ReLU's ties at 0 would have none)."""
    g = graph(3)
    rng = np.random.default_rng(1)
    g.inits.append(numpy_helper.from_array(rng.integers(-1, 2, (8, 2, 1, 1)).astype(np.float32), "pre"))
    y = g.node("MaxPool", [g.node("Conv", ["x", "pre"], "pre")], "pool", kernel_shape=[3, 3], strides=[2, 2],
               pads=[1, 1, 1, 1])
    y = g.node("Conv", [y, g.init("post", (1, 8, 1, 1))], "post")
    path = g.save(tmp_path / "ties.onnx", [2, 2, 9, 9], y, output_rank=4)
    inputs = tmp_path / "ties.npz"
    np.savez(inputs, x=rng.integers(-2, 3, (2, 2, 9, 9)).astype(np.float32))
    return path, inputs


@pytest.mark.parametrize("target", ["reference", "fusion", "vector", "edge"])
def test_ties_go_to_the_first_maximum(target, graph, tmp_path):
    from nncc.compiler.cli import main

    path, inputs = tie_model(graph, tmp_path)
    report = tmp_path / "r.json"
    code = main([str(path), "--train", f"--target={target}", "--loss", "mse", "--check", "--inputs", str(inputs),
                 "--report", str(report), "--quiet"])
    data = json.loads(report.read_text())
    assert code == 0 and all(v["passed"] for v in data["check"]["tensors"].values()), data["check"]["tensors"]


def test_tie_model_has_ties(graph, tmp_path):
    """The tie test's windows hold their maximum more than once (else it would test nothing)."""
    import torch

    path, inputs = tie_model(graph, tmp_path)
    weight = numpy_helper.to_array(next(i for i in onnx.load(str(path)).graph.initializer if i.name == "pre"))
    x = torch.tensor(np.load(inputs)["x"])
    conv = torch.nn.functional.conv2d(x, torch.tensor(weight))
    windows = torch.nn.functional.unfold(torch.nn.functional.pad(conv, (1, 1, 1, 1), value=-np.inf), 3, stride=2)
    windows = windows.view(2, 8, 9, -1)
    ties = (windows == windows.max(dim=2, keepdim=True).values).sum(dim=2) > 1
    assert ties.float().mean() > 0.2


@pytest.mark.parametrize("name, target", [("k3s2_asym", "fusion"), ("k3s2_asym", "vector"), ("avg_ceil", "edge"),
                                          ("k3s2_dil", "edge")])
def test_pool_gradient_is_predicted(name, target, graph, tmp_path):
    """The cost model times the nest's schedule: its cycles and DRAM bytes are the simulated ones;
    dx is written once."""
    from nncc.compiler.bench import target_options
    from nncc.compiler.pipeline import Options, compile_model
    from nncc.compiler.registry import Registry
    from nncc.compiler.training import program_of
    from nncc.runtime.interpreter import run
    from nncc.support import check

    compilation = compile_model(pool_model(graph, tmp_path, name), Registry.default(),
                                Options(target_options=target_options(target), training={"loss": "mse"}),
                                until="isa")
    program = program_of(compilation)
    result = run(program, check.random_inputs({s.name: s.shape for s in program.symbols_of("input")}, seed=0))
    index, layer = next((i, layer) for i, layer in enumerate(result.layers) if layer.name == "pool_y_grad")
    prediction = program.predictions[index]
    assert (prediction["predicted_cycles"], prediction["predicted_dram_read_bytes"],
            prediction["predicted_dram_write_bytes"]) == (layer.cycles, layer.dram_read_bytes, layer.dram_write_bytes)
    (n, c, h, w) = CASES[name][0]
    assert layer.dram_write_bytes == 4 * n * c * h * w
    if CASES[name][5] == "MaxPool":  # x at least once (its halo rows once more per tile)
        assert layer.dram_read_bytes >= 4 * n * c * h * w
