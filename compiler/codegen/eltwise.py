"""Elementwise layers on tiles: binary ops with broadcasting, activations, batch norm, copies.

The output is viewed as at most three dimensions after merging the axes that every operand
walks contiguously (`collapse`); axes beyond three become separate jobs. A broadcast operand
keeps size 1 on its broadcast axes on chip and is read with stride 0, so it is loaded (and
counted in DRAM traffic) once, not once per use. Lanes run along the last dimension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from nncc.compiler.codegen.context import F32, Lowering, dram, row_major_strides
from nncc.compiler.codegen.scheduler import BufferKind, BufRef, Compute, Job, Transfer


@dataclass(frozen=True)
class Source:
    """An operand in DRAM: address and element strides over the output's axes (0 = broadcast)."""

    addr: int
    strides: tuple[int, ...]


def broadcast_source(addr: int, shape: Sequence[int], out_shape: Sequence[int]) -> Source:
    shape = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    strides = row_major_strides(shape)
    return Source(addr, tuple(0 if size == 1 and out != 1 else stride
                              for size, out, stride in zip(shape, out_shape, strides)))


def collapse(shape: Sequence[int], sources: Sequence[Source]) -> tuple[tuple[int, ...], list[Source]]:
    """Merge adjacent axes that every source walks as one (and drop size-1 axes)."""
    dims = [(size, [s.strides[i] for s in sources]) for i, size in enumerate(shape) if size != 1]
    merged: list[tuple[int, list[int]]] = []
    for size, strides in dims:
        if merged:
            last_size, last_strides = merged[-1]
            if all(ls == st * size for ls, st in zip(last_strides, strides)):
                merged[-1] = (last_size * size, strides)
                continue
        merged.append((size, strides))
    if not merged:
        merged = [(1, [0] * len(sources))]
    out_shape = tuple(size for size, _ in merged)
    return out_shape, [Source(s.addr, tuple(strides[i] for _, strides in merged)) for i, s in enumerate(sources)]


def as_3d(shape: tuple[int, ...], sources: list[Source]):
    """Pad to three axes; more than three leading axes are split off as job indices."""
    while len(shape) < 3:
        shape = (1,) + shape
        sources = [Source(s.addr, (0,) + s.strides) for s in sources]
    outer = shape[:-3]
    return outer, shape[-3:], sources


