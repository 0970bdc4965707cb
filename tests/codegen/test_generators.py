"""Code generators of pooling, depthwise conv, matmul, concat, transpose, softmax, LRN and grouped
conv on small shapes, on every target, against onnxruntime; with memories shrunk so that layers
split into many tiles, fragmentary edge tiles included; and the one-line error when nothing fits."""

from __future__ import annotations


import numpy as np
import pytest
from onnx import helper

from nncc.compiler.codegen.lower import lower_module
from nncc.runtime.target import load_target
from nncc.support.errors import NnccError


import codegen_helpers as h  # noqa: E402  (tests/codegen/conftest.py)
TARGETS = h.TARGETS
RNG = np.random.default_rng(7)


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def node(op, inputs, outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), name=f"{op.lower()}_{outputs[0]}", **attrs)


def check_everywhere(model, small: bool = True, reference: str = "onnxruntime"):
    """Run on every target, with the preset memories and (if `small`) with tiny ones."""
    programs = {}
    for target in TARGETS:
        programs[target] = h.check_on_target(model, target, reference=reference)
        if small:
            h.check_on_target(model, target, h.SMALL_MEMORIES[target], reference=reference)
    return programs


# --------------------------------------------------------------------------- pooling

POOLS = {
    "k3s2p1_ceil": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
    "k2s2": dict(kernel_shape=[2, 2], strides=[2, 2]),
    "k3s1_dilated": dict(kernel_shape=[3, 3], strides=[1, 1], dilations=[2, 2], pads=[2, 1, 0, 2]),
    "k3x2_asym": dict(kernel_shape=[3, 2], strides=[2, 1], pads=[0, 1, 1, 0], ceil_mode=1),
}


@pytest.mark.parametrize("channels", [3, 40])
@pytest.mark.parametrize("params", list(POOLS), ids=str)
def test_max_pool(params, channels):
    model = h.build_model([node("MaxPool", ["x"], **POOLS[params])], [("x", [2, channels, 11, 13])], [("y", None)])
    programs = check_everywhere(model)
    assert "vpool" in h.mnemonics(programs["vector"], "y")


@pytest.mark.parametrize("include_pad", [0, 1])
@pytest.mark.parametrize("params", list(POOLS), ids=str)
def test_avg_pool(params, include_pad):
    attrs = {k: v for k, v in POOLS[params].items() if k != "dilations"}
    attrs["count_include_pad"] = include_pad
    model = h.build_model([node("AveragePool", ["x"], **attrs)], [("x", [1, 20, 9, 12])], [("y", None)])
    check_everywhere(model)


def test_avg_pool_uniform_divisor_is_vpool_avg():
    model = h.build_model([node("AveragePool", ["x"], kernel_shape=[2, 2], strides=[2, 2])],
                          [("x", [1, 16, 8, 8])], [("y", None)])
    program = h.check_on_target(model, "vector")
    assert h.mnemonics(program, "y").count("vpool") >= 1
    assert "vmul" not in h.mnemonics(program, "y")
    assert not [s for s in program.symbols if s.name.endswith(".divisor")]


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", [[1, 20, 7, 7], [2, 3, 5, 9], [1, 4, 30]], ids=str)
def test_global_pool(op, shape):
    model = h.build_model([node(op, ["x"])], [("x", shape)], [("y", None)])
    programs = check_everywhere(model)
    assert "vred" in h.mnemonics(programs["edge"], "y")


def test_global_avg_pool_accumulates_over_spatial_tiles():
    model = h.build_model([node("GlobalAveragePool", ["x"])], [("x", [1, 3, 40, 40])], [("y", None)])
    program = h.check_on_target(model, "edge", ["memory.BUF.size_bytes=4096"])
    assert h.mnemonics(program, "y").count("vred") > 3


# --------------------------------------------------------------------------- convolutions


