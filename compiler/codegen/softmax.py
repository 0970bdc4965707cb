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

from nncc.compiler.codegen.context import F32, Lowering, dram
from nncc.compiler.codegen.conv import tile_ranges
from nncc.compiler.codegen.lower import layer_name, lowers, source_address
from nncc.compiler.codegen.pool import fits
from nncc.compiler.codegen.scheduler import BufferKind, BufRef, Compute, Job, Transfer
from nncc.compiler.errors import NnccError
from nncc.dialects import nn


def softmax_tiles(lowering: Lowering, outer: int, a: int, inner: int, name: str) -> tuple[int, int]:
    def sizes(to, ti):
        return {"input": F32 * to * a * ti, "output": F32 * (to * a * ti + 2 * to * ti)}
    if not fits(lowering, sizes(1, 1)):
        raise NnccError(f"layer {name}: a softmax row of {a} elements does not fit in "
                        f"{lowering.target.memory_for('input').name}")
    ti = inner
    while not fits(lowering, sizes(1, ti)):
        ti = -(-ti // 2)
    to = outer if ti == inner else 1
    while not fits(lowering, sizes(to, ti)):
        to = -(-to // 2)
    if ti > 1:
        to = min(to, 16)  # one vred per outer row: keep jobs' instruction counts small
    return to, ti


def row_reduce(func: str, unit: str, src: BufRef, dst_offset: int, to: int, a: int, ti: int) -> list[Compute]:
    """dst[r*ti + i] = func over the A axis of the (to, A, ti) tile at src."""
    if ti == 1:
        return [Compute("vred", {"unit": unit, "func": func, "shape": (to, 1, a), "x": src,
                                 "x_stride": (a, 0, 1), "z": BufRef("out", dst_offset), "z_stride": 1})]
    return [Compute("vred", {"unit": unit, "func": func, "shape": (ti, 1, a),
                             "x": BufRef(src.kind, src.offset + F32 * r * a * ti), "x_stride": (1, 0, ti),
                             "z": BufRef("out", dst_offset + F32 * r * ti), "z_stride": 1})
            for r in range(to)]


def softmax_compute(unit: str, to: int, a: int, ti: int) -> list[Compute]:
    tile = to * a * ti
    m, s = F32 * tile, F32 * (tile + to * ti)
    if ti == 1:  # lanes along A
        shape, stride, row = (to, 1, a), (a, 0, 1), (1, 0, 0)
    else:  # lanes along the inner axis
        shape, stride, row = (to, a, ti), (a * ti, ti, 1), (ti, 0, 1)
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


@lowers("nn.softmax")
def lower_softmax(lowering: Lowering, op: Operation):
    shape = nn.shape_of(op.input)
    axis = op.axis.value.data
    outer, a, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
    name = layer_name(op)
    to_full, ti_full = softmax_tiles(lowering, outer, a, inner, name)
    target = lowering.target
    kinds = [BufferKind("in", target.memory_for("input").name, F32 * to_full * a * ti_full),
             BufferKind("out", target.memory_for("output").name, F32 * (to_full * a * ti_full + 2 * to_full * ti_full))]
    x, y = source_address(lowering, op.input), lowering.address(op.result)
    unit = lowering.vector_unit
    jobs = []
    for o0, to in tile_ranges(outer, to_full):
        for i0, ti in tile_ranges(inner, ti_full):
            offset = F32 * (o0 * a * inner + i0)
            far, chip, box = (a * inner, inner, 1), (a * ti, ti, 1), (to, a, ti)
            jobs.append(Job(len(jobs) % lowering.cores, {"in": ("in", o0, i0), "out": ("out", o0, i0)},
                            softmax_compute(unit, to, a, ti),
                            {"in": [Transfer(dram(x + offset), far, BufRef("in"), chip, box)]},
                            {"out": [Transfer(BufRef("out"), chip, dram(y + offset), far, box)]}))
    return [(kinds, jobs)]
