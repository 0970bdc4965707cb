"""fuse-groups on chains of full convs and pooling layers (the fused-layer schedule of Alwani et
al.): one nest of 2-D tiles whose halos are recomputed, on every target, against onnxruntime;
DRAM traffic is each tile's input window (clipped to the image), the weights once and the
output once, counted by hand; the cost model's prediction is the simulation's."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from codegen_helpers import (TARGETS, assert_fusion_figures_simulated, compile_fused, nests, ort_outputs, target,
                             tiled, within_scale)
from nncc.compiler.codegen.chain_nest import find_runs
from nncc.compiler.codegen.context import layer_name
from nncc.compiler.codegen.lower import lower_module
from nncc.compiler.nn_interpreter import main_function
from nncc.dialects import tile
from nncc.runtime.interpreter import run


def run_against_onnxruntime(model, module, store, target_name: str, x: np.ndarray):
    """The program of `module` on the target, its run on `x`, and onnxruntime's output, which the
    run's output `y` matches."""
    program = lower_module(module, store, target(target_name))
    result = run(program, {"x": x})
    (expected,) = ort_outputs(model, {"x": x})
    ok, error, scale = within_scale(result.outputs["y"], expected)
    assert ok, f"max error {error} against scale {scale}"
    return program, result, expected


def conv(name, x, y, c, o, rng, kernel=3, stride=1, pad=1, dilation=1):
    weight = (rng.standard_normal((o, c, kernel, kernel)) * math.sqrt(2 / (c * kernel * kernel))).astype(np.float32)
    bias = (rng.standard_normal(o) * 0.1).astype(np.float32)
    node = helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{y}.pre"], name=name, strides=[stride] * 2,
                            pads=[pad] * 4, dilations=[dilation] * 2, kernel_shape=[kernel, kernel])
    relu = helper.make_node("Relu", [f"{y}.pre"], [y], name=f"{name}.relu")
    return [node, relu], [numpy_helper.from_array(weight, f"{name}.w"), numpy_helper.from_array(bias, f"{name}.b")]


def pool(name, x, y, kind="MaxPool", kernel=2, stride=2, pad=0):
    return [helper.make_node(kind, [x], [y], name=name, kernel_shape=[kernel] * 2, strides=[stride] * 2,
                             pads=[pad] * 4)], []


CHAINS = {
    # VGG's conv1_1, conv1_2, pool1, conv2_1 in small
    "vgg_head": ((2, 3, 12, 12), [("conv", 8, {}), ("conv", 8, {}), ("MaxPool", 0, {}), ("conv", 16, {})]),
    # ResNet's stem: a strided conv, then a padded max pool (its border is -inf), odd sizes
    "stem": ((1, 3, 13, 11), [("conv", 16, {"stride": 2}), ("MaxPool", 0, {"kernel": 3, "stride": 2, "pad": 1})]),
    # a dilated conv, average pooling, a 1x1
    "dilated_avg": ((1, 4, 12, 12), [("conv", 8, {"pad": 2, "dilation": 2}), ("AveragePool", 0, {}),
                                     ("conv", 8, {"kernel": 1, "pad": 0})]),
}


def chain_model(name: str, seed: int = 0) -> onnx.ModelProto:
    shape, layers = CHAINS[name]
    rng = np.random.default_rng(seed)
    nodes, inits, source, c = [], [], "x", shape[1]
    for i, (kind, channels, options) in enumerate(layers):
        out = "y" if i + 1 == len(layers) else f"t{i}"
        if kind == "conv":
            made, weights = conv(f"conv{i}", source, out, c, channels, rng, **options)
            c = channels
        else:
            made, weights = pool(f"pool{i}", source, out, kind, **options)
        nodes += made
        inits += weights
        source = out
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return with_output_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=9))


def with_output_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with every output's shape as shape inference gives it."""
    del model.graph.value_info[:]
    for output in model.graph.output:
        output.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: v.type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for output in model.graph.output:
        output.type.CopyFrom(shapes[output.name])
    return model


def windows(model: onnx.ModelProto):
    """(kernel, stride, pad, dilation) of every layer, and the input's height and width."""
    out = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "MaxPool", "AveragePool"):
            a = {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}
            out.append((a["kernel_shape"][0], a["strides"][0], a["pads"][0], a.get("dilations", [1])[0]))
    return out


