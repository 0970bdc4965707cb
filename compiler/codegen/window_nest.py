"""The loop nest of a depthwise convolution: what tile-layers writes for it.

One loop over every output tile (channel tiles outermost, so that the cores, taking the tiles
in turn, share one channel tile's weights by multicast), its input window loaded with the halo
and the zero padding as slice bounds, one `tile.depthwise` (a `vfma` per kernel tap) and the
store. Layout hwc puts the channels on the lanes, chw (`mapping width`) the output columns:

    tile.for %c[%tc] = 0 to 32 step 32, %n[%tn] = 0 to 1 step 1, %oh[%toh] = 0 to 112 step 8,
             %ow[%tow] = 0 to 112 step 112 cores 4 order naive {
      tile.load %X[%n, %c, %oh - 1, %ow - 1] [1, %tc, %toh + 2, %tow + 2] -> %in[0] dims [2, 3, 1]
      tile.load %Wv[0, %c] [9, %tc] -> %wt[0] dims [0, 1]
      tile.load %B[%c] [%tc] -> %wt[288] dims [0]
      tile.depthwise %in[0], %wt[0] -> %out[0] sizes [%toh, %tow, %tc] kernel [3, 3] strides [1, 1]
        dilations [1, 1] bias %wt[288] act clip [0.0, 6.0]
      tile.store %out[0] -> %Y[%n, %c, %oh, %ow] [1, %tc, %toh, %tow] dims [2, 3, 1]
    }
"""

from __future__ import annotations

import math

import numpy as np
from xdsl.dialects.builtin import FloatAttr, StringAttr, UnitAttr, f64
from xdsl.ir import Block, Operation, SSAValue

from nncc.compiler.codegen.context import Lowering, layer_name
from nncc.compiler.codegen.epilogue import Epilogue, fused_epilogue
from nncc.compiler.codegen.nest import lower_detached
from nncc.compiler.codegen.pool import pool_probe
from nncc.compiler.codegen.nest_builder import (
    IndexExprs, add_buffers, epilogue_parameters, finish_nest, nest_block, replace_op, slice_op,
)
from nncc.dialects import nn, tile


def depthwise_nest(lowering: Lowering, op: Operation, s, t, epilogue: Epilogue, slots: int = 1) -> tile.NestOp:
    """The nest of depthwise conv `op` (shape `s`: a conv.ConvShape; tiles `t`: a pool.WindowTiles)."""
    from nncc.compiler.codegen.depthwise import depthwise_window

    bias, residual = op.bias, getattr(op, "residual", None)
    block, args, inputs = nest_block([("X", op.input), ("W", op.weight), ("B", bias), ("R", residual)], op.result)
    taps = s.kh * s.kw
    relayout = tile.RelayoutOp(args["W"], [s.c, taps], [1, 0])
    relayout.result.name_hint = "Wv"
    block.add_op(relayout)
    buffers = window_buffers(lowering, block, depthwise_window(s), t, slots,
                             before=[("wt", "weight", [(taps + 1) * t.tc], True)])
    (c, tc, n, oh, toh, ow, tow), body, dims = window_loop(lowering, block, depthwise_window(s), t, args["X"],
                                                           buffers["in"])
    body.add_op(slice_op(tile.LoadOp, relayout.result, buffers["wt"], [0, c], [taps, tc], [0, 1]))
    if bias is not None:
        body.add_op(slice_op(tile.LoadOp, args["B"], buffers["wt"], [c], [tc], [0], at=taps * t.tc))
    out_slice = ([n, c, oh, ow], [1, tc, toh, tow])
    if residual is not None:
        body.add_op(slice_op(tile.LoadOp, args["R"], buffers["out"], *out_slice, dims))
    e = IndexExprs()
    views = [e(0), e(0), e(0)] + ([e(taps * t.tc)] if bias is not None else [])
    compute = tile.window_op(tile.DepthwiseOp, [buffers["in"], buffers["wt"], buffers["out"]]
                             + ([buffers["wt"]] if bias is not None else []), views, e, [e(toh), e(tow), e(tc)],
                             [s.kh, s.kw], list(s.strides), list(s.dilations), epilogue.act,
                             epilogue_parameters(epilogue))
    if residual is not None:
        compute.accumulate_init = UnitAttr()
    if t.layout != "hwc":
        compute.mapping = StringAttr("width")
    body.add_op(compute)
    body.add_op(slice_op(tile.StoreOp, args["Y"], buffers["out"], *out_slice, dims))
    nest = finish_nest(op, block, inputs)
    if t.halo == "cache":
        nest.attributes["halo"] = StringAttr("cache")
    return nest


def window_buffers(lowering: Lowering, block: Block, g, t, slots: int, before=(), after=()) -> dict[str, SSAValue]:
    """The input window and output tile buffers of a sliding-window nest (hwc: channels last,
    chw: columns last), with the `before` and `after` buffer specs (add_buffers) around the output."""
    rows, cols = g.extent(t.toh, 0), g.extent(t.tow, 1)
    hwc = t.layout == "hwc"
    return add_buffers(lowering, block, [
        ("in", "input", [rows, cols, t.tc] if hwc else [t.tc, rows, cols], False, t.halo == "cache"), *before,
        ("out", "output", [t.toh, t.tow, t.tc] if hwc else [t.tc, t.toh, t.tow], False), *after], slots)


