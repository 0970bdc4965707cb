"""cp-decompose: the chain 1x1 -> depthwise Kx1 -> depthwise 1xK -> 1x1 computes the conv with the
CP-reconstructed weight, so its output error is exactly the conv of the weight's error; full rank
reproduces the conv; `nncc --cp-rank` runs the decomposed model on every target and states its error."""

import json
import math

import numpy as np
import pytest
from onnx import helper

from nncc.compiler import nn_kernels as k
from nncc.compiler.cli import main
from nncc.compiler.nn_interpreter import run_reference
from nncc.compiler.weights import store_of
from nncc.dialects import fused, nn
from nncc.passes.cp_decompose import chain_rank, records_of, relative_l2_error

CONV = """
builtin.module {
  func.func @main(%x: tensor<2x%C%x%H%x%W%xf32>) -> tensor<%OUT%xf32> {
    %w = nn.weight "w" : tensor<%N%x%C%x%KH%x%KW%xf32>
    %b = nn.weight "b" : tensor<%N%xf32>
    %y = nn.conv2d %x, %w, %b strides %S% pads %P% dilations %D% group 1 {onnx_nodes = ["conv"]} : (tensor<2x%C%x%H%x%W%xf32>, tensor<%N%x%C%x%KH%x%KW%xf32>, tensor<%N%xf32>) -> tensor<%OUT%xf32>
    func.return %y : tensor<%OUT%xf32>
  }
}
"""

CASES = {  # (N, C, KH, KW, H, W, strides, pads [top, left, bottom, right], dilations)
    "3x3 same": (8, 6, 3, 3, 9, 9, (1, 1), (1, 1, 1, 1), (1, 1)),
    "3x5 stride 2x3, uneven pads": (8, 6, 3, 5, 11, 13, (2, 3), (1, 2, 0, 1), (1, 1)),
    "3x3 dilated 2, stride 2": (5, 4, 3, 3, 12, 10, (2, 2), (2, 2, 2, 2), (2, 2)),
    "7x7 stem, stride 2": (6, 3, 7, 7, 16, 16, (2, 2), (3, 3, 3, 3), (1, 1)),
}


def conv_ir(n, c, kh, kw, h, w, strides, pads, dilations):
    out = nn.conv2d_output_shape((2, c, h, w), (n, c, kh, kw), strides, pads, dilations, 1)
    values = dict(N=n, C=c, KH=kh, KW=kw, H=h, W=w, OUT="x".join(map(str, out)), S=list(strides), P=list(pads),
                  D=list(dilations))
    text = CONV
    for key, value in values.items():
        text = text.replace(f"%{key}%", str(value))
    return text


def only_output(module, inputs):
    return next(iter(run_reference(module, inputs)[0].values())).astype(np.float64)


def cp_weights(module):
    """The chain's four weights, from the store, by their names."""
    store = store_of(module)
    return [store[f"conv.cp.{part}"].astype(np.float64) for part in ("in", "vertical", "horizontal", "out")]


