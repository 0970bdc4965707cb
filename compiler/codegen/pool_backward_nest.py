"""Max and average pooling's gradient as one nest on the vector units (`lower-training-ops`
leaves `nn.max_pool_backward` and `nn.avg_pool_backward` to it).

Per tile of dx (a block of m x stride input rows, the whole width, a block of channels; dealt to
the cores) the nest loads the windows that reach the block (the block's m window rows and the
halo windows above and below it: x with -inf beyond the image, dy with zeros beyond the windows)
and scatters each window's gradient into the dx tile on chip, each tap (i, j) a strided view of
the tile; dx is stored once, no tap's or phase's copy of it in DRAM.

**Max pooling** recomputes each window's maximum from x (not an argmax stored by the forward: a
stored index costs the forward a write and the backward a read of a dy-sized tensor, and the
forward's pooling nest a second result; the recompute reads x, whose DRAM time is ~0.2 M of the
stem's ~1 M cycles at 224, batch 8) and gives dy to the **first** tap in window order that
holds it, as PyTorch and onnxruntime do. With P_t the running maximum of taps 0 .. t-1 (vmax),
M = P_T the window's maximum and Q_t = [P_{t+1} == M] (vcmpeq; Q_{T-1} = 1), the first maximum's
mask is f_t = Q_t - Q_{t-1}: exact 0/1, no tie handled twice.

    pre unit (fusion; else the one vector unit):  P_2 = max(x_0, x_1), ..., M = P_T
                                                  Q_t = (P_{t+1} == M)            t < T - 1
    post unit:                                    f_t = Q_t - Q_{t-1}  (f_0 = Q_0, f_{T-1} = 1 - Q_{T-2})
                                                  dx[tap t] (+)= f_t * dy

so the pre unit makes the masks of a tile while the post unit scatters the tile before.
**Average pooling**: the share dy / divisor (a compile-time [OH][OW] map, as the forward's) once,
then per tap dx[tap] (+)= share. The taps scatter in the order of the dx positions they reach,
most first (any order gives the same sums); a tap whose positions no earlier tap reaches writes
them (no fill), and the tile is zero-filled only when some position is reached by no such tap.

    tile.for %c[%tc] = 0 to 64 step 32, %n[%tn] = 0 to 8 step 1, %r[%tr] = 0 to 56 step 5 order naive {
      tile.load %X[%n, %c, %r * 2 - 1, -1] [1, %tc, 13, 113] -> %x[0] dims [2, 3, 1] pad -inf
      tile.load %DY[%n, %c, %r, 0] [1, %tc, 6, 56] -> %dy[0] dims [2, 3, 1]
      tile.map max %x[0] strides [...], %x[%tc] strides [...] -> %p[0] shape [6, 56, %tc] {unit = "pre"}
      ...                                                      (P_2 .. P_9, then Q_0 .. Q_7)
      tile.map mul %q[0] strides [...], %dy[%tc * 56] strides [...] -> %dx[%tc * 113] strides [...] ... {unit = "post"}
      tile.map sub %q[...], %q[0] -> %f[0] ... {unit = "post"}
      tile.map fma %f[0] ..., %dy[...] ..., %dx[...] ... -> %dx[...] ... {unit = "post"}
      ...
      %rows = tile.min [%r * -2 + 112, 10]
      tile.store %dx[0] -> %Y[%n, %c, %r * 2, 0] [1, %tc, %rows, 112] dims [2, 3, 1]
    }
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import FloatAttr, StringAttr, f64
from xdsl.ir import Operation

from nncc.compiler.codegen.context import F32, Lowering, layer_name
from nncc.compiler.codegen.nest_builder import IndexExprs, add_buffers, finish_nest, nest_block, slice_op
from nncc.compiler.codegen.stream_nest import constant_weight, map_op
from nncc.dialects import nn, tile
from nncc.support.errors import NnccError

POOL_BACKWARD_OPS = ("nn.max_pool_backward", "nn.avg_pool_backward")


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Axis:
    """One axis of the windows: input size, windows, kernel, stride, leading pad, dilation."""

    size: int
    out: int
    k: int
    stride: int
    pad: int
    dilation: int

    def first(self, i: int) -> int:
        """The first window (relative to a block starting at window 0) whose tap i is at or after position 0."""
        return ceil_div(self.pad - i * self.dilation, self.stride)

    def halo(self) -> tuple[int, int]:
        """(lo, extra): a block of m window rows computes windows lo .. m - 1 + extra (relative)."""
        return self.first(self.k - 1), (self.pad - 1) // self.stride + 1

    def extent(self, windows: int) -> int:
        return (windows - 1) * self.stride + (self.k - 1) * self.dilation + 1


@dataclass(frozen=True)
class PoolBackward:
    """The shape of a pooling gradient: NCHW, rows and columns as `Axis`, max or avg."""

    n: int
    c: int
    rows: Axis
    cols: Axis
    func: str  # "max" or "avg"

    @property
    def taps(self) -> list[tuple[int, int]]:
        return [(i, j) for i in range(self.rows.k) for j in range(self.cols.k)]


def pool_backward_shape(op: Operation) -> PoolBackward:
    kernel, strides, pads, dilations, _ = op.pool_properties()
    n, c, h, w = nn.shape_of(op.result)
    _, _, oh, ow = nn.shape_of(op.grad)
    rows = Axis(h, oh, kernel[0], strides[0], pads[0], dilations[0])
    cols = Axis(w, ow, kernel[1], strides[1], pads[1], dilations[1])
    return PoolBackward(n, c, rows, cols, "max" if op.name == "nn.max_pool_backward" else "avg")


@dataclass(frozen=True)
class PoolBackwardTiles:
    channels: int  # per tile
    windows: int  # window rows per block (m): the block's dx rows are m x the row stride


def windows_of(s: PoolBackward, t: PoolBackwardTiles) -> int:
    """Window rows a tile computes: its block's and the halo's."""
    lo, extra = s.rows.halo()
    return t.windows + extra - lo


def tile_elements(s: PoolBackward, t: PoolBackwardTiles) -> dict[str, int]:
    """Elements of every buffer of a tile (name -> count)."""
    windows = windows_of(s, t) * s.cols.out * t.channels
    taps = len(s.taps)
    sizes = {"dy": windows, "dx": t.windows * s.rows.stride * s.cols.size * t.channels}
    if s.func == "max":
        sizes |= {"x": s.rows.extent(windows_of(s, t)) * s.cols.extent(s.cols.out) * t.channels,
                  "p": max(taps - 1, 1) * windows, "q": max(taps - 1, 1) * windows, "f": windows}
    else:
        sizes |= {"div": windows_of(s, t) * s.cols.out, "f": windows}
    return sizes


ROLES = {"x": "input", "dy": "input", "f": "input", "div": "weight", "p": "weight", "q": "output", "dx": "output"}
"""Buffer -> its role (memory): every instruction reads and writes at most 8 bytes per element
of one memory on `fusion` (three memories of 256 bytes a cycle: 32 lanes stay busy)."""


def tile_bytes(s: PoolBackward, t: PoolBackwardTiles) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for name, count in tile_elements(s, t).items():
        sizes[ROLES[name]] = sizes.get(ROLES[name], 0) + F32 * count
    return sizes


def passes(s: PoolBackward) -> tuple[int, int]:
    """Vector passes over a tile's windows: (mask unit, scatter unit)."""
    taps = len(s.taps)
    if s.func == "avg":
        return 0, 1 + taps
    return 2 * (taps - 1), taps + max(taps - 1, 0)