def window_loop(lowering: Lowering, block: Block, g, t, x: SSAValue, in_buffer: SSAValue, pad: float = 0.0):
    """The loop over every output tile of window `g` (channel tiles outermost, dealt to the
    cores in turn) and its input window's load (halo; outside the input: `pad`): the loop's
    (c, tc, n, oh, toh, ow, tow), its body and the buffer dims of NCHW tiles."""
    loop = tile.ForOp.build([(0, g.c, t.tc), (0, g.n, 1), (0, g.oh, t.toh), (0, g.ow, t.tow)], "naive",
                            lowering.cores, names=["c", "n", "oh", "ow"])
    block.add_op(loop)
    c, tc, n, _, oh, toh, ow, tow = loop.block.args
    dims = [2, 3, 1] if t.layout == "hwc" else [1, 2, 3]
    sh, sw = g.strides
    load = slice_op(tile.LoadOp, x, in_buffer, [n, c, ((oh, sh), -g.pads[0]), ((ow, sw), -g.pads[1])],
                    [1, tc, ((toh, sh), (g.kh - 1) * g.dilations[0] + 1 - sh),
                     ((tow, sw), (g.kw - 1) * g.dilations[1] + 1 - sw)], dims)
    if pad:
        load.pad = FloatAttr(pad, f64)
    loop.block.add_op(load)
    return (c, tc, n, oh, toh, ow, tow), loop.block, dims


def pool_nest(lowering: Lowering, op: Operation, g, t, func: str, divisor: SSAValue | None,
              slots: int = 1) -> tile.NestOp:
    """The nest of pooling `op` (window `g`, tiles `t`: pool.Window, pool.WindowTiles): every
    output tile's input window (padded with -inf for max, zeros otherwise), one `tile.pool`, the
    [rows][columns] reciprocal divisors for average pooling that excludes the padding."""
    block, args, inputs = nest_block([("X", op.input), ("D", divisor)], op.result)
    buffers = window_buffers(lowering, block, g, t, slots,
                             after=[("div", "weight", [t.toh, t.tow], False)] if divisor is not None else [])
    (c, tc, n, oh, toh, ow, tow), body, dims = window_loop(lowering, block, g, t, args["X"], buffers["in"],
                                                           -math.inf if func == "max" else 0.0)
    if divisor is not None:
        body.add_op(slice_op(tile.LoadOp, args["D"], buffers["div"], [oh, ow], [toh, tow], [0, 1]))
    e = IndexExprs()
    sizes = [e(toh), e(tow), e(tc)]  # the index operands first: every map is over all of them
    pool_buffers = [buffers["in"], buffers["out"]] + ([buffers["div"]] if divisor is not None else [])
    pool = tile.PoolOp.build(
        operands=[pool_buffers, list(e.values)],
        properties={"func": StringAttr(func), "kernel": tile.ints_attr([g.kh, g.kw]),
                    "conv_strides": tile.ints_attr(list(g.strides)), "dilations": tile.ints_attr(list(g.dilations)),
                    "views": e.map([e(0)] * len(pool_buffers)), "sizes": e.map(sizes)})
    if t.layout != "hwc":
        pool.mapping = StringAttr("width")
    body.add_op(pool)
    body.add_op(slice_op(tile.StoreOp, args["Y"], buffers["out"], [n, c, oh, ow], [1, tc, toh, tow], dims))
    return finish_nest(op, block, inputs)


def pool_nest_of(lowering: Lowering, op: Operation, slots: int) -> tile.NestOp:
    """The nest of pooling `op` (tiles: its `tile` attribute, else the cheapest). Average pooling
    that excludes padding reads its reciprocal divisors as a weight (added to the weight store;
    its `nn.weight` op is placed before `op` when `op` is in a block)."""
    from nncc.compiler.codegen.pool import divisor_counts

    tiling = pool_probe(lowering, op)
    divisor = None
    if tiling.func == "sum":
        reciprocal = (1.0 / divisor_counts(tiling.g, bool(op.count_include_pad.value))).astype(np.float32)
        weight = nn.WeightOp(lowering.store.add(f"{layer_name(op)}.divisor", reciprocal), list(reciprocal.shape))
        weight.result.name_hint = f"{layer_name(op)}_divisor"
        if op.parent is not None:
            op.parent.insert_op_before(weight, op)
        divisor = weight.result
    return pool_nest(lowering, op, tiling.g, tiling.tiles(), tiling.func, divisor, slots)


def replace_with_pool_nest(lowering: Lowering, op: Operation, slots: int = 1) -> tile.NestOp:
    """Put pooling `op`'s nest in its place in @main."""
    return replace_op(op, pool_nest_of(lowering, op, slots))


def lower_pool(lowering: Lowering, op: Operation):
    """A pooling layer that tile-layers did not write as a nest: its nest now, unrolled."""
    return lower_detached(lowering, op, pool_nest_of(lowering, op, lowering.buffers))


def replace_with_depthwise_nest(lowering: Lowering, op: Operation, s, t, slots: int = 1) -> tile.NestOp:
    """Put depthwise conv `op`'s nest (tiles `t`) in its place in @main."""
    return replace_op(op, depthwise_nest(lowering, op, s, t, fused_epilogue(op), slots))
