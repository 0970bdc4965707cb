"""The nests of the training convs with BatchNorm/ReLU fused (`fuse-batch-norm-training`):
`fused.conv2d_stats` and `fused.conv2d_pre` (with or without statistics).

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
from xdsl.ir import Operation, Region, SSAValue

from nncc.compiler.codegen.context import Lowering, layer_name
from nncc.compiler.codegen.conv import ConvTiles, choose_tiles
from nncc.compiler.codegen.conv_nest import conv_nest, conv_tensors
from nncc.compiler.codegen.epilogue import Epilogue
from nncc.compiler.codegen.nest import lower_nest
from nncc.compiler.codegen.nest_builder import IndexExprs, slice_op
from nncc.compiler.codegen.stream_nest import constant_weight, map_op
from nncc.dialects import fused, nn, tile
from nncc.support.errors import NnccError

BROADCAST_ROWS_COLUMNS, BROADCAST_CHANNELS = 0b011, 0b100


def lower_bn_conv(lowering: Lowering, op: Operation):
    """The lowering-table entry of fused.conv2d_stats and fused.conv2d_pre: its nest, unrolled."""
    from nncc.compiler.codegen.layers import conv2d_shape

    nest = bn_conv_nest(lowering, op, conv2d_shape(op))
    for outer, inner in zip(op.results, nest.results):
        lowering.addresses[inner] = lowering.address(outer)
    return lower_nest(lowering, nest)


def bn_conv_nest(lowering: Lowering, op: Operation, s) -> tile.NestOp:
    """The nest of `op` with the cost model's conv tiles, output tiles made to divide the output
    and shrunk until the extra buffers fit."""
    if s.group != 1:
        raise NnccError(f"layer {layer_name(op)}: {op.name} of a grouped conv is not supported")
    t = choose_tiles(lowering, s, layer_name(op), op.bias is not None)
    t = dataclasses.replace(t, toh=divisor_at_most(s.oh, t.toh), tow=divisor_at_most(s.ow, t.tow))
    while True:
        nest = build(lowering, op, s, t)
        if fits(lowering, nest):
            return nest
        smaller = shrink(s, t)
        if smaller is None:
            raise NnccError(f"layer {layer_name(op)}: the fused BatchNorm buffers do not fit the target's memories")
        nest.erase()
        t = smaller


def divisor_at_most(extent: int, limit: int) -> int:
    return max(d for d in range(1, min(extent, limit) + 1) if extent % d == 0)


def shrink(s, t: ConvTiles) -> ConvTiles | None:
    if t.toh > 1:
        return dataclasses.replace(t, toh=divisor_at_most(s.oh, t.toh - 1))
    if t.tow > 1:
        return dataclasses.replace(t, tow=divisor_at_most(s.ow, t.tow - 1))
    if t.tic > 1:
        return dataclasses.replace(t, tic=max(1, t.tic // 2))
    return None


def fits(lowering: Lowering, nest: tile.NestOp) -> bool:
    used: dict[str, int] = {}
    for op in nest.block.walk():
        if isinstance(op, tile.BufferOp):
            used[op.memory] = used.get(op.memory, 0) + tile.slot_bytes(op) * op.slots.value.data
    return all(nbytes <= lowering.target.memory(name).size_bytes for name, nbytes in used.items())


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


def build(lowering: Lowering, op: Operation, s, t: ConvTiles) -> tile.NestOp:
    pre = isinstance(op, fused.Conv2dPreOp)
    stats = len(op.results) == 3
    probe = conv_nest(lowering, None, s, t, conv_tensors(op, s, "channels"), Epilogue(),
                      lowering.tile_order == "scan", "channels", lowering.buffers)
    inputs = list(probe.inputs)
    block = probe.body.block
    probe.body.detach_block(block)
    probe.erase()
    parts = parts_of(block)
    outputs = [op.result.type]
    if pre:
        pads = any(nn.ints(op.pads))
        extra = [op.scale, op.shift]
        if pads:
            h, w = nn.shape_of(op.input)[2:]
            extra.append(constant_weight(lowering, op, f"{layer_name(op)}.mask", np.ones((1, 1, h, w), np.float32)))
        args = []
        for value in extra:
            args.append(block.insert_arg(value.type, len(inputs)))
            inputs.append(value)
        add_pre_processing(lowering, parts, s, t, args, op.pre.data)
    if stats:
        outputs += [op.results[1].type, op.results[2].type]
        constants = []
        for name, array in (("ones", np.ones(t.toh * t.tow, np.float32)), ("zeros", np.zeros(2 * s.og, np.float32))):
            value = constant_weight(lowering, op, f"bn_stats.{name}{array.size}", array)
            constants.append(block.insert_arg(value.type, len(inputs)))
            inputs.append(value)
        sums = block.insert_arg(op.results[1].type, len(block.args))
        squares = block.insert_arg(op.results[2].type, len(block.args))
        add_statistics(lowering, parts, s, t, sums, squares, constants)
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


def add_pre_processing(lowering: Lowering, parts: Parts, s, t: ConvTiles, args, act: str) -> None:
    """Load the input channels' scale and shift (and the border mask) with each input tile, and
    normalise the tile (ReLU, mask) on the pre unit before the conv reads it."""
    scale, shift, *mask = args
    body = parts.ic_loop.block
    ic, tic = body.args
    n, _, oh, toh, ow, tow = parts.spatial.block.args
    factors = buffer(lowering, parts, "bn", "weight", [2 * t.tic])
    ops: list[Operation] = [slice_op(tile.LoadOp, scale, factors, [ic], [tic], [0]),
                            slice_op(tile.LoadOp, shift, factors, [ic], [tic], [0], at=t.tic)]
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
    ops.append(on_unit(map_op(e, "fma", [(x, 0, 0), (factors, 0, BROADCAST_ROWS_COLUMNS),
                                         (factors, t.tic, BROADCAST_ROWS_COLUMNS), (x, 0, 0)], shape(e)), "pre"))
    if act == "relu":
        e = IndexExprs()
        ops.append(on_unit(map_op(e, "relu", [(x, 0, 0), (x, 0, 0)], shape(e)), "pre"))
    if mask:
        e = IndexExprs()
        ops.append(on_unit(map_op(e, "mul", [(x, 0, 0), (border, 0, BROADCAST_CHANNELS), (x, 0, 0)], shape(e)), "pre"))
    for op in ops:
        body.insert_op_before(op, parts.conv)


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
    for target, arg in zip((ones, st), constants):
        size = nn.shape_of(arg)[0]
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
    for source, at in ((out, 0), (sq, channels)):
        e = IndexExprs()
        e(ic)
        conv = tile.conv_op([ones, source, st], [e(0), e(0), e(oc) + at], e, [e(1), e(1), e(pixels), e(toc)],
                            [1, 1], [1, 1], [1, 1], -1, True, None, ())
        conv.properties["last"] = IntegerAttr(e(ic).position, i64)
        ops.append(on_unit(conv, "post"))
    anchor = parts.conv.next_op
    for op in ops:
        if anchor is None:
            body.add_op(op)
        else:
            body.insert_op_before(op, anchor)
    for target, at in ((sums, 0), (squares, channels)):
        parts.block.add_op(slice_op(tile.StoreOp, target, st, [0], [channels], [0], at=at))