def reconstruction(w_in, w_vertical, w_horizontal, w_out):
    """W~[n, c, h, w] = sum_r out[n, r] in[r, c] vertical[r, h] horizontal[r, w]."""
    return np.einsum("nr,rc,rh,rw->nchw", w_out[:, :, 0, 0], w_in[:, :, 0, 0], w_vertical[:, 0, :, 0],
                     w_horizontal[:, 0, 0, :])


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("rank", [3, 0.3])
def test_chain_is_the_conv_of_the_reconstructed_weight(parse_ir, run_pipeline, case, rank):
    n, c, kh, kw, h, w, strides, pads, dilations = CASES[case]
    rng = np.random.default_rng(1)
    weight, bias = rng.standard_normal((n, c, kh, kw)), rng.standard_normal(n)
    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    text = conv_ir(*CASES[case])
    original = only_output(parse_ir(text, {"w": weight, "b": bias}), {"input0": x})
    module = run_pipeline(parse_ir(text, {"w": weight, "b": bias}), f"cp-decompose{{rank={rank}}}")

    convs = [op for op in module.walk() if isinstance(op, nn.Conv2dOp)]
    r = chain_rank(rank, (n, c, kh, kw))
    assert [nn.shape_of(op.weight) for op in convs] == [(r, c, 1, 1), (r, 1, kh, 1), (r, 1, 1, kw), (n, r, 1, 1)]
    assert [op.group.value.data for op in convs] == [1, r, r, 1]
    assert [nn.ints(op.strides) for op in convs] == [(1, 1), (strides[0], 1), (1, strides[1]), (1, 1)]
    top, left, bottom, right = pads
    assert [nn.ints(op.pads) for op in convs] == [(0, 0, 0, 0), (top, 0, bottom, 0), (0, left, 0, right), (0, 0, 0, 0)]
    assert [nn.ints(op.dilations) for op in convs] == [(1, 1), (dilations[0], 1), (1, dilations[1]), (1, 1)]
    assert [op.bias is not None for op in convs] == [False, False, False, True]
    assert all(nn.onnx_nodes_of(op) == ["conv"] for op in convs)

    decomposed = only_output(module, {"input0": x})
    approx = reconstruction(*cp_weights(module))
    (record,) = records_of(module)
    assert record["rank"] == r and record["weights_after"] == r * (c + kh + kw + n)
    assert record["weight_error"] == pytest.approx(np.linalg.norm(weight - approx) / np.linalg.norm(weight), rel=1e-6)
    # the chain is the conv with W~ (float32 arithmetic)...
    expected = k.conv2d(x.astype(np.float64), approx, bias, strides, pads, dilations, 1)
    assert np.abs(decomposed - expected).max() <= 2e-5 * np.abs(expected).max()
    # ...so it differs from the original by conv(x, W~ - W): each output element by at most
    # |x window| * |W~[n] - W[n]| (Cauchy-Schwarz), a bound computed from the decomposition itself
    window_norms = np.sqrt(k.conv2d(x.astype(np.float64) ** 2, np.ones((1, c, kh, kw)), None, strides, pads,
                                    dilations, 1))
    per_channel = np.linalg.norm((approx - weight).reshape(n, -1), axis=1)
    bound = window_norms * per_channel.reshape(1, n, 1, 1)
    assert (np.abs(decomposed - original) <= bound + 1e-4 * np.abs(original).max()).all()
    difference = k.conv2d(x.astype(np.float64), approx - weight, None, strides, pads, dilations, 1)
    assert np.linalg.norm(decomposed - original) == pytest.approx(np.linalg.norm(difference), rel=1e-3)


def test_full_rank_reproduces_the_conv(parse_ir, run_pipeline):
    # rank = the product of the three smallest dimensions (6 * 3 * 5 = 90) can represent any weight
    n, c, kh, kw, h, w, strides, pads, dilations = CASES["3x5 stride 2x3, uneven pads"]
    rng = np.random.default_rng(2)
    weights = {"w": rng.standard_normal((n, c, kh, kw)), "b": rng.standard_normal(n)}
    x = {"input0": rng.standard_normal((2, c, h, w)).astype(np.float32)}
    text = conv_ir(*CASES["3x5 stride 2x3, uneven pads"])
    original = only_output(parse_ir(text, weights), x)
    module = run_pipeline(parse_ir(text, weights), "cp-decompose{rank=90 iterations=200}")
    assert records_of(module)[0]["weight_error"] < 1e-6
    assert relative_l2_error({"y": only_output(module, x)}, {"y": original}) < 1e-4  # float32 rounding


def test_fraction_of_the_weights_and_determinism(parse_ir, run_pipeline):
    rng = np.random.default_rng(3)
    weights = {"w": rng.standard_normal((8, 6, 3, 3)), "b": rng.standard_normal(8)}
    text = conv_ir(*CASES["3x3 same"])
    # rank=0.25: R = round(0.25 * 8*6*3*3 / (6 + 3 + 3 + 8)) = round(5.4) = 5, 5 * 20 = 100 weights of 432
    first = run_pipeline(parse_ir(text, weights), "cp-decompose{rank=0.25}")
    (record,) = records_of(first)
    assert (record["rank"], record["weights_before"], record["weights_after"]) == (5, 432, 100)
    second = run_pipeline(parse_ir(text, weights), "cp-decompose{rank=0.25}")
    for a, b in zip(cp_weights(first), cp_weights(second)):
        np.testing.assert_array_equal(a, b)  # seeded: the same factors every time
    other = run_pipeline(parse_ir(text, weights), "cp-decompose{rank=0.25 seed=7}")
    assert not np.array_equal(cp_weights(first)[0], cp_weights(other)[0])
    assert chain_rank(1.0, (512, 512, 3, 3)) == round(512 * 512 * 9 / 1030)
    assert chain_rank(1e-9, (8, 6, 3, 3)) == 1  # never below 1


