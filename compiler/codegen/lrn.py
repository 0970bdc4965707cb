"""Local response normalisation across channels (ONNX LRN) on the vector unit.

    y = x * (bias + alpha / size * sum_{c' in window(c)} x[c']^2) ^ -beta

A tile holds every channel of a run of `ts` pixels of one image, [channels][pixels] with pixels
on lanes, zero-padded by the DMA with the window's (size - 1) // 2 channels before and the rest
after. Per tile: `vmul` (squares, into scratch after the result in the output slot), `vpool sum`
with a (1, size) window walking channels (the window sum), `vact affine` (bias + alpha/size * s),
then the power as exp(-beta * log(.)) (`vact log`, `vact affine`, `vact exp`) and a final `vmul`
with x.
"""

from __future__ import annotations

from xdsl.ir import Operation

from nncc.compiler.codegen.context import F32, Lowering, dram, layer_name, source_address
from nncc.compiler.codegen.conv import tile_ranges
from nncc.compiler.codegen.scheduler import BufferKind, BufRef, Compute, Job, Transfer
from nncc.dialects import nn
from nncc.support.errors import NnccError


def lower_lrn(lowering: Lowering, op: Operation):
    n, c, h, w = nn.shape_of(op.input)
    size = op.size.value.data
    alpha, beta, bias = (float(getattr(op, p).value.data) for p in ("alpha", "beta", "bias"))
    before = (size - 1) // 2
    cp = c + size - 1
    hw = h * w
    name = layer_name(op)

    def sizes(ts):
        return {"input": F32 * cp * ts, "output": F32 * (c + cp) * ts}
    ts = hw
    while ts > 1 and not lowering.fits(sizes(ts)):
        ts = -(-ts // 2)
    if not lowering.fits(sizes(ts)):
        raise NnccError(f"layer {name}: the {c} channels of one pixel do not fit in "
                        f"{lowering.target.memory_for('input').name}")
    target = lowering.target
    kinds = [BufferKind("in", target.memory_for("input").name, sizes(ts)["input"]),
             BufferKind("out", target.memory_for("output").name, sizes(ts)["output"])]
    x, y = source_address(lowering, op.input), lowering.address(op.result)
    unit = lowering.vector_unit
    jobs = []
    for image in range(n):
        for s0, t in tile_ranges(hw, ts):
            offset = F32 * (image * c * hw + s0)
            squares = BufRef("out", F32 * c * t)
            out = BufRef("out")
            full, part = (0, t, 1), (1, c, t)

            def act(func, p0=0.0, p1=0.0):
                return Compute("vact", {"unit": unit, "func": func, "p0": p0, "p1": p1, "shape": part,
                                        "x": out, "x_stride": full, "z": out, "z_stride": full})
            compute = [
                Compute("vmul", {"unit": unit, "shape": (1, cp, t), "x": BufRef("in"), "x_stride": full,
                                 "y": BufRef("in"), "y_stride": full, "z": squares, "z_stride": full}),
                Compute("vpool", {"unit": unit, "func": "sum", "shape": part, "window": (1, size),
                                  "x": squares, "x_stride": full, "win_stride": (0, t), "z": out,
                                  "z_stride": full}),
                act("affine", alpha / size, bias), act("log"), act("affine", -beta, 0.0), act("exp"),
                Compute("vmul", {"unit": unit, "shape": part, "x": BufRef("in", F32 * before * t),
                                 "x_stride": full, "y": out, "y_stride": full, "z": out, "z_stride": full}),
            ]
            load = Transfer(dram(x + offset), (0, hw, 1), BufRef("in"), full, (1, cp, t),
                            (0, 0, before, size - 1 - before, 0, 0))
            store = Transfer(out, full, dram(y + offset), (0, hw, 1), part)
            jobs.append(Job(len(jobs) % lowering.cores, {"in": ("in", image, s0), "out": ("out", image, s0)},
                            compute, {"in": [load]}, {"out": [store]}))
    return [(kinds, jobs)]
