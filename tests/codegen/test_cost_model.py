"""The compiler's cost model against the interpreter. The cost model times the schedule the
scheduler emits with the timing rules the interpreter uses (`runtime/timing.py`), so per conv/FC
layer of VGG-16 and ResNet-18 (64x64) the predicted cycles and DRAM bytes equal the simulated
ones on every target, and so they do for any scheduled layer (a pooling layer here) and under a
changed timing rule; the closed form used to rank tiles; tilings the search times once for all;
the width mapping's bound; Scan order never reads more than naive; the predictions reach the
report rows of `nncc --report`."""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import onnx
import pytest

from nncc.compiler import zoo
from nncc.compiler.codegen.context import Lowering
from nncc.compiler.codegen.conv import ConvShape, ConvTiles, choose_tiles
from nncc.compiler.codegen.conv_nest import probe_nest
from nncc.compiler.codegen.nest import NestLowering
from nncc.compiler.codegen.cost_model import conv_estimate, predict_jobs, roofline_cycles
from nncc.compiler.codegen.lower import lower_module
from nncc.compiler.codegen.scheduler import Scheduler
from nncc.compiler.pipeline import Options, compile_model
from nncc.compiler.registry import Registry
from nncc.runtime import isa
from nncc.runtime.interpreter import run
from nncc.runtime.program import Program
from nncc.runtime.target import load_target



# One model and one run at a time: the tests below take ResNet-18 on every target, then VGG-16.
@lru_cache(maxsize=1)
def fused(name: str, resolution: int, tmp_root: str):
    from pathlib import Path

    path = Path(tmp_root) / f"{name}_{resolution}.onnx"
    if not path.exists():
        onnx.save(zoo.build_model(name, batch=1, resolution=resolution), str(path))
    return compile_model(path, Registry.default(), Options(), until="fused")


@lru_cache(maxsize=1)
def lowered(name: str, target_name: str, tmp_root: str, buffers: int = 2):
    """(program, run result) of zoo model `name` at 64x64 on `target_name`, `buffers` slots per buffer."""
    compilation = fused(name, 64, tmp_root)
    program = lower_module(compilation.module, compilation.store, load_target(target_name), buffers=buffers)
    return program, run(program)


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory):
    yield str(tmp_path_factory.mktemp("cost_model"))
    lowered.cache_clear()  # free the compiled models and their runs when the module is done
    fused.cache_clear()


def conv_fc_layers(program, result):
    """(layer stats, prediction) of every conv and gemm layer (pooling nests have predictions too)."""
    predictions = program.predictions
    return [(layer, predictions[i]) for i, layer in enumerate(result.layers)
            if i in predictions and layer.op.endswith(("conv2d", "gemm"))]


def single_layer(target_name: str, s: ConvShape, tiles: ConvTiles | None = None, order: str = "scan",
                 overrides: tuple[str, ...] = ()):
    """One conv layer with placeholder DRAM operands: (tiles, prediction, simulated layer)."""
    target = load_target(target_name, overrides)
    program = Program(target, [])
    lowering = Lowering(target, program, None, tile_order=order)
    if hasattr(lowering, "layer_cores"):  # every core, as lower_module deals a layer's tiles
        lowering.layer_cores = target.cores
    tiles = tiles or choose_tiles(lowering, s, "layer")
    unrolled = NestLowering(lowering, probe_nest(lowering, s, tiles, "channels", True))  # the tile search's probe
    jobs, kinds = unrolled.jobs(), unrolled.kinds()
    prediction = predict_jobs(target, kinds, jobs)
    program.instructions = [isa.make("layer", name="layer"), *Scheduler(target, kinds).schedule(jobs),
                            isa.make("barrier")]
    return tiles, prediction, run(program, {}).layers[0]


def conv3x3(n, c, h, o, stride=1):
    oh = (h + 2 - 3) // stride + 1
    return ConvShape(n, c, h, h, o, 3, 3, oh, oh, (stride, stride), (1, 1, 1, 1), (1, 1), 1)


def fc(batch, k, n):
    return ConvShape(1, k, 1, batch, n, 1, 1, 1, batch, (1, 1), (0, 0, 0, 0), (1, 1), 1)


