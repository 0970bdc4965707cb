"""The timing model: how many cycles an instruction keeps its engine busy.

All times are integer cycles of the target clock. Formulas (docs/interpreter.md has the prose):

- vector unit, L lanes x F MAC units per lane, pipeline depth P:
    matmul        ceil(batch*m*k*ceil(n/L) / F)          (n on lanes, a[i,l] broadcast)
    elementwise   ceil(n0*n1*ceil(n2/L)*cost / F)        (last dimension on lanes)
  then max(that, ceil(bytes touched in memory M / bandwidth of M) for every M) + P
- matrix unit, R rows x C columns: matmul batch*m*ceil(k/R)*ceil(n/C) (+ memory bound, + P);
  it runs nothing else.
- DMA: latency (+ DRAM latency) + transfer; the transfer is limited by the channel, the on-chip
  memory's bandwidth and the DRAM bus, which serves transfers one after the other in start order
  (so concurrent transfers share DRAM bandwidth).
"""

from __future__ import annotations

import math

from nncc.runtime.target import ComputeUnit, Target


def ceil_div(a: float, b: float) -> int:
    return math.ceil(a / b)


def matmul_issue_cycles(unit: ComputeUnit, batch: int, m: int, n: int, k: int) -> int:
    if unit.kind == "matrix":
        return batch * m * ceil_div(k, unit.rows) * ceil_div(n, unit.cols)
    return ceil_div(batch * m * k * ceil_div(n, unit.lanes), unit.macs_per_lane)


def vector_issue_cycles(unit: ComputeUnit, shape: tuple[int, int, int], cost: int) -> int:
    n0, n1, n2 = shape
    return ceil_div(n0 * n1 * ceil_div(n2, unit.lanes) * cost, unit.macs_per_lane)


def memory_cycles(target: Target, traffic: dict[str, int]) -> int:
    """Cycles the on-chip memories need for `traffic` (bytes per memory name)."""
    cycles = 0
    for name, nbytes in traffic.items():
        if name != "DRAM" and nbytes:
            cycles = max(cycles, ceil_div(nbytes, target.memory(name).bandwidth_bytes_per_cycle))
    return cycles


class DmaModel:
    """DMA timing with a DRAM bus shared by all channels (first come, first served)."""

    def __init__(self, target: Target):
        self.target = target
        self.dram_free = 0
        self.dram_bytes_per_cycle = target.dram_bytes_per_cycle
        self.dram_latency = target.dram_latency_cycles

    def finish_time(self, start: int, src: str, dst: str, read_bytes: int, write_bytes: int) -> int:
        """End cycle of a transfer starting at `start` (write_bytes: one destination copy)."""
        dma = self.target.dma
        transfer = ceil_div(max(read_bytes, write_bytes), dma.bandwidth_bytes_per_cycle)
        onchip = {name: nbytes for name, nbytes in ((src, read_bytes), (dst, write_bytes)) if name != "DRAM"}
        transfer = max(transfer, memory_cycles(self.target, onchip))
        if "DRAM" not in (src, dst):
            return start + dma.latency_cycles + transfer
        latency = dma.latency_cycles + self.dram_latency
        dram_bytes = read_bytes if src == "DRAM" else write_bytes
        slot = max(start + latency, self.dram_free)
        self.dram_free = slot + ceil_div(dram_bytes, self.dram_bytes_per_cycle)
        return max(start + latency + transfer, self.dram_free)
