"""Conv backward-filter (group 1) as one gemm per tile (`training_nest.filter_nest`): every row of
the broadcast operand a (kernel tap, input channel) pair, k the batch x output-gradient rows x
columns. Checked against PyTorch autograd on the preset targets for strides that drop input
rows, asymmetric pads, dilation, 1x1 and large kernels; its cycles and DRAM bytes as the cost
model predicts them; its matmuls' shapes from the tiles."""


import numpy as np
import pytest

from tests.training.conftest import train_mse as train

pytest.importorskip("torch")

CASES = [
    # (input NCHW, weight OIHW, strides, pads [t, l, b, r], dilations)
    ((2, 3, 8, 8), (20, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((2, 3, 8, 8), (4, 3, 3, 3), (2, 2), (0, 0, 0, 0), (1, 1)),       # 8 -> 3: row 7 never read
    ((2, 3, 9, 7), (5, 3, 3, 2), (2, 3), (1, 0, 2, 1), (1, 1)),       # asymmetric pads, odd strides
    ((2, 4, 10, 10), (6, 4, 3, 3), (1, 1), (2, 2, 2, 2), (2, 2)),     # dilation 2
    ((3, 5, 4, 4), (7, 5, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),       # pointwise
    ((2, 6, 7, 7), (8, 6, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),       # pointwise, stride 2 (a shortcut)
    ((2, 3, 11, 11), (4, 3, 7, 7), (4, 4), (3, 2, 1, 0), (1, 1)),     # large kernel, stride 4
]


def conv_model(graph, tmp_path, case):
    """A 1x1 conv makes x (so x is computed and the gradient of the conv's input is needed), the
    conv under test, ReLU, a 1x1 conv to one channel; trained with MSE."""
    x_shape, w_shape, strides, pads, dilations = case
    g = graph()
    n, c, h, w = x_shape
    x = g.node("Conv", ["x", g.init("pre", (c, 2, 1, 1))], "pre")
    y = g.node("Conv", [x, g.init("w", w_shape), g.init("b", (w_shape[0],))], "conv", strides=list(strides),
               pads=list(pads), dilations=list(dilations))
    y = g.node("Relu", [y], "relu")
    y = g.node("Conv", [y, g.init("post", (1, w_shape[0], 1, 1))], "post")
    return g.save(tmp_path / "conv.onnx", [n, 2, h, w], y, output_rank=4)


RUNS = [(case, "vector") for case in CASES] + [(CASES[i], target) for target in ("fusion", "edge") for i in (0, 2, 5)]


@pytest.mark.parametrize("case, target", RUNS, ids=lambda v: v if isinstance(v, str) else
                         f"x{v[0]}w{v[1]}s{v[2]}p{v[3]}d{v[4]}")
def test_backward_filter_gemm_matches_torch(case, target, graph, tmp_path):
    data = train(conv_model(graph, tmp_path, case), target, tmp_path / "r.json")
    filters = {row["name"].removesuffix("_parts") for row in data["layers"] if row["op"] == "nn.conv2d_backward_filter"}
    assert len(filters) == 3  # a split reduction's partial sums are a layer of their own (`_parts`)


@pytest.mark.parametrize("case", [((2, 16, 12, 12), (48, 16, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
                                  ((2, 16, 28, 28), (32, 16, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),
                                  ((2, 3, 64, 64), (64, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1))],
                         ids=["3x3", "1x1-stride-2-staged", "3-channels-split"])
def test_backward_filter_cycles_are_predicted(case, graph, tmp_path):
    """The cost model times the gemm nest's schedule (x's rows staged and subsampled on chip for
    the strided 1x1; the reduction split over the cores, then the parts added, for 3 channels):
    its cycles and DRAM bytes are the simulated ones, nest by nest."""
    from nncc.compiler.bench import target_options
    from nncc.compiler.pipeline import Options, compile_model
    from nncc.compiler.registry import Registry
    from nncc.compiler.training import program_of
    from nncc.runtime.interpreter import run
    from nncc.support import check

    model = conv_model(graph, tmp_path, case)
    compilation = compile_model(model, Registry.default(), Options(target_options=target_options("vector"),
                                                                   training={"loss": "mse"}), until="isa")
    program = program_of(compilation)
    result = run(program, check.random_inputs({s.name: s.shape for s in program.symbols_of("input")}, seed=0))
    rows = [(layer, program.predictions[i]) for i, layer in enumerate(result.layers)
            if layer.op == "nn.conv2d_backward_filter"]
    assert len({layer.name.removesuffix("_parts") for layer, _ in rows}) == 3
    for layer, prediction in rows:
        assert (prediction["predicted_cycles"], prediction["predicted_dram_read_bytes"],
                prediction["predicted_dram_write_bytes"]) == \
            (layer.cycles, layer.dram_read_bytes, layer.dram_write_bytes), layer.name


def test_backward_filter_matmuls_are_taps_by_channels(graph, tmp_path):
    """Each matmul of the 3x3 conv's backward-filter has taps x channels rows (several channels),
    and batch x rows x OW as k (rows dividing OH); the MACs add up to the layer's."""
    from nncc.compiler.bench import target_options
    from nncc.compiler.pipeline import Options, compile_model
    from nncc.compiler.registry import Registry
    from nncc.compiler.training import program_of

    model = conv_model(graph, tmp_path, ((2, 16, 12, 12), (48, 16, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1)))
    compilation = compile_model(model, Registry.default(), Options(target_options=target_options("vector"),
                                                                   training={"loss": "mse"}), until="isa")
    layer, matmuls = None, []
    for ins in program_of(compilation).instructions:
        if type(ins).__name__ == "Layer":
            layer = ins.name
        elif layer == "conv_y_grad_weight" and type(ins).__name__ == "Matmul":
            matmuls.append(ins)
    assert matmuls and {ins.batch for ins in matmuls} == {1}
    assert all(m % 9 == 0 for m, _, _ in (ins.mnk for ins in matmuls)) and max(ins.mnk[0] for ins in matmuls) > 9
    assert all(k % 24 == 0 and 12 % (k // 24) == 0 for _, _, k in (ins.mnk for ins in matmuls))
    assert sum(int(np.prod(ins.mnk)) for ins in matmuls) == 48 * 16 * 9 * 2 * 12 * 12


def test_backward_filter_reads_x_nchw(graph, tmp_path):
    """On `vector` dram-layout stores feature maps NHWC where a conv's tiles move faster so; the
    backward-filter gemm reads x through row-major views (each tap's box is runs of OW floats,
    single floats if x were NHWC), so x stays NCHW even when a conv produces it."""
    from nncc.compiler.bench import target_options
    from nncc.compiler.pipeline import Options, compile_model
    from nncc.compiler.registry import Registry
    from nncc.dialects import tile

    model = conv_model(graph, tmp_path, ((2, 64, 16, 16), (64, 64, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1)))
    compilation = compile_model(model, Registry.default(), Options(target_options=target_options("vector"),
                                                                   training={"loss": "mse"}), until="tile")
    nests = [op for op in compilation.module.walk() if isinstance(op, tile.NestOp)
             and op.attributes["op"].data == "nn.conv2d_backward_filter" and op.layer.data == "conv_y_grad_weight"]
    assert len(nests) == 1
    x = nests[0].block.args[0]
    views = [use.operation for use in x.uses]
    assert views and all(isinstance(view, tile.ViewOp) for view in views)
    assert all(tuple(view.result.type.get_shape()) == (2, 64, 16, 16) for view in views)
    assert all(list(view.strides)[1:] == [256, 16, 1] for view in views)  # NCHW: channel, row, column
    assert nests[0].inputs[0].owner.attributes.get("op").data == "nn.conv2d"  # x: the output of the 1x1 conv


def test_strided_backward_filter_reads_whole_rows(graph, tmp_path):
    """A stride-2 1x1 conv's backward-filter (ResNet's downsample shortcut): the cost model picks
    the gemm whose x rows are loaded whole (one DRAM run per row, not a burst per float) and
    subsampled on chip by a strided `tile.map copy`; the gradients match PyTorch. (It requests
    about twice the bytes, in 14 x 32 runs of 108 bytes where the strided read had one run per
    float: 14,587 -> 8,527 cycles.)"""
    from nncc.compiler.bench import target_options
    from nncc.compiler.pipeline import Options, compile_model
    from nncc.compiler.registry import Registry
    from nncc.dialects import tile

    case = ((2, 16, 28, 28), (32, 16, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1))
    model = conv_model(graph, tmp_path, case)
    data = train(model, "vector", tmp_path / "r.json")
    compilation = compile_model(model, Registry.default(), Options(target_options=target_options("vector"),
                                                                   training={"loss": "mse"}), until="tile")
    nest = next(op for op in compilation.module.walk() if isinstance(op, tile.NestOp)
                and op.layer.data == "conv_y_grad_weight")
    copies = [op for op in nest.walk() if isinstance(op, tile.MapOp) and op.func.data == "copy"]
    assert len(copies) == 1 and copies[0].view_strides is not None
    loads = [op for op in nest.walk() if isinstance(op, tile.LoadOp)]
    row = next(r for r in data["layers"] if r["name"] == "conv_y_grad_weight")
    # x: every second row (14), 27 columns each (14 outputs at stride 2), read once (one output-
    # channel tile of 32); dy once
    assert row["dram_read_bytes"] == 4 * (2 * 16 * 14 * 27 + 2 * 32 * 14 * 14), row
    assert len(loads) == 2  # x's rows and the dy block


def test_few_channels_split_the_reduction_over_the_cores(graph, tmp_path):
    """3 input channels (VGG's conv1_1): one channel tile of 27 (tap, channel) rows would keep one
    core busy; the cost model splits the reduction (dy rows) over the 4 cores, each summing a
    partial dW (layer `conv_y_grad_weight_parts`, a [part][tap][c][o] tensor), and a second layer
    adds the parts. The gradients match PyTorch; the parts' layer does all the MACs."""
    case = ((2, 3, 64, 64), (64, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
    data = train(conv_model(graph, tmp_path, case), "vector", tmp_path / "r.json")
    rows = {row["name"]: row for row in data["layers"] if row["op"] == "nn.conv2d_backward_filter"}
    parts, total = rows["conv_y_grad_weight_parts"], rows["conv_y_grad_weight"]
    assert parts["macs"] == 64 * 3 * 9 * 2 * 64 * 64 and total["macs"] == 0
    assert total["dram_read_bytes"] == 4 * 4 * 64 * 3 * 9 and total["dram_write_bytes"] == 4 * 64 * 3 * 9
    assert parts["dram_write_bytes"] == 4 * 4 * 64 * 3 * 9  # each core's partial sums, once