@dataclass
class ElementwiseLayer:
    """Jobs computing out = f(in_0, in_1, ...) tile by tile; `compute` builds the instructions."""

    lowering: Lowering
    shape: tuple[int, ...]
    inputs: list[Source]
    output: Source
    compute: callable  # (refs: list[BufRef], strides: list[tuple], out, out_stride, tile_shape) -> [Compute]

    def layers(self):
        shape, sources = collapse(self.shape, [*self.inputs, self.output])
        outer, shape3, sources = as_3d(shape, sources)
        inputs, output = sources[:-1], sources[-1]
        tile = self.tile_shape(shape3, inputs)
        kinds = [BufferKind(f"in{i}", self.memory("input"), self.slot_bytes(tile, src))
                 for i, src in enumerate(inputs)]
        kinds.append(BufferKind("out", self.memory("output"), F32 * math.prod(tile)))
        jobs = []
        for index in range(math.prod(outer) if outer else 1):
            offsets = unravel(index, outer)
            for start in tile_starts(shape3, tile):
                jobs.append(self.job(len(jobs) % self.lowering.cores, offsets, start, shape3, tile,
                                     inputs, output, outer))
        return [(kinds, jobs)]

    def memory(self, role: str) -> str:
        return self.lowering.target.memory_for(role).name

    def slot_bytes(self, tile, source: Source) -> int:
        return F32 * math.prod(t if st else 1 for t, st in zip(tile, source.strides[-3:]))

    def tile_shape(self, shape3, inputs) -> tuple[int, int, int]:
        budget = self.lowering.capacity("input") // (4 * F32 * (len(inputs) + 1))
        d0, d1, d2 = shape3
        t2 = min(d2, max(budget, 1))
        t1 = min(d1, max(budget // t2, 1))
        t0 = min(d0, max(budget // (t1 * t2), 1))
        return (t0, t1, t2)

    def job(self, core, offsets, start, shape3, tile, inputs, output, outer) -> Job:
        size = tuple(min(t, s - b) for t, s, b in zip(tile, shape3, start))
        refs, strides, loads, buffers = [], [], {}, {}
        for i, src in enumerate(inputs):
            box = tuple(n if st else 1 for n, st in zip(size, src.strides[-3:]))
            chip = row_major_strides(box)
            addr = src.addr + F32 * (base_offset(offsets, outer, src) +
                                     sum(b * st for b, st in zip(start, src.strides[-3:])))
            kind = f"in{i}"
            buffers[kind] = (kind, addr, box)
            loads[kind] = [Transfer(dram(addr), tuple(st if st else 0 for st in src.strides[-3:]), BufRef(kind),
                                    chip, box)]
            refs.append(BufRef(kind))
            strides.append(tuple(c if st else 0 for c, st in zip(chip, src.strides[-3:])))
        out_stride = row_major_strides(size)
        out_addr = output.addr + F32 * (base_offset(offsets, outer, output) +
                                        sum(b * st for b, st in zip(start, output.strides[-3:])))
        buffers["out"] = ("out", out_addr)
        store = Transfer(BufRef("out"), out_stride, dram(out_addr), output.strides[-3:], size)
        compute = self.compute(refs, strides, BufRef("out"), out_stride, size)
        return Job(core, buffers, compute, loads, {"out": [store]})


def unravel(index: int, outer: tuple[int, ...]) -> tuple[int, ...]:
    offsets = []
    for size in reversed(outer):
        offsets.append(index % size)
        index //= size
    return tuple(reversed(offsets))


def base_offset(offsets, outer, source: Source) -> int:
    return sum(o * st for o, st in zip(offsets, source.strides[: len(outer)]))


def tile_starts(shape3, tile):
    return [(a, b, c) for a in range(0, shape3[0], tile[0]) for b in range(0, shape3[1], tile[1])
            for c in range(0, shape3[2], tile[2])]


def binary(mnemonic: str, unit: str):
    def build(refs, strides, out, out_stride, size):
        return [Compute(mnemonic, {"unit": unit, "shape": size, "x": refs[0], "x_stride": strides[0],
                                   "y": refs[1], "y_stride": strides[1], "z": out, "z_stride": out_stride})]
    return build


def activation(func: str, unit: str, p0: float = 0.0, p1: float = 0.0):
    def build(refs, strides, out, out_stride, size):
        return [Compute("vact", {"unit": unit, "func": func, "p0": p0, "p1": p1, "shape": size,
                                 "x": refs[0], "x_stride": strides[0], "z": out, "z_stride": out_stride})]
    return build


def fma(unit: str):
    """out = in0 * in1 + in2 (batch norm: per-channel scale and shift)."""
    def build(refs, strides, out, out_stride, size):
        return [Compute("vfma", {"unit": unit, "shape": size, "x": refs[0], "x_stride": strides[0],
                                 "y": refs[1], "y_stride": strides[1], "w": refs[2], "w_stride": strides[2],
                                 "z": out, "z_stride": out_stride})]
    return build


def copy_tensor(lowering: Lowering, src: int, dst: int, count: int):
    """Copy `count` contiguous floats through the chip (DRAM -> on chip -> DRAM)."""
    layer = ElementwiseLayer(lowering, (count,), [Source(src, (1,))], Source(dst, (1,)),
                             activation("copy", lowering.vector_unit))
    return layer.layers()


def merge_phases(phases):
    """Independent phases (no phase reads what another writes) as one phase.

    `emit_layer` schedules each phase with a fresh `Scheduler` and no barrier in between: the
    second phase would reuse the first one's slots and semaphore numbers while the first may
    still be running. Merged, the kinds are sized for the largest user and every buffer key is
    qualified by its phase, so the one scheduler orders everything.
    """
    if len(phases) <= 1:
        return phases
    kinds: dict[str, BufferKind] = {}
    jobs: list[Job] = []
    for index, (phase_kinds, phase_jobs) in enumerate(phases):
        for kind in phase_kinds:
            old = kinds.get(kind.name)
            if old is not None and (old.memory, old.shared) != (kind.memory, kind.shared):
                raise ValueError(f"buffer kind {kind.name} differs between phases")
            if old is None or kind.slot_bytes > old.slot_bytes:
                kinds[kind.name] = kind
        for job in phase_jobs:
            jobs.append(Job(job.core, {k: (index, key) for k, key in job.buffers.items()}, job.compute,
                            job.loads, job.stores))
    return [(list(kinds.values()), jobs)]
