"""The interpreter: runs a `Program` on simulated memories with per-engine timelines.

Engines are the DMA channels (``dma0``...) and the compute units of every core (``core0.main``,
``core0.pre``, ``core0.post``). Each engine executes its instructions in program order. An
instruction starts when its engine is free and a token is available on every semaphore it waits on;
it reads its operands at its start and its writes land at its end. The dispatcher always runs the
instruction that can start earliest, so the memories see reads and writes in simulated-time order:
a program that forgets a synchronisation reads stale data, as real hardware would.

    result = run(program, {"x": x})
    result.outputs["y"], result.cycles, result.macs, result.energy_pj
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from nncc.runtime import isa
from nncc.runtime.dram import RowBuffers, access_runs, contiguous_bytes, dram_energy_pj, dram_order
from nncc.runtime.faults import MachineFault
from nncc.runtime.memory import Fault, Memories, check_tile_size
from nncc.runtime.program import LayoutError, Program, check_segment, check_symbol
from nncc.runtime.target import Dram
from nncc.runtime.semantics import SEMANTICS, Effect, dma
from nncc.runtime.timing import DmaModel
from nncc.support import progress
from nncc.support.errors import NnccError


DRAM_ROLES = ("input", "weight", "output", "intermediate")
"""What a DRAM byte belongs to: a program symbol of that kind, else `intermediate` (feature maps
between layers, and anything a layer spills)."""


@dataclass
class DramCounters:
    """DRAM bursts, row-buffer misses (activations) and bytes by role (runtime/dram.py)."""

    read_bursts: int = 0
    write_bursts: int = 0
    activations: int = 0
    role_bytes: dict[str, list[int]] = field(default_factory=lambda: {role: [0, 0] for role in DRAM_ROLES})

    @property
    def bursts(self) -> int:
        return self.read_bursts + self.write_bursts

    @property
    def hits(self) -> int:
        return self.bursts - self.activations

    @property
    def hit_rate(self) -> float:
        return self.hits / self.bursts if self.bursts else 0.0

    def add(self, is_write: bool, bursts: int, misses: int, role: str, nbytes: int) -> None:
        if is_write:
            self.write_bursts += bursts
        else:
            self.read_bursts += bursts
        self.activations += misses
        self.role_bytes[role][is_write] += nbytes

    def energy_pj(self, dram: Dram) -> dict[str, float]:
        read = sum(pair[0] for pair in self.role_bytes.values())
        written = sum(pair[1] for pair in self.role_bytes.values())
        return dram_energy_pj(dram, read, written, self.read_bursts, self.write_bursts, self.activations)


@dataclass
class LayerStats:
    name: str
    op: str
    onnx_nodes: list[str]
    phase: str
    start: int = -1
    end: int = 0
    macs: int = 0
    ops: int = 0
    instructions: int = 0
    dram_read_bytes: int = 0
    dram_write_bytes: int = 0
    dram: DramCounters = field(default_factory=lambda: DramCounters())

    @property
    def cycles(self) -> int:
        return max(0, self.end - self.start) if self.start >= 0 else 0


@dataclass
class TraceEvent:
    engine: str
    mnemonic: str
    index: int
    start: int
    end: int
    layer: str


@dataclass
class RunResult:
    """Outputs and counters of one run."""

    program: Program
    outputs: dict[str, np.ndarray]
    cycles: int = 0
    macs: int = 0
    ops: int = 0
    instructions: int = 0
    read_bytes: dict[str, int] = field(default_factory=dict)  # per memory name, DRAM included
    write_bytes: dict[str, int] = field(default_factory=dict)
    busy: dict[str, int] = field(default_factory=dict)  # per engine
    dram: DramCounters = field(default_factory=DramCounters)  # bursts, row misses, bytes by role
    compute_energy_pj: float = 0.0
    layers: list[LayerStats] = field(default_factory=list)
    trace: list[TraceEvent] = field(default_factory=list)

    @property
    def mac_utilization(self) -> float:
        return self.macs / (self.cycles * self.program.target.mac_units) if self.cycles else 0.0

    @property
    def dram_activations(self) -> int:
        return self.dram.activations

    @property
    def dram_energy_pj(self) -> dict[str, float]:
        """DRAM energy: activation, read, write, transfer (bytes x energy_pj_per_byte), total."""
        return self.dram.energy_pj(self.program.target.dram)

    @property
    def energy_pj(self) -> dict[str, float]:
        target = self.program.target
        dram = self.dram_energy_pj["total"]
        onchip = 0.0
        for memory in target.memories:
            onchip += self.read_bytes.get(memory.name, 0) / memory.word_bytes * memory.read_energy_pj
            onchip += self.write_bytes.get(memory.name, 0) / memory.word_bytes * memory.write_energy_pj
        return {"dram": dram, "onchip": onchip, "compute": self.compute_energy_pj,
                "total": dram + onchip + self.compute_energy_pj}  # fmt: skip


def engine_of(program: Program, index: int, ins: Any) -> str:
    """The engine that executes `ins` (faults if the target lacks it)."""
    definition = isa.definition_of(ins)
    target = program.target
    if definition.engine == isa.Engine.DMA:
        if ins.ch >= target.dma.channels:
            raise MachineFault(index, "dma", f"DMA channel {ins.ch} does not exist (target has {target.dma.channels})")
        return f"dma{ins.ch}"
    if ins.core >= target.cores:
        raise MachineFault(index, definition.mnemonic, f"core {ins.core} does not exist (target has {target.cores})")
    if ins.unit not in target.units:
        raise MachineFault(index, definition.mnemonic, f"target {target.name} has no {ins.unit} unit")
    return f"core{ins.core}.{ins.unit}"


class Interpreter:
    def __init__(self, program: Program, trace: bool = False, task: Any = progress.NULL_TASK):
        self.program = program
        self.task = task  # counts every instruction: markers when dispatched, the others when executed
        self.target = program.target
        try:
            self.memories = Memories(self.target, _dram_size(program))
        except (Fault, LayoutError) as error:
            raise MachineFault(0, "header", str(error)) from None
        self.dma_model = DmaModel(self.target)
        self.want_trace = trace
        self.tokens: list[list[int]] = [[] for _ in range(isa.MAX_SEMAPHORES)]
        self.free: dict[str, int] = {}
        self.pending: list[tuple[int, int, np.ndarray, np.ndarray]] = []
        self.rows = RowBuffers(self.target.dram)
        self.layouts: dict[tuple, tuple] = {}  # DMA boxes' DRAM runs by (box, strides): `dram_layout`
        regions = sorted((s.addr, s.addr + s.nbytes, s.kind) for s in program.symbols)
        self.region_starts = [start for start, _, _ in regions]
        self.regions = regions
        self.barrier_time = 0
        self.sequence = 0  # orders pending writes that complete in the same cycle
        self.result = RunResult(program, {})

    # ---- inputs and outputs

    def load_image(self, inputs: Mapping[str, np.ndarray]) -> None:
        """The DRAM image, then the inputs (and any weights given) by symbol name: every input
        must be given, and every name given must be an input or a weight of the program."""
        symbols = {s.name: s for s in self.program.symbols if s.kind != "output"}
        missing = [s.name for s in self.program.symbols_of("input") if s.name not in inputs]
        if missing:
            raise NnccError(f"missing input(s): {', '.join(missing)}")
        unknown = [name for name in inputs if name not in symbols]
        if unknown:
            names = ", ".join(s.name for s in self.program.symbols_of("input"))
            raise NnccError(f"{', '.join(unknown)}: not an input of the program (its inputs: {names})")
        for addr, chunk in self.program.data:
            self.memories.write_dram(addr, np.frombuffer(chunk, dtype="<f4"))
        for symbol in self.program.symbols:
            if symbol.kind == "output" or symbol.name not in inputs:
                continue  # weights not given keep their initial DRAM image
            value = np.asarray(inputs[symbol.name], dtype=np.float32)
            if value.shape != symbol.shape:
                raise NnccError(f"input {symbol.name}: shape {value.shape} does not match the program's {symbol.shape}")
            self.memories.write_dram(symbol.addr, value)

    def read_outputs(self) -> dict[str, np.ndarray]:
        return {
            s.name: self.memories.read_dram(s.addr, s.shape)
            for s in self.program.symbols
            if s.kind == "output" or (s.kind == "weight" and self.program.mode == "training")
        }

    # ---- the dispatcher

    def run(self, inputs: Mapping[str, np.ndarray]) -> RunResult:
        self.load_image(inputs)
        queues: dict[str, deque] = {}
        layer = -1
        result = self.result
        for index, ins in enumerate(self.program.instructions):
            mnemonic = type(ins).DEF.mnemonic
            if mnemonic == "layer":
                result.layers.append(LayerStats(ins.name, ins.op, [n for n in ins.nodes.split(",") if n], ins.phase))
                layer = len(result.layers) - 1
                self.task.advance(detail=ins.name)
            elif mnemonic == "barrier":
                self.drain(queues)
                self.synchronise_all()
                self.task.advance()
            else:
                queues.setdefault(engine_of(self.program, index, ins), deque()).append((index, ins, layer))
        self.drain(queues)
        self.flush(math.inf)
        result.instructions = len(self.program.instructions)
        result.outputs = self.read_outputs()
        return result

    def synchronise_all(self) -> None:
        """A barrier: every engine waits for the last one, plus the target's `barrier_cycles`."""
        latest = max(self.free.values(), default=0) + self.target.barrier_cycles
        for engine in self.free:
            self.free[engine] = latest
        self.flush(latest)
        self.barrier_time = latest

    def drain(self, queues: dict[str, deque]) -> None:
        """Run queued instructions, always the one that can start earliest, until all are done."""
        tokens = self.tokens
        free = self.free
        floor = self.barrier_time
        advance = self.task.advance
        while queues:
            engine = None
            start = index = 0
            for candidate, queue in queues.items():
                at, ins, _ = queue[0]
                ready = free.get(candidate, floor)
                for semaphore in ins.wait:
                    available = tokens[semaphore]
                    if not available:
                        break
                    if available[0] > ready:
                        ready = available[0]
                else:
                    if engine is None or ready < start or (ready == start and at < index):
                        engine, start, index = candidate, ready, at
            if engine is None:
                raise self.deadlock(queues)
            queue = queues[engine]
            _, ins, layer = queue.popleft()
            if not queue:
                del queues[engine]
            for semaphore in ins.wait:
                heapq.heappop(tokens[semaphore])
            end = self.execute(index, ins, engine, start, layer)
            advance()
            free[engine] = end
            for semaphore in ins.signal:
                heapq.heappush(tokens[semaphore], end)

    def deadlock(self, queues: dict[str, deque]) -> MachineFault:
        index, ins, _ = min(queue[0] for queue in queues.values())
        missing = [s for s in ins.wait if not self.tokens[s]]
        return MachineFault(
            index, type(ins).DEF.mnemonic,
            f"deadlock: waits on semaphore {missing[0]}, which no runnable instruction will signal",
        )  # fmt: skip

    def flush(self, time: float) -> None:
        """Apply every pending write that completes at or before `time`."""
        pending = self.pending
        while pending and pending[0][0] <= time:
            _, _, view, data = heapq.heappop(pending)
            view[...] = data

    def execute(self, index: int, ins: Any, engine: str, start: int, layer: int) -> int:
        self.flush(start)
        mnemonic = type(ins).DEF.mnemonic
        try:
            if mnemonic == "dma":
                check_tile_size(ins.shape, "dma box")  # before dma() fills a padded box of that shape
                effect = dma(self.memories, ins)
                end = self.dma_model.finish_time(start, *effect.transfer)
                self.walk_dram(ins, layer)
            else:
                effect = SEMANTICS[mnemonic](self.memories, ins)
                end = start + effect.cycles
                unit = self.target.units[ins.unit]
                self.result.compute_energy_pj += effect.macs * unit.mac_energy_pj + effect.ops * unit.op_energy_pj
        except Fault as fault:
            raise MachineFault(index, mnemonic, str(fault)) from None
        for view, data in effect.writes:
            self.sequence += 1
            heapq.heappush(self.pending, (end, self.sequence, view, data))
        self.account(effect, engine, start, end, layer)
        if self.want_trace:
            name = self.result.layers[layer].name if layer >= 0 else ""
            self.result.trace.append(TraceEvent(engine, mnemonic, index, start, end, name))
        return end

    def walk_dram(self, ins: Any, layer: int) -> None:
        """The DRAM side of a DMA through the row buffers (runtime/dram.py), counted in total and
        for its layer, its bytes by the role of the symbol they belong to."""
        sides = []
        src_space, src_addr = ins.src
        if src_space == "DRAM":
            pad = ins.pad
            inner = tuple(n - pad[2 * d] - pad[2 * d + 1] for d, n in enumerate(ins.shape))
            if min(inner) > 0:
                sides.append((False, src_addr, inner, ins.src_stride))
        dst_space, dst_addr = ins.dst
        if dst_space == "DRAM":
            sides.append((True, dst_addr, ins.shape, ins.dst_stride))
        for is_write, addr, box, box_strides in sides:
            key = (box, box_strides)
            layout = self.layouts.get(key)
            if layout is None:
                layout = self.layouts[key] = dram_layout(box, box_strides)
            nbytes, offsets, lengths, span = layout
            if nbytes is not None:  # one run: no arrays
                bursts, misses = self.rows.walk_contiguous(addr, nbytes)
                roles = self.roles_of_range(addr, nbytes)
            else:
                bursts, misses = self.rows.walk_box(addr, offsets, lengths, key)
                whole = self.roles_of_range(addr + span[0], span[1] - span[0])
                roles = [(whole[0][0], span[2])] if whole is not None else None
            if roles is None:
                roles = self.roles(addr + offsets, lengths)
            counters = [self.result.dram] + ([self.result.layers[layer].dram] if layer >= 0 else [])
            for role, nbytes in roles:
                for counter in counters:
                    counter.add(is_write, bursts, misses, role, nbytes)
                bursts = misses = 0  # counted once, with the first role

    def roles_of_range(self, lo: int, nbytes: int) -> list[tuple[str, int]] | None:
        """(role, bytes) of the bytes [lo, lo + nbytes) when they are all in one symbol or all in no
        symbol; else None."""
        hi = lo + nbytes
        index = bisect.bisect_right(self.region_starts, lo) - 1
        if index >= 0 and hi <= self.regions[index][1]:
            return [(self.regions[index][2], nbytes)]
        following = index + 1
        if (following >= len(self.regions) or hi <= self.regions[following][0]) and \
                (index < 0 or lo >= self.regions[index][1]):
            return [("intermediate", nbytes)]
        return None

    def roles(self, starts: np.ndarray, lengths: np.ndarray) -> list[tuple[str, int]]:
        """(role, bytes) of an access's runs: the kind of the symbol each byte is in, else intermediate."""
        lo, hi = int(starts.min()), int((starts + lengths).max())
        whole = self.roles_of_range(lo, hi - lo)
        if whole is not None:
            return [(whole[0][0], int(lengths.sum()))]
        found: dict[str, int] = {}  # the access spans several regions: run by run, byte-exact
        for run_start, length in zip(starts.tolist(), lengths.tolist()):
            position, end = run_start, run_start + length
            while position < end:
                k = bisect.bisect_right(self.region_starts, position) - 1
                if k >= 0 and position < self.regions[k][1]:
                    stop, role = min(end, self.regions[k][1]), self.regions[k][2]
                else:
                    stop = min(end, self.region_starts[k + 1]) if k + 1 < len(self.regions) else end
                    role = "intermediate"
                found[role] = found.get(role, 0) + stop - position
                position = stop
        return list(found.items())

    def account(self, effect: Effect, engine: str, start: int, end: int, layer: int) -> None:
        result = self.result
        result.macs += effect.macs
        result.ops += effect.ops
        result.busy[engine] = result.busy.get(engine, 0) + end - start
        result.cycles = max(result.cycles, end)
        for name, nbytes in effect.read_bytes.items():
            result.read_bytes[name] = result.read_bytes.get(name, 0) + nbytes
        for name, nbytes in effect.write_bytes.items():
            result.write_bytes[name] = result.write_bytes.get(name, 0) + nbytes
        if layer >= 0:
            stats = result.layers[layer]
            stats.start = start if stats.start < 0 else min(stats.start, start)
            stats.end = max(stats.end, end)
            stats.macs += effect.macs
            stats.ops += effect.ops
            stats.instructions += 1
            stats.dram_read_bytes += effect.read_bytes.get("DRAM", 0)
            stats.dram_write_bytes += effect.write_bytes.get("DRAM", 0)