def input_window(layers, first: int, count: int, size: int) -> int:
    """Rows (or columns) of the image the first layer reads for `count` outputs of the last from `first`."""
    for kernel, stride, pad, dilation in reversed(layers):
        first, count = first * stride - pad, (count - 1) * stride + (kernel - 1) * dilation + 1
    return max(0, min(first + count, size) - max(first, 0))


def tiling(group: tile.NestOp) -> tuple[str, int, int, int, int]:
    """(halo, output rows, rows per tile, output columns, columns per tile) of a chain's nest;
    halo "lines" for line buffers (a loop of bands of columns, inside it one of strips)."""
    loops = [[a.name_hint for a in op.block.args[::2]] for op in group.body.walk() if isinstance(op, tile.ForOp)]
    bounds = {name: (high, step) for op in group.body.walk() if isinstance(op, tile.ForOp)
              for name, (_, high, step) in zip([a.name_hint for a in op.block.args[::2]], op.bounds)}
    halo = "lines" if ["oh"] in loops else group.attributes["halo"].data
    loops = bounds
    return (halo, *loops["oh"], *loops["ow"])


def hand_count_read_bytes(model, group: tile.NestOp, halo: str | None = None) -> int:
    """Each tile's input window clipped to the image (a cached halo: each band of tiles reads its
    rows of the image once, whole-width strips every row once; line buffers: each band of columns
    every row of its columns once), then every weight and bias once."""
    n, c, h, w = (d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    found, oh, toh, ow, tow = tiling(group)
    halo = halo or found
    layers = windows(model)
    if halo == "lines":
        elements = sum(n * c * input_window(layers, 0, oh, h) * input_window(layers, q, tow, w)
                       for q in range(0, ow, tow))
    elif halo == "cache" and tow < ow:
        elements = sum(n * c * input_window(layers, r, min(toh, oh - r), h) * input_window(layers, 0, ow, w)
                       for r in range(0, oh, toh))
    elif halo == "cache":
        elements = n * c * input_window(layers, 0, oh, h) * input_window(layers, 0, ow, w)
    else:
        elements = sum(n * c * input_window(layers, r, min(toh, oh - r), h) * input_window(layers, q, tow, w)
                       for r in range(0, oh, toh) for q in range(0, ow, tow))
    return 4 * (elements + sum(math.prod(i.dims) for i in model.graph.initializer))


@pytest.mark.parametrize("target_name", TARGETS)
@pytest.mark.parametrize("name", sorted(CHAINS))
def test_chain_runs_as_one_nest(name, target_name):
    model = chain_model(name)
    module, store = tiled(model, target_name, "fuse-groups{always=true},tile-layers,double-buffer")
    (group,) = nests(module)
    assert group.attributes["op"].data == "fused.group" and group.attributes["halo"].data in ("recompute", "cache")
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    program, result, expected = run_against_onnxruntime(model, module, store, target_name, x)
    # the intermediates never leave the chip; the weights are read once, each tile's window once
    assert result.write_bytes["DRAM"] == 4 * expected.size
    assert result.read_bytes["DRAM"] == hand_count_read_bytes(model, group)
    prediction = program.predictions[0]
    assert prediction["predicted_cycles"] == result.layers[0].cycles
    assert prediction["predicted_dram_read_bytes"] == result.read_bytes["DRAM"]


@pytest.mark.parametrize("target_name", TARGETS)
@pytest.mark.parametrize("tiles", [(2, 3), (1, 6)], ids=["2x3_tiles", "whole_width_strips"])
@pytest.mark.parametrize("name", sorted(CHAINS))
def test_cached_input_halo(name, tiles, target_name, monkeypatch):
    """The chain's input window a ring (`halo = "cache"`): each tile keeps the columns it shares
    with the tile before in its band (whole-width strips: the rows of the strip before) and reads
    only the new ones; the intermediates' halos are still recomputed. Outputs as onnxruntime's on
    every target; on one core (edge, fusion) the DRAM bytes are every band's rows once (strips:
    every row once), counted by hand, and the prediction is the simulation's."""
    from nncc.compiler.codegen import chain_nest

    model = chain_model(name)
    last = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    toh, tow = tiles[0], min(tiles[1], last[3])
    tow = max(d for d in range(1, tow + 1) if last[3] % d == 0)
    monkeypatch.setattr(chain_nest, "tile_candidates",
                        lambda lowering, stages: [chain_nest.ChainTiles(toh, tow, halo="cache")])
    module, store = tiled(model, target_name, "fuse-groups{always=true},tile-layers,double-buffer")
    (group,) = nests(module)
    assert group.attributes["halo"].data == "cache"
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    program, result, expected = run_against_onnxruntime(model, module, store, target_name, x)
    assert result.write_bytes["DRAM"] == 4 * expected.size
    prediction = program.predictions[0]
    assert prediction["predicted_dram_read_bytes"] == result.read_bytes["DRAM"]
    if target(target_name).cores == 1:
        assert result.read_bytes["DRAM"] == hand_count_read_bytes(model, group, "cache")
        assert result.read_bytes["DRAM"] < hand_count_read_bytes(model, group, "recompute")


def hand_count_line_macs(model, group: tile.NestOp) -> int:
    """The MACs of a chain with line buffers: every conv computes each row of its output window
    inside the image once per band of columns (no halo rows recomputed), over the window's columns
    (its padding columns too, overwritten after); the last conv its output rows once."""
    n, _, h, _ = (d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    _, oh, _, ow, tow = tiling(group)
    layers, convs = windows(model), [node for node in model.graph.node if node.op_type in ("Conv", "MaxPool",
                                                                                         "AveragePool")]
    weights = {i.name: i.dims for i in model.graph.initializer}
    heights = [h]
    for kernel, stride, pad, dilation in layers:
        heights.append((heights[-1] + 2 * pad - (kernel - 1) * dilation - 1) // stride + 1)
    macs = 0
    for k, node in enumerate(convs):
        if node.op_type != "Conv":
            continue
        o, ci, kh, kw = weights[node.input[1]]
        rows = input_window(layers[k + 1:], 0, oh, heights[k + 1])
        columns = tow
        for kernel, stride, _, dilation in reversed(layers[k + 1:]):
            columns = (columns - 1) * stride + (kernel - 1) * dilation + 1
        macs += n * (ow // tow) * rows * columns * o * ci * kh * kw
    return macs


@pytest.mark.parametrize("target_name", TARGETS)
@pytest.mark.parametrize("tiles", [(1, 0), (2, 2)], ids=["whole_width_strips", "two_bands"])
@pytest.mark.parametrize("name", sorted(CHAINS))
def test_line_buffers(name, tiles, target_name, monkeypatch):
    """Line buffers (`halo = "cache"`, every window that shares rows with the strip before a
    `ring`): bands of columns walked down, each strip copying the rows its windows keep on chip
    and computing only the new rows of every layer. Outputs as onnxruntime's on every target; each
    band reads its columns of every image row once, every intermediate row inside the image is
    computed once per band (the MACs, counted by hand), and the prediction is the simulation."""
    from nncc.compiler.codegen import chain_nest

    model = chain_model(name)
    last = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    toh, tow = tiles[0], last[3] // tiles[1] if tiles[1] else last[3]
    monkeypatch.setattr(chain_nest, "tile_candidates",
                        lambda lowering, stages: [chain_nest.ChainTiles(toh, tow, halo="cache", lines=True)])
    module, store = tiled(model, target_name, "fuse-groups{always=true},tile-layers,double-buffer")
    (group,) = nests(module)
    assert group.attributes["halo"].data == "cache" and tiling(group)[0] == "lines"
    # the windows that keep rows (after the 2x2 average pool of dilated_avg, none but the input)
    copies = [op for op in group.body.walk() if isinstance(op, tile.CopyOp)]
    assert len(copies) == {"vgg_head": 2, "stem": 1, "dilated_avg": 0}[name]
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    program, result, expected = run_against_onnxruntime(model, module, store, target_name, x)
    assert result.write_bytes["DRAM"] == 4 * expected.size
    assert result.read_bytes["DRAM"] == hand_count_read_bytes(model, group)
    assert result.macs == hand_count_line_macs(model, group)
    prediction = program.predictions[0]
    assert prediction["predicted_cycles"] == result.layers[0].cycles
    assert prediction["predicted_dram_read_bytes"] == result.read_bytes["DRAM"]


@pytest.mark.parametrize("target_name", ["edge", "vector"])
def test_recorded_figures_are_the_simulation(target_name):
    """The `fusion` attribute: the group's simulated figures, and those of its layers compiled
    without the pass."""
    model = chain_model("vgg_head")
    x = np.random.default_rng(2).standard_normal((2, 3, 12, 12)).astype(np.float32)
    assert_fusion_figures_simulated(model, target_name, x, 4)


def test_the_objective_decides():
    """A group is kept only where its figures rank first by the module's objective; under the
    DRAM objective the 24x24 VGG head fuses (its intermediates are most of its traffic)."""
    model = chain_model("vgg_head")
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 24
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_value = 24
    model = with_output_shapes(model)
    fused = 0
    for objective in ("cycles", "dram"):
        module, _ = tiled(model, "edge", f"fuse-groups{{tile-objective={objective}}}")
        for nest in nests(module):
            figures = nest.attributes["fusion"].data
            cycles, nbytes = ([a.value.data for a in figures[key]] for key in ("cycles", "dram_bytes"))
            ranked = list(zip(nbytes, cycles)) if objective == "dram" else list(zip(cycles, nbytes))
            assert ranked[0] < ranked[1]
            fused += objective == "dram"
    assert fused >= 1


def test_shared_output_ends_a_run():
    """A layer whose output a second op reads ends the run: that tensor must reach DRAM."""
    model = chain_model("vgg_head")
    model.graph.output.append(helper.make_tensor_value_info("t1", TensorProto.FLOAT, None))
    module, _ = compile_fused(with_output_shapes(model))
    runs = find_runs(main_function(module).body.block, set())
    assert [[layer_name(op) for op in r] for r in runs] == [["t0_pre", "t1_pre"], ["t2", "y_pre"]]


@pytest.mark.parametrize("target_name", ["edge", "vector"])
@pytest.mark.parametrize("lines", [False, True], ids=["recompute", "line_buffers"])
@pytest.mark.parametrize("outer", [False, True])
def test_tail_in_channel_blocks(outer, lines, target_name, monkeypatch):
    """The last conv (and the pooling after it) in blocks of output channels: innermost, its
    weights reloaded by every tile (strip) but the two blocks still on chip (serpentine);
    outermost, the layers before it recomputed per block and the input windows read once per
    block; the halos recomputed, or line buffers (the prologue strips compute no output row, so
    they load no block, and are even in number: each band's first strip continues the serpentine
    walk of the band before). Outputs as onnxruntime's, DRAM bytes counted by hand (edge: one
    core), predictions the simulation's."""
    from nncc.compiler.codegen import chain_nest

    halo = "cache" if lines else "recompute"
    monkeypatch.setattr(chain_nest, "tile_candidates",
                        lambda lowering, stages: [chain_nest.ChainTiles(2, 3, 4, outer, halo, lines)])
    model = chain_model("vgg_head")
    module, store = tiled(model, target_name, "fuse-groups{always=true},tile-layers,double-buffer")
    (group,) = nests(module)
    loops = [tile.ints(op.step) for op in group.body.walk() if isinstance(op, tile.ForOp)]
    spatial = [(1, 3), (2,)] if lines else [(1, 2, 3)]
    assert loops == ([(4,), *spatial] if outer else [*spatial, (4,)])
    x = np.random.default_rng(3).standard_normal((2, 3, 12, 12)).astype(np.float32)
    program, result, expected = run_against_onnxruntime(model, module, store, target_name, x)
    assert result.write_bytes["DRAM"] == 4 * expected.size
    prediction = program.predictions[0]
    assert prediction["predicted_cycles"] == result.layers[0].cycles
    assert prediction["predicted_dram_read_bytes"] == result.read_bytes["DRAM"]
    if target_name == "edge":
        tiles = 2 * 3 * 2  # images x row tiles x column tiles
        weights = 4 * sum(math.prod(i.dims) for i in model.graph.initializer)
        windows = hand_count_read_bytes(model, group) - weights
        block = 4 * (8 * 9 * 4 + 4)  # a block of the tail conv's weights and bias
        reloaded = 0 if outer else (tiles - 1) * 2 * block
        assert result.read_bytes["DRAM"] == windows * (4 if outer else 1) + weights + reloaded