@pytest.mark.parametrize("channels,stride,dilation,pads", [
    (32, 1, 1, [1, 1, 1, 1]), (24, 2, 1, [1, 1, 1, 1]), (3, 1, 2, [2, 0, 1, 2]), (17, 2, 1, [0, 0, 0, 0]),
], ids=str)
def test_depthwise_conv(channels, stride, dilation, pads):
    w, b = f32(channels, 1, 3, 3), f32(channels)
    model = h.build_model(
        [node("Conv", ["x", "w", "b"], ["c"], group=channels, strides=[stride] * 2, dilations=[dilation] * 2,
              pads=pads), node("Relu", ["c"])],
        [("x", [1, channels, 10, 9])], [("y", None)], [("w", w), ("b", b)])
    programs = check_everywhere(model)
    for target, program in programs.items():
        ops = h.mnemonics(program)
        assert "vfma" in ops and "matmul" not in ops, target


def test_depthwise_conv_with_residual_and_no_bias():
    channels = 16
    model = h.build_model(
        [node("Conv", ["x", "w"], ["c"], group=channels, pads=[1, 1, 1, 1]), node("Add", ["c", "x"], ["s"]),
         node("Clip", ["s", "lo", "hi"])],
        [("x", [2, channels, 6, 6])], [("y", None)], [("w", f32(channels, 1, 3, 3)), ("lo", 0.0), ("hi", 6.0)])
    programs = check_everywhere(model)
    assert "matmul" not in h.mnemonics(programs["fusion"])


def test_depthwise_conv_runtime_weight():
    model = h.build_model([node("Conv", ["x", "w"], group=8, pads=[0, 1, 0, 1])],
                          [("x", [1, 8, 5, 7]), ("w", [8, 1, 2, 3])], [("y", None)])
    check_everywhere(model, small=False)