def pool_backward_estimate(lowering: Lowering, s: PoolBackward, t: PoolBackwardTiles) -> float:
    """Closed-form cycles: per tile, the busier unit's passes over its windows (the mask unit and
    the scatter unit overlap when the target has pre and post units), or the DRAM bus moving its
    x, dy and dx, whichever is longer; the tiles dealt to the cores."""
    target = lowering.target
    unit = target.units[lowering.vector_unit]
    lanes = unit.lanes
    elements = tile_elements(s, t)
    windows = elements["dy"]
    per_pass = windows / t.channels * ceil_div(t.channels, lanes) + unit.pipeline_depth
    mask, scatter = passes(s)
    compute = (max(mask, scatter) if split_units(lowering) else mask + scatter) * per_pass
    dram = F32 * (elements.get("x", 0) + elements["dy"] + elements["dx"]) / target.dram_bytes_per_cycle
    jobs = s.n * ceil_div(s.c, t.channels) * ceil_div(ceil_div(s.rows.size, s.rows.stride), t.windows)
    return ceil_div(jobs, lowering.cores) * max(compute, dram / lowering.cores) + compute + dram


def pool_backward_tiles(lowering: Lowering, s: PoolBackward, name: str) -> PoolBackwardTiles:
    """The tiles with the fewest estimated cycles that fit; ties to fewer jobs."""
    key = ("pool backward tiles", s)
    if key not in lowering.cost_cache:
        best = None
        blocks = ceil_div(s.rows.size, s.rows.stride)
        lanes = lowering.lanes
        for channels in sorted({d for d in (1, 2, 4, 8, lanes, 2 * lanes, 4 * lanes, s.c) if d <= s.c}):
            for windows in range(1, blocks + 1):
                t = PoolBackwardTiles(channels, windows)
                if not lowering.fits(tile_bytes(s, t)):
                    break
                rank = (pool_backward_estimate(lowering, s, t), ceil_div(s.c, channels) * ceil_div(blocks, windows))
                if best is None or rank < best[0]:
                    best = (rank, t)
        if best is None:
            raise NnccError(f"layer {name}: pooling gradient: not even one channel of one window row fits on chip")
        lowering.cost_cache[key] = best[1]
    return lowering.cost_cache[key]