def dram_layout(box: tuple[int, ...], box_strides: tuple[int, ...]) -> tuple:
    """A DMA's DRAM side relative to its address, walked in `dram_order`: (bytes if one contiguous
    run else None, run offsets, run lengths, (first byte, end, bytes) of the runs)."""
    shape, strides = dram_order(box, box_strides)
    offsets, lengths = access_runs(0, shape, strides)
    span = (int(offsets.min()), int((offsets + lengths).max()), int(lengths.sum()))
    return contiguous_bytes(shape, strides), offsets, lengths, span


def _dram_size(program: Program) -> int:
    """DRAM bytes to cover the program's DRAM size, data and symbols (`LayoutError` if one is bad)."""
    size = program.dram_bytes
    for addr, chunk in program.data:
        check_segment(addr, len(chunk))
        size = max(size, addr + len(chunk))
    for symbol in program.symbols:
        check_symbol(symbol)
        size = max(size, symbol.addr + symbol.nbytes)
    if size > program.target.dram.size_bytes:
        raise MachineFault(0, "header", f"program needs {size} bytes of DRAM; target has {program.target.dram.size_bytes}")
    return (size + 3) // 4 * 4


def random_inputs(program: Program, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded standard-normal values for every input symbol."""
    rng = np.random.default_rng(seed)
    return {s.name: rng.standard_normal(s.shape).astype(np.float32) for s in program.symbols_of("input")}


def run(program: Program, inputs: Mapping[str, np.ndarray] | None = None, trace: bool = False) -> RunResult:
    """Execute `program`; `inputs` by symbol name (seeded random values when None).

    Weights may be given too (they replace the initial DRAM image).

    Raises `MachineFault` for a bad program and `NnccError` for bad inputs.
    """
    if inputs is None:
        inputs = random_inputs(program)
    # one BLAS thread: a matmul instruction is small, and several BLAS threads on a busy machine
    # spin against each other (a 54 x 224 x 256 matmul: 90 us alone, 16 ms with 14 processes on 2 cores)
    with threadpool_limits(1, user_api="blas"), \
            progress.stage("simulation", total=len(program.instructions), unit="instructions") as task:
        return Interpreter(program, trace, task).run(inputs)
