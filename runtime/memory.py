"""Simulated memories: DRAM and every on-chip memory (one instance per core unless shared).

Every memory is a flat numpy float32 array (one element = 4 bytes; all data is fp32). Byte
addresses must be multiples of 4. A tile is a strided view of an array, checked against its bounds,
so a wrong address reads or writes wrong data, and an address outside the memory is a fault.

A bad program cannot make the simulator allocate without limit: DRAM is at most
`MAX_SIMULATED_DRAM_BYTES`, a tile at most `MAX_TILE_ELEMENTS` elements (a broadcast tile may be
larger than its memory, but the copies made of it are not).
"""

from __future__ import annotations

import math

import numpy as np

from nncc.runtime.target import Target

MAX_SIMULATED_DRAM_BYTES = 4 << 30
"""The largest DRAM the interpreter simulates (the `vector` target's 4 GiB; ResNet-50 needs 141 MiB).
On-chip memories are capped where a target is read (runtime/target.py)."""
MAX_TILE_ELEMENTS = 1 << 28
"""The most elements one tile operand may have (1 GiB of fp32)."""


class Fault(Exception):
    """Raised by an instruction's semantics; the dispatcher adds the instruction index."""


def check_tile_size(shape: tuple[int, ...], what: str = "tile") -> None:
    """Fault unless every size of `shape` is >= 1 and it has at most `MAX_TILE_ELEMENTS` elements."""
    if min(shape, default=1) < 1:
        raise Fault(f"{what} shape {','.join(map(str, shape))}: sizes must be >= 1")
    if math.prod(shape) > MAX_TILE_ELEMENTS:
        raise Fault(f"{what} shape {','.join(map(str, shape))} has {math.prod(shape)} elements, more than "
                    f"the interpreter's limit ({MAX_TILE_ELEMENTS})")  # fmt: skip


class Memories:
    def __init__(self, target: Target, dram_bytes: int):
        if not 0 <= dram_bytes <= MAX_SIMULATED_DRAM_BYTES:
            raise Fault(f"DRAM size {dram_bytes:#x} is outside 0..{MAX_SIMULATED_DRAM_BYTES:#x} "
                        f"(the interpreter's limit)")  # fmt: skip
        self.target = target
        self.dram = np.zeros(dram_bytes // 4, dtype=np.float32)
        self.shared = {m.name: m.shared for m in target.memories}
        self.arrays: dict[tuple[str, int], np.ndarray] = {("DRAM", 0): self.dram}
        self.views: dict[tuple, np.ndarray] = {}  # on-chip tiles already checked (slots recur)
        self.counts: dict[tuple, tuple] = {}  # compute instructions' bytes, work, cycles by semantics.timing_key
        self.dma_plans: dict[tuple, tuple] = {}  # DMAs' checks and counts by their shape (semantics._dma_plan)
        self.extents: dict[tuple, tuple] = {}  # a tile's (lowest, highest element offset, byte strides) by (shape, strides)
        for memory in target.memories:
            for core in range(1 if memory.shared else target.cores):
                self.arrays[(memory.name, core)] = np.zeros(memory.size_bytes // 4, dtype=np.float32)

    def array(self, space: str, core: int) -> np.ndarray:
        """The instance of `space` seen by `core` (shared memories and DRAM have one)."""
        if space == "DRAM" or self.shared[space]:
            return self.arrays[(space, 0)]
        return self.arrays[(space, core)]

    def view(self, space: str, core: int, addr: int, shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
        """A strided view of a tile; faults if misaligned, empty, too large or outside the memory."""
        if space == "DRAM":  # DRAM views are not kept (addresses rarely recur)
            key = None
            array = self.dram
        else:
            key = (space, core, addr, shape, strides)
            found = self.views.get(key)
            if found is not None:
                return found
            array = self.array(space, core)
        if addr & 3:
            raise Fault(f"misaligned address {space}[{addr:#x}] (must be a multiple of 4)")
        extent = self.extents.get((shape, strides))
        if extent is None:
            check_tile_size(shape, f"tile {space}[{addr:#x}]")
            extent = self.extents[(shape, strides)] = _extent(shape, strides)
        lowest, highest, byte_strides = extent
        base = addr >> 2
        first, last = base + lowest, base + highest
        if first < 0 or last >= array.size:
            kind = "address out of range" if space == "DRAM" else f"{space} overflow"
            if first < 0:
                where = f"starts at byte {4 * first:#x}, before the start of {space}"
            else:
                where = f"ends at byte {4 * last + 4:#x}, beyond {space} size {4 * array.size:#x}"
            raise Fault(f"{kind}: tile {space}[{addr:#x}] shape {','.join(map(str, shape))} {where}")
        view = np.ndarray(shape, np.float32, array, base << 2, byte_strides)
        if key is not None:
            self.views[key] = view
        return view

    def write_dram(self, addr: int, values: np.ndarray) -> None:
        flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        self.dram[self.dram_range(addr, flat.size)] = flat

    def read_dram(self, addr: int, shape: tuple[int, ...]) -> np.ndarray:
        return self.dram[self.dram_range(addr, math.prod(shape))].reshape(shape).copy()

    def dram_range(self, addr: int, count: int) -> slice:
        """The elements of `count` words at byte address `addr`; faults unless they are all in DRAM."""
        if addr & 3:
            raise Fault(f"misaligned address DRAM[{addr:#x}] (must be a multiple of 4)")
        if addr < 0 or count < 0 or addr // 4 + count > self.dram.size:
            raise Fault(f"address out of range: {count} words at DRAM[{addr:#x}] are outside DRAM size "
                        f"{4 * self.dram.size:#x}")  # fmt: skip
        return slice(addr // 4, addr // 4 + count)


def _extent(shape: tuple[int, ...], strides: tuple[int, ...]) -> tuple[int, int, tuple[int, ...]]:
    """(offset of the lowest element, of the highest, byte strides) of a tile, in elements from its
    address (negative strides reach below it)."""
    lowest = highest = 0
    for size, stride in zip(shape, strides):
        if stride < 0:
            lowest += (size - 1) * stride
        else:
            highest += (size - 1) * stride
    return lowest, highest, tuple(stride << 2 if size > 1 else 0 for size, stride in zip(shape, strides))


def footprint(shape: tuple[int, ...], strides: tuple[int, ...]) -> int:
    """Distinct elements a tile touches (stride-0 dimensions are broadcasts, counted once)."""
    count = 1
    for size, stride in zip(shape, strides):
        if stride:
            count *= size
    return count

