"""The DRAM sides of the DMAs a run executes, counted in batches: bursts, row misses, bytes by role.

The interpreter records every DRAM side (`DramWalk.record`: its box, its address, its layer) in
the order it executes them; `count` walks a batch of them through the row buffers at once
(`RowBuffers.walk_many`, runtime/dram.py: the one definition of the DRAM rules) and adds each
one's bursts and misses, and its bytes by the role of the symbol they are in, to its layer's
`DramCounters`. The figures are those of walking each DMA when it executes: the row buffers see
the same accesses in the same order.

    walk = DramWalk(rows, symbols, counters)     # counters[slot]: a layer's DramCounters
    side = walk.side(False, (1, 8, 64), (0, 64, 1))  # a DMA reading a box of DRAM
    walk.record(side, addr, slot)                # per DMA side, in execution order
    walk.count()                                 # at the end (and every BATCH sides)
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import numpy as np

from nncc.runtime.dram import RowBuffers, access_runs, contiguous_bytes, dram_order

ROLES = ("input", "weight", "output", "intermediate")
"""What a DRAM byte belongs to: a program symbol of that kind, else `intermediate` (feature maps
between layers, and anything a layer spills)."""
INTERMEDIATE = ROLES.index("intermediate")

BATCH = 1 << 18
"""DMA sides recorded before they are counted (bounds the batch's arrays)."""


def dram_sides(src_space: str, dst_space: str, shape: tuple[int, ...], pad: tuple[int, ...],
               src_stride: tuple[int, ...], dst_stride: tuple[int, ...]) -> list[tuple[bool, tuple, tuple]]:
    """(is write, box, strides) of each DRAM side of a DMA: its source without the padding (none
    when the box is all padding), its destination."""
    sides = []
    if src_space == "DRAM":
        inner = tuple(n - pad[2 * d] - pad[2 * d + 1] for d, n in enumerate(shape))
        if min(inner) > 0:
            sides.append((False, inner, src_stride))
    if dst_space == "DRAM":
        sides.append((True, shape, dst_stride))
    return sides


def box_runs(box: tuple[int, ...], strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, lengths) in bytes of the contiguous runs of a DMA box's DRAM side, relative to its
    address, walked in `dram_order` (one run when the box is contiguous)."""
    shape, ordered = dram_order(box, strides)
    nbytes = contiguous_bytes(shape, ordered)
    if nbytes is not None:
        return np.zeros(1, dtype=np.int64), np.full(1, nbytes, dtype=np.int64)
    return access_runs(0, shape, ordered)


class DramWalk:
    """Records DMA sides in execution order and counts them (`count`) into per-layer counters."""

    def __init__(self, rows: RowBuffers, symbols: Sequence[Any], counters: list):
        self.rows = rows
        self.counters = counters  # DramCounters by layer slot (grows as the run meets layers)
        regions = sorted((s.addr, s.addr + s.nbytes, ROLES.index(s.kind)) for s in symbols)
        self.region_starts = np.array([r[0] for r in regions], dtype=np.int64)
        self.region_ends = np.array([r[1] for r in regions], dtype=np.int64)
        self.region_roles = np.array([r[2] for r in regions], dtype=np.int64)
        self.sides: dict[tuple, int] = {}  # (is write, box, strides) -> side id
        self.side_runs: list[tuple[np.ndarray, np.ndarray]] = []  # by side id: (offsets, lengths)
        self.side_writes: list[bool] = []
        self.side_spans: list[tuple[int, int, int]] = []  # by side id: (first byte, end, bytes) of its runs
        self.records: list[tuple[int, int, int]] = []  # (side id, address, layer slot), in order

    def side(self, is_write: bool, box: tuple[int, ...], strides: tuple[int, ...]) -> int:
        """The id of a DMA side's box."""
        key = (is_write, box, strides)
        found = self.sides.get(key)
        if found is None:
            found = self.sides[key] = len(self.side_runs)
            offsets, lengths = box_runs(box, strides)
            self.side_runs.append((offsets, lengths))
            self.side_spans.append((int(offsets.min()), int((offsets + lengths).max()), int(lengths.sum())))
            self.side_writes.append(is_write)
        return found

    def record(self, side: int, addr: int, slot: int) -> None:
        """One DMA side at `addr`, executed now, for layer `slot`."""
        self.records.append((side, addr, slot))
        if len(self.records) >= BATCH:
            self.count()

    def count(self) -> None:
        """Walk the recorded sides through the row buffers, in order, and add them to their layers."""
        if not self.records:
            return
        records = np.array(self.records, dtype=np.int64)
        self.records = []
        sides, addrs, slots = records[:, 0], records[:, 1], records[:, 2]
        bursts, misses = self.rows.walk_many(addrs, sides, self.side_runs)
        writes = np.array(self.side_writes, dtype=bool)[sides]
        first, end, nbytes = np.array(self.side_spans, dtype=np.int64).reshape(-1, 3)[sides].T
        roles = self.roles(addrs + first, addrs + end)
        self.add(slots, writes, bursts, misses, roles, nbytes)
        for i in np.flatnonzero(roles < 0).tolist():  # spans several symbols: run by run
            offsets, lengths = self.side_runs[int(sides[i])]
            counter = self.counters[int(slots[i])]
            for role, count in self.mixed_roles(int(addrs[i]) + offsets, lengths):
                counter.role_bytes[role][int(writes[i])] += count

    def add(self, slots, writes, bursts, misses, roles, nbytes) -> None:
        """Add each access's bursts and misses, and its bytes to its role (-1: counted apart)."""
        size = len(self.counters)
        read_bursts = np.bincount(slots, weights=np.where(writes, 0, bursts), minlength=size)
        write_bursts = np.bincount(slots, weights=np.where(writes, bursts, 0), minlength=size)
        activations = np.bincount(slots, weights=misses, minlength=size)
        whole = roles >= 0
        cells = (slots[whole] * len(ROLES) + roles[whole]) * 2 + writes[whole]
        role_bytes = np.bincount(cells, weights=nbytes[whole], minlength=size * len(ROLES) * 2)
        role_bytes = role_bytes.reshape(size, len(ROLES), 2).astype(np.int64).tolist()
        for slot in np.unique(slots).tolist():
            counter = self.counters[slot]
            counter.read_bursts += int(read_bursts[slot])
            counter.write_bursts += int(write_bursts[slot])
            counter.activations += int(activations[slot])
            for role, (read, written) in zip(ROLES, role_bytes[slot]):
                counter.role_bytes[role][0] += read
                counter.role_bytes[role][1] += written

    def roles(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """The role of the bytes [lo, hi) of each access when they are all in one symbol or all in
        no symbol (`INTERMEDIATE`); else -1."""
        count = self.region_starts.size
        if not count:
            return np.full(lo.size, INTERMEDIATE, dtype=np.int64)
        index = np.searchsorted(self.region_starts, lo, side="right") - 1
        at = np.maximum(index, 0)
        inside = (index >= 0) & (hi <= self.region_ends[at])
        following = np.minimum(index + 1, count - 1)
        clear = ((index + 1 >= count) | (hi <= self.region_starts[following])) & \
            ((index < 0) | (lo >= self.region_ends[at]))
        return np.where(inside, self.region_roles[at], np.where(clear, INTERMEDIATE, -1))

    def mixed_roles(self, starts: np.ndarray, lengths: np.ndarray) -> list[tuple[str, int]]:
        """(role, bytes) of an access's runs: the kind of the symbol each byte is in, else intermediate."""
        found: dict[str, int] = {}
        region_starts = self.region_starts.tolist()
        region_ends = self.region_ends.tolist()
        for run_start, length in zip(starts.tolist(), lengths.tolist()):
            position, end = run_start, run_start + length
            while position < end:
                k = bisect.bisect_right(region_starts, position) - 1
                if k >= 0 and position < region_ends[k]:
                    stop, role = min(end, region_ends[k]), ROLES[int(self.region_roles[k])]
                else:
                    stop = min(end, region_starts[k + 1]) if k + 1 < len(region_starts) else end
                    role = "intermediate"
                found[role] = found.get(role, 0) + stop - position
                position = stop
        return list(found.items())
