"""The timing model: how many cycles an instruction keeps its engine busy.

The one description of the machine's timing: the interpreter (`semantics`, `interpreter`) times
the instructions it executes with these functions, and the compiler's cost model
(`compiler/codegen/cost_model.py`) times the schedule it is about to emit with the same ones.

All times are integer cycles of the target clock. Formulas (docs/interpreter.md has the prose):

- vector unit, L lanes x F MAC units per lane, pipeline depth P:
    matmul        ceil(batch*m*k*ceil(n/L) / F)          (n on lanes, a[i,l] broadcast)
                  a bias/activation epilogue rides on the ALU slot: max(that, its passes)
    elementwise   ceil(n0*n1*ceil(n2/L)*cost / F)        (last dimension on lanes)
  then max(that, ceil(bytes touched in memory M / bandwidth of M) for every M) + P
- matrix unit, R rows x C columns: matmul batch*m*ceil(k/R)*ceil(n/C) (+ memory bound, + P);
  it runs nothing else.
- DMA: latency (+ DRAM latency) + transfer; the transfer is limited by the channel, the on-chip
  memory's bandwidth and the DRAM bus, which serves transfers one after the other in start order
  (so concurrent transfers share DRAM bandwidth). Padding is written, never read.

`compute_cycles` and `instruction_macs` read an instruction's operands through `operand(name,
default)` and the memory of a tile operand through `memory(ref)`, so that they time an `isa`
instruction (operands resolved to `(memory, address)`) and a scheduled compute whose operands
still name on-chip buffers alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from nncc.runtime import isa
from nncc.runtime.memory import footprint
from nncc.runtime.target import ComputeUnit, Target

F32 = 4

Operand = Callable[[str, Any], Any]  # (name, default) -> value


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


def matmul_epilogue_passes(operand: Operand) -> int:
    """Vector passes of a matmul's epilogue: 1 for the bias add, the activation's cost for act."""
    bias = operand("bias", None)
    act = operand("act", "none")
    return (bias is not None and bias != isa.NO_REF) + (isa.ACTIVATIONS[act] if act != "none" else 0)


def compute_traffic(mnemonic: str, operand: Operand) -> list[tuple[Any, int]]:
    """(tile operand, bytes) of every on-chip read and write of a compute instruction."""
    if mnemonic == "matmul":
        batch = operand("batch", 1)
        m, n, k = operand("mnk", None)
        c, c_stride = operand("c", None), operand("c_stride", None)
        out = [(operand("a", None), F32 * footprint((batch, m, k), operand("a_stride", None))),
               (operand("b", None), F32 * footprint((batch, k, n), operand("b_stride", None))),
               (c, F32 * footprint((batch, m, n), c_stride))]
        if operand("acc", 0):
            out.append(out[-1])
        bias = operand("bias", None)
        if bias is not None and bias != isa.NO_REF:
            out.append((bias, F32 * footprint((batch, m, n), operand("bias_stride", None))))
        return out
    shape = operand("shape", None)
    if mnemonic == "vpool":
        window = operand("window", None)
        return [(operand("x", None), F32 * footprint((*shape, *window),
                                                     (*operand("x_stride", None), *operand("win_stride", None)))),
                (operand("z", None), F32 * footprint(shape, operand("z_stride", None)))]
    if mnemonic == "vred":
        z = (operand("z", None), F32 * footprint((shape[0],), (operand("z_stride", 1),)))
        out = [(operand("x", None), F32 * footprint(shape, operand("x_stride", None))), z]
        return out + [z] if operand("acc", 0) else out
    return [(ref, F32 * footprint(shape, operand(f"{name}_stride", None)))
            for name in ("x", "y", "w", "z") if (ref := operand(name, None)) is not None]


def compute_issue_cycles(unit: ComputeUnit, mnemonic: str, operand: Operand) -> int:
    """Issue cycles of a compute instruction on `unit`, memories aside."""
    if mnemonic == "matmul":
        batch = operand("batch", 1)
        m, n, k = operand("mnk", None)
        issue = matmul_issue_cycles(unit, batch, m, n, k)
        epilogue = matmul_epilogue_passes(operand)
        if epilogue:  # on the ALU slot, beside the MACs
            issue = max(issue, vector_issue_cycles(unit, (batch, m, n), epilogue))
        return issue
    shape = operand("shape", None)
    if mnemonic == "vpool":
        window = operand("window", None)
        cost = window[0] * window[1]
    elif mnemonic == "vact":
        cost = isa.ACTIVATIONS[operand("func", None)]
    elif mnemonic in ("vred", "vfma", "vfill"):
        cost = 1
    else:
        cost = isa.BINARY_COST.get(mnemonic, 1)
    return vector_issue_cycles(unit, shape, cost)


def compute_cycles(target: Target, mnemonic: str, operand: Operand, memory: Callable[[Any], str]) -> int:
    """Busy cycles of a compute instruction: max(issue, on-chip bytes / bandwidth) + pipeline depth."""
    unit = target.units[operand("unit", "main")]
    traffic: dict[str, int] = {}
    for ref, nbytes in compute_traffic(mnemonic, operand):
        name = memory(ref)
        traffic[name] = traffic.get(name, 0) + nbytes
    return max(compute_issue_cycles(unit, mnemonic, operand), memory_cycles(target, traffic)) + unit.pipeline_depth


def instruction_macs(mnemonic: str, operand: Operand) -> int:
    """Multiply-accumulates of a compute instruction (a matmul's, a vfma's one per element)."""
    if mnemonic == "matmul":
        m, n, k = operand("mnk", None)
        return operand("batch", 1) * m * n * k
    if mnemonic == "vfma":
        n0, n1, n2 = operand("shape", None)
        return n0 * n1 * n2
    return 0


def transfer_bytes(shape: tuple[int, int, int], pad: tuple[int, ...]) -> tuple[int, int]:
    """(bytes a DMA box reads, bytes it writes per destination copy): padding is written, not read."""
    inner = 1
    for d, n in enumerate(shape):
        inner *= n - pad[2 * d] - pad[2 * d + 1]
    return F32 * inner, F32 * shape[0] * shape[1] * shape[2]


class DmaModel:
    """DMA timing with a DRAM bus shared by all channels (first come, first served)."""

    def __init__(self, target: Target):
        self.target = target
        self.dram_free = 0
        self.dram_bytes_per_cycle = target.dram_bytes_per_cycle
        self.dram_latency = target.dram_latency_cycles
        self.channel_bandwidth = target.dma.bandwidth_bytes_per_cycle
        self.latency = target.dma.latency_cycles
        self.bandwidth = {memory.name: memory.bandwidth_bytes_per_cycle for memory in target.memories}
        self.durations: dict[tuple, tuple[int, int, int | None]] = {}  # transfers repeat: timed once

    def duration(self, src: str, dst: str, read_bytes: int, write_bytes: int) -> tuple[int, int, int | None]:
        """(latency, transfer cycles, DRAM bus cycles or None) of a transfer, whenever it starts."""
        transfer = ceil_div(max(read_bytes, write_bytes), self.channel_bandwidth)
        for name, nbytes in ((src, read_bytes), (dst, write_bytes)):  # the on-chip side(s)
            if name != "DRAM" and nbytes:
                transfer = max(transfer, ceil_div(nbytes, self.bandwidth[name]))
        if src != "DRAM" and dst != "DRAM":
            return self.latency, transfer, None
        dram_bytes = read_bytes if src == "DRAM" else write_bytes
        return self.latency + self.dram_latency, transfer, ceil_div(dram_bytes, self.dram_bytes_per_cycle)

    def finish_time(self, start: int, src: str, dst: str, read_bytes: int, write_bytes: int) -> int:
        """End cycle of a transfer starting at `start` (write_bytes: one destination copy)."""
        key = (src, dst, read_bytes, write_bytes)
        found = self.durations.get(key)
        if found is None:
            found = self.durations[key] = self.duration(src, dst, read_bytes, write_bytes)
        latency, transfer, bus = found
        if bus is None:
            return start + latency + transfer
        slot = start + latency
        if slot < self.dram_free:
            slot = self.dram_free
        self.dram_free = slot + bus
        end = start + latency + transfer
        return end if end > self.dram_free else self.dram_free
