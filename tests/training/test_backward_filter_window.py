"""Stride-1 backward-filter with x's rows staged once per step and every kernel tap read in place
(`training_nest.window_filter_nest`): gradients against PyTorch autograd on the preset targets
(the mapping forced: elsewhere the cost model may pick another), its MACs (the staged rows'
extra columns included) and DRAM bytes by hand, its cycles as the cost model predicts them, and
the cost model choosing it for a 3x3 conv at 56x56 on `fusion`."""

import pytest

from tests.training.conftest import train_mse as train
from tests.training.test_backward_filter_gemm import conv_model

pytest.importorskip("torch")

CASES = [
    # (input NCHW, weight OIHW, strides, pads [t, l, b, r], dilations), columns of a staged row
    (((2, 5, 8, 8), (6, 5, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1)), 8 + 2),
    (((2, 3, 9, 7), (5, 3, 3, 2), (1, 1), (1, 0, 2, 1), (1, 1)), 7 + 1),       # asymmetric pads, a 3x2 kernel
    (((2, 4, 10, 10), (6, 4, 3, 3), (1, 1), (2, 2, 2, 2), (2, 2)), 10 + 4),    # dilation 2
    (((3, 5, 4, 4), (7, 5, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1)), 4),           # pointwise: no extra columns
    # strided: one block per phase of x; a phase's taps reach columns x + b // sw (b = j dw - pl)
    (((2, 3, 8, 8), (4, 3, 3, 3), (2, 2), (0, 0, 0, 0), (1, 1)), 3 + 1),       # 8 -> 3: row 7 never read
    (((2, 6, 7, 7), (8, 6, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1)), 4),           # a stride-2 shortcut
    (((2, 3, 9, 7), (5, 3, 3, 2), (2, 3), (1, 0, 2, 1), (1, 1)), 3),           # odd strides, asymmetric pads
    (((2, 3, 11, 11), (4, 3, 7, 7), (4, 4), (3, 2, 1, 0), (1, 1)), 2 + 1),     # large kernel, stride 4
]


@pytest.fixture
def window_only(monkeypatch):
    """The cost model's only mapping for group-1 backward-filters: taps in place."""
    from nncc.compiler.codegen import training_nest

    shape = training_nest.backward_filter_shape
    monkeypatch.setattr(training_nest, "tiles_fit", lambda *args, **kwargs: False)
    monkeypatch.setattr(training_nest, "backward_filter_shape",
                        lambda op, lowering=None: shape(op) if lowering is None else None)
    built = []
    nest = training_nest.window_filter_nest
    monkeypatch.setattr(training_nest, "window_filter_nest", lambda *args: built.append(args[1].name) or nest(*args))
    return built


@pytest.mark.parametrize("target", ["fusion", "vector", "edge"])
@pytest.mark.parametrize("case, width", CASES, ids=lambda v: f"x{v[0]}w{v[1]}s{v[2]}p{v[3]}d{v[4]}"
                         if isinstance(v, tuple) else str(v))
def test_window_filter_matches_torch(case, width, target, graph, tmp_path, window_only):
    data = train(conv_model(graph, tmp_path, case), target, tmp_path / "r.json")
    assert window_only and set(window_only) == {"nn.conv2d_backward_filter"}
    (n, c, h, _), (o, _, kh, kw), (sh, _) = case[0], case[1], case[2]
    (dh, _), (pt, _, pb, _) = case[4], case[3]
    oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    row = next(r for r in data["layers"] if r["name"] == "conv_y_grad_weight")
    # every tap's matmul runs over the staged rows' width (OW and the kernel's reach) per dy row
    assert row["macs"] == kh * kw * c * o * n * oh * width


def window_compilation(graph, tmp_path, case, target, until):
    from nncc.compiler.bench import target_options
    from nncc.compiler.pipeline import Options, compile_model
    from nncc.compiler.registry import Registry

    return compile_model(conv_model(graph, tmp_path, case), Registry.default(),
                         Options(target_options=target_options(target), training={"loss": "mse"}), until=until)


def test_fusion_picks_taps_in_place_at_56(graph, tmp_path):
    """ResNet-50's layer1 3x3 (64 channels, 56x56, batch 8) on `fusion`: the cost model picks the
    taps-in-place nest (x loaded once per step, a `tile.fill` of the spare, no on-chip copies);
    its DRAM reads are x's staged rows (padding is not read) once per output-channel tile and
    dy once, its cycles the predicted ones, and it runs the array at >= 90 % (garbage columns
    not counted as work)."""
    from nncc.compiler.training import program_of
    from nncc.dialects import tile
    from nncc.runtime.interpreter import run
    from nncc.support import check

    case = ((8, 64, 56, 56), (64, 64, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
    compilation = window_compilation(graph, tmp_path, case, "fusion", "isa")
    program = program_of(compilation)
    result = run(program, check.random_inputs({s.name: s.shape for s in program.symbols_of("input")}, seed=0))
    index, layer = next((i, la) for i, la in enumerate(result.layers) if la.name == "conv_y_grad_weight")
    prediction = program.predictions[index]
    assert (prediction["predicted_cycles"], prediction["predicted_dram_read_bytes"]) == \
        (layer.cycles, layer.dram_read_bytes)
    useful = 64 * 64 * 9 * 8 * 56 * 56
    assert useful / (layer.cycles * 32 * 32) >= 0.90, layer.cycles

    module = window_compilation(graph, tmp_path, case, "fusion", "tile").module
    nest = next(op for op in module.walk() if isinstance(op, tile.NestOp) and op.layer.data == "conv_y_grad_weight")
    assert any(isinstance(op, tile.FillOp) for op in nest.walk())
    assert not any(isinstance(op, tile.MapOp) for op in nest.walk())
    loops = {loop.block.args[0].name_hint: loop for loop in nest.walk() if isinstance(loop, tile.ForOp)}
    rows, channels, outputs = (tile.ints(loops[name].step)[0] for name in ("r", "c", "oc"))
    # x: per step its dy rows and the two rows around them that lie inside the image, 56 columns
    staged = sum(min(56, r + rows + 1) - max(0, r - 1) for r in range(0, 56, rows))
    x_bytes = 4 * 8 * 64 * staged * 56 * -(-64 // outputs)
    dy_bytes = 4 * 8 * 64 * 56 * 56 * -(-64 // channels)
    assert layer.dram_read_bytes == x_bytes + dy_bytes
