"""DRAM with banks and open rows: DRAMSim2-style energy accounting of the DMAs a program executes.

The one definition of the DRAM address mapping and energy rule (docs/targets.md, docs/interpreter.md).

- **Bursts.** DRAM is read and written in bursts of `dram.burst_bytes` (BL8 on a 64-bit bus: 64 B),
  aligned to their size. A DMA walks its DRAM side (padding left out: padding is written on chip,
  never read) with its dimensions ordered by DRAM stride, the smallest innermost (`dram_order`), as
  contiguous runs of bytes; each run touches the
  bursts that overlap it. A run that starts in the burst the previous run of the same DMA ended in
  does not touch it again (the DMA engine combines the two), so a box of contiguous rows costs
  exactly ceil(bytes / burst) bursts when it is aligned.
- **Mapping** (row:bank:column, DRAMsim3's `rochrababgco` with one channel and one rank): byte
  address `a` is in page `p = a // row_bytes`, bank `p % banks`, row `p // banks`, column
  `a % row_bytes`. Consecutive rows of `row_bytes` bytes fall in consecutive banks.
- **Open page.** Each bank keeps its last row open. A burst to a bank whose open row is its row is a
  row-buffer *hit*; otherwise it is a *miss*: the bank precharges (if a row was open) and activates
  the burst's row. Banks start precharged (the first burst to each bank misses). State persists
  across DMAs, in the order the interpreter executes them (simulated start time).
- **Energy** (DRAMSim2's `MemoryController` / DRAMsim3's `InitPowerParams`): every miss costs
  `activation_energy_pj` (one activate + its precharge), every read burst `read_burst_energy_pj`,
  every write burst `write_burst_energy_pj`; `energy_pj_per_byte` x bytes is added on top (energy
  the burst figures leave out, 0 in the presets). Background and refresh energy are not counted.
  Cycles do not depend on any of this (runtime/timing.py times DRAM by bandwidth and latency).

A DRAM without `row_buffer_bytes` has no row model: only bytes x `energy_pj_per_byte`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nncc.runtime.target import Dram

F32 = 4


def dram_order(shape: tuple[int, ...], strides: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The box's dimensions in the order the DMA engine walks DRAM: the largest stride outermost,
    the smallest innermost (dimensions of size 1 and broadcast ones, stride 0, outermost; ties keep
    the box's order). A box whose innermost dimension is strided in DRAM (channels innermost on
    chip, NCHW in DRAM) is read plane by plane, row by row, not element by element."""
    order = sorted(range(len(shape)), key=lambda d: (shape[d] > 1 and strides[d] != 0, -abs(strides[d])))
    return tuple(shape[d] for d in order), tuple(strides[d] for d in order)


def contiguous_bytes(shape: tuple[int, ...], strides: tuple[int, ...]) -> int | None:
    """Bytes of a 3-D fp32 access (in `dram_order`) that is one contiguous run, else None."""
    n0, n1, n2 = shape
    s0, s1, s2 = strides
    if (n2 == 1 or s2 == 1) and (n1 == 1 or s1 == n2) and (n0 == 1 or s0 == n1 * n2):
        return F32 * n0 * n1 * n2
    return None