@pytest.mark.parametrize("group,cin,cout", [(2, 4, 6), (4, 4, 8), (3, 6, 3)], ids=str)
def test_grouped_conv(group, cin, cout):
    model = h.build_model([node("Conv", ["x", "w", "b"], group=group, pads=[1, 0, 1, 0], strides=[1, 2])],
                          [("x", [1, cin, 7, 8])], [("y", None)],
                          [("w", f32(cout, cin // group, 3, 2)), ("b", f32(cout))])
    check_everywhere(model)


# --------------------------------------------------------------------------- matmul

MATMULS = {
    "2d": ([5, 7], [7, 9]),
    "batched_x_2d": ([3, 4, 6], [6, 20]),
    "batched_x_batched": ([2, 3, 4, 6], [2, 3, 6, 5]),
    "broadcast_batch": ([3, 1, 4, 6], [2, 6, 5]),
    "vec_x_mat": ([6], [6, 5]),
    "mat_x_vec": ([4, 6], [6]),
    "vec_x_batched": ([6], [3, 6, 2]),
}


@pytest.mark.parametrize("case", list(MATMULS), ids=str)
def test_matmul(case):
    a, b = MATMULS[case]
    model = h.build_model([node("MatMul", ["a", "b"])], [("a", a), ("b", b)], [("y", None)])
    check_everywhere(model)


def test_matmul_constant_operand():
    model = h.build_model([node("MatMul", ["a", "b"])], [("a", [2, 3, 40])], [("y", None)], [("b", f32(40, 33))])
    check_everywhere(model)


# --------------------------------------------------------------------------- data movement


@pytest.mark.parametrize("axis", [0, 1, 3])
def test_concat(axis):
    shapes = [[2, 3, 4, 5], [2, 3, 4, 5], [2, 3, 4, 5]]
    shapes[1][axis] = 2
    shapes[2][axis] = 7
    model = h.build_model([node("Concat", ["a", "b", "c"], axis=axis)],
                          [("a", shapes[0]), ("b", shapes[1]), ("c", shapes[2])], [("y", None)])
    check_everywhere(model)


@pytest.mark.parametrize("shape,perm", [
    ([2, 3, 4, 5], [0, 2, 3, 1]), ([2, 3, 4, 5], [3, 1, 2, 0]), ([17, 33], [1, 0]),
    ([2, 3, 2, 4, 3], [4, 0, 3, 1, 2]),
], ids=str)
def test_transpose(shape, perm):
    model = h.build_model([node("Transpose", ["x"], perm=perm)], [("x", shape)], [("y", None)])
    check_everywhere(model)


# --------------------------------------------------------------------------- softmax, LRN


@pytest.mark.parametrize("shape,axis", [([3, 1000], -1), ([2, 10, 3, 5], 1), ([4, 6, 50], 2), ([37], 0)],
                         ids=str)
def test_softmax(shape, axis):
    model = h.build_model([node("Softmax", ["x"], axis=axis)], [("x", shape)], [("y", None)])
    programs = check_everywhere(model)
    ops = h.mnemonics(programs["vector"], "y")
    assert {"vred", "vsub", "vact", "vmul"} <= set(ops)


def test_softmax_is_stable_for_large_inputs():
    model = h.build_model([node("Mul", ["x", "k"], ["big"]), node("Softmax", ["big"], axis=1)],
                          [("x", [2, 30])], [("y", None)], [("k", np.full([1], 200.0, np.float32))])
    for target in TARGETS:
        h.check_on_target(model, target)


@pytest.mark.parametrize("size", [1, 3, 4])
def test_lrn(size):
    model = h.build_model([node("LRN", ["x"], size=size, alpha=0.01, beta=0.75, bias=2.0)],
                          [("x", [2, 10, 6, 7])], [("y", None)])
    # onnxruntime refuses even sizes: those are held to the numpy reference (written from the spec)
    check_everywhere(model, reference="onnxruntime" if size % 2 else "nn")


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("op,attrs,shape", [
    ("MaxPool", dict(kernel_shape=[12, 12]), [1, 1, 14, 14]),
    ("Softmax", dict(axis=1), [1, 5000]),
    ("LRN", dict(size=3), [1, 3000, 2, 2]),
], ids=lambda v: v if isinstance(v, str) else None)
def test_layer_that_cannot_fit_is_one_line_error(op, attrs, shape):
    model = h.build_model([node(op, ["x"], **attrs)], [("x", shape)], [("y", None)])
    module, store = h.compile_fused(model)
    with pytest.raises(NnccError) as error:
        lower_module(module, store, load_target("edge", ["memory.BUF.size_bytes=256"]))
    message = str(error.value)
    assert "\n" not in message and "layer y" in message and "BUF" in message


def test_binary_broadcast_on_both_sides_with_more_than_three_axes():
    """Both operands broadcast, four axes that do not merge: the leading axis becomes jobs."""
    model = h.build_model([node("Sub", ["a", "b"])], [("a", [1, 3, 1, 5]), ("b", [2, 1, 4, 1])], [("y", None)])
    check_everywhere(model)


def test_depthwise_conv_with_bias_residual_and_activation():
    channels = 20
    model = h.build_model(
        [node("Conv", ["x", "w", "b"], ["c"], group=channels, pads=[1, 1, 1, 1]), node("Add", ["x", "c"], ["s"]),
         node("HardSwish", ["s"])],
        [("x", [1, channels, 9, 5])], [("y", None)], [("w", f32(channels, 1, 3, 3)), ("b", f32(channels))])
    programs = check_everywhere(model)
    assert "matmul" not in h.mnemonics(programs["edge"])


def test_concat_inputs_written_in_place_by_their_producers():
    """N = 1 channel concat: computed inputs read only by the concat land in their slices (no
    copy), the nested concat included; a graph input and an input read elsewhere are copied."""
    model = h.build_model(
        [node("Relu", ["a"], ["ra"]), node("Sigmoid", ["b"], ["sb"]), node("Relu", ["b"], ["rb"]),
         node("Concat", ["ra", "sb"], ["inner"], axis=1), node("Add", ["sb", "sb"], ["twice"]),
         node("Concat", ["inner", "a", "rb", "twice"], axis=1)],
        [("a", [1, 3, 4, 5]), ("b", [1, 2, 4, 5])], [("y", None)])
    programs = check_everywhere(model)
    for program in programs.values():
        assert h.mnemonics(program, "inner").count("vact") == 1  # sb (also read by the add)
        assert h.mnemonics(program, "y").count("vact") == 1  # the graph input a


def test_concat_with_batch_copies():
    model = h.build_model([node("Relu", ["a"], ["ra"]), node("Concat", ["ra", "b"], axis=1)],
                          [("a", [2, 3, 4, 5]), ("b", [2, 2, 4, 5])], [("y", None)])
    check_everywhere(model, small=False)


@pytest.mark.parametrize("target", TARGETS)
def test_depthwise_macs_count_in_the_utilisation(target):
    """A depthwise conv runs as `vfma` (one multiply-accumulate per element): its layer reports
    exactly C x OH x OW x KH x KW MACs and a non-zero utilisation."""
    channels = 32
    model = h.build_model(
        [node("Conv", ["x", "w", "b"], ["c"], group=channels, strides=[2, 2], pads=[1, 1, 1, 1]), node("Relu", ["c"])],
        [("x", [1, channels, 10, 9])], [("y", None)], [("w", f32(channels, 1, 3, 3)), ("b", f32(channels))])
    module, store = h.compile_fused(model)
    _, result = h.run_on_target(module, store, target, {"x": f32(1, channels, 10, 9)})
    (layer,) = [layer for layer in result.layers if layer.macs]
    assert layer.macs == channels * 5 * 5 * 3 * 3
    assert result.macs == layer.macs and 0 < result.mac_utilization < 1


@pytest.mark.parametrize("act, attrs, extra", [
    ("Relu", {}, []), ("LeakyRelu", {"alpha": 0.1}, []), ("HardSwish", {}, []), ("Sigmoid", {}, []),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, []), ("Clip", {}, [("lo", -0.5), ("hi", 0.5)]),
])
@pytest.mark.parametrize("residual", [False, True])
def test_conv_epilogue_rides_on_the_matmuls_on_a_vector_dsp(act, attrs, extra, residual):
    """On vector the fused bias (+ residual) + activation is matmul operands, no vadd/vact; on
    the matrix-unit targets it stays on the post unit. Every target matches onnxruntime."""
    nodes = [node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1])]
    last = "c"
    if residual:
        nodes.append(node("Add", ["c", "x"], ["s"]))
        last = "s"
    nodes.append(node(act, [last] + [name for name, _ in extra], **attrs))
    model = h.build_model(nodes, [("x", [1, 8, 6, 20])], [("y", None)],
                          [("w", f32(8, 8, 3, 3)), ("b", f32(8)), *extra])
    programs = check_everywhere(model, small=False)
    vector = [ins for ins in programs["vector"].instructions if type(ins).DEF.mnemonic != "layer"]
    assert {type(ins).DEF.mnemonic for ins in vector} <= {"dma", "matmul", "barrier"}
    assert any(ins.act != "none" for ins in vector if type(ins).DEF.mnemonic == "matmul")
    assert "vact" in h.mnemonics(programs["edge"])


@pytest.mark.parametrize("dilation", [1, 2])
def test_conv_folds_a_kernel_row_into_one_matmul(dilation):
    """Without horizontal dilation a kernel row's kw positions x input channels are one contiguous
    run of the HWC input tile: one matmul per kernel row, k = kw * channels (3 channels of a 7x7
    kernel: k = 21, two passes of edge's 16 rows instead of seven). With dilation, one matmul
    per kernel position, k = channels."""
    model = h.build_model([node("Conv", ["x", "w"], pads=[3, 3, 3, 3], strides=[2, 2], dilations=[dilation] * 2)],
                          [("x", [1, 3, 20, 22])], [("y", None)], [("w", f32(16, 3, 7, 7))])
    programs = check_everywhere(model, small=False)
    for target, program in programs.items():
        ks = {ins.mnk[2] for ins in program.instructions if type(ins).DEF.mnemonic == "matmul"}
        # k = kw x the tile's input channels (1 to 3) when folded, the channels alone otherwise
        assert ks and ks <= ({7, 14, 21} if dilation == 1 else {1, 2, 3}), (target, ks)
    edge = [ins for ins in programs["edge"].instructions if type(ins).DEF.mnemonic == "matmul"]
    assert {ins.mnk[2] for ins in edge} == ({21} if dilation == 1 else {3})  # all 3 channels in a tile