@pytest.mark.parametrize("target_name,s", [
    ("vector", conv3x3(1, 3, 64, 64)),            # first layer: 3 input channels
    ("vector", fc(1, 2048, 1000)),                # DRAM-bound FC: the cores split output channels
    ("edge", conv3x3(1, 256, 4, 256)),            # input-channel tiles, Scan reuse at every turn
    ("fusion", conv3x3(1, 64, 14, 96, stride=2)),  # fragmented edge tiles (96 = 3 x 32 columns)
])
def test_single_layers_and_closed_form(target_name, s):
    tiles, prediction, layer = single_layer(target_name, s)
    assert prediction.cycles == layer.cycles
    assert prediction.dram_read_bytes == layer.dram_read_bytes
    assert prediction.dram_write_bytes == layer.dram_write_bytes
    assert prediction.macs == layer.macs
    target = load_target(target_name)
    # the closed form that ranks the tiles is close for the chosen tiles too
    cycles, nbytes = conv_estimate(target, s, tiles, target.cores, tiles.split, True)
    assert 0.6 * layer.cycles <= cycles <= 1.5 * layer.cycles
    assert 0.8 * (layer.dram_read_bytes + layer.dram_write_bytes) <= nbytes <= \
        1.25 * (layer.dram_read_bytes + layer.dram_write_bytes)
    # nothing beats the roofline
    assert layer.cycles >= roofline_cycles(target, layer.macs, 0)


def test_scan_reuses_blocks_without_stalling():
    """Same tiles, both orders: scan reads fewer DRAM bytes and takes no more cycles."""
    s, tiles = conv3x3(1, 256, 4, 256), ConvTiles(48, 64, 4, 4, "spatial")
    _, _, naive = single_layer("edge", s, tiles, "naive")
    _, _, scan = single_layer("edge", s, tiles, "scan")
    assert scan.dram_read_bytes < naive.dram_read_bytes
    assert scan.cycles <= naive.cycles


def test_predictions_in_the_report(tmp_path):
    from nncc.compiler.cli import main

    model = tmp_path / "r18.onnx"
    onnx.save(zoo.build_model("resnet18", batch=1, resolution=32), str(model))
    report = tmp_path / "r.json"
    assert main([str(model), "--target=edge", "--report", str(report), "--program", str(tmp_path / "p")]) == 0
    rows = json.loads(report.read_text())["layers"]
    convs = [row for row in rows if "predicted_cycles" in row]
    assert len(convs) >= 21
    for row in convs:
        assert row["predicted_dram_read_bytes"] == row["dram_read_bytes"]
        assert row["predicted_cycles"] == row["cycles"]


def test_dram_objective_trades_cycles_for_dram_bytes(tmp_path):
    """`--tile-objective=dram` picks, per layer, the tiling the job-level model predicts moves
    the fewest DRAM bytes: ResNet-18 on edge moves less in total (every output still matches
    onnxruntime), and the report's per-layer predictions are still the simulation's."""
    from nncc.compiler.cli import main

    model = tmp_path / "r18.onnx"
    onnx.save(zoo.build_model("resnet18", batch=1, resolution=64), str(model))
    totals = {}
    for objective in ("cycles", "dram"):
        report = tmp_path / f"{objective}.json"
        assert main([str(model), "--target=edge", "--check", "--report", str(report), f"--tile-objective={objective}",
                     "--program", str(tmp_path / objective)]) == 0
        data = json.loads(report.read_text())
        assert data["check"]["passed"]
        totals[objective] = data["dram"]["read_bytes"] + data["dram"]["write_bytes"]
        for row in data["layers"]:
            if "predicted_cycles" in row:
                assert row["predicted_dram_read_bytes"] == row["dram_read_bytes"], row["name"]
    assert totals["dram"] < totals["cycles"]


def test_preference_orders_by_the_objective():
    import numpy as np

    from nncc.compiler.codegen.conv import preference

    cycles, nbytes, jobs = np.array([100, 101, 130]), np.array([50, 40, 10]), np.array([1, 1, 1])
    # cycles: 100 and 101 are equally fast (within 1 %), then the fewer bytes win
    assert list(preference(cycles, nbytes, jobs)) == [1, 0, 2]
    # dram: the fewest bytes first, whatever the cycles; the others (not within 5 % of the
    # fewest bytes) by jobs, then cycles
    assert list(preference(cycles, nbytes, jobs, "dram")) == [2, 0, 1]


