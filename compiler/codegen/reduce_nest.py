"""The loop nests of the layers that reduce: global pooling, softmax, LRN.

Global pooling views the input as (N*C rows, H*W) and reduces each row with `tile.reduce`
(`vred`, the reduced axis on the lanes); when a row does not fit, the spatial tiles accumulate
into the output tile (`reduce %s`) and the mean's division follows on the last one:

    tile.for %r[%tr] = 0 to 512 step 512 cores 4 order naive {
      tile.for %s[%ts] = 0 to 49 step 49 order naive {
        tile.load %Xv[%r, %s] [%tr, %ts] -> %in[0] dims [0, 1]
        tile.reduce mean %in[0] broadcast [1] -> %out[0] shape [%tr, 1, %ts]
      }
      tile.store %out[0] -> %Yv[%r] [%tr] dims [0]
    }

Softmax (numerically stable) views the input as (outer, A, inner), A the softmax axis; a tile
holds whole rows when they fit (max, x - max, exp, sum, 1 / sum, product, with max and 1 / sum
after the result in the output tile), else a row is walked three times (running max, sum of
exp(x - max), result; the statistics in a `stat` buffer across the row's tiles). LRN holds all
channels of a run of pixels, zero-padded by the DMA with the window's halo of channels: squares,
a (1 x size) window sum over channels (`tile.reduce ... window`), bias + alpha / size * sum, the
power as exp(-beta * log(.)), times x.
"""

from __future__ import annotations

import math

from xdsl.dialects.builtin import ArrayAttr, IntegerAttr, StringAttr, UnitAttr, i64
from xdsl.ir import Block, Operation, Region, SSAValue

from nncc.compiler.nn_kernels import lrn_channels
from nncc.compiler.codegen.context import F32, Lowering, layer_name
from nncc.compiler.codegen.nest_builder import IndexExprs, add_buffers, slice_op
from nncc.compiler.codegen.stream_nest import map_op
from nncc.dialects import nn, tile
from nncc.support.errors import NnccError


def nest_of(op: Operation, block: Block, tensors: list[SSAValue]) -> tile.NestOp:
    nest = tile.NestOp(layer_name(op), tensors, [op.results[0].type], Region(block),
                       {"op": StringAttr(op.name), nn.ONNX_NODES: op.attributes.get(nn.ONNX_NODES, ArrayAttr([]))})
    nest.results[0].name_hint = op.results[0].name_hint
    return nest


def views(block: Block, specs) -> list[SSAValue]:
    """A `tile.view` per (tensor, name, offset, sizes, strides)."""
    out = []
    for tensor, name, offset, sizes, strides in specs:
        view = tile.ViewOp(tensor, offset, sizes, strides)
        view.result.name_hint = name
        block.add_op(view)
        out.append(view.result)
    return out


def reduce_op(e: IndexExprs, func: str, x, z, shape, window=None, steps=(), repeat=None, reduce=None) -> tile.ReduceOp:
    """`tile.reduce func x -> z shape [...]`: x and z are (buffer, offset, layout) with layout a
    broadcast mask or a list of three stride expressions; `repeat` is (count, x step, z step)."""
    offsets, layouts, strides = [], [], []
    for _, offset, layout in (x, z):
        offsets.append(offset if not isinstance(offset, int) else e(offset))
        if isinstance(layout, list):
            layouts.append(tile.STRIDED)
            strides += [s if not isinstance(s, int) else e(s) for s in layout]
        else:
            layouts.append(layout)
    sizes = list(shape) + [s if not isinstance(s, int) else e(s) for s in steps]
    properties = {"func": StringAttr(func), "layouts": tile.ints_attr(layouts)}
    if window is not None:
        properties["window"] = tile.ints_attr(window)
    if repeat is not None:
        properties["repeat"] = UnitAttr()
        sizes += [s if not isinstance(s, int) else e(s) for s in repeat]
    if reduce is not None:
        properties["reduce"] = IntegerAttr(e(reduce).position, i64)
    properties |= {"views": e.map(offsets), "sizes": e.map(sizes)}
    if strides:
        properties["view_strides"] = e.map(strides)
    return tile.ReduceOp.build(operands=[[x[0], z[0]], list(e.values)], properties=properties)