FUSED = """
builtin.module {
  func.func @main(%x: tensor<1x4x6x6xf32>, %r: tensor<1x5x6x6xf32>) -> tensor<1x5x6x6xf32> {
    %w = nn.weight "w" : tensor<5x4x3x3xf32>
    %b = nn.weight "b" : tensor<5xf32>
    %y = fused.conv2d %x, %w, %b residual %r strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 act clip min 0.000000e+00 max 6.000000e+00 {onnx_nodes = ["conv"]} : (tensor<1x4x6x6xf32>, tensor<5x4x3x3xf32>, tensor<5xf32>) -> tensor<1x5x6x6xf32>
    func.return %y : tensor<1x5x6x6xf32>
  }
}
"""


def test_fused_conv_keeps_its_epilogue_on_the_last_1x1(parse_ir, run_pipeline):
    rng = np.random.default_rng(4)
    weights = {"w": rng.standard_normal((5, 4, 3, 3)), "b": rng.standard_normal(5)}
    x = {"input0": rng.standard_normal((1, 4, 6, 6)).astype(np.float32),
         "input1": rng.standard_normal((1, 5, 6, 6)).astype(np.float32)}
    module = run_pipeline(parse_ir(FUSED, weights), "cp-decompose{rank=36}")  # full rank: 4 * 3 * 3
    convs = [op for op in module.walk() if isinstance(op, fused.Conv2dOp)]
    assert len(convs) == 4 and not any(isinstance(op, nn.Conv2dOp) for op in module.walk())
    assert [op.residual is not None for op in convs] == [False, False, False, True]
    assert [str(op.epilogue.act) for op in convs] == ["none", "none", "none", "clip"]
    assert convs[-1].epilogue.max == 6.0
    original = only_output(parse_ir(FUSED, weights), x)
    assert relative_l2_error({"y": only_output(module, x)}, {"y": original}) < 1e-4


UNTOUCHED = """
builtin.module {
  func.func @main(%x: tensor<1x4x6x6xf32>) -> tensor<1x4x6x6xf32> {
    %dw = nn.weight "dw" : tensor<4x1x3x3xf32>
    %pw = nn.weight "pw" : tensor<4x4x1x1xf32>
    %col = nn.weight "col" : tensor<4x4x3x1xf32>
    %a = nn.conv2d %x, %dw strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 4 : (tensor<1x4x6x6xf32>, tensor<4x1x3x3xf32>) -> tensor<1x4x6x6xf32>
    %b = nn.conv2d %a, %pw strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 : (tensor<1x4x6x6xf32>, tensor<4x4x1x1xf32>) -> tensor<1x4x6x6xf32>
    %c = nn.conv2d %b, %col strides [1, 1] pads [1, 0, 1, 0] dilations [1, 1] group 1 : (tensor<1x4x6x6xf32>, tensor<4x4x3x1xf32>) -> tensor<1x4x6x6xf32>
    func.return %c : tensor<1x4x6x6xf32>
  }
}
"""


def test_depthwise_pointwise_and_kx1_convs_are_left_alone(parse_ir, run_pipeline):
    rng = np.random.default_rng(5)
    weights = {name: rng.standard_normal(shape) for name, shape in
               (("dw", (4, 1, 3, 3)), ("pw", (4, 4, 1, 1)), ("col", (4, 4, 3, 1)))}
    module = run_pipeline(parse_ir(UNTOUCHED, weights), "cp-decompose{rank=2}")
    assert str(module) == str(parse_ir(UNTOUCHED, weights)) and "nn.cp_decompose" not in module.attributes


# ---- the command lines


def two_convs(build_model, rng):
    """conv 3x3 (3 -> 8, stride 2) -> relu -> conv 3x3 (8 -> 6): ONNX."""
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "W2", "B2"], ["y"], name="conv2", pads=[1, 1, 1, 1])]
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    return build_model(nodes, [("x", [1, 3, 12, 12])], [("y", [1, 6, 6, 6])],
                       [("W1", f32(8, 3, 3, 3)), ("B1", f32(8)), ("W2", f32(6, 8, 3, 3)), ("B2", f32(6))])


@pytest.fixture
def two_conv_model(make_model, write_model):
    return write_model(two_convs(make_model, np.random.default_rng(6)), "two.onnx")