def test_dram_objective_tolerance_is_on_the_bytes_above_compulsory():
    """Under the DRAM objective the 5 % tie tolerance applies to the traffic above the layer's
    compulsory bytes (`floor`): a tiling at the compulsory traffic ties only with others within a
    thousandth of it, however close a faster one comes in total bytes; above it, 5 % of the least
    excess."""
    import numpy as np

    from nncc.compiler.codegen.conv import preference

    cycles, nbytes, jobs = np.array([100, 120, 110]), np.array([1009, 1000, 1000]), np.array([1, 1, 1])
    assert list(preference(cycles, nbytes, jobs, "dram")) == [0, 2, 1]  # all within 5 % of 1000: the fastest
    assert list(preference(cycles, nbytes, jobs, "dram", floor=1000)) == [2, 1, 0]  # 9 bytes too many (0.9 %)
    # excesses 100, 104, 120 over 900: 100 and 104 tie (within 5 % of 100), the faster wins
    cycles, nbytes = np.array([130, 100, 90]), np.array([1000, 1004, 1020])
    assert list(preference(cycles, nbytes, jobs, "dram", floor=900)) == [1, 0, 2]
    # excesses 0 and 1 over 1000 (a thousandth): equally frugal, the faster wins
    cycles, nbytes = np.array([130, 100]), np.array([1000, 1001])
    assert list(preference(cycles, nbytes, jobs[:2], "dram", floor=1000)) == [1, 0]


def test_dram_objective_fc_moves_its_compulsory_traffic(tmp_path):
    """FC 2048x2048 (no bias) on `edge` under `--tile-objective=dram`: the chosen tiling keeps the
    whole input vector on chip (its two input-channel blocks in their two slots, output-channel
    tiles below the array's 16 columns so the weight blocks fit beside it), so DRAM moves exactly
    the input, the weights and the output once: 4 x (2048 + 2048^2 + 2048) bytes. (Before the
    tolerance was taken on the excess: 1.010x, the input re-read per block of 96 outputs.)"""
    from nncc.compiler.bench import single_layer_model
    from nncc.compiler.cli import main

    model, report = tmp_path / "fc.onnx", tmp_path / "fc.json"
    onnx.save(single_layer_model("fc", 2048, 2048, 1, 1), str(model))
    assert main([str(model), "--target=edge", "--tile-objective=dram", "--check", "--report", str(report),
                 "--program", str(tmp_path / "fc")]) == 0
    data = json.loads(report.read_text())
    assert data["check"]["passed"]
    assert data["dram"]["read_bytes"] + data["dram"]["write_bytes"] == 4 * (2048 + 2048 * 2048 + 2048)


def test_any_schedule_is_timed_as_simulated():
    """A max pooling layer (a nest like the convs): its schedule, timed by the cost model, takes
    the cycles and DRAM bytes the interpreter simulates."""
    from nncc.compiler.ir_files import parse_module

    text = """builtin.module {
      func.func @main(%x: tensor<1x64x56x56xf32>) -> tensor<1x64x28x28xf32> {
        %y = nn.max_pool %x kernel [3, 3] strides [2, 2] pads [1, 1, 1, 1] dilations [1, 1] ceil_mode false
          {onnx_nodes = ["pool"]} : (tensor<1x64x56x56xf32>) -> tensor<1x64x28x28xf32>
        func.return %y : tensor<1x64x28x28xf32>
      }
    }"""
    module = parse_module(text, "pool.mlir", Registry.default().context())
    program = lower_module(module, None, load_target("vector"))
    (symbol,) = program.symbols_of("input")
    (layer,) = run(program, {symbol.name: np.zeros((1, 64, 56, 56), np.float32)}).layers
    prediction = program.predictions[0]
    assert (prediction["predicted_cycles"], prediction["predicted_dram_read_bytes"],
            prediction["predicted_dram_write_bytes"]) == (layer.cycles, layer.dram_read_bytes, layer.dram_write_bytes)


def test_a_timing_rule_changed_once_changes_both(monkeypatch):
    """One machine model: a different matmul issue rule, patched into `runtime/timing.py` alone,
    is what the cost model predicts and what the interpreter simulates."""
    from nncc.runtime import timing

    rule = timing.matmul_issue_cycles
    monkeypatch.setattr(timing, "matmul_issue_cycles", lambda unit, *sizes: 2 * rule(unit, *sizes) + 5)
    tiles = ConvTiles(64, 64, 4, 8, "spatial")
    _, prediction, layer = single_layer("vector", conv3x3(1, 64, 16, 64), tiles)
    assert prediction.cycles == layer.cycles
    monkeypatch.undo()
    _, before, _ = single_layer("vector", conv3x3(1, 64, 16, 64), tiles)
    assert prediction.cycles > before.cycles