# --------------------------------------------------------------------------- global pooling


def reduction_tiles(lowering: Lowering, rows: int, size: int, name: str) -> tuple[int, int]:
    """(rows, elements) per tile: whole rows if they fit, then as many rows as fit."""
    def ok(tr, ts):
        return lowering.fits({"input": F32 * tr * ts, "output": F32 * tr})
    ts = size
    while ts > 1 and not ok(1, ts):
        ts = -(-ts // 2)
    if not ok(1, ts):
        raise NnccError(f"layer {name}: even a one-element reduction tile does not fit in "
                        f"{lowering.target.memory_for('input').name}")
    tr = rows
    while not ok(tr, ts):
        tr = -(-tr // 2)
    return tr, ts


def global_pool_nest(lowering: Lowering, op: Operation, slots: int = 1) -> tile.NestOp:
    shape = nn.shape_of(op.input)
    rows, size = shape[0] * shape[1], math.prod(shape[2:])
    func = "max" if op.name == "nn.global_max_pool" else "mean"
    tr, ts = reduction_tiles(lowering, rows, size, layer_name(op))
    block = Block(arg_types=[op.input.type, op.result.type])
    x, y = block.args
    x.name_hint, y.name_hint = "X", "Y"
    xv, yv = views(block, [(x, "Xv", 0, [rows, size], [size, 1]), (y, "Yv", 0, [rows], [1])])
    buffers = add_buffers(lowering, block, [("in", "input", [tr, ts], False), ("out", "output", [tr], False)], slots)
    row_loop = tile.ForOp.build([(0, rows, tr)], "naive", lowering.cores, names=["r"])
    block.add_op(row_loop)
    r, t_r = row_loop.block.args
    s_loop = tile.ForOp.build([(0, size, ts)], "naive", names=["s"])
    row_loop.block.add_op(s_loop)
    s, t_s = s_loop.block.args
    s_loop.block.add_op(slice_op(tile.LoadOp, xv, buffers["in"], [r, s], [t_r, t_s], [0, 1]))
    single = ts == size
    e = IndexExprs()
    shape3 = [e(t_r), e(1), e(t_s)]
    s_loop.block.add_op(reduce_op(e, func if single or func == "max" else "sum", (buffers["in"], 0, 2),
                                  (buffers["out"], 0, 0), shape3, reduce=None if single else s))
    if not single and func == "mean":
        e = IndexExprs()
        s_loop.block.add_op(map_op(e, "affine", [(buffers["out"], 0, 3), (buffers["out"], 0, 3)],
                                   [e(1), e(1), e(t_r)], [1.0 / size, 0.0], last=s))
    row_loop.block.add_op(slice_op(tile.StoreOp, yv, buffers["out"], [r], [t_r], [0]))
    return nest_of(op, block, [op.input])


# --------------------------------------------------------------------------- softmax


def softmax_tiles(lowering: Lowering, outer: int, a: int, inner: int, name: str) -> tuple[int, int, int]:
    """(outer, axis, inner) extents of a tile: whole rows when they fit, else pieces of rows."""
    def sizes(to, ta, ti):
        if ta == a:
            return {"input": F32 * to * a * ti, "output": F32 * (to * a * ti + 2 * to * ti)}
        return {"input": F32 * to * ta * ti, "output": F32 * to * ta * ti, "weight": F32 * 2 * to * ti}
    if not lowering.fits(sizes(1, 1, 1)):
        raise NnccError(f"layer {name}: even one element of a softmax row does not fit in "
                        f"{lowering.target.memory_for('input').name}")
    ta = a
    while not lowering.fits(sizes(1, ta, 1)):
        ta = -(-ta // 2)
    ti = inner
    while not lowering.fits(sizes(1, ta, ti)):
        ti = -(-ti // 2)
    to = outer if ti == inner else 1
    while not lowering.fits(sizes(to, ta, ti)):
        to = -(-to // 2)
    if ti > 1:
        to = min(to, 16)  # one vred per outer row: keep jobs' instruction counts small
    return to, ta, ti


def softmax_nest(lowering: Lowering, op: Operation, slots: int = 1) -> tile.NestOp:
    shape = nn.shape_of(op.input)
    axis = op.axis.value.data
    outer, a, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
    to_full, ta_full, ti_full = softmax_tiles(lowering, outer, a, inner, layer_name(op))
    split = ta_full < a
    block = Block(arg_types=[op.input.type, op.result.type])
    x, y = block.args
    x.name_hint, y.name_hint = "X", "Y"
    view = [outer, a, inner], [a * inner, inner, 1]
    xv, yv = views(block, [(x, "Xv", 0, *view), (y, "Yv", 0, *view)])
    tile_elems = to_full * ta_full * ti_full
    specs = [("in", "input", [to_full, ta_full, ti_full], False),
             ("out", "output", [tile_elems if split else tile_elems + 2 * to_full * ti_full], False)]
    if split:
        specs.append(("stat", "weight", [2 * to_full * ti_full], False))
    buffers = add_buffers(lowering, block, specs, slots)
    if split and scratch_fits(lowering, tile_elems, to_full * ti_full):
        scratch = tile.BufferOp("intermediate", [tile_elems], lowering.target.memory_for("weight").name, slots)
        scratch.result.name_hint = "tmp"
        block.add_op(scratch)
        buffers["tmp"] = scratch.result
    loop = tile.ForOp.build([(0, outer, to_full), (0, inner, ti_full)], "naive", lowering.cores, names=["o", "i"])
    block.add_op(loop)
    o, t_o, i, t_i = loop.block.args
    # a tile's (to, ti): constants where the tiling leaves them whole or 1 (their product stays affine)
    to = t_o if to_full > 1 else 1
    ti = inner if ti_full == inner else t_i
    if not split:
        loop.block.add_op(slice_op(tile.LoadOp, xv, buffers["in"], [o, 0, i], [t_o, a, t_i], [0, 1, 2]))
        for compute in softmax_compute(buffers, to, a, ti, ti_full):
            loop.block.add_op(compute)
        loop.block.add_op(slice_op(tile.StoreOp, yv, buffers["out"], [o, 0, i], [t_o, a, t_i], [0, 1, 2]))
        return nest_of(op, block, [op.input])
    for step in range(3):
        pieces = tile.ForOp.build([(0, a, ta_full)], "naive", names=[f"a{step}"])
        loop.block.add_op(pieces)
        p, t_p = pieces.block.args
        pieces.block.add_op(slice_op(tile.LoadOp, xv, buffers["in"], [o, p, i], [t_o, t_p, t_i], [0, 1, 2]))
        for compute in split_compute(buffers, step, p, to, t_p, ti, ti_full):
            pieces.block.add_op(compute)
        if step == 2:
            pieces.block.add_op(slice_op(tile.StoreOp, yv, buffers["out"], [o, p, i], [t_o, t_p, t_i], [0, 1, 2]))
    return nest_of(op, block, [op.input])


def scratch_fits(lowering: Lowering, tile_elems: int, stats: int) -> bool:
    """Whether exp(x - max) of a row's second pass can go to a scratch tile of its own in the
    weight memory, when that memory holds neither input nor output tiles (fusion's WBUF): the
    input tiles then stay unwritten, and a row whose pieces all stay on chip is read once.
    Elsewhere the second pass computes in the input tile."""
    target = lowering.target
    weight = target.memory_for("weight").name
    if weight in (target.memory_for("input").name, target.memory_for("output").name):
        return False
    aligned = lambda nbytes: -(-nbytes // tile.SLOT_ALIGNMENT) * tile.SLOT_ALIGNMENT  # noqa: E731
    need = lowering.buffers * (aligned(F32 * 2 * stats) + aligned(F32 * tile_elems))
    return need <= target.memory_for("weight").size_bytes


def row_layout(ti_full: int):
    """The tile's and the per-row statistic's broadcast masks (lanes along A when inner = 1)."""
    return (2, 6) if ti_full == 1 else (0, 2)


def row_reduce(e: IndexExprs, func: str, src, dst, to, a, ti, ti_full: int, reduce=None):
    """dst[r * ti + i] (combined over the `reduce` loop) = func over the A axis of the (to, A, ti) tile at src."""
    if ti_full == 1:
        return reduce_op(e, func, (*src, 2), (*dst, 0), [e(to), e(1), e(a)], reduce=reduce)
    return reduce_op(e, func, (*src, [1, 0, e(ti)]), (*dst, 0), [e(ti), e(1), e(a)],
                     repeat=[e(to), e(a) * e(ti), e(ti)], reduce=reduce)


def softmax_compute(buffers, to, a: int, ti, ti_full: int) -> list[Operation]:
    out = buffers["out"]
    tile_mask, row_mask = row_layout(ti_full)
    ops = []
    e = IndexExprs()
    m = e(to) * e(ti) * a  # max and 1 / sum after the result
    ops.append(row_reduce(e, "max", (buffers["in"], 0), (out, m), to, a, ti, ti_full))
    shape = lambda e: [e(to), e(1), e(a)] if ti_full == 1 else [e(to), e(a), e(ti)]  # noqa: E731
    e = IndexExprs()
    m = e(to) * e(ti) * a
    ops.append(map_op(e, "sub", [(buffers["in"], 0, tile_mask), (out, m, row_mask), (out, 0, tile_mask)], shape(e)))
    e = IndexExprs()
    ops.append(map_op(e, "exp", [(out, 0, tile_mask), (out, 0, tile_mask)], shape(e)))
    e = IndexExprs()
    s = e(to) * e(ti) * a + e(to) * e(ti)
    ops.append(row_reduce(e, "sum", (out, 0), (out, s), to, a, ti, ti_full))
    e = IndexExprs()
    s = e(to) * e(ti) * a + e(to) * e(ti)
    ops.append(map_op(e, "recip", [(out, s, 3), (out, s, 3)], [e(1), e(1), e(to) * e(ti)]))
    e = IndexExprs()
    s = e(to) * e(ti) * a + e(to) * e(ti)
    ops.append(map_op(e, "mul", [(out, 0, tile_mask), (out, s, row_mask), (out, 0, tile_mask)], shape(e)))
    return ops


def split_compute(buffers, step: int, p, to, ta, ti, ti_full: int) -> list[Operation]:
    """Rows longer than a tile: step 0 the running max, step 1 the sum of exp(x - max) (x - max
    and exp computed in a scratch tile, `tmp`, or else in the input tile), then 1 / sum on the
    row's last piece, step 2 the result."""
    tile_mask, row_mask = row_layout(ti_full)
    stat, x = buffers["stat"], buffers["in"]
    e = IndexExprs()
    if step == 0:
        return [row_reduce(e, "max", (x, 0), (stat, 0), to, ta, ti, ti_full, reduce=p)]
    shape = lambda e: [e(to), e(1), e(ta)] if ti_full == 1 else [e(to), e(ta), e(ti)]  # noqa: E731
    work = buffers.get("tmp", x) if step == 1 else buffers["out"]
    ops = [map_op(e, "sub", [(x, 0, tile_mask), (stat, 0, row_mask), (work, 0, tile_mask)], shape(e))]
    e = IndexExprs()
    ops.append(map_op(e, "exp", [(work, 0, tile_mask), (work, 0, tile_mask)], shape(e)))
    e = IndexExprs()
    if step == 1:
        ops.append(row_reduce(e, "sum", (work, 0), (stat, e(to) * e(ti)), to, ta, ti, ti_full, reduce=p))
        e = IndexExprs()
        s = e(to) * e(ti)
        ops.append(map_op(e, "recip", [(stat, s, 3), (stat, s, 3)], [e(1), e(1), e(to) * e(ti)], last=p))
        return ops
    s = e(to) * e(ti)
    ops.append(map_op(e, "mul", [(work, 0, tile_mask), (stat, s, row_mask), (work, 0, tile_mask)], shape(e)))
    return ops


# --------------------------------------------------------------------------- LRN


def lrn_nest(lowering: Lowering, op: Operation, slots: int = 1) -> tile.NestOp:
    """y = x * (bias + alpha / size * sum over the window of channels of x^2) ^ -beta, on tiles of
    every channel of `ts` pixels ([channels][pixels], pixels on the lanes)."""
    n, c, h, w = nn.shape_of(op.input)
    size = op.size.value.data
    alpha, beta, bias = (float(getattr(op, p).value.data) for p in ("alpha", "beta", "bias"))
    before, _ = lrn_channels(size)
    cp, hw = c + size - 1, h * w

    def sizes(ts):
        return {"input": F32 * cp * ts, "output": F32 * (c + cp) * ts}
    ts = hw
    while ts > 1 and not lowering.fits(sizes(ts)):
        ts = -(-ts // 2)
    if not lowering.fits(sizes(ts)):
        raise NnccError(f"layer {layer_name(op)}: the {c} channels of one pixel do not fit in "
                        f"{lowering.target.memory_for('input').name}")
    block = Block(arg_types=[op.input.type, op.result.type])
    x, y = block.args
    x.name_hint, y.name_hint = "X", "Y"
    xv, yv = views(block, [(x, "Xv", 0, [n, c, hw], [c * hw, hw, 1]), (y, "Yv", 0, [n, c, hw], [c * hw, hw, 1])])
    buffers = add_buffers(lowering, block, [("in", "input", [cp, ts], False),
                                            ("out", "output", [c + cp, ts], False)], slots)
    loop = tile.ForOp.build([(0, n, 1), (0, hw, ts)], "naive", lowering.cores, names=["n", "p"])
    block.add_op(loop)
    image, _, p, t_p = loop.block.args
    load = slice_op(tile.LoadOp, xv, buffers["in"], [image, -before, p], [1, cp, t_p], [1, 2])
    loop.block.add_op(load)
    inp, out = buffers["in"], buffers["out"]
    e = IndexExprs()
    ops = [map_op(e, "mul", [(inp, 0, 1), (inp, 0, 1), (out, e(t_p) * c, 1)], [e(1), e(cp), e(t_p)])]
    e = IndexExprs()
    ops.append(reduce_op(e, "sum", (out, e(t_p) * c, 1), (out, 0, 1), [e(1), e(c), e(t_p)], window=[1, size],
                         steps=[0, e(t_p)]))
    for func, params in (("affine", [alpha / size, bias]), ("log", []), ("affine", [-beta, 0.0]), ("exp", [])):
        e = IndexExprs()
        ops.append(map_op(e, func, [(out, 0, 1), (out, 0, 1)], [e(1), e(c), e(t_p)], params))
    e = IndexExprs()
    ops.append(map_op(e, "mul", [(inp, e(t_p) * before, 1), (out, 0, 1), (out, 0, 1)], [e(1), e(c), e(t_p)]))
    for compute in ops:
        loop.block.add_op(compute)
    loop.block.add_op(slice_op(tile.StoreOp, yv, out, [image, 0, p], [1, c, t_p], [1, 2]))
    return nest_of(op, block, [op.input])
