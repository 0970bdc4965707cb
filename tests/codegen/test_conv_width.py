"""The width mapping of conv (conv_width: weights broadcast, output columns on the lanes) on the
`vector` target: small convs with both mappings forced (by a `tile` attribute with a `mapping`
entry) against onnxruntime; the chooser takes "width" where lanes are wasted (few output
channels, wide output) and it is faster there, and keeps "channels" on a matrix unit."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr, StringAttr, i64

import codegen_helpers as helpers
from nncc.compiler.codegen.context import Lowering
from nncc.compiler.codegen.conv import ConvShape, choose_tiles
from nncc.compiler.codegen.conv_width import choose_mapping, choose_width_tiles
from nncc.compiler.codegen.layers import conv_problem
from nncc.runtime.program import Program


def conv_model(c, o, h, w, k, stride, pad, bias=True, relu=True, residual=False, group=1):
    rng = np.random.default_rng(c * 1000 + o * 10 + k)
    weight = rng.standard_normal((o, c // group, k, k)).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "W")]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(o).astype(np.float32), "B"))
    nodes = [helper.make_node("Conv", ["x", "W"] + (["B"] if bias else []), ["y0"], strides=[stride, stride],
                              pads=[pad] * 4, kernel_shape=[k, k], group=group)]
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])]
    last = "y0"
    if residual:
        inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, o, oh, ow]))
        nodes.append(helper.make_node("Add", [last, "r"], ["y1"]))
        last = "y1"
    if relu:
        nodes.append(helper.make_node("Relu", [last], ["y"]))
        last = "y"
    graph = helper.make_graph(nodes, "conv", inputs,
                              [helper.make_tensor_value_info(last, TensorProto.FLOAT, [1, o, oh, ow])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    rng = np.random.default_rng(7)
    feeds = {"x": rng.standard_normal((1, c, h, w)).astype(np.float32)}
    if residual:
        feeds["r"] = rng.standard_normal((1, o, oh, ow)).astype(np.float32)
    return model, feeds


def the_conv(module):
    return next(op for op in module.walk() if op.name in ("fused.conv2d", "nn.conv2d"))


def lowering_for(target_name: str) -> Lowering:
    target = helpers.target(target_name)
    lowering = Lowering(target, Program(target, []), None)
    lowering.layer_cores = target.cores
    return lowering


def force(op, mapping: str, tiles) -> None:
    op.attributes["tile"] = DictionaryAttr({
        "oc": IntegerAttr(tiles.toc, i64), "ic": IntegerAttr(tiles.tic, i64), "oh": IntegerAttr(tiles.toh, i64),
        "ow": IntegerAttr(tiles.tow, i64), "split": StringAttr(tiles.split), "mapping": StringAttr(mapping)})


CASES = {
    # c, o, h, w, k, stride, pad, bias, relu, residual
    "3x64_3x3": (8, 3, 64, 64, 3, 1, 1, True, True, False),
    "1x40_1x1_nobias": (5, 1, 9, 40, 1, 1, 0, False, False, False),
    "5_stride2_pad": (3, 5, 33, 47, 3, 2, 1, True, True, False),
    "4_5x5_residual": (6, 4, 20, 36, 5, 1, 2, True, True, True),
    "20_oc_tiles": (4, 20, 12, 30, 3, 1, 0, True, False, True),
    "grouped": (8, 6, 10, 24, 3, 1, 1, True, True, False),
}


@pytest.mark.parametrize("mapping", ["channels", "width"])
@pytest.mark.parametrize("case", list(CASES))
def test_forced_mapping_matches_onnxruntime(case, mapping):
    c, o, h, w, k, stride, pad, bias, relu, residual = CASES[case]
    model, feeds = conv_model(c, o, h, w, k, stride, pad, bias, relu, residual, group=2 if case == "grouped" else 1)
    module, store = helpers.compile_fused(model)
    op = the_conv(module)
    s = conv_problem(op)
    lowering = lowering_for("vector")
    tiles = choose_width_tiles(lowering, s, bias)[0] if mapping == "width" else choose_tiles(lowering, s, "conv", bias)
    force(op, mapping, tiles)
    _, result = helpers.run_on_target(module, store, "vector", feeds)
    expected = helpers.ort_outputs(model, feeds)[0]
    ok, error, scale = helpers.within_scale(next(iter(result.outputs.values())), expected)
    assert ok, (case, mapping, error, scale)


def test_width_tiles_smaller_than_the_layer():
    """Tiles that cut rows, columns, input and output channels (several jobs per output tile)."""
    from nncc.compiler.codegen.conv import ConvTiles

    model, feeds = conv_model(12, 6, 18, 40, 3, 1, 1, True, True, True)
    module, store = helpers.compile_fused(model)
    force(the_conv(module), "width", ConvTiles(4, 5, 7, 16, "spatial"))
    _, result = helpers.run_on_target(module, store, "vector", feeds)
    ok, error, scale = helpers.within_scale(next(iter(result.outputs.values())), helpers.ort_outputs(model, feeds)[0])
    assert ok, (error, scale)


def test_chooser_picks_width_where_lanes_are_wasted():
    model, feeds = conv_model(8, 3, 64, 64, 3, 1, 1)
    module, store = helpers.compile_fused(model)
    op = the_conv(module)
    s = conv_problem(op)
    lowering = lowering_for("vector")
    mapping, tiles = choose_mapping(lowering, s, "conv")
    assert mapping == "width"
    cycles = {}
    for forced, forced_tiles in (("channels", choose_tiles(lowering, s, "conv")), ("width", tiles)):
        force(op, forced, forced_tiles)
        program, result = helpers.run_on_target(module, store, "vector", feeds)
        cycles[forced] = result.cycles
        ok, error, scale = helpers.within_scale(next(iter(result.outputs.values())),
                                                helpers.ort_outputs(model, feeds)[0])
        assert ok, (forced, error, scale)
    assert cycles["width"] < cycles["channels"], cycles
    del op.attributes["tile"]  # unforced: the chooser's mapping, with the width's cycles
    _, result = helpers.run_on_target(module, store, "vector", feeds)
    assert result.cycles == cycles["width"]


def test_channels_kept_where_lanes_are_full_and_on_matrix_units():
    s = ConvShape(1, 64, 56, 56, 64, 3, 3, 56, 56, (1, 1), (1, 1, 1, 1), (1, 1), 1)  # a VGG/ResNet 3x3 layer
    assert choose_mapping(lowering_for("vector"), s, "conv")[0] == "channels"
    narrow = ConvShape(1, 8, 64, 64, 3, 3, 3, 64, 64, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    assert choose_mapping(lowering_for("fusion"), narrow, "conv")[0] == "channels"
