"""Softmax along one axis, numerically stable, on the vector unit.

The input is viewed as (outer, A, inner) with A the softmax axis; a tile holds whole rows:
(to outer indices, all A, ti inner indices), row-major on chip. Per tile:

    vred max  -> m        (per row; the reduced axis A is on lanes when inner = 1)
    vsub      x - m       (m broadcast along A with stride 0)
    vact exp
    vred sum  -> s
    vact recip s
    vmul      e * (1/s)

m and s live after the result in the output slot. Elementwise steps put the innermost axis on
lanes: A when inner = 1, else the inner axis (a softmax over channels of an NCHW tensor runs
with pixels on lanes). With inner > 1 a `vred` reduces one outer row of the tile at a time
(its result axis is one-dimensional).
"""

from __future__ import annotations

import math

from xdsl.ir import Operation

from nncc.compiler.codegen.context import F32, Lowering, dram, layer_name, source_address
from nncc.compiler.codegen.conv import tile_ranges
from nncc.compiler.codegen.scheduler import BufferKind, BufRef, Compute, Job, Transfer
from nncc.dialects import nn
from nncc.support.errors import NnccError


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


def row_reduce(func: str, unit: str, src: BufRef, dst_offset: int, to: int, a: int, ti: int,
               acc: int = 0, dst: str = "out") -> list[Compute]:
    """dst[r*ti + i] (acc: combined with) = func over the A axis of the (to, A, ti) tile at src."""
    if ti == 1:
        return [Compute("vred", {"unit": unit, "func": func, "acc": acc, "shape": (to, 1, a), "x": src,
                                 "x_stride": (a, 0, 1), "z": BufRef(dst, dst_offset), "z_stride": 1})]
    return [Compute("vred", {"unit": unit, "func": func, "acc": acc, "shape": (ti, 1, a),
                             "x": BufRef(src.kind, src.offset + F32 * r * a * ti), "x_stride": (1, 0, ti),
                             "z": BufRef(dst, dst_offset + F32 * r * ti), "z_stride": 1})
            for r in range(to)]


def layout(to: int, a: int, ti: int):
    """Elementwise shape, tile strides and the per-row statistic's strides (lanes innermost)."""
    if ti == 1:  # lanes along A
        return (to, 1, a), (a, 0, 1), (1, 0, 0)
    return (to, a, ti), (a * ti, ti, 1), (ti, 0, 1)  # lanes along the inner axis


def softmax_compute(unit: str, to: int, a: int, ti: int) -> list[Compute]:
    tile = to * a * ti
    m, s = F32 * tile, F32 * (tile + to * ti)
    shape, stride, row = layout(to, a, ti)
    out = BufRef("out")
    ops = row_reduce("max", unit, BufRef("in"), m, to, a, ti)
    ops.append(Compute("vsub", {"unit": unit, "shape": shape, "x": BufRef("in"), "x_stride": stride,
                                "y": BufRef("out", m), "y_stride": row, "z": out, "z_stride": stride}))
    ops.append(Compute("vact", {"unit": unit, "func": "exp", "shape": shape, "x": out, "x_stride": stride,
                                "z": out, "z_stride": stride}))
    ops += row_reduce("sum", unit, out, s, to, a, ti)
    ops.append(Compute("vact", {"unit": unit, "func": "recip", "shape": (1, 1, to * ti), "x": BufRef("out", s),
                                "x_stride": (0, 0, 1), "z": BufRef("out", s), "z_stride": (0, 0, 1)}))
    ops.append(Compute("vmul", {"unit": unit, "shape": shape, "x": out, "x_stride": stride,
                                "y": BufRef("out", s), "y_stride": row, "z": out, "z_stride": stride}))
    return ops


