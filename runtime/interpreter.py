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

import heapq
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from nncc.runtime import isa
from nncc.runtime.dram import RowBuffers, dram_energy_pj
from nncc.runtime.dram_walk import ROLES, DramWalk, dram_sides
from nncc.runtime.faults import MachineFault
from nncc.runtime.memory import Fault, Memories
from nncc.runtime.program import LayoutError, Program, check_segment, check_symbol
from nncc.runtime.target import Dram
from nncc.runtime.semantics import SEMANTICS, dma
from nncc.runtime.timing import DmaModel, dma_launch_cores
from nncc.support import progress
from nncc.support.errors import NnccError


DRAM_ROLES = ROLES  # what a DRAM byte belongs to (runtime/dram_walk.py)


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


SEMANTICS_BY_TYPE = {isa.BY_MNEMONIC[mnemonic].tuple_type: function for mnemonic, function in SEMANTICS.items()}
"""Compute instructions' semantics by their tuple type (the others are DMAs: `semantics.dma`)."""


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
        self.layouts: dict[tuple, list] = {}  # DMAs' DRAM sides by their kind (`Effect.key`): `walk_dram`
        self.engines: dict[Any, str] = {}  # engine names by DMA channel or (core, unit): `engine_of`, found once
        self.barrier_time = 0
        self.launch_cycles = self.target.dma.launch_cycles
        self.owed: dict[int, int] = {}  # core -> DMA launch + wait cycles its next main instruction pays
        self.sequence = 0  # orders pending writes that complete in the same cycle
        self.result = RunResult(program, {})
        # accounting, summed up by `finish_accounts`: per layer (slot 0: before the first layer marker)
        self.tallies: list[dict[Any, int]] = [{}]  # instructions by kind (`Effect.key`)
        self.kinds: dict[Any, tuple] = {}  # a kind's (read bytes, write bytes, macs, ops): the same for all
        self.energies: dict[Any, float] = {}  # a compute kind's energy (pJ)
        self.dram_counters: list[DramCounters] = [self.result.dram]  # a layer's DRAM counters
        self.spans: list[list[int]] = [[-1, 0]]  # (first start, last end) of every layer
        self.dram_walk = DramWalk(RowBuffers(self.target.dram), program.symbols, self.dram_counters)

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
        engines = self.engines
        dma_engine = isa.Engine.DMA
        for index, ins in enumerate(self.program.instructions):
            definition = type(ins).DEF
            mnemonic = definition.mnemonic
            if mnemonic == "layer":
                result.layers.append(LayerStats(ins.name, ins.op, [n for n in ins.nodes.split(",") if n], ins.phase))
                self.tallies.append({})
                self.dram_counters.append(result.layers[-1].dram)
                self.spans.append([-1, 0])
                layer = len(result.layers) - 1
                self.task.advance(detail=ins.name)
            elif mnemonic == "barrier":
                self.drain(queues)
                self.synchronise_all()
                self.task.advance()
            else:
                where = ins.ch if definition.engine is dma_engine else (ins.core, ins.unit)
                engine = engines.get(where)
                if engine is None:
                    engine = engines[where] = engine_of(self.program, index, ins)
                queue = queues.get(engine)
                if queue is None:
                    queue = queues[engine] = deque()
                queue.append((index, ins, layer))
        self.drain(queues)
        self.flush(math.inf)
        self.dram_walk.count()
        self.finish_accounts()
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
        self.owed.clear()  # launches after a core's last instruction: not charged (timing.dma_launch_cores)

    def drain(self, queues: dict[str, deque]) -> None:
        """Run queued instructions, always the one that can start earliest (the lowest index among
        equals), until all are done. Event-driven: the start of every engine's first instruction is
        kept in `heads` and found again only when it can have changed (its engine ran, or a
        semaphore it waits on gained or lost a token)."""
        tokens = self.tokens
        free = self.free
        floor = self.barrier_time
        heads: dict[str, tuple[int, int, str]] = {}  # runnable engines: (start, index, engine) of their first
        waiters: dict[int, set[str]] = {}  # semaphore -> engines whose first instruction waits on it

        def look(engine: str) -> None:
            """(Re)find when `engine`'s first instruction can start; absent from `heads` while a
            semaphore it waits on has no token."""
            index, ins, _ = queues[engine][0]
            ready = free.get(engine, floor)
            for semaphore in ins.wait:
                available = tokens[semaphore]
                if not available:
                    heads.pop(engine, None)
                    return
                if available[0] > ready:
                    ready = available[0]
            heads[engine] = (ready, index, engine)

        def follow(engine: str) -> None:
            for semaphore in queues[engine][0][1].wait:
                waiters.setdefault(semaphore, set()).add(engine)
            look(engine)

        for engine in queues:
            follow(engine)
        execute = self.execute
        advance = self.task.advance
        done = 0
        while heads:
            start, index, engine = min(heads.values())
            queue = queues[engine]
            _, ins, layer = queue.popleft()
            wait, signal = ins.wait, ins.signal
            for semaphore in wait:
                heapq.heappop(tokens[semaphore])
                waiters[semaphore].discard(engine)
            end = execute(index, ins, engine, start, layer)
            free[engine] = end
            for semaphore in signal:
                heapq.heappush(tokens[semaphore], end)
            if queue:  # `follow` of its next instruction, which can start at `end` at the earliest
                index, ins, _ = queue[0]
                ready = end
                for semaphore in ins.wait:
                    waiters.setdefault(semaphore, set()).add(engine)
                    available = tokens[semaphore]
                    if not available:
                        ready = -1
                    elif ready >= 0 and available[0] > ready:
                        ready = available[0]
                if ready >= 0:
                    heads[engine] = (ready, index, engine)
                else:
                    del heads[engine]
            else:
                del queues[engine]
                del heads[engine]
            if wait or signal:
                for semaphore in (*wait, *signal):
                    for other in waiters.get(semaphore, ()):
                        look(other)
            done += 1
            if done == 4096:
                advance(done)
                done = 0
        if done:
            advance(done)
        if queues:
            raise self.deadlock(queues)

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
        pending = self.pending
        while pending and pending[0][0] <= start:  # `flush(start)`
            _, _, view, data = heapq.heappop(pending)
            view[...] = data
        semantics = SEMANTICS_BY_TYPE.get(type(ins), dma)
        try:
            if semantics is dma:
                effect = dma(self.memories, ins)  # checks the box's size before filling a padded box
                end = self.dma_model.finish_time(start, *effect.transfer)
                self.walk_dram(ins, effect.key, layer)
                if self.launch_cycles:
                    owed = self.owed
                    for core in dma_launch_cores(ins.dst[0], ins.cores, ins.src_core):
                        owed[core] = owed.get(core, 0) + self.launch_cycles
            else:
                effect = semantics(self.memories, ins)
                end = start + effect.cycles
                if self.owed and ins.unit == "main":
                    end += self.owed.pop(ins.core, 0)
                energy = self.energies.get(effect.key)
                if energy is None:
                    unit = self.target.units[ins.unit]
                    energy = self.energies[effect.key] = effect.macs * unit.mac_energy_pj + effect.ops * unit.op_energy_pj
                self.result.compute_energy_pj += energy
        except Fault as fault:
            raise MachineFault(index, type(ins).DEF.mnemonic, str(fault)) from None
        sequence = self.sequence
        for view, data in effect.writes:
            sequence += 1
            heapq.heappush(pending, (end, sequence, view, data))
        self.sequence = sequence
        # its engine's busy cycles, its layer's span, and one more of its kind (`Effect.key`: the
        # bytes and work of every instruction of the kind), multiplied out by `finish_accounts`
        result = self.result
        result.busy[engine] = result.busy.get(engine, 0) + end - start
        if end > result.cycles:
            result.cycles = end
        span = self.spans[layer + 1]
        if span[0] < 0 or start < span[0]:
            span[0] = start
        if end > span[1]:
            span[1] = end
        tally = self.tallies[layer + 1]
        count = tally.get(effect.key)
        if count is None:
            count = 0
            if effect.key not in self.kinds:
                self.kinds[effect.key] = (effect.read_bytes, effect.write_bytes, effect.macs, effect.ops)
        tally[effect.key] = count + 1
        if self.want_trace:
            name = self.result.layers[layer].name if layer >= 0 else ""
            self.result.trace.append(TraceEvent(engine, type(ins).DEF.mnemonic, index, start, end, name))
        return end

    def walk_dram(self, ins: Any, key: tuple, layer: int) -> None:
        """Record the DRAM sides of a DMA for its layer (`DramWalk` counts them in order). `key`:
        the DMA's kind (`Effect.key`: spaces, box, padding, strides, copies)."""
        sides = self.layouts.get(key)
        if sides is None:
            sides = self.layouts[key] = [(is_write, self.dram_walk.side(is_write, box, strides))
                                         for is_write, box, strides in dram_sides(*key[:6])]
        for is_write, side in sides:
            self.dram_walk.record(side, ins.dst[1] if is_write else ins.src[1], layer + 1)

    def finish_accounts(self) -> None:
        """The totals and every layer's figures from the tallies of instruction kinds."""
        result = self.result
        for slot, tally in enumerate(self.tallies):
            macs = ops = instructions = dram_read = dram_write = 0
            for key, count in tally.items():
                read_bytes, write_bytes, kind_macs, kind_ops = self.kinds[key]
                macs += count * kind_macs
                ops += count * kind_ops
                instructions += count
                for name, nbytes in read_bytes.items():
                    result.read_bytes[name] = result.read_bytes.get(name, 0) + count * nbytes
                for name, nbytes in write_bytes.items():
                    result.write_bytes[name] = result.write_bytes.get(name, 0) + count * nbytes
                dram_read += count * read_bytes.get("DRAM", 0)
                dram_write += count * write_bytes.get("DRAM", 0)
            result.macs += macs
            result.ops += ops
            if slot == 0:
                continue
            stats = result.layers[slot - 1]
            stats.start, stats.end = self.spans[slot]
            stats.macs, stats.ops, stats.instructions = macs, ops, instructions
            stats.dram_read_bytes, stats.dram_write_bytes = dram_read, dram_write
            total = result.dram
            total.read_bursts += stats.dram.read_bursts
            total.write_bursts += stats.dram.write_bursts
            total.activations += stats.dram.activations
            for role, (read, written) in stats.dram.role_bytes.items():
                total.role_bytes[role][0] += read
                total.role_bytes[role][1] += written


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