@pytest.mark.parametrize("target", ["vector", "fusion", "edge"])
def test_decomposed_model_runs_on_every_target(capsys, tmp_path, two_conv_model, target):
    report_path, out_path, in_path = tmp_path / "r.json", tmp_path / "out.npz", tmp_path / "in.npz"
    x = np.random.default_rng(7).standard_normal((1, 3, 12, 12)).astype(np.float32)
    np.savez(in_path, x=x)
    code = main([str(two_conv_model), f"--target={target}", "--cp-rank=4", "--check", "--report", str(report_path),
                 "--inputs", str(in_path), "--outputs", str(out_path), "--program", str(tmp_path / "p"), "-q"])
    _, err = capsys.readouterr()
    assert code == 0
    report = json.loads(report_path.read_text())
    entry = report["cp_decompose"]
    assert (entry["rank"], entry["convs"]) == (4, 2)
    assert [row["rank"] for row in entry["layers"]] == [4, 4]
    assert entry["weights_after"] == 4 * (3 + 3 + 3 + 8) + 4 * (8 + 3 + 3 + 6)
    # the check compares the program with the decomposed graph's reference
    assert report["check"]["passed"] and report["check"]["max_rel_err"] < 1e-4
    # the stated error, recomputed here: the program's outputs against onnxruntime on the original model
    import onnxruntime

    session = onnxruntime.InferenceSession(str(two_conv_model), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": x})[0].astype(np.float64)
    got = np.load(out_path)["y"].astype(np.float64)
    error = math.sqrt(((got - want) ** 2).sum() / (want ** 2).sum())
    assert entry["onnxruntime_rel_l2_error"] == pytest.approx(error, rel=1e-3)
    assert entry["output_rel_l2_error"] == pytest.approx(error, rel=1e-3)
    assert 0.01 < error < 2.0  # rank 4 of an 8x3x3x3 and a 6x8x3x3 random weight: far from exact
    assert f"output error {entry['output_rel_l2_error']:.3g}" in err and "cp-decompose{rank=4}" in err
    # each conv's chain: 4 layers, the last 1x1 under the conv's own name (a fused group's row names its
    # layers joined by `+`)
    layers = [name for row in report["layers"] for name in row["name"].split("+")]
    assert len(layers) == 8 and layers[-1] == "y"
    assert [name for name in layers if ".cp_" in name] == [f"{conv}.cp_{part}" for conv in ("c1", "y")
                                                           for part in ("in", "vertical", "horizontal")]


def test_reference_target_states_the_error(capsys, tmp_path, two_conv_model):
    report_path = tmp_path / "r.json"
    assert main([str(two_conv_model), "--target=reference", "--cp-rank=0.5", "--check", "--report",
                 str(report_path)]) == 0
    entry = json.loads(report_path.read_text())["cp_decompose"]
    assert entry["output_rel_l2_error"] == pytest.approx(entry["onnxruntime_rel_l2_error"], rel=1e-3)
    assert [row["rank"] for row in entry["layers"]] == [chain_rank(0.5, (8, 3, 3, 3)), chain_rank(0.5, (6, 8, 3, 3))]


@pytest.mark.parametrize("argv, fragment", [
    (["--cp-rank=0"], "--cp-rank: 0: an absolute rank must be an integer >= 1"),
    (["--cp-rank=1.5"], "--cp-rank: 1.5: a fractional rank must be in (0, 1]"),
    (["--cp-rank=-0.25"], "--cp-rank: -0.25: a fractional rank must be in (0, 1]"),
    (["--cp-rank=lots"], "--cp-rank: 'lots' is not a number"),
    (["--cp-rank=4", "--emit=nn"], "--cp-rank decomposes convs in the fused stage"),
    (["--cp-rank=4", "--train"], "--cp-rank decomposes the convs of an inference model"),
])
def test_bad_ranks_on_the_command_line(capsys, two_conv_model, argv, fragment):
    try:
        code = main([str(two_conv_model), *argv])
    except SystemExit as exit_info:  # argparse's usage errors
        code = exit_info.code
    assert code == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_saved_ir_cannot_be_decomposed(capsys, tmp_path):
    assert main([str(tmp_path / "m.tile.mlir"), "--cp-rank=4", "--run"]) == 2
    err = capsys.readouterr().err
    assert "--cp-rank needs the ONNX model" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("options, fragment", [
    ("rank=0", "cp-decompose: rank=0: an absolute rank must be >= 1"),
    ("rank=1.5", "cp-decompose: rank=1.5: a fractional rank must be in (0, 1]"),
    ("rank=0.0", "cp-decompose: rank=0.0: a fractional rank must be in (0, 1]"),
    ("iterations=0", "cp-decompose: iterations=0: must be >= 1"),
])
def test_bad_ranks_in_a_pipeline(parse_ir, run_pipeline, options, fragment):
    from nncc.support.errors import NnccError

    with pytest.raises(NnccError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        run_pipeline(parse_ir(conv_ir(*CASES["3x3 same"]), {"w": np.ones((8, 6, 3, 3)), "b": np.ones(8)}),
                     f"cp-decompose{{{options}}}")