def split_compute(unit: str, step: int, first: bool, last: bool, to: int, ta: int, ti: int) -> list[Compute]:
    """Rows longer than a tile: step 0 max, step 1 sum of exp(x - max), step 2 the result.

    The statistics (max, then 1/sum) stay on chip in the `stat` buffer across a row's jobs."""
    shape, stride, row = layout(to, ta, ti)
    m, s = BufRef("stat"), BufRef("stat", F32 * to * ti)
    if step == 0:
        return row_reduce("max", unit, BufRef("in"), 0, to, ta, ti, acc=int(not first), dst="stat")
    out = BufRef("out")
    ops = [Compute("vsub", {"unit": unit, "shape": shape, "x": BufRef("in"), "x_stride": stride,
                            "y": m, "y_stride": row, "z": out, "z_stride": stride}),
           Compute("vact", {"unit": unit, "func": "exp", "shape": shape, "x": out, "x_stride": stride,
                            "z": out, "z_stride": stride})]
    if step == 1:
        ops += row_reduce("sum", unit, out, F32 * to * ti, to, ta, ti, acc=int(not first), dst="stat")
        if last:
            ops.append(Compute("vact", {"unit": unit, "func": "recip", "shape": (1, 1, to * ti), "x": s,
                                        "x_stride": (0, 0, 1), "z": s, "z_stride": (0, 0, 1)}))
        return ops
    ops.append(Compute("vmul", {"unit": unit, "shape": shape, "x": out, "x_stride": stride,
                                "y": s, "y_stride": row, "z": out, "z_stride": stride}))
    return ops


def lower_softmax(lowering: Lowering, op: Operation):
    shape = nn.shape_of(op.input)
    axis = op.axis.value.data
    outer, a, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
    name = layer_name(op)
    to_full, ta_full, ti_full = softmax_tiles(lowering, outer, a, inner, name)
    target = lowering.target
    split = ta_full < a
    tile = F32 * to_full * ta_full * ti_full
    kinds = [BufferKind("in", target.memory_for("input").name, tile),
             BufferKind("out", target.memory_for("output").name, tile if split else tile + 2 * F32 * to_full * ti_full)]
    if split:
        kinds.append(BufferKind("stat", target.memory_for("weight").name, 2 * F32 * to_full * ti_full))
    x, y = source_address(lowering, op.input), lowering.address(op.result)
    unit = lowering.vector_unit
    jobs = []
    for o0, to in tile_ranges(outer, to_full):
        for i0, ti in tile_ranges(inner, ti_full):
            core = (len(jobs) if not split else o0 + i0) % lowering.cores
            far, chip = (a * inner, inner, 1), (ta_full * ti, ti, 1)
            if not split:
                offset = F32 * (o0 * a * inner + i0)
                chip, box = (a * ti, ti, 1), (to, a, ti)
                jobs.append(Job(core, {"in": ("in", o0, i0), "out": ("out", o0, i0)},
                                softmax_compute(unit, to, a, ti),
                                {"in": [Transfer(dram(x + offset), far, BufRef("in"), chip, box)]},
                                {"out": [Transfer(BufRef("out"), chip, dram(y + offset), far, box)]}))
                continue
            pieces = tile_ranges(a, ta_full)
            for step in range(3):
                for j, (a0, ta) in enumerate(pieces):
                    offset = F32 * ((o0 * a + a0) * inner + i0)
                    box = (to, ta, ti)
                    chip = (ta * ti, ti, 1)
                    buffers = {"in": ("in", o0, i0, a0), "stat": ("stat", o0, i0)}
                    stores = {}
                    if step:
                        buffers["out"] = ("out", o0, i0, a0, step)
                    if step == 2:
                        stores["out"] = [Transfer(BufRef("out"), chip, dram(y + offset), far, box)]
                    jobs.append(Job(core, buffers,
                                    split_compute(unit, step, j == 0, j == len(pieces) - 1, to, ta, ti),
                                    {"in": [Transfer(dram(x + offset), far, BufRef("in"), chip, box)]}, stores))
    return [(kinds, jobs)]