def access_runs(addr: int, shape: tuple[int, ...], strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(start byte, length in bytes) of the contiguous runs of a 3-D fp32 access, in walk order
    (row-major over `shape`; strides in elements, as a DMA's)."""
    n0, n1, n2 = shape
    s0, s1, s2 = strides
    if s2 == 1 or n2 == 1:  # each innermost row is one run
        starts = (np.arange(n0, dtype=np.int64)[:, None] * s0 + np.arange(n1, dtype=np.int64)[None, :] * s1).ravel()
        length = F32 * n2
    else:  # every element is its own run
        starts = (np.arange(n0, dtype=np.int64)[:, None, None] * s0 + np.arange(n1, dtype=np.int64)[None, :, None] * s1
                  + np.arange(n2, dtype=np.int64) * s2).ravel()
        length = F32
    return addr + F32 * starts, np.full(starts.size, length, dtype=np.int64)


class RowBuffers:
    """The open row of every bank, and the bursts, hits and misses of the accesses walked so far."""

    def __init__(self, dram: Dram):
        self.banks = dram.banks
        self.row_bytes = dram.row_buffer_bytes
        self.burst_bytes = dram.burst_bytes
        self.bursts_per_page = self.row_bytes // self.burst_bytes if self.row_bytes else 0
        self.open_rows = [-1] * self.banks  # the open row of every bank (-1: precharged)
        self.layouts: dict[int, tuple] = {}  # walk_many: box x period + offset in it -> (bursts, pages)

    def walk(self, starts: np.ndarray, lengths: np.ndarray) -> tuple[int, int]:
        """(bursts, row misses) of the runs `starts`/`lengths` (bytes), walked in order; updates the
        open rows. Hits are bursts - misses."""
        bursts, pages = self.pages(starts, lengths)
        return bursts, self.visit_pages(pages)

    def walk_many(self, addrs: np.ndarray, boxes: np.ndarray,
                  runs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """(bursts, row misses) of accesses walked in order, as `walk` walks each in turn: access i
        is the runs `runs[boxes[i]]` (offsets and lengths in bytes) from address `addrs[i]`. A box
        at the same offset in a row touches the same bursts, and the same pages relative to its
        row, so those are found once per (box, offset). Updates the open rows."""
        period = self.row_bytes or self.burst_bytes
        bases, offsets = np.divmod(addrs, period)
        keys, inverse = np.unique(boxes * period + offsets, return_inverse=True)
        found = []
        for key in keys.tolist():
            layout = self.layouts.get(key)
            if layout is None:
                box, offset = divmod(key, period)
                starts, lengths = runs[box]
                layout = self.layouts[key] = self.pages(offset + starts, lengths)
            found.append(layout)
        bursts = np.array([bursts for bursts, _ in found], dtype=np.int64)[inverse]
        if not self.row_bytes:
            return bursts, np.zeros(addrs.size, dtype=np.int64)
        counts = np.array([pages.size for _, pages in found], dtype=np.int64)
        first = np.cumsum(counts) - counts
        per_access = counts[inverse]
        owners = np.repeat(np.arange(addrs.size), per_access)
        within = np.arange(owners.size) - np.repeat(np.cumsum(per_access) - per_access, per_access)
        pages = np.concatenate([pages for _, pages in found])[first[inverse][owners] + within] + bases[owners]
        if pages.size > 1:  # a page right after itself is a hit: visit it once
            visits = np.concatenate(([True], pages[1:] != pages[:-1]))
            pages, owners = pages[visits], owners[visits]
        misses = np.bincount(owners, weights=self.miss_flags(pages), minlength=addrs.size)
        return bursts, misses.astype(np.int64)

    def pages(self, starts: np.ndarray, lengths: np.ndarray) -> tuple[int, np.ndarray]:
        """(bursts, pages visited in order, consecutive repeats removed) of the runs (none without
        a row model)."""
        if not starts.size:
            return 0, np.zeros(0, dtype=np.int64)
        burst = self.burst_bytes
        first = starts // burst
        last = (starts + lengths - 1) // burst
        bursts = int((last - first).sum()) + first.size
        if first.size > 1:
            bursts -= int(np.count_nonzero(first[1:] == last[:-1]))  # combined with the previous run's
        if not self.row_bytes:
            return bursts, np.zeros(0, dtype=np.int64)
        per_page = self.bursts_per_page
        first_page, last_page = first // per_page, last // per_page
        if (first_page == last_page).all():  # every run inside one page (the common case)
            pages = first_page
        else:
            counts = last_page - first_page + 1
            offsets = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
            pages = np.repeat(first_page, counts) + offsets
        if pages.size > 1:  # consecutive accesses to one page: the later ones are hits
            pages = pages[np.concatenate(([True], pages[1:] != pages[:-1]))]
        return bursts, pages

    def visit_pages(self, pages: np.ndarray) -> int:
        """Row misses of visiting `pages` in order (a Python loop when few, numpy when many)."""
        if pages.size <= 256:
            return self.visit(pages.tolist())
        return self.misses(pages)

    def visit(self, pages) -> int:
        """Row misses of visiting `pages` (an iterable of ints) in order; updates the open rows."""
        misses = 0
        open_rows, banks = self.open_rows, self.banks
        for page in pages:
            bank, row = page % banks, page // banks
            if open_rows[bank] != row:
                open_rows[bank] = row
                misses += 1
        return misses

    def misses(self, pages: np.ndarray) -> int:
        """`visit` of many pages, with numpy."""
        return int(np.count_nonzero(self.miss_flags(pages)))

    def miss_flags(self, pages: np.ndarray) -> np.ndarray:
        """Whether each visit of `pages` (in order) misses its bank's open row; updates the open
        rows (`visit`, with numpy: each bank's rows in visit order against the one before)."""
        if not pages.size:
            return np.zeros(0, dtype=bool)
        banks = pages % self.banks
        rows = pages // self.banks
        order = np.argsort(banks.astype(np.uint16), kind="stable")  # a radix sort (at most 4096 banks)
        banks, rows = banks[order], rows[order]
        new_bank = np.concatenate(([True], banks[1:] != banks[:-1]))
        previous = np.empty_like(rows)
        previous[1:] = rows[:-1]
        open_rows = np.array(self.open_rows, dtype=np.int64)
        previous[new_bank] = open_rows[banks[new_bank]]
        last_of_bank = np.concatenate((new_bank[1:], [True]))
        for bank, row in zip(banks[last_of_bank].tolist(), rows[last_of_bank].tolist()):
            self.open_rows[bank] = row
        flags = np.empty(pages.size, dtype=bool)
        flags[order] = rows != previous
        return flags


def dram_energy_pj(dram: Dram, read_bytes: int, write_bytes: int, read_bursts: int, write_bursts: int,
                   activations: int) -> dict[str, float]:
    """The DRAM energy rule: activation (activate + precharge per row miss), read and write bursts,
    and bytes x `energy_pj_per_byte` (`transfer`); `total` is their sum."""
    energy = {
        "activation": activations * dram.activation_energy_pj,
        "read": read_bursts * dram.read_burst_energy_pj,
        "write": write_bursts * dram.write_burst_energy_pj,
        "transfer": (read_bytes + write_bytes) * dram.energy_pj_per_byte,
    }
    energy["total"] = sum(energy.values())
    return energy