def split_units(lowering: Lowering) -> bool:
    """Whether the masks and the scatter go to two units (pre and post)."""
    units = lowering.target.units
    return all(role in units and units[role].kind == "vector" for role in ("pre", "post"))


def tap_columns(s: PoolBackward, j: int) -> tuple[int, int]:
    """(first window, windows) of column tap j that land inside the image."""
    a = s.cols
    first = max(0, a.first(j))
    last = min(a.out - 1, (a.size - 1 + a.pad - j * a.dilation) // a.stride)
    return first, max(0, last - first + 1)


def tap_rows(s: PoolBackward, t: PoolBackwardTiles, i: int) -> tuple[int, int]:
    """(window index in the tile, first dx row in the block) of row tap i: m windows from there."""
    a = s.rows
    lo, _ = a.halo()
    first = a.first(i)
    return first - lo, first * a.stride - a.pad + i * a.dilation


def scatter_order(s: PoolBackward, t: PoolBackwardTiles) -> tuple[list[tuple[int, bool]], bool]:
    """The taps in the order they scatter (those reaching the most dx positions first), each with
    whether it writes its positions (no earlier tap reaches them); and whether the tile needs a
    zero fill first (a position no writer reaches)."""
    cells = []
    for i, j in s.taps:
        _, row0 = tap_rows(s, t, i)
        first, count = tap_columns(s, j)
        col0 = first * s.cols.stride - s.cols.pad + j * s.cols.dilation
        cells.append({(row0 + q * s.rows.stride, col0 + u * s.cols.stride) for q in range(t.windows) for u in range(count)})
    order, reached, written = [], set(), set()
    for k in sorted(range(len(cells)), key=lambda k: -len(cells[k])):
        writes = bool(cells[k]) and not cells[k] & reached
        order.append((k, writes))
        reached |= cells[k]
        written |= cells[k] if writes else set()
    return order, len(written) < t.windows * s.rows.stride * s.cols.size


def pool_backward_nest(lowering: Lowering, op: Operation, slots: int = 1) -> tile.NestOp:
    """The nest of pooling gradient `op` (module docstring)."""
    s = pool_backward_shape(op)
    t = pool_backward_tiles(lowering, s, layer_name(op))
    rows, cols = s.rows, s.cols
    lo, _ = rows.halo()
    windows = windows_of(s, t)
    xr, xc = rows.extent(windows), cols.extent(cols.out)
    block_rows = t.windows * rows.stride
    divisor = None
    if s.func == "avg":
        from nncc.compiler.codegen.pool import Window, divisor_counts

        g = Window(s.n, s.c, rows.size, cols.size, rows.out, cols.out, rows.k, cols.k, (rows.stride, cols.stride),
                   tuple(op.pool_properties()[2]), (rows.dilation, cols.dilation))
        share = (1.0 / divisor_counts(g, bool(op.count_include_pad.value))).astype(np.float32)
        divisor = constant_weight(lowering, op, f"{layer_name(op)}.divisor", share)
    named = [("DY", op.grad), ("X", op.input if s.func == "max" else None), ("D", divisor)]
    block, args, inputs = nest_block(named, op.result)
    sizes = tile_elements(s, t)
    fixed = lambda name: sizes[name] // t.channels  # elements per channel
    specs = [(name, ROLES[name], [count], False) for name, count in sizes.items()]
    buffers = add_buffers(lowering, block, specs, slots)
    loop = tile.ForOp.build([(0, s.c, t.channels), (0, s.n, 1), (0, ceil_div(rows.size, block_rows) * t.windows,
                                                                 t.windows)],
                            "naive", lowering.cores, names=["c", "n", "r"])
    block.add_op(loop)
    c, tc, n, _, r, _ = loop.block.args
    body = loop.block
    if s.func == "max":
        load = slice_op(tile.LoadOp, args["X"], buffers["x"], [n, c, ((r, rows.stride), lo * rows.stride - rows.pad),
                                                                -cols.pad], [1, tc, xr, xc], [2, 3, 1])
        load.pad = FloatAttr(-math.inf, f64)
        body.add_op(load)
    body.add_op(slice_op(tile.LoadOp, args["DY"], buffers["dy"], [n, c, ((r, 1), lo), 0],
                         [1, tc, windows, cols.out], [2, 3, 1]))
    if divisor is not None:
        body.add_op(slice_op(tile.LoadOp, args["D"], buffers["div"], [((r, 1), lo), 0], [windows, cols.out], [0, 1]))
    e = IndexExprs()
    ch = e(tc)
    grid = [e(windows), e(cols.out), ch]  # every window of the tile
    dense = [ch * cols.out, ch, e(1)]

    def view(name, offset, strides):
        return (buffers[name], ch * offset if offset else e(0), strides)

    pre, post = ("pre", "post") if split_units(lowering) else (None, None)
    ops: list[Operation] = []

    def emit(op_, unit):
        if unit is not None:
            op_.attributes["unit"] = StringAttr(unit)
        ops.append(op_)

    taps = s.taps
    if s.func == "max" and len(taps) > 1:
        x_grid = [ch * (rows.stride * xc), ch * cols.stride, e(1)]
        tap_x = [view("x", i * rows.dilation * xc + j * cols.dilation, x_grid) for i, j in taps]
        p = lambda k: view("p", (k - 1) * fixed("f"), dense)  # P_{k+1} (k >= 1)
        for k in range(1, len(taps)):  # P_{k+1} = max(P_k, x_k)
            emit(map_op(e, "max", [tap_x[0] if k == 1 else p(k - 1), tap_x[k], p(k)], grid), pre)
        top = p(len(taps) - 1)
        q = lambda k: view("q", k * fixed("f"), dense)  # Q_k
        for k in range(len(taps) - 1):  # Q_k = (P_{k+1} == M)
            emit(map_op(e, "cmpeq", [tap_x[0] if k == 0 else p(k), top, q(k)], grid), pre)
    elif s.func == "avg":  # the share of each window: dy / divisor
        emit(map_op(e, "mul", [view("dy", 0, dense), (buffers["div"], e(0), [e(cols.out), e(1), e(0)]),
                               view("f", 0, dense)], grid), post)
    order, fill = scatter_order(s, t)
    if fill:  # on the vector unit (the post unit)
        ops.append(tile.FillOp.build(operands=[[buffers["dx"]], list(e.values)], properties={
            "views": e.map([e(0)]), "sizes": e.map([e(block_rows), e(cols.size), ch]), "value": FloatAttr(0.0, f64)}))
    for k, writes in order:
        i, j = taps[k]
        w0, row0 = tap_rows(s, t, i)
        c0, count = tap_columns(s, j)
        if not count:
            continue
        col0 = c0 * cols.stride - cols.pad + j * cols.dilation
        shape = [e(t.windows), e(count), ch]
        at = w0 * cols.out + c0
        sub = [ch * cols.out, ch, e(1)]
        target = view("dx", row0 * cols.size + col0, [ch * (rows.stride * cols.size), ch * cols.stride, e(1)])
        dy = view("dy", at, sub)
        if s.func == "avg":
            share = view("f", at, sub)
            emit(map_op(e, "copy", [share, target], shape) if writes else
                 map_op(e, "add", [share, target, target], shape), post)
            continue
        if len(taps) == 1:
            emit(map_op(e, "copy", [dy, target], shape) if writes else map_op(e, "add", [dy, target, target], shape),
                 post)
            continue
        if k == 0:
            mask = view("q", at, sub)
        else:
            mask = view("f", at, sub)
            if k < len(taps) - 1:  # f_k = Q_k - Q_{k-1}
                emit(map_op(e, "sub", [view("q", k * fixed("f") + at, sub), view("q", (k - 1) * fixed("f") + at, sub),
                                       mask], shape), post)
            else:  # f_{T-1} = 1 - Q_{T-2}
                emit(map_op(e, "affine", [view("q", (k - 1) * fixed("f") + at, sub), mask], shape, (-1.0, 1.0)), post)
        emit(map_op(e, "mul", [mask, dy, target], shape) if writes else
             map_op(e, "fma", [mask, dy, target, target], shape), post)
    for op_ in ops:
        body.add_op(op_)
    f = IndexExprs()
    exprs = f.map([f(block_rows), f(r) * -rows.stride + rows.size])
    bound = tile.MinOp.build(operands=[list(f.values)], result_types=[tile.INDEX], properties={"exprs": exprs})
    bound.result.name_hint = "rows"
    body.add_op(bound)
    body.add_op(slice_op(tile.StoreOp, args["Y"], buffers["dx"], [n, c, ((r, rows.stride),), 0],
                         [1, tc, bound.result, cols.size], [2, 3, 1]))
    nest = finish_nest(op, block, inputs)
    if s.func == "max":
        nest.attributes["window_max"] = StringAttr("recompute")
    return nest
