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
from nncc.runtime.dram import dram_order
from nncc.runtime.memory import footprint
from nncc.runtime.target import ComputeUnit, Target

F32 = 4

Operand = Callable[[str, Any], Any]  # (name, default) -> value


def ceil_div(a: float, b: float) -> int:
    return math.ceil(a / b)


def matmul_issue_cycles(unit: ComputeUnit, batch: int, m: int, n: int, k: int, acc: int = 0,
                        staged: bool = False, broadcast_bytes: int = 0) -> int:
    """Issue cycles of a matmul: MACs over the unit's MAC units, or, on a vector unit with the
    micro-kernel rules, its kernel calls (`matmul_kernel_cycles`)."""
    if unit.kind == "matrix":
        return batch * m * ceil_div(k, unit.rows) * ceil_div(n, unit.cols)
    if unit.micro_kernel:
        return batch * matmul_kernel_cycles(unit, m, ceil_div(n, unit.lanes), k, acc, staged, broadcast_bytes)
    return ceil_div(batch * m * k * ceil_div(n, unit.lanes), unit.macs_per_lane)


def kernel_calls(unit: ComputeUnit, m: int, vectors: int) -> list[tuple[int, int, int]]:
    """(calls, rows, vectors) of the micro-kernel calls covering an m x `vectors` block of c: row
    blocks of `kernel_rows` (and one of the rest), each split into as few calls as the registers
    allow (rows x v accumulators + 2 v double-buffered rows of b), of balanced widths."""
    blocks = [(m // unit.kernel_rows, unit.kernel_rows), (1, m % unit.kernel_rows)]
    calls = []
    for count, rows in blocks:
        if count and rows:
            widest = unit.vector_registers // (rows + 2)
            chunks = ceil_div(vectors, widest)
            base, extra = divmod(vectors, chunks)
            calls += [(count * extra, rows, base + 1), (count * (chunks - extra), rows, base)]
    return [call for call in calls if call[0]]


def kernel_accesses(unit: ComputeUnit, batch: int, m: int, n: int, k: int) -> tuple[int, int]:
    """(passes over b, bytes of broadcast-operand reads) of a micro-kernel matmul: every row block
    reads all of b; every call reads its rows x k of the broadcast operand."""
    calls = kernel_calls(unit, m, ceil_div(n, unit.lanes))
    return ceil_div(m, unit.kernel_rows), batch * sum(F32 * count * rows * k for count, rows, _ in calls)


def kernel_step_cycles(unit: ComputeUnit, rows: int, vectors: int) -> int:
    """Cycles of one step of k in a call: its vector FMAs on the FMAC units, but no sooner than the
    FMA latency (each accumulator waits for its previous FMA), nor than its loads of b (register
    pairs: `load_store_vectors`)."""
    return max(ceil_div(rows * vectors, unit.macs_per_lane), unit.fma_latency,
               ceil_div(vectors, load_store_vectors(unit)))


def load_store_vectors(unit: ComputeUnit) -> int:
    """Vector registers the load/store units move per cycle: each unit a register pair
    (`VLDDW`/`VSTDW`) when `load_store_registers` = 2."""
    return unit.load_store_units * unit.load_store_registers


def kernel_c_cycles(unit: ComputeUnit, vectors: int, acc: int) -> int:
    """Cycles a call's c loads (when it accumulates) and stores add to its fill/drain: the
    fill/drain already holds those of the smallest call that hides the FMA latency (`fma_latency`
    x `macs_per_lane` accumulators, loaded and stored: the library's 6 x 3-vector kernel loads and
    stores its 18 c vectors inside its 26 cycles), so only a wider call's surplus costs.
    vector: 6 x 3 accumulating 0, 6 x 4 accumulating ceil(48 / 4) - ceil(36 / 4) = 3."""
    per_cycle = load_store_vectors(unit)
    covered = ceil_div(2 * unit.fma_latency * unit.macs_per_lane, per_cycle)
    return max(0, ceil_div(vectors * (1 + acc), per_cycle) - covered)


def matmul_kernel_cycles(unit: ComputeUnit, m: int, vectors: int, k: int, acc: int, staged: bool,
                         broadcast_bytes: int) -> int:
    """One matmul as micro-kernel calls: per call k steps + fill/drain + the call's jump
    (`kernel_call_cycles`) + the c traffic its fill/drain does not hold (`kernel_c_cycles`). With
    `staged`, the broadcast operand is copied into the broadcast memory first (`broadcast_panels`),
    each panel costing the core `broadcast_stage_cycles`; a row block longer than a panel splits its
    calls in as many (the later ones accumulate into c).
    vector, 6 x 48 x 64, a in SM, not accumulating: 64 x 6 + 26 + 7 + 0 = 417 cycles."""
    total = 0
    for calls, rows, width in kernel_calls(unit, m, vectors):
        pieces = ceil_div(F32 * rows * k, broadcast_bytes) if staged else 1
        c_words = rows * width
        per_call = (k * kernel_step_cycles(unit, rows, width)
                    + pieces * (unit.kernel_fill_drain + unit.kernel_call_cycles)
                    + kernel_c_cycles(unit, c_words, acc) + (pieces - 1) * kernel_c_cycles(unit, c_words, 1))
        total += calls * per_call
    if staged:
        total += broadcast_panels(unit, m, k, broadcast_bytes) * unit.broadcast_stage_cycles
    return total


def broadcast_panels(unit: ComputeUnit, m: int, k: int, broadcast_bytes: int) -> int:
    """DMAs that stage an m x k broadcast operand into the broadcast memory, each at most
    `broadcast_bytes` (half the memory: double-buffered): as many whole row blocks of
    `kernel_rows` x k per panel as fit (the library's M_S rows per SM tile, Yu et al. 2024 Table I:
    2 M_S K_A words <= SM), or, when one row block does not fit, each row block in pieces of k.
    m = 600, k = 512: 12 KiB per 6-row block, 2 per 32 KiB panel: 50 panels."""
    block = F32 * unit.kernel_rows * k
    if block <= broadcast_bytes:
        return ceil_div(ceil_div(m, unit.kernel_rows), broadcast_bytes // block)
    return sum(count * ceil_div(F32 * rows * k, broadcast_bytes)
               for count, rows in ((m // unit.kernel_rows, unit.kernel_rows), (1, m % unit.kernel_rows)) if count and rows)


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


def compute_issue_cycles(unit: ComputeUnit, mnemonic: str, operand: Operand, staged: bool = False,
                         broadcast_bytes: int = 0) -> int:
    """Issue cycles of a compute instruction on `unit`, memories aside."""
    if mnemonic == "matmul":
        batch = operand("batch", 1)
        m, n, k = operand("mnk", None)
        issue = matmul_issue_cycles(unit, batch, m, n, k, operand("acc", 0), staged, broadcast_bytes)
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
    """Busy cycles of a compute instruction: max(issue, on-chip bytes / bandwidth) + pipeline depth;
    a micro-kernel matmul: its calls (which count their own loads, stores and fill/drain)."""
    unit = target.units[operand("unit", "main")]
    if mnemonic == "matmul" and unit.micro_kernel:
        staged = memory(operand("a", None)) != unit.broadcast_memory
        half = target.memory(unit.broadcast_memory).size_bytes // 2
        return compute_issue_cycles(unit, mnemonic, operand, staged, half)
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


def dram_runs(shape: tuple[int, int, int], strides: tuple[int, int, int]) -> tuple[int, int]:
    """(runs, bytes per run) of the DRAM side of a DMA: its box walked in DRAM order (the smallest
    stride innermost, `dram.dram_order`), dimensions merged while they are contiguous."""
    shape, strides = dram_order(shape, strides)
    elements, runs, contiguous = 1, 1, True
    for n, stride in zip(reversed(shape), reversed(strides)):
        if n == 1:
            continue
        if contiguous and stride == elements:
            elements *= n
        else:
            contiguous = False
            runs *= n
    return runs, F32 * elements


def dram_bus_cycles(target: Target, nbytes: int, runs: tuple[int, int] | None) -> int:
    """Cycles the DRAM bus spends on one DMA side of `nbytes` in `runs` (count, bytes per run).
    With `dram.burst_timing`: every run moves whole bursts at the sustained bandwidth, and costs
    at least `run_cycles` (one request per run at the far end); else bytes / peak bandwidth."""
    dram = target.dram
    if not dram.burst_timing or runs is None:
        return ceil_div(nbytes, target.dram_bytes_per_cycle)
    count, run_bytes = runs
    bursts = count * ceil_div(run_bytes, dram.burst_bytes)
    return max(ceil_div(bursts * dram.burst_bytes, target.dram_bytes_per_cycle * dram.sustained_fraction),
               count * dram.run_cycles)


class DmaModel:
    """DMA timing with a DRAM bus shared by all channels (first come, first served)."""

    def __init__(self, target: Target):
        self.target = target
        self.dram_free = 0
        self.dram_latency = target.dram_latency_cycles
        self.channel_bandwidth = target.dma.bandwidth_bytes_per_cycle
        self.latency = target.dma.latency_cycles
        self.broadcast = target.dma.broadcast
        self.bandwidth = {memory.name: memory.bandwidth_bytes_per_cycle for memory in target.memories}
        self.durations: dict[tuple, tuple[int, int, int | None]] = {}  # transfers repeat: timed once

    def duration(self, src: str, dst: str, read_bytes: int, write_bytes: int, copies: int = 1,
                 runs: tuple[int, int] | None = None) -> tuple[int, int, int | None]:
        """(latency, transfer cycles, DRAM bus cycles or None) of a transfer, whenever it starts.
        A multicast to `copies` cores writes them one after another unless `dma.broadcast`."""
        written = write_bytes * (1 if self.broadcast else copies)
        transfer = ceil_div(max(read_bytes, written), self.channel_bandwidth)
        for name, nbytes in ((src, read_bytes), (dst, write_bytes)):  # the on-chip side(s)
            if name != "DRAM" and nbytes:
                transfer = max(transfer, ceil_div(nbytes, self.bandwidth[name]))
        if src != "DRAM" and dst != "DRAM":
            return self.latency, transfer, None
        dram_bytes = read_bytes if src == "DRAM" else write_bytes
        return self.latency + self.dram_latency, transfer, dram_bus_cycles(self.target, dram_bytes, runs)

    def finish_time(self, start: int, src: str, dst: str, read_bytes: int, write_bytes: int, copies: int = 1,
                    runs: tuple[int, int] | None = None) -> int:
        """End cycle of a transfer starting at `start` (write_bytes: one destination copy; runs: its
        DRAM side's `dram_runs`)."""
        key = (src, dst, read_bytes, write_bytes, copies, runs)
        found = self.durations.get(key)
        if found is None:
            found = self.durations[key] = self.duration(src, dst, read_bytes, write_bytes, copies, runs)
        latency, transfer, bus = found
        if bus is None:
            return start + latency + transfer
        slot = start + latency
        if slot < self.dram_free:
            slot = self.dram_free
        self.dram_free = slot + bus
        end = start + latency + transfer
        return end if end > self.dram_free else self.dram_free


def dma_launch_cores(dst: str, cores: tuple[int, ...], src_core: int) -> tuple[int, ...]:
    """The cores that launch a DMA and wait for it, each paying `dma.launch_cycles` on its main
    unit (its next compute instruction takes that much longer; a layer's last ones, with no
    instruction after them, are not charged): a store's source core, else every destination core
    (`cores`; one for a shared memory). Yu et al. 2024 Eq. 9: one launch + wait (T5) per B load,
    C load and C store.  dma AM(core 2) -> DRAM: (2,); DRAM -> AM cores=0,1: (0, 1)."""
    return (src_core,) if dst == "DRAM" else cores


def dma_payload(src: str, dst: str, shape, pad, src_stride, dst_stride, copies: int) -> tuple:
    """The arguments of `DmaModel.finish_time` after the start: what a DMA's timing depends on."""
    read, written = transfer_bytes(shape, pad)
    runs = None
    if src == "DRAM":
        inner = tuple(n - pad[2 * d] - pad[2 * d + 1] for d, n in enumerate(shape))
        runs = dram_runs(inner, src_stride)
    elif dst == "DRAM":
        runs = dram_runs(shape, dst_stride)
    return src, dst, read, written, copies, runs
