"""Simulated memories: DRAM and every on-chip memory (one instance per core unless shared).

Every memory is a flat numpy float32 array (one element = 4 bytes; all data is fp32). Byte
addresses must be multiples of 4. A tile is a strided view of an array, checked against its bounds,
so a wrong address reads or writes wrong data, and an address past the end is a fault.
"""

from __future__ import annotations

import numpy as np

from nncc.compiler.target import Target


class Fault(Exception):
    """Raised by an instruction's semantics; the dispatcher adds the instruction index."""


class Memories:
    def __init__(self, target: Target, dram_bytes: int):
        self.target = target
        self.dram = np.zeros(dram_bytes // 4, dtype=np.float32)
        self.shared = {m.name: m.shared for m in target.memories}
        self.arrays: dict[tuple[str, int], np.ndarray] = {("DRAM", 0): self.dram}
        for memory in target.memories:
            for core in range(1 if memory.shared else target.cores):
                self.arrays[(memory.name, core)] = np.zeros(memory.size_bytes // 4, dtype=np.float32)

    def array(self, space: str, core: int) -> np.ndarray:
        """The instance of `space` seen by `core` (shared memories and DRAM have one)."""
        if space == "DRAM" or self.shared[space]:
            return self.arrays[(space, 0)]
        return self.arrays[(space, core)]

    def view(self, space: str, core: int, addr: int, shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
        """A strided view of a tile; faults if misaligned or past the end of the memory."""
        array = self.array(space, core)
        if addr & 3:
            raise Fault(f"misaligned address {space}[{addr:#x}] (must be a multiple of 4)")
        base = addr >> 2
        last = base
        for size, stride in zip(shape, strides):
            last += (size - 1) * stride
        if last >= array.size:
            kind = "address out of range" if space == "DRAM" else f"{space} overflow"
            raise Fault(
                f"{kind}: tile {space}[{addr:#x}] shape {','.join(map(str, shape))} ends at byte "
                f"{4 * last + 4:#x}, beyond {space} size {4 * array.size:#x}"
            )
        return np.ndarray(shape, np.float32, array, base << 2, tuple(s << 2 for s in strides))

    def write_dram(self, addr: int, values: np.ndarray) -> None:
        flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        self.dram[addr // 4 : addr // 4 + flat.size] = flat

    def read_dram(self, addr: int, shape: tuple[int, ...]) -> np.ndarray:
        count = int(np.prod(shape, dtype=np.int64))
        return self.dram[addr // 4 : addr // 4 + count].reshape(shape).copy()


def footprint(shape: tuple[int, ...], strides: tuple[int, ...]) -> int:
    """Distinct elements a tile touches (stride-0 dimensions are broadcasts, counted once)."""
    count = 1
    for size, stride in zip(shape, strides):
        if stride:
            count *= size
    return count


def row_activations(addr: int, shape: tuple[int, int, int], strides: tuple[int, int, int], row_bytes: int) -> int:
    """DRAM row-buffer activations of a 3-D access, walking it in order (open-page policy)."""
    n0, n1, n2 = shape
    s0, s1, s2 = strides
    if s2 != 1:  # every element is its own run
        starts = (np.arange(n0)[:, None, None] * s0 + np.arange(n1)[None, :, None] * s1 + np.arange(n2) * s2).ravel()
        run = 1
    else:
        starts = (np.arange(n0)[:, None] * s0 + np.arange(n1)[None, :] * s1).ravel()
        run = n2
    first = (addr + 4 * starts) // row_bytes
    last = (addr + 4 * (starts + run) - 1) // row_bytes
    return int((last - first + 1).sum() - np.count_nonzero(first[1:] == last[:-1]))
