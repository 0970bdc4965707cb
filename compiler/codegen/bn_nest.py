"""The nests of the training convs with BatchNorm/ReLU fused (`fuse-batch-norm-training`):
`fused.conv2d_stats` and `fused.conv2d_pre` (with or without statistics) in the forward;
`fused.conv2d_backward_data_sums` (BatchNorm backward's reductions as post-processing of the
backward-data output tiles, `add_backward_sums`; with `pre`, and `fused.conv2d_backward_data_pre`:
the next BatchNorm backward's elementwise part as pre-processing of its gradient tiles,
`add_gradient_pre_processing`) and `fused.conv2d_backward_filter_pre` (the
normalised activations made from the backward-filter's input tiles) in the backward; and the
passes of their own (`fused.batch_norm_factors`, `_apply`, `_backward_sums`, `_backward_apply`).

A conv's nest (`conv_nest`, channels on the lanes) with, on the target's pre- and
post-processing units (the vector unit on a target without them):

- **pre-processing** of every input tile as it arrives, before the matrix unit reads it:
  `in = relu(in * scale + shift)` with the input channels' scale and shift (two `tile.map`s on
  the pre unit); with zero padding, a third map multiplies by a 0/1 border mask (a slice of a
  ones tensor that the DMA pads with zeros, like the input), since the padding is that of the
  normalised activations;
- **post-processing** of every output tile after its last input-channel tile: its square
  (`tile.map mul`) and the per-channel sums of the tile and of its square as matmuls of a ones
  row with the tile (`tile.conv ... last %ic {unit = "post"}`), accumulated over the whole nest
  in a statistics buffer (loaded with zeros, and the ones row, once at the start: a loaded
  buffer keeps its slot for the whole nest) that is stored after the last tile.

    tile.load %ONES[0] [64] -> %ones[0] dims [0]
    tile.load %ZEROS[0] [128] -> %st[0] dims [0]
    tile.for %oc[%toc] = 0 to 64 step 64 {
      tile.for %n[%tn] = 0 to 8 step 1, %oh[%toh] = 0 to 8 step 8, %ow[%tow] = 0 to 8 step 8 cores 1 {
        tile.for %ic[%tic] = 0 to 64 step 64 {
          tile.load %X[...] -> %in[0] ...;  tile.load %S[%ic] [%tic] -> %bn[0]; tile.load %T[%ic] [%tic] -> %bn[64]
          tile.map fma %in[0], %bn[0] broadcast [0, 1], %bn[64] broadcast [0, 1] -> %in[0] shape [...] {unit = "pre"}
          tile.map relu %in[0] -> %in[0] shape [...] {unit = "pre"}
          tile.conv %in[0], %wt[0] -> %out[0] sizes [...] ... reduce %ic
          tile.map mul %out[0], %out[0] -> %sq[0] shape [%toh, %tow, %toc] last %ic {unit = "post"}
          tile.conv %ones[0], %out[0] -> %st[%oc] sizes [1, 1, 64, %toc] ... onto_output last %ic {unit = "post"}
          tile.conv %ones[0], %sq[0] -> %st[%oc + 64] sizes [1, 1, 64, %toc] ... onto_output last %ic {unit = "post"}
        }
        tile.store %out[0] -> %Y[...]
      }
    }
    tile.store %st[0] -> %SUM[0] [64] ...;  tile.store %st[64] -> %SQ[0] [64] ...

Output tiles divide the output exactly (the sums' row length is a constant), and a nest with
statistics runs on one core (one statistics buffer).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from xdsl.dialects.builtin import IntegerAttr, StringAttr, i64
from xdsl.ir import Block, Operation, Region, SSAValue

from nncc.compiler.codegen.context import Lowering, layer_name
from nncc.compiler.codegen.conv import ConvTiles, choose_tiles
from nncc.compiler.codegen.conv_nest import conv_nest, conv_tensors
from nncc.compiler.codegen.epilogue import Epilogue
from nncc.compiler.codegen.nest import lower_nest
from nncc.compiler.codegen.nest_fit import divisor_at_most, fitting
from nncc.compiler.codegen.nest_builder import IndexExprs, slice_op
from nncc.compiler.codegen.stream_nest import constant_weight, map_op
from nncc.dialects import fused, nn, tile
from nncc.support.errors import NnccError

BROADCAST_ROWS_COLUMNS, BROADCAST_CHANNELS, BROADCAST_ALL = 0b011, 0b100, 0b111


def lower_bn_conv(lowering: Lowering, op: Operation):
    """The lowering-table entry of fused.conv2d_stats and fused.conv2d_pre: its nest, unrolled."""
    from nncc.compiler.codegen.layers import conv2d_shape

    return lower_results(lowering, op, bn_conv_nest(lowering, op, conv2d_shape(op)))


def lower_factors(lowering: Lowering, op: Operation):
    """The lowering-table entry of fused.batch_norm_factors."""
    return lower_results(lowering, op, factors_nest(lowering, op, lowering.buffers))


def lower_results(lowering: Lowering, op: Operation, nest: tile.NestOp):
    """`nest` (made at lowering time for `op`, with a result per result of `op`) unrolled."""
    for outer, inner in zip(op.results, nest.results):
        lowering.addresses[inner] = lowering.address(outer)
    return lower_nest(lowering, nest)


def bn_conv_nest(lowering: Lowering, op: Operation, s) -> tile.NestOp:
    """The nest of `op` with the tiles the cost model times fastest among the conv's own tiles
    (output tiles made to divide the output) with more output channels per tile (each input tile
    is pre-processed once per output-channel tile), each shrunk until the extra buffers fit."""
    from nncc.compiler.codegen.group_nest import predict, scratch

    if s.group != 1:
        raise NnccError(f"layer {layer_name(op)}: {op.name} of a grouped conv is not supported")
    constants = constant_inputs(lowering, op, s)
    key = ("bn tiles", op.name, s, len(op.results), op.bias is not None)
    if key not in lowering.cost_cache:
        t = choose_tiles(lowering, s, layer_name(op), op.bias is not None)
        t = dataclasses.replace(t, toh=divisor_at_most(s.oh, t.toh), tow=divisor_at_most(s.ow, t.tow))
        options = {fitting(lowering, s, dataclasses.replace(t, toc=toc),
                           lambda tiles: build(lowering, op, s, tiles, constants))
                   for toc in {t.toc, min(s.og, 2 * t.toc), min(s.og, 4 * t.toc), s.og}}
        options.discard(None)
        if not options:
            raise NnccError(f"layer {layer_name(op)}: the fused BatchNorm buffers do not fit the target's memories")
        probe = scratch(lowering)
        timed = [(predict(probe, build(probe, op, s, option, constants)).cycles, option.toc, option) for option in options]
        lowering.cost_cache[key] = min(timed, key=lambda item: item[:2])[2]
    return build(lowering, op, s, lowering.cost_cache[key], constants)


def constant_inputs(lowering: Lowering, op: Operation, s) -> dict[str, SSAValue]:
    """The constants a fused nest reads: the ones row and the zeros of the statistics, the border
    mask of a padded pre-processed input."""
    constants = {}
    if len(op.results) == 3:
        constants["ones"] = constant_weight(lowering, op, f"bn_stats.ones{s.oh * s.ow}", np.ones(s.oh * s.ow, np.float32))
        constants["zeros"] = constant_weight(lowering, op, f"bn_stats.zeros{2 * s.og}", np.zeros(2 * s.og, np.float32))
    if isinstance(op, fused.Conv2dPreOp) and any(nn.ints(op.pads)):
        h, w = nn.shape_of(op.input)[2:]
        constants["mask"] = constant_weight(lowering, op, f"bn_pre.mask{h}x{w}", np.ones((1, 1, h, w), np.float32))
    return constants


@dataclasses.dataclass
class Parts:
    """The ops and values of a conv nest that the fused forms add to."""

    block: object
    conv: tile.ConvOp
    ic_loop: tile.ForOp
    spatial: tile.ForOp
    channel: tile.ForOp
    buffers: dict[str, SSAValue]


def parts_of(block) -> Parts:
    conv = next(o for o in block.walk() if isinstance(o, tile.ConvOp))
    ic_loop = conv.parent_op()
    loops = [o for o in block.walk() if isinstance(o, tile.ForOp)]
    spatial = next(loop for loop in loops if len(loop.block.args) == 6)
    channel = next(loop for loop in loops if loop is not spatial and loop is not ic_loop)
    buffers = {o.result.name_hint: o.result for o in block.walk() if isinstance(o, tile.BufferOp)}
    return Parts(block, conv, ic_loop, spatial, channel, buffers)


def build(lowering: Lowering, op: Operation, s, t: ConvTiles, constants: dict[str, SSAValue]) -> tile.NestOp:
    pre = isinstance(op, fused.Conv2dPreOp)
    stats = len(op.results) == 3
    inputs, block, parts = conv_block(lowering, s, t, conv_tensors(op, s, "channels"))
    outputs = [op.result.type]
    if pre:
        extra = [op.scale, op.shift] + ([constants["mask"]] if "mask" in constants else [])
        args = []
        for value in extra:
            args.append(block.insert_arg(value.type, len(inputs)))
            inputs.append(value)
        add_pre_processing(lowering, parts, s, t, args, op.pre.data)
    if stats:
        outputs += [op.results[1].type, op.results[2].type]
        starts = []
        for name in ("ones", "zeros"):
            starts.append(block.insert_arg(constants[name].type, len(inputs)))
            inputs.append(constants[name])
        sums = block.insert_arg(op.results[1].type, len(block.args))
        squares = block.insert_arg(op.results[2].type, len(block.args))
        add_statistics(lowering, parts, s, t, sums, squares, starts)
    nest = tile.NestOp(layer_name(op), inputs, outputs, Region(block),
                       {"op": StringAttr(op.name), nn.ONNX_NODES: op.attributes.get(nn.ONNX_NODES)}
                       if nn.ONNX_NODES in op.attributes else {"op": StringAttr(op.name)})
    if nn.PHASE in op.attributes:
        nest.attributes[nn.PHASE] = op.attributes[nn.PHASE]
    return nest


def buffer(lowering: Lowering, parts: Parts, name: str, role: str, shape) -> SSAValue:
    """A new buffer of the nest, declared before its loops."""
    op = tile.BufferOp(role, shape, lowering.target.memory_for(role).name, lowering.buffers)
    op.result.name_hint = name
    first_loop = next(o for o in parts.block.ops if isinstance(o, tile.ForOp))
    parts.block.insert_op_before(op, first_loop)
    parts.buffers[name] = op.result
    return op.result


def on_unit(op: Operation, unit: str) -> Operation:
    op.attributes["unit"] = StringAttr(unit)
    return op


def add_pre_processing(lowering: Lowering, parts: Parts, s, t: ConvTiles, args, act: str,
                       per_image: bool = False) -> None:
    """Load the input channels' scale and shift (and the border mask) with each input tile, and
    normalise the tile (ReLU, mask) on the pre unit before the conv reads it. `per_image`: the
    nest's images are the channels (a backward-filter nest: its tile is one channel of a block
    of images), so one scale and shift, broadcast over the tile."""
    scale, shift, *mask = args
    body = parts.ic_loop.block
    ic, tic = body.args[-2:]
    n, _, oh, toh, ow, tow = parts.spatial.block.args
    if per_image:
        factors = buffer(lowering, parts, "bn", "weight", [2])
        ops: list[Operation] = [slice_op(tile.LoadOp, scale, factors, [n], [1], [0]),
                                slice_op(tile.LoadOp, shift, factors, [n], [1], [0], at=1)]
        at, broadcast = 1, BROADCAST_ALL
    else:
        factors = buffer(lowering, parts, "bn", "weight", [2 * t.tic])
        ops = [slice_op(tile.LoadOp, scale, factors, [ic], [tic], [0]),
               slice_op(tile.LoadOp, shift, factors, [ic], [tic], [0], at=t.tic)]
        at, broadcast = t.tic, BROADCAST_ROWS_COLUMNS
    sh, sw = s.strides
    rows_extent = (s.kh - 1) * s.dilations[0] + 1 - sh
    cols_extent = (s.kw - 1) * s.dilations[1] + 1 - sw
    if mask:
        rows, cols = s.input_extent(t.toh, 0), s.input_extent(t.tow, 1)
        border = buffer(lowering, parts, "mask", "input", [rows, cols, 1])
        ops.append(slice_op(tile.LoadOp, mask[0], border, [0, 0, ((oh, sh), -s.pads[0]), ((ow, sw), -s.pads[1])],
                            [1, 1, ((toh, sh), rows_extent), ((tow, sw), cols_extent)], [2, 3, 1]))
    x = parts.buffers["in"]

    def shape(e: IndexExprs):
        return [e(toh) * sh + rows_extent, e(tow) * sw + cols_extent, e(tic)]
    e = IndexExprs()
    ops.append(on_unit(map_op(e, "fma", [(x, 0, 0), (factors, 0, broadcast), (factors, at, broadcast), (x, 0, 0)],
                              shape(e)), "pre"))
    if act == "relu":
        e = IndexExprs()
        ops.append(on_unit(map_op(e, "relu", [(x, 0, 0), (x, 0, 0)], shape(e)), "pre"))
    if mask:
        e = IndexExprs()
        ops.append(on_unit(map_op(e, "mul", [(x, 0, 0), (border, 0, BROADCAST_CHANNELS), (x, 0, 0)], shape(e)), "pre"))
    for op in ops:
        body.insert_op_before(op, parts.conv)


def channel_sums_after_conv(parts: Parts, ops: list[Operation], sources, ones: SSAValue, st: SSAValue,
                            pixels: int, ic: SSAValue) -> None:
    """`ops` (post-processing of the conv's output tile), then each of `sources` (a tile buffer,
    its offset in `st`) summed per channel on the post unit, all after the nest's conv: a 1x1
    tile.conv of the ones row with the tile, accumulated into `st` on the input-channel loop's
    last step.

        tile.conv %ones[0], %out[0] -> %st[%oc] ... {last = 0, unit = "post"}
    """
    body = parts.ic_loop.block
    oc, toc = parts.channel.block.args[-2:]
    for source, at in sources:
        e = IndexExprs()
        e(ic)
        sums = tile.conv_op([ones, source, st], [e(0), e(0), e(oc) + at], e, [e(1), e(1), e(pixels), e(toc)],
                            [1, 1], [1, 1], [1, 1], -1, True, None, ())
        sums.properties["last"] = IntegerAttr(e(ic).position, i64)
        ops.append(on_unit(sums, "post"))
    anchor = parts.conv.next_op
    for op in ops:
        if anchor is None:
            body.add_op(op)
        else:
            body.insert_op_before(op, anchor)


def add_statistics(lowering: Lowering, parts: Parts, s, t: ConvTiles, sums: SSAValue, squares: SSAValue,
                   constants) -> None:
    """The per-channel sums of the output and of its square, accumulated from every output tile
    on the post unit, stored at the end. `constants`: the ones row and the zeros the sums start
    from, loaded once (a loaded buffer keeps its slot for the whole nest)."""
    pixels, channels = t.toh * t.tow, s.og
    ones = buffer(lowering, parts, "ones", "weight", [pixels])
    st = buffer(lowering, parts, "st", "output", [2 * channels])
    sq = buffer(lowering, parts, "sq", "output", [t.toh, t.tow, t.toc])
    first_loop = next(o for o in parts.block.ops if isinstance(o, tile.ForOp))
    for target, arg, size in zip((ones, st), constants, (pixels, 2 * channels)):
        parts.block.insert_op_before(slice_op(tile.LoadOp, arg, target, [0], [size], [0]), first_loop)
    for loop in parts.block.walk():
        if isinstance(loop, tile.ForOp) and "cores" in loop.properties:
            loop.properties["cores"] = IntegerAttr(1, i64)  # one statistics buffer
    body = parts.ic_loop.block
    ic, _ = body.args
    _, _, _, toh, _, tow = parts.spatial.block.args
    oc, toc = parts.channel.block.args[-2:]
    out = parts.buffers["out"]
    e = IndexExprs()
    ops: list[Operation] = [on_unit(map_op(e, "mul", [(out, 0, 0), (out, 0, 0), (sq, 0, 0)],
                                           [e(toh), e(tow), e(toc)], last=ic), "post")]
    channel_sums_after_conv(parts, ops, ((out, 0), (sq, channels)), ones, st, pixels, ic)
    for target, at in ((sums, 0), (squares, channels)):
        parts.block.add_op(slice_op(tile.StoreOp, target, st, [0], [channels], [0], at=at))


# --------------------------------------------------------------------------- the per-channel numbers, the apply


def factors_nest(lowering: Lowering, op: fused.BatchNormFactorsOp, slots: int = 1) -> tile.NestOp:
    """fused.batch_norm_factors as one tile of every channel: the six [C] operands loaded into one
    buffer, the maps, the six [C] results stored:

        mean = sums / n; var = squares / n - mean^2; invstd = rsqrt(var + eps); scale = gamma invstd;
        shift = beta - mean scale; running_mean = m rm + (1 - m) mean; running_var = m rv + (1 - m) n / (n - 1) var
    """
    c = nn.shape_of(op.sums)[0]
    n, eps, m = op.count.value.data, float(op.epsilon.value.data), float(op.momentum.value.data)
    block = Block(arg_types=[v.type for v in op.operands] + [v.type for v in op.results])
    for arg, name in zip(block.args, ("SUM", "SQ", "G", "B", "RM", "RV", "MEAN", "INV", "SCALE", "SHIFT", "NRM", "NRV")):
        arg.name_hint = name
    st = tile.BufferOp("output", [10 * c], lowering.target.memory_for("output").name, slots)
    st.result.name_hint = "st"
    block.add_op(st)
    buf = st.result
    loop = tile.ForOp.build([(0, c, c)], "naive", names=["c"])
    block.add_op(loop)
    iv, extent = loop.block.args
    for k, arg in enumerate(block.args[:6]):
        loop.block.add_op(slice_op(tile.LoadOp, arg, buf, [iv], [extent], [0], at=k * c))
    SUM, SQ, G, B, RM, RV, MEAN, INV, SCALE, SHIFT, NRM, NRV, VAR, T = (k * c for k in (0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6, 7))
    steps = [  # (func, inputs (offsets), output offset, params): in place, in an order that reads before it overwrites
        ("affine", [SUM], 8 * c, [1.0 / n, 0.0]),               # mean (kept at 8c until the end)
        ("affine", [SQ], VAR, [1.0 / n, 0.0]),                  # E[x^2]
        ("mul", [8 * c, 8 * c], T, []),
        ("sub", [VAR, T], VAR, []),                             # var
        ("rsqrt", [VAR], 9 * c, [eps]),                         # invstd (at 9c)
        ("mul", [G, 9 * c], SCALE, []),                         # scale = gamma invstd (gamma overwritten)
        ("mul", [8 * c, SCALE], T, []),
        ("sub", [B, T], SHIFT, []),                             # shift = beta - mean scale
        ("affine", [RM], NRM, [m, 0.0]),
        ("affine", [8 * c], T, [1.0 - m, 0.0]),
        ("add", [NRM, T], NRM, []),
        ("affine", [RV], NRV, [m, 0.0]),
        ("affine", [VAR], T, [(1.0 - m) * n / (n - 1), 0.0]),
        ("add", [NRV, T], NRV, []),
        ("copy", [8 * c], MEAN, []),
        ("copy", [9 * c], INV, []),
    ]
    for func, ins, out, params in steps:
        e = IndexExprs()
        loop.block.add_op(map_op(e, func, [(buf, at, 0) for at in ins] + [(buf, out, 0)], [e(1), e(1), e(extent)],
                                 params))
    for k, arg in enumerate(block.args[6:]):
        loop.block.add_op(slice_op(tile.StoreOp, arg, buf, [iv], [extent], [0], at=k * c))
    return tile.NestOp(layer_name(op), list(op.operands), [v.type for v in op.results], Region(block),
                       nest_attributes(op))


def nest_attributes(op: Operation) -> dict:
    attributes = {"op": StringAttr(op.name)}
    for key in (nn.ONNX_NODES, nn.PHASE):
        if key in op.attributes:
            attributes[key] = op.attributes[key]
    return attributes


def apply_nest(lowering: Lowering, op: fused.BatchNormApplyOp, slots: int = 1) -> tile.NestOp:
    """fused.batch_norm_apply as a streaming nest: `fma` with the per-channel scale and shift, then
    the residual added (or a second `fma` and its shift), then the ReLU, on each tile."""
    from nncc.compiler.codegen.stream_nest import Piece, broadcast_operand, row_major_operand, stream_nest

    shape = nn.shape_of(op.result)
    per_channel = (1, shape[1]) + (1,) * (len(shape) - 2)
    others = list(op.others)
    names = ["X", "S", "H"] + (["R"] if len(others) == 1 else ["X2", "S2", "H2"] if others else [])
    values = [op.input, op.scale, op.shift, *others]
    operands = [broadcast_operand(name, shape if name in ("X", "R", "X2") else per_channel, shape) for name in names]
    act = op.act.data

    def compute(e, ins, out, masks, tile_shape):
        views = [(b, 0, mask) for b, mask in zip(ins, masks)]
        result = (out, 0, 0)
        ops = [map_op(e, "fma", [*views[:3], result], tile_shape)]
        if len(views) == 4:
            ops.append(map_op(e, "add", [result, views[3], result], tile_shape))
        elif len(views) == 6:
            ops += [map_op(e, "fma", [views[3], views[4], result, result], tile_shape),
                    map_op(e, "add", [result, views[5], result], tile_shape)]
        if act == "relu":
            ops.append(map_op(e, "relu", [result, result], tile_shape))
        return ops
    piece = Piece(shape, operands, row_major_operand("Y", shape))
    return stream_nest(lowering, op, list(zip(names, values)), [piece], compute, slots)


# --------------------------------------------------------------------------- backward


def backward_tiles(lowering: Lowering, channels: int, pixels: int, buffers: int) -> tuple[int, int]:
    """(channels, pixels) per tile of a backward pass: whole rows of pixels when they fit. The
    budget assumes every tile-sized buffer (and room for the per-channel ones) in one memory, as
    on `vector`, where inputs and outputs share AM."""
    budget = lowering.capacity("input") // (F32_BYTES * lowering.buffers * (buffers + 1))
    tp = min(pixels, max(budget, 1))
    return min(channels, max(budget // tp, 1)), tp


F32_BYTES = 4
PER_CHANNEL = 0b101  # a [C] vector seen by a [1, channels, pixels] tile


def backward_sums_nest(lowering: Lowering, op: fused.BatchNormBackwardSumsOp, slots: int = 1) -> tile.NestOp:
    """fused.batch_norm_backward_sums: per channel tile, the gradient and input tiles of every
    image and pixel tile (g masked by ReLU's step), the sums of g and of g xhat accumulated
    (`tile.reduce sum ... reduce %n`), then c2 and c3 from them, stored."""

    from nncc.compiler.codegen.reduce_nest import reduce_op

    n, c, h, w = nn.shape_of(op.input)
    p, count = h * w, n * h * w
    tc, tp = backward_tiles(lowering, c, p, 3)
    block = Block(arg_types=[v.type for v in op.operands] + [v.type for v in op.results])
    names = ("DZ", "Y", "A", "B", "M", "INV", "DSC", "DB", "C2", "C3")
    for arg, name in zip(block.args, names):
        arg.name_hint = name
    args = dict(zip(names, block.args))
    views = {}
    for name in ("DZ", "Y"):
        view = tile.ViewOp(args[name], 0, [n, c, p], [c * p, p, 1])
        view.result.name_hint = f"{name}v"
        block.add_op(view)
        views[name] = view.result
    bufs = {}
    for name, role, shape in (("dz", "input", [1, tc, tp]), ("y", "input", [1, tc, tp]), ("t", "output", [1, tc, tp]),
                              ("pc", "weight", [4 * tc]), ("acc", "output", [8 * tc])):
        buffer_op = tile.BufferOp(role, shape, lowering.target.memory_for(role).name, slots)
        buffer_op.result.name_hint = name
        block.add_op(buffer_op)
        bufs[name] = buffer_op.result
    outer = tile.ForOp.build([(0, c, tc)], "naive", names=["c"])
    block.add_op(outer)
    ci, tci = outer.block.args
    for k, name in enumerate(("A", "B", "M", "INV")):
        outer.block.add_op(slice_op(tile.LoadOp, args[name], bufs["pc"], [ci], [tci], [0], at=k * tc))
    inner = tile.ForOp.build([(0, n, 1), (0, p, tp)], "naive", names=["n", "p"])
    outer.block.add_op(inner)
    ni, _, pi, tpi = inner.block.args
    for name in ("DZ", "Y"):
        inner.block.add_op(slice_op(tile.LoadOp, views[name], bufs[name.lower()], [ni, ci, pi], [1, tci, tpi], [0, 1, 2]))
    dz, y, t, pc, acc = (bufs[k] for k in ("dz", "y", "t", "pc", "acc"))
    a, b, mean, inv = ((pc, k * tc, PER_CHANNEL) for k in range(4))

    def tile_map(func, views, params=()):
        e = IndexExprs()
        inner.block.add_op(map_op(e, func, views, [e(1), e(tci), e(tpi)], params))
    if op.relu is not None:
        tile_map("fma", [(y, 0, 0), a, b, (t, 0, 0)])
        tile_map("step", [(t, 0, 0), (t, 0, 0)])
        tile_map("mul", [(dz, 0, 0), (t, 0, 0), (dz, 0, 0)])
    tile_map("sub", [(y, 0, 0), mean, (t, 0, 0)])
    tile_map("mul", [(t, 0, 0), inv, (t, 0, 0)])
    tile_map("mul", [(t, 0, 0), (dz, 0, 0), (t, 0, 0)])
    for source, at in ((dz, 0), (t, tc)):
        e = IndexExprs()
        inner.block.add_op(reduce_op(e, "sum", (source, 0, 0), (acc, at, 0b110), [e(tci), e(1), e(tpi)], reduce=ni))
    # per channel: dbias (acc 0), dscale (acc tc); c2 (acc 2tc), c3 (acc 3tc); scratch at 4tc, 5tc
    dbias, dscale, c2, c3, s1, s2 = ((acc, k * tc, 0) for k in range(6))
    a0, mean0, inv0 = (pc, 0, 0), (pc, 2 * tc, 0), (pc, 3 * tc, 0)
    for func, views, params in (("mul", [a0, inv0, s1], ()), ("mul", [s1, dscale, s1], ()),
                                ("affine", [s1, c2], (-1.0 / count, 0.0)),
                                ("mul", [a0, dbias, s2], ()), ("affine", [s2, s2], (-1.0 / count, 0.0)),
                                ("mul", [c2, mean0, s1], ()), ("sub", [s2, s1, c3], ())):
        e = IndexExprs()
        outer.block.add_op(map_op(e, func, list(views), [e(1), e(1), e(tci)], params))
    for name, at in (("DSC", tc), ("DB", 0), ("C2", 2 * tc), ("C3", 3 * tc)):
        outer.block.add_op(slice_op(tile.StoreOp, args[name], acc, [ci], [tci], [0], at=at))
    return tile.NestOp(layer_name(op), list(op.operands), [v.type for v in op.results], Region(block),
                       nest_attributes(op))


def lower_backward_sums(lowering: Lowering, op: Operation):
    """The lowering-table entry of fused.batch_norm_backward_sums."""
    return lower_results(lowering, op, backward_sums_nest(lowering, op, lowering.buffers))


def backward_apply_nest(lowering: Lowering, op: fused.BatchNormBackwardApplyOp, slots: int = 1) -> tile.NestOp:
    """fused.batch_norm_backward_apply as a streaming nest: g = grad (times step(y a + b), in the
    gradient's tile), then dx = a g + (c2 y + c3): two `fma`s per tile."""
    from nncc.compiler.codegen.stream_nest import Piece, broadcast_operand, row_major_operand, stream_nest

    shape = nn.shape_of(op.result)
    per_channel = (1, shape[1]) + (1,) * (len(shape) - 2)
    names = ["DZ", "X", "A", "B", "C2", "C3"]
    operands = [broadcast_operand(name, shape if name in ("DZ", "X") else per_channel, shape) for name in names]
    relu = op.relu is not None

    def compute(e, ins, out, masks, tile_shape):
        dz, y, a, b, c2, c3 = ((buf, 0, mask) for buf, mask in zip(ins, masks))
        result = (out, 0, 0)
        ops = []
        if relu:  # the gradient tile masked in place
            ops += [map_op(e, "fma", [y, a, b, result], tile_shape), map_op(e, "step", [result, result], tile_shape),
                    map_op(e, "mul", [result, dz, dz], tile_shape)]
        return ops + [map_op(e, "fma", [y, c2, c3, result], tile_shape), map_op(e, "fma", [dz, a, result, result], tile_shape)]
    piece = Piece(shape, operands, row_major_operand("Y", shape))
    return stream_nest(lowering, op, list(zip(names, op.operands)), [piece], compute, slots)


# --------------------------------------------------------------------------- backward: post-processing of backward-data


@dataclasses.dataclass
class BackwardDataConv:
    """The `nn.conv2d_backward_data` a fused backward-data op is: what training_nest's shape,
    tile and tensor rules read."""

    grad: SSAValue
    weight: SSAValue
    result: SSAValue
    strides: object
    pads: object
    dilations: object
    group: object
    results: tuple
    name: str = "nn.conv2d_backward_data"


def backward_data_conv(op: Operation) -> BackwardDataConv:
    """A fused.conv2d_backward_data_sums or _pre as the conv it is."""
    return BackwardDataConv(op.grad, op.weight, op.result, op.strides, op.pads, op.dilations, op.group,
                            tuple(op.results))


def lower_backward_data_sums(lowering: Lowering, op: Operation):
    """The lowering-table entry of fused.conv2d_backward_data_sums: its nest, unrolled."""
    return lower_results(lowering, op, backward_data_sums_nest(lowering, op))


def backward_data_sums_nest(lowering: Lowering, op: fused.Conv2dBackwardDataSumsOp) -> tile.NestOp:
    """The backward-data conv nest of `op` (training_nest's tiles, output tiles made to divide the
    output, shrunk until the extra buffers fit) with its BatchNorm's backward reductions as
    post-processing of every output tile (`add_backward_sums`)."""
    from nncc.compiler.codegen.training_nest import backward_data_shape, backward_tiles, with_images

    conv = backward_data_conv(op)
    s = backward_data_shape(conv)
    if s is None:
        raise NnccError(f"layer {layer_name(op)}: {op.name} needs a stride-1 backward-data conv")
    c = s.og
    constants = {"ones": None, "zeros": constant_weight(lowering, op, f"bn_stats.zeros{2 * c}", np.zeros(2 * c, np.float32))}
    pre = bool(op.pre)
    if pre:
        if not pre_processable(s):
            raise NnccError(f"layer {layer_name(op)}: {op.name} pre-processes the gradient of a same-size conv only")
        if any(s.pads):  # one plane per image of a tile (`with_images`)
            constants["mask"] = constant_weight(lowering, op, f"bn_pre.mask{s.n}x{s.h}x{s.w}",
                                                np.ones((s.n, 1, s.h, s.w), np.float32))

    def first_tiles():
        t = backward_tiles(lowering, conv, s)
        t = dataclasses.replace(t, toh=divisor_at_most(s.oh, t.toh), tow=divisor_at_most(s.ow, t.tow))
        # pre-processed in place: whole tiles of the gradient's channels, each window loaded whole
        return dataclasses.replace(t, tic=divisor_at_most(s.cg, t.tic), halo="recompute") if pre else t

    def build(t, lw=lowering):
        return build_backward_sums(lw, op, conv, s, t, constants)

    form = (pre, len(op.operands), len(op.results))  # what the extra buffers depend on
    t = fitting_tiles(lowering, op, ("bn backward tiles", s, form), s, first_tiles, build)
    return build(with_images(lowering, ("bn backward tiles", s, form), s, t, lambda lw, tiles: build(tiles, lw)))


def pre_processable(s) -> bool:
    """Whether a stride-1 backward-data (shape `s`) can pre-process its gradient tiles and store
    them: the gradient has the output's size (a "same" conv), so every tile's window holds the
    gradient's own tile at a fixed place."""
    top, left = s.pads[0], s.pads[1]
    return (s.h, s.w) == (s.oh, s.ow) and s.group == 1 and 0 <= top <= (s.kh - 1) * s.dilations[0] \
        and 0 <= left <= (s.kw - 1) * s.dilations[1]


def lower_backward_data_pre(lowering: Lowering, op: Operation):
    """The lowering-table entry of fused.conv2d_backward_data_pre: its nest, unrolled."""
    return lower_results(lowering, op, backward_data_pre_nest(lowering, op))


def backward_data_pre_nest(lowering: Lowering, op: fused.Conv2dBackwardDataPreOp) -> tile.NestOp:
    """training_nest's backward-data conv nest of `op` (its tiles, output tiles made to divide the
    output, the gradient's channel tiles dividing them, shrunk until the extra buffers fit; several
    images per tile on small planes) whose gradient tiles are pre-processed
    (`add_gradient_pre_processing`)."""
    from nncc.compiler.codegen.training_nest import backward_data_shape, backward_tiles, with_images

    conv = backward_data_conv(op)
    s = backward_data_shape(conv)
    if s is None or not pre_processable(s):
        raise NnccError(f"layer {layer_name(op)}: {op.name} needs a stride-1 backward-data of a same-size conv")
    mask = constant_weight(lowering, op, f"bn_pre.mask{s.n}x{s.h}x{s.w}", np.ones((s.n, 1, s.h, s.w), np.float32)) \
        if any(s.pads) else None

    def first_tiles():
        t = backward_tiles(lowering, conv, s)
        return dataclasses.replace(t, toh=divisor_at_most(s.oh, t.toh), tow=divisor_at_most(s.ow, t.tow),
                                   tic=divisor_at_most(s.cg, t.tic), halo="recompute")

    def build(t, lw=lowering):
        return build_backward_data_pre(lw, op, conv, s, t, mask)

    t = fitting_tiles(lowering, op, ("bn backward-data pre tiles", s), s, first_tiles, build)
    return build(with_images(lowering, ("bn backward-data pre tiles", s), s, t, lambda lw, tiles: build(tiles, lw)))


def build_backward_data_pre(lowering: Lowering, op: fused.Conv2dBackwardDataPreOp, conv, s, t: ConvTiles,
                            mask: SSAValue | None) -> tile.NestOp:
    from nncc.compiler.codegen.training_nest import backward_tensors

    inputs, block, parts = conv_block(lowering, s, t, backward_tensors(conv, s))
    args = []
    for value in (op.input, op.scale, op.shift, op.c2, op.c3) + ((mask,) if mask is not None else ()):
        args.append(block.insert_arg(value.type, len(inputs)))
        inputs.append(value)
    dy = block.insert_arg(op.dy.type, len(block.args))
    add_gradient_pre_processing(lowering, parts, s, t, args, dy, op.relu is not None)
    return tile.NestOp(layer_name(op), inputs, [v.type for v in op.results], Region(block), nest_attributes(op))


def fitting_tiles(lowering: Lowering, op, key, s, first_tiles, build) -> ConvTiles:
    """`first_tiles()`, or the first of its shrinks (`shrink`) whose nest `build(tiles)` fits the
    target's memories (the fused BatchNorm buffers come on top of the conv's); once per `key`."""
    if key not in lowering.cost_cache:
        t = fitting(lowering, s, first_tiles(), build)
        if t is None:
            raise NnccError(f"layer {layer_name(op)}: the fused BatchNorm buffers do not fit the target's memories")
        lowering.cost_cache[key] = t
    return lowering.cost_cache[key]


def build_backward_sums(lowering: Lowering, op: fused.Conv2dBackwardDataSumsOp, conv: BackwardDataConv, s,
                        t: ConvTiles, constants: dict) -> tile.NestOp:
    from nncc.compiler.codegen.training_nest import backward_tensors

    pixels = t.toh * t.tow * t.images
    ones = constant_weight(lowering, op, f"bn_stats.ones{pixels}", np.ones(pixels, np.float32))
    tensors = dataclasses.replace(backward_tensors(conv, s), residual=op.residual)
    inputs, block, parts = conv_block(lowering, s, t, tensors)
    args = []
    for value in (op.input, op.scale, op.shift, op.mean, op.invstd, ones, constants["zeros"]) + \
            ((op.mask,) if op.mask is not None else ()):
        args.append(block.insert_arg(value.type, len(inputs)))
        inputs.append(value)
    second = []
    for value in op.second:
        second.append(block.insert_arg(value.type, len(inputs)))
        inputs.append(value)
    pre_args = []
    for value in tuple(op.pre) + ((constants["mask"],) if op.pre and "mask" in constants else ()):
        pre_args.append(block.insert_arg(value.type, len(inputs)))
        inputs.append(value)
    results = []
    for value in op.results[1:]:
        results.append(block.insert_arg(value.type, len(block.args)))
    second_results = results[4:8] if op.second else []
    extra = iter(results[4 + len(second_results):])
    dy, normalized = (next(extra) if op.dy else None), (next(extra) if op.normalized else None)
    if op.pre:
        add_gradient_pre_processing(lowering, parts, s, t, pre_args, dy, op.pre_relu is not None)
    add_backward_sums(lowering, parts, s, t, args, results[:4], op.relu is not None, normalized,
                      list(zip(second, second_results)))
    return tile.NestOp(layer_name(op), inputs, [v.type for v in op.results], Region(block), nest_attributes(op))


def add_backward_sums(lowering: Lowering, parts: Parts, s, t: ConvTiles, args, results, relu: bool,
                      normalized: SSAValue | None = None, second=()) -> None:
    """BatchNorm's backward reductions as post-processing of the output tiles of a backward-data
    nest, on the post unit after each tile's last input-channel block: the BatchNorm's input tile
    `y` (loaded beside the conv, before the reduction loop), g = out (times step(y scale + shift),
    or step(z) of a stored ReLU output z loaded likewise, into the output tile, which is stored
    masked; a residual gradient is in the tile from the start: conv_nest's residual), t = g (y - mean) invstd, and the sums of g and
    t accumulated as in `add_statistics`; after the last tile, c2 and c3 (`backward_sums_nest`'s
    rule) from the sums, and the four per-channel results stored. `normalized` (with `relu`): the
    tile's relu(y scale + shift), made beside the mask, stored to it (for a backward-filter).
    `second` (block arguments (y', dscale'), (scale', dbias'), (mean', c2'), (invstd', c3')): a
    second BatchNorm of the same g (a residual block's shortcut BatchNorm), its y' tile loaded
    beside y, t' = g (y' - mean') invstd' summed likewise; its dbias' is dbias.

        tile.load %Y[%n, %oc, %oh, %ow] [1, %toc, %toh, %tow] -> %y[0] dims [2, 3, 1]
        tile.for %ic[%tic] = ... {
          ... tile.conv %in[0], %wt[0] -> %out[0] ... reduce %ic
          tile.map fma %y[0], %pc[%oc] broadcast [0, 1], %pc[%oc + 64] broadcast [0, 1] -> %t[0] ... last %ic {unit = "post"}
          tile.map step %t[0] -> %t[0] ... last %ic {unit = "post"};  tile.map mul %out[0], %t[0] -> %out[0] ...
          tile.map sub %y[0], %pc[%oc + 128] broadcast [0, 1] -> %t[0] ...;  tile.map mul %t[0], %pc[%oc + 192] ... -> %t[0]
          tile.map mul %t[0], %out[0] -> %t[0] ...
          tile.conv %ones[0], %out[0] -> %st[%oc] ... onto_output last %ic {unit = "post"}
          tile.conv %ones[0], %t[0] -> %st[%oc + 64] ... onto_output last %ic {unit = "post"}
        }
    """
    y_arg, scale, shift, mean, invstd, ones_arg, zeros, *mask = args
    dscale, dbias, c2, c3 = results
    c, pixels, images = s.og, t.toh * t.tow * t.images, t.images
    tile_shape = [t.toh, images, t.tow, t.toc] if images > 1 else [t.toh, t.tow, t.toc]
    pc = buffer(lowering, parts, "pc", "weight", [(7 if second else 4) * c])
    ones = buffer(lowering, parts, "ones", "weight", [pixels])
    st = buffer(lowering, parts, "st", "output", [(9 if second else 5) * c])
    y = buffer(lowering, parts, "y", "output", tile_shape)
    tb = buffer(lowering, parts, "t", "output", tile_shape)
    first_loop = next(o for o in parts.block.ops if isinstance(o, tile.ForOp))
    for k, arg in enumerate((scale, shift, mean, invstd)):
        parts.block.insert_op_before(slice_op(tile.LoadOp, arg, pc, [0], [c], [0], at=k * c), first_loop)
    parts.block.insert_op_before(slice_op(tile.LoadOp, ones_arg, ones, [0], [pixels], [0]), first_loop)
    parts.block.insert_op_before(slice_op(tile.LoadOp, zeros, st, [0], [2 * c], [0]), first_loop)
    if second:  # scale', mean', invstd' at 4c, 5c, 6c; dscale' from zeros at st 5c
        for k, (arg, _) in enumerate(second[1:4]):
            parts.block.insert_op_before(slice_op(tile.LoadOp, arg, pc, [0], [c], [0], at=(4 + k) * c), first_loop)
        parts.block.insert_op_before(slice_op(tile.LoadOp, zeros, st, [0], [c], [0], at=5 * c), first_loop)
    for loop in parts.block.walk():
        if isinstance(loop, tile.ForOp) and "cores" in loop.properties:
            loop.properties["cores"] = IntegerAttr(1, i64)  # one statistics buffer
    n, _, oh, toh, ow, tow = parts.spatial.block.args
    oc, toc = parts.channel.block.args[-2:]
    tile_slice = ([n, oc, oh, ow], [images, toc, toh, tow], [2, 0, 3, 1] if images > 1 else [2, 3, 1])
    parts.ic_loop.parent_block().insert_op_before(slice_op(tile.LoadOp, y_arg, y, *tile_slice), parts.ic_loop)
    if mask:  # a stored ReLU output (a residual block's end): its step masks the tile
        z = buffer(lowering, parts, "z", "output", tile_shape)
        parts.ic_loop.parent_block().insert_op_before(slice_op(tile.LoadOp, mask[0], z, *tile_slice), parts.ic_loop)
    body = parts.ic_loop.block
    ic = body.args[-2]
    out = parts.buffers["out"]
    ops: list[Operation] = []

    def post(func, views):
        e = IndexExprs()
        views = [(b, e(oc) + at if per_channel else at, BROADCAST_ROWS_COLUMNS if per_channel else 0)
                 for b, at, per_channel in views]
        ops.append(on_unit(map_op(e, func, views, [e(toh) * images, e(tow), e(toc)], last=ic), "post"))
    tile_view = lambda b: (b, 0, False)  # noqa: E731
    factor = lambda k: (pc, k * c, True)  # noqa: E731
    if relu:
        post("fma", [tile_view(y), factor(0), factor(1), tile_view(tb)])
        if normalized is not None:
            zb = buffer(lowering, parts, "zn", "output", tile_shape)
            post("relu", [tile_view(tb), tile_view(zb)])
            parts.ic_loop.parent_block().insert_op_after(slice_op(tile.StoreOp, normalized, zb, *tile_slice),
                                                         parts.ic_loop)
        post("step", [tile_view(tb), tile_view(tb)])
        post("mul", [tile_view(out), tile_view(tb), tile_view(out)])
    elif mask:
        post("step", [tile_view(z), tile_view(tb)])
        post("mul", [tile_view(out), tile_view(tb), tile_view(out)])
    post("sub", [tile_view(y), factor(2), tile_view(tb)])
    post("mul", [tile_view(tb), factor(3), tile_view(tb)])
    post("mul", [tile_view(tb), tile_view(out), tile_view(tb)])
    sources = [(out, 0), (tb, c)]
    if second:
        y2 = buffer(lowering, parts, "ys", "output", tile_shape)
        t2 = buffer(lowering, parts, "ts", "output", tile_shape)
        parts.ic_loop.parent_block().insert_op_before(slice_op(tile.LoadOp, second[0][0], y2, *tile_slice),
                                                      parts.ic_loop)
        post("sub", [tile_view(y2), factor(5), tile_view(t2)])
        post("mul", [tile_view(t2), factor(6), tile_view(t2)])
        post("mul", [tile_view(t2), tile_view(out), tile_view(t2)])
        sources.append((t2, 5 * c))
    channel_sums_after_conv(parts, ops, sources, ones, st, pixels, ic)
    count = s.n * s.oh * s.ow
    # dbias (st 0), dscale (st c); c2 = -scale invstd dscale / n (st 2c); c3 = -scale dbias / n - c2 mean (st 3c)
    for func, views, params in (("mul", [(pc, 0), (pc, 3 * c), (st, 2 * c)], ()),
                                ("mul", [(st, 2 * c), (st, c), (st, 2 * c)], ()),
                                ("affine", [(st, 2 * c), (st, 2 * c)], (-1.0 / count, 0.0)),
                                ("mul", [(pc, 0), (st, 0), (st, 3 * c)], ()),
                                ("affine", [(st, 3 * c), (st, 3 * c)], (-1.0 / count, 0.0)),
                                ("mul", [(st, 2 * c), (pc, 2 * c), (st, 4 * c)], ()),
                                ("sub", [(st, 3 * c), (st, 4 * c), (st, 3 * c)], ())):
        e = IndexExprs()
        parts.block.add_op(map_op(e, func, [(b, at, 0) for b, at in views], [e(1), e(1), e(c)], params))
    for target, at in ((dscale, c), (dbias, 0), (c2, 2 * c), (c3, 3 * c)):
        parts.block.add_op(slice_op(tile.StoreOp, target, st, [0], [c], [0], at=at))
    if second:  # the same rule with scale' (pc 4c), mean' (pc 5c), invstd' (pc 6c), dscale' (st 5c), dbias
        for func, views, params in (("mul", [(pc, 4 * c), (pc, 6 * c), (st, 6 * c)], ()),
                                    ("mul", [(st, 6 * c), (st, 5 * c), (st, 6 * c)], ()),
                                    ("affine", [(st, 6 * c), (st, 6 * c)], (-1.0 / count, 0.0)),
                                    ("mul", [(pc, 4 * c), (st, 0), (st, 7 * c)], ()),
                                    ("affine", [(st, 7 * c), (st, 7 * c)], (-1.0 / count, 0.0)),
                                    ("mul", [(st, 6 * c), (pc, 5 * c), (st, 8 * c)], ()),
                                    ("sub", [(st, 7 * c), (st, 8 * c), (st, 7 * c)], ())):
            e = IndexExprs()
            parts.block.add_op(map_op(e, func, [(b, at, 0) for b, at in views], [e(1), e(1), e(c)], params))
        for (_, target), at in zip(second, (5 * c, 0, 6 * c, 7 * c)):
            parts.block.add_op(slice_op(tile.StoreOp, target, st, [0], [c], [0], at=at))


def add_gradient_pre_processing(lowering: Lowering, parts: Parts, s, t: ConvTiles, args, dy: SSAValue,
                                relu: bool) -> None:
    """The elementwise part of the backward of the BatchNorm after this backward-data's conv, as
    pre-processing of its gradient tiles on the pre unit: each tile of g (`in`) comes with the
    same window of that BatchNorm's input y2 and its channels' scale, shift, c2, c3, and becomes
    dy = scale g + c2 y2 + c3 (g masked by step(y2 scale + shift) first when `relu`; the border
    multiplied by a 0/1 mask when padded) before the matrix unit reads it; the tile's own part
    of the window (no halo) is stored to `dy` on the first output-channel tile only (the extent
    `%first` is 0 on the others: no transfer), for the backward-filter.

        tile.load %Y2[%n, %ic, %oh - 1, %ow - 1] [1, %tic, %toh + 2, %tow + 2] -> %y2[0] dims [2, 3, 1]
        tile.load %A[%ic] [%tic] -> %f[0] dims [0]  (and shift, c2, c3 at %tic, 2 %tic, 3 %tic)
        tile.map fma %y2[0], %f[64] broadcast [0, 1], %f[96] broadcast [0, 1] -> %y2[0] ... {unit = "pre"}
        tile.map fma %in[0], %f[0] broadcast [0, 1], %y2[0] -> %in[0] ... {unit = "pre"}
        tile.conv %in[0], %wt[0] -> %out[0] ...
        %first = tile.max [%oc * -32 + 32, 0]
        tile.store %in[(1 * 10 + 1) * 32] -> %DY[%n, %ic, %oh, %ow] [1, %first, %toh, %tow] dims [2, 3, 1] strides [320, 32, 1]
    """
    y2, scale, shift, c2, c3, *mask = args
    body = parts.ic_loop.block
    ic, tic = body.args[-2:]
    n, _, oh, toh, ow, tow = parts.spatial.block.args
    oc = parts.channel.block.args[-2]
    x = parts.buffers["in"]
    load = next(o for o in body.ops if isinstance(o, tile.LoadOp) and o.buffer is x)
    rows, cols, images = s.input_extent(t.toh, 0), s.input_extent(t.tow, 1), t.images
    window_shape = [rows, images, cols, t.tic] if images > 1 else [rows, cols, t.tic]
    yb = buffer(lowering, parts, "y2", "input", window_shape)
    factors = buffer(lowering, parts, "f", "weight", [4 * t.tic])
    window = load.clone()
    window.operands[0], window.operands[1] = y2, yb
    ops: list[Operation] = [window] + [slice_op(tile.LoadOp, value, factors, [ic], [tic], [0], at=k * t.tic)
                                       for k, value in enumerate((scale, shift, c2, c3))]
    a, b, f2, f3 = ((factors, k * t.tic, BROADCAST_ROWS_COLUMNS) for k in range(4))
    tile_view = lambda buf: (buf, 0, 0)  # noqa: E731

    def pre(func, views):
        e = IndexExprs()
        ops.append(on_unit(map_op(e, func, views, [(e(toh) + (rows - t.toh)) * images, e(tow) + (cols - t.tow),
                                                   e(tic)]), "pre"))
    if relu:
        tb = buffer(lowering, parts, "t2", "input", window_shape)
        pre("fma", [tile_view(yb), a, b, tile_view(tb)])
        pre("step", [tile_view(tb), tile_view(tb)])
        pre("mul", [tile_view(x), tile_view(tb), tile_view(x)])
    pre("fma", [tile_view(yb), f2, f3, tile_view(yb)])
    pre("fma", [tile_view(x), a, tile_view(yb), tile_view(x)])
    if mask:
        border = buffer(lowering, parts, "mask", "input", window_shape[:-1] + [1])
        ops.insert(1, slice_op(tile.LoadOp, mask[0], border, [0, 0, ((oh, 1), -s.pads[0]), ((ow, 1), -s.pads[1])],
                               [images, 1, ((toh, 1), rows - t.toh), ((tow, 1), cols - t.tow)],
                               [2, 0, 3, 1] if images > 1 else [2, 3, 1]))
        pre("mul", [tile_view(x), (border, 0, BROADCAST_CHANNELS), tile_view(x)])
    for op in ops:
        body.insert_op_before(op, parts.conv)
    e = IndexExprs()
    exprs = e.map([e(oc) * -t.tic + t.tic, e(oc) * 0])
    bound = tile.MaxOp.build(operands=[list(e.values)], result_types=[tile.INDEX], properties={"exprs": exprs})
    bound.result.name_hint = "first"
    e = IndexExprs()
    pitch = cols * t.tic  # a window row of one image
    store = tile.StoreOp.make(dy, x, e, [e(n), e(ic), e(oh), e(ow)], [e(images), e(bound.result), e(toh), e(tow)],
                              [e((s.pads[0] * images * cols + s.pads[1]) * t.tic)],
                              [e(images * pitch), e(pitch), e(t.tic), e(1)] if images > 1 else
                              [e(pitch), e(t.tic), e(1)], [2, 0, 3, 1] if images > 1 else [2, 3, 1])
    anchor = parts.conv.next_op
    for op in (bound, store):
        if anchor is None:
            body.add_op(op)
        else:
            body.insert_op_before(op, anchor)


# --------------------------------------------------------------------------- backward: pre-processing of backward-filter


@dataclasses.dataclass
class BackwardFilterConv:
    """The `nn.conv2d_backward_filter` a fused backward-filter op is (for training_nest's rules)."""

    input: SSAValue
    grad: SSAValue
    result: SSAValue
    strides: object
    pads: object
    dilations: object
    group: object
    results: tuple
    name: str = "nn.conv2d_backward_filter"


def lower_backward_filter_pre(lowering: Lowering, op: Operation):
    """The lowering-table entry of fused.conv2d_backward_filter_pre: its nest, unrolled."""
    return lower_results(lowering, op, backward_filter_pre_nest(lowering, op))


def backward_filter_pre_nest(lowering: Lowering, op: fused.Conv2dBackwardFilterPreOp) -> tile.NestOp:
    """training_nest's backward-filter nest of `op` (its tiles, shrunk until the two factors fit)
    whose input tiles (one channel of a block of images each) are normalised on the pre unit:

        tile.load %S[%n] [1] -> %bn[0] dims [0];  tile.load %T[%n] [1] -> %bn[1] dims [0]
        tile.map fma %in[0], %bn[0] broadcast [0, 1, 2], %bn[1] broadcast [0, 1, 2] -> %in[0] ... {unit = "pre"}
        tile.map relu %in[0] -> %in[0] ... {unit = "pre"}
        tile.conv %in[0], %wt[0] -> %out[0] ...
    """
    from nncc.compiler.codegen.training_nest import backward_filter_shape, backward_tiles

    conv = BackwardFilterConv(op.input, op.grad, op.result, op.strides, op.pads, op.dilations, op.group,
                              tuple(op.results))
    s = backward_filter_shape(conv, lowering)

    def build(t):
        return build_backward_filter_pre(lowering, op, conv, s, t)

    return build(fitting_tiles(lowering, op, ("bn backward-filter tiles", s), s,
                               lambda: backward_tiles(lowering, conv, s), build))


def build_backward_filter_pre(lowering: Lowering, op: fused.Conv2dBackwardFilterPreOp, conv: BackwardFilterConv,
                              s, t: ConvTiles) -> tile.NestOp:
    from nncc.compiler.codegen.training_nest import backward_tensors

    inputs, block, parts = conv_block(lowering, s, t, backward_tensors(conv, s))
    args = []
    for value in (op.scale, op.shift):
        args.append(block.insert_arg(value.type, len(inputs)))
        inputs.append(value)
    add_pre_processing(lowering, parts, s, t, args, op.pre.data, per_image=True)
    return tile.NestOp(layer_name(op), inputs, [op.result.type], Region(block), nest_attributes(op))


def conv_block(lowering: Lowering, s, t: ConvTiles, tensors) -> tuple[list[SSAValue], Block, Parts]:
    """The body of a plain conv nest over `tensors` with tiles `t`, detached for a fused op to add
    its pre- or post-processing to: (the nest's inputs, its block, the block's parts)."""
    probe = conv_nest(lowering, None, s, t, tensors, Epilogue(), lowering.tile_order == "scan", "channels",
                      lowering.buffers)
    inputs = list(probe.inputs)
    block = probe.body.block
    probe.body.detach_block(block)
    probe.erase()
    return inputs, block, parts_of(block)
