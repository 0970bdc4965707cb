"""Depthwise conv backward-filter as a nest of its own (`training_nest.depthwise_filter_nest`):
per step of dy rows, x's rows staged once per row phase, each tap's product on the vector unit
and the products summed per (tap, channel). Checked against PyTorch autograd on the preset
targets for MobileNetV2's depthwise shapes (3x3, strides 1 and 2), strides that drop input
rows, asymmetric pads, dilation and a 5x5 kernel; a grouped conv with two channels per group
(still the transposing rewrite) beside it; its cycles and DRAM bytes as the cost model predicts
them."""

import pytest

from tests.training.conftest import train_mse as train

pytest.importorskip("torch")

CASES = [
    # (input NCHW, kernel, strides, pads [t, l, b, r], dilations)
    ((2, 16, 12, 12), 3, (1, 1), (1, 1, 1, 1), (1, 1)),     # MobileNetV2's stride-1 depthwise
    ((2, 24, 13, 13), 3, (2, 2), (1, 1, 1, 1), (1, 1)),     # stride 2, odd size: the last row dropped
    ((2, 8, 9, 10), 3, (2, 2), (1, 0, 2, 1), (1, 1)),       # asymmetric pads
    ((2, 8, 10, 10), 3, (1, 1), (2, 2, 2, 2), (2, 2)),      # dilation 2
    ((3, 12, 11, 11), 5, (2, 1), (2, 2, 2, 2), (1, 1)),     # 5x5, strides (2, 1)
]


def conv_model(graph, tmp_path, case, group=None):
    """A 1x1 conv makes x, the depthwise conv (group = channels, or `group`), ReLU, a 1x1 conv to
    one channel; trained with MSE."""
    (n, c, h, w), k, strides, pads, dilations = case
    group = group or c
    g = graph()
    x = g.node("Conv", ["x", g.init("pre", (c, 2, 1, 1))], "pre")
    y = g.node("Conv", [x, g.init("w", (c, c // group, k, k))], "conv", strides=list(strides), pads=list(pads),
               dilations=list(dilations), group=group)
    y = g.node("Relu", [y], "relu")
    y = g.node("Conv", [y, g.init("post", (1, c, 1, 1))], "post")
    return g.save(tmp_path / "dw.onnx", [n, 2, h, w], y, output_rank=4)


RUNS = [(case, "vector") for case in CASES] + [(CASES[i], target) for target in ("fusion", "edge") for i in (1, 2)]


@pytest.mark.parametrize("case, target", RUNS, ids=lambda v: v if isinstance(v, str) else
                         f"x{v[0]}k{v[1]}s{v[2]}p{v[3]}d{v[4]}")
def test_depthwise_filter_matches_torch(case, target, graph, tmp_path):
    data = train(conv_model(graph, tmp_path, case), target, tmp_path / "r.json")
    row = next(row for row in data["layers"] if row["name"] == "conv_y_grad_weight")
    assert row["op"] == "nn.conv2d_backward_filter"  # one nest, not the rewrite's transposes and conv


@pytest.mark.parametrize("target", ["vector", "fusion", "edge"])
def test_two_channels_per_group_asymmetric_stride_2(target, graph, tmp_path):
    """groups=2 (8 channels): the transposing rewrite, checked beside the depthwise nest."""
    train(conv_model(graph, tmp_path, ((2, 8, 9, 10), 3, (2, 2), (1, 0, 2, 1), (1, 1)), group=2), target,
          tmp_path / "r.json")


@pytest.mark.parametrize("case", [CASES[0], CASES[1]], ids=["stride-1", "stride-2"])
def test_depthwise_filter_is_predicted(case, graph, tmp_path):
    """The cost model times the nest's schedule: its cycles and DRAM bytes are the simulated ones;
    x is read once (stride 1: the kernel rows' windows in one load per step) and dy once."""
    from nncc.compiler.bench import target_options
    from nncc.compiler.pipeline import Options, compile_model
    from nncc.compiler.registry import Registry
    from nncc.compiler.training import program_of
    from nncc.runtime.interpreter import run
    from nncc.support import check

    compilation = compile_model(conv_model(graph, tmp_path, case), Registry.default(),
                                Options(target_options=target_options("vector"), training={"loss": "mse"}),
                                until="isa")
    program = program_of(compilation)
    result = run(program, check.random_inputs({s.name: s.shape for s in program.symbols_of("input")}, seed=0))
    index, layer = next((i, layer) for i, layer in enumerate(result.layers) if layer.name == "conv_y_grad_weight")
    prediction = program.predictions[index]
    assert (prediction["predicted_cycles"], prediction["predicted_dram_read_bytes"],
            prediction["predicted_dram_write_bytes"]) == (layer.cycles, layer.dram_read_bytes, layer.dram_write_bytes)
    (n, c, h, w), k = case[0], case[1]
    assert layer.dram_write_bytes == 4 * c * k * k
    if case[2] == (1, 1):  # 12 dy rows in one step: x read once (the pads are not read), dy once
        assert layer.dram_read_bytes == 4 * n * c * h * w * 2