def test_equivalent_pointwise_tilings_are_timed_once():
    """Two tilings of a 1x1 conv with equal-area output tiles that divide the output: one key
    (`conv.equivalence`), and indeed the same simulated cycles and DRAM bytes."""
    from nncc.compiler.codegen.conv import equivalence

    s = ConvShape(1, 64, 28, 28, 64, 1, 1, 28, 28, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    a, b = ConvTiles(32, 64, 4, 7, "spatial"), ConvTiles(32, 64, 2, 14, "spatial")
    assert equivalence(s, a) == equivalence(s, b)
    assert equivalence(s, ConvTiles(32, 64, 3, 7, "spatial")) != equivalence(s, a)  # a fragment
    assert equivalence(conv3x3(1, 64, 28, 64), a) != equivalence(conv3x3(1, 64, 28, 64), b)  # halos
    plain = ("dram.burst_timing=false", "core.main.kernel_rows=0")
    layers = [single_layer("vector", s, tiles, overrides=plain)[2] for tiles in (a, b)]
    assert [(x.cycles, x.dram_read_bytes, x.dram_write_bytes) for x in layers][0] == \
        (layers[1].cycles, layers[1].dram_read_bytes, layers[1].dram_write_bytes)
    # where the shape matters they differ: 7-float rows (28 B, a 64-B burst each) and 7-row matmuls
    # (a 6-row and a 1-row kernel call) are slower than 14-float ones
    assert equivalence(s, a, shape_matters=True) != equivalence(s, b, shape_matters=True)
    timed = [single_layer("vector", s, tiles)[2] for tiles in (a, b)]
    assert timed[0].cycles > timed[1].cycles and timed[0].dram_read_bytes == timed[1].dram_read_bytes


def test_width_bound_bounds_the_width_tilings():
    """No width tiling the chooser times beats `width_bound`, so skipping the width mapping when
    the bound is within 1 % of the channels' prediction loses nothing."""
    from nncc.compiler.codegen.conv_width import choose_width_tiles, width_bound

    target = load_target("vector")
    for s in (ConvShape(1, 8, 64, 64, 3, 3, 3, 64, 64, (1, 1), (1, 1, 1, 1), (1, 1), 1), conv3x3(1, 16, 30, 24)):
        lowering = Lowering(target, Program(target, []), None)
        lowering.layer_cores = target.cores
        tiles, prediction = choose_width_tiles(lowering, s)
        assert width_bound(lowering, s, True) <= prediction.cycles


@pytest.mark.parametrize("target_name", ["vector", "edge", "fusion"])
def test_streaming_layers_predicted_as_simulated(target_name):
    """Every layer is a nest, and the cost model predicts each from the jobs it emits: elementwise
    with broadcasting, batch norm with run-time parameters, a transpose, a strided slice read
    backwards, a concat, softmax, LRN, global pooling, a batched matmul and a gemm scaled on
    chip, with memories small enough that rows are split (softmax, global pooling)."""
    from onnx import helper, numpy_helper

    from tests.codegen import helpers as h

    rng = np.random.default_rng(0)
    node = helper.make_node

    def ints(name, values):
        return node("Constant", [], [name], value=numpy_helper.from_array(np.array(values, np.int64), name))
    model = h.build_model([
        ints("st", [1, 11]), ints("en", [11, 0]), ints("ax", [1, 2]), ints("sp", [2, -3]),
        node("Add", ["x", "c"], ["s"]), node("BatchNormalization", ["s", "g", "b", "m", "v"], ["n"]),
        node("Transpose", ["n"], ["t"], perm=[0, 2, 3, 1]),
        node("Slice", ["t", "st", "en", "ax", "sp"], ["sl"]), node("Concat", ["sl", "sl"], ["cat"], axis=1),
        node("Softmax", ["cat"], ["sm"], axis=3), node("LRN", ["x"], ["l"], size=3),
        node("GlobalAveragePool", ["l"], ["gp"]), node("MatMul", ["a", "bm"], ["mm"]),
        node("Gemm", ["a2", "bg", "cg"], ["gm"], alpha=0.5, beta=2.0)],
        [("x", [1, 8, 12, 12]), ("g", [8]), ("b", [8]), ("m", [8]), ("v", [8]), ("a", [3, 1, 10, 16]),
         ("bm", [2, 16, 12]), ("a2", [6, 16]), ("bg", [16, 20])],
        [("sm", None), ("gp", None), ("mm", None), ("gm", None)],
        [("c", rng.standard_normal((1, 8, 1, 1))), ("cg", rng.standard_normal((1, 20)))])
    module, store = h.compile_fused(model)
    for overrides in ((), h.SMALL_MEMORIES[target_name]):
        program = lower_module(module.clone(), store, load_target(target_name, list(overrides)))
        result = run(program, h.random_inputs(model, 0))
        assert len(result.layers) == 10 and set(program.predictions) == set(range(10))
        for index, layer in enumerate(result.layers):
            prediction = program.predictions[index]
            assert prediction["name"] == layer.name
            assert (prediction["predicted_cycles"], prediction["predicted_dram_read_bytes"],
                    prediction["predicted_dram_write_bytes"]) == \
                (layer.cycles, layer.dram_read_bytes, layer.dram_write_bytes), (target_name, overrides, layer.name)


# ---- whole models (last: the one cached model and its run are kept until the module is done) --


@pytest.mark.parametrize("model,target_name,buffers", [
    ("resnet18", "vector", 2), ("resnet18", "edge", 2), ("resnet18", "fusion", 2),
    ("resnet18", "vector", 1),  # single buffering: residual loads refill the slot a store still reads
    pytest.param("vgg16", "vector", 2, marks=pytest.mark.big_memory),
])
def test_prediction_equals_simulation_per_layer(model, target_name, buffers, tmp_root):
    program, result = lowered(model, target_name, tmp_root, buffers)
    layers = conv_fc_layers(program, result)
    assert len(layers) >= (16 if model == "vgg16" else 21)
    for layer, prediction in layers:
        assert prediction["name"] == layer.name
        for simulated, predicted in ((layer.cycles, prediction["predicted_cycles"]),
                                     (layer.dram_read_bytes, prediction["predicted_dram_read_bytes"]),
                                     (layer.dram_write_bytes, prediction["predicted_dram_write_bytes"])):
            assert predicted == simulated, (layer.name, simulated, predicted)


@pytest.mark.big_memory
def test_vgg_layers_near_their_roofline(tmp_root):
    """VGG-16 (64x64) on vector: every conv layer past the first (whose 3 input channels give
    its matmuls k = 9, so micro-kernel calls mostly fill and drain) and every FC layer within 85 %
    of its roofline bound (compute, or DRAM streaming its input, weights and output once at the
    sustained bandwidth, 0.8 of peak). The micro-kernel's fill/drain and c stores (about 3k/(3k+13) at best: 96-99 % at
    these k), the SM panels and DRAM bursts at 0.8 of peak keep a layer below the bound."""
    import math

    compilation = fused("vgg16", 64, tmp_root)
    shapes = zoo.tensor_shapes(compilation.model)
    nodes = {node.name: node for node in compilation.model.graph.node}
    target = load_target("vector")
    program, result = lowered("vgg16", "vector", tmp_root, 2)  # the run the test above cached
    layers = [layer for layer, _ in conv_fc_layers(program, result)]
    assert len(layers) == 16
    for layer in layers[1:]:
        node = nodes[layer.onnx_nodes[0]]
        nbytes = 4 * sum(math.prod(shapes[t]) for t in (*node.input, *node.output))
        bound = roofline_cycles(target, layer.macs, nbytes / target.dram.sustained_fraction)
        assert bound >= 0.85 * layer.cycles, (layer, bound)


def test_closed_form_rounds_dram_runs_to_bursts():
    """The tile search's closed form times the DRAM bus as the timing model does: whole 64-byte
    bursts per contiguous run, at the sustained bandwidth (hand-computed runs of a 3x3 conv tile
    of 2 x 7 outputs, all 64 channels, 14x14 map)."""
    from dataclasses import replace

    from nncc.compiler.codegen.cost_model import burst_factor, run_floats

    s = conv3x3(1, 64, 14, 64)
    tiles = [[64], [64], [2], [7]]
    x, w, y = (float(r[0]) for r in run_floats(s, *map(np.array, tiles)))
    assert (x, w, y) == (9, 3 * 3 * 64 * 64, 7)  # NCHW: a 9-column input row, a 7-column output row
    nhwc = replace(s, x_nhwc=True, y_nhwc=True)
    assert [float(r[0]) for r in run_floats(nhwc, *map(np.array, tiles))] == [9 * 64, 3 * 3 * 64 * 64, 7 * 64]
    vector = load_target("vector")
    burst = burst_factor(vector)
    assert float(burst(np.array(7.0))) == 64 / 28 and float(burst(np.array(448.0))) == 1.0
    assert burst_factor(load_target("edge"))(np.array(7.0)) == 1.0  # bytes / bandwidth there
    # the same tiles cost more DRAM time NCHW than NHWC when the layer waits on DRAM
    slow_dram = load_target("vector", ["dram.bandwidth_gbps=1.0"])
    nchw_cycles, nchw_bytes = conv_estimate(slow_dram, s, ConvTiles(64, 64, 2, 7), 4, "spatial", True)
    nhwc_cycles, nhwc_bytes = conv_estimate(slow_dram, nhwc, ConvTiles(64, 64, 2, 7), 4, "spatial", True)
    assert nchw_bytes == nhwc_bytes and nchw_cycles > 1.3 * nhwc_cycles  # input and output rows of 36 and 28 B
