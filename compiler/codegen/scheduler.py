"""Tile jobs -> synchronised, double-buffered instructions.

An op's code generator describes its work as a list of `Job`s: which data each job
needs in which on-chip buffer (`buffers`: kind -> key), the DMAs that fill a buffer
(`loads`) or empty it (`stores`), and the compute instructions, whose operands
name buffers (`BufRef`) rather than addresses. The scheduler then

- gives every buffer kind two slots per core (double buffering) and reuses a slot
  whose data is already on chip (same key: Scan order saves DRAM reads this way);
- sends one DMA to every core that needs the same data (`shared` kinds: multicast); all
  fills of one shared slot go on one DMA channel (they wait on the same `free` semaphores,
  so they must run in program order), on several cores the shared kinds' slots spread
  over the channels;
- puts each core's loads and stores on DMA channels, a core's stores after the loads of
  its next job so that those loads never queue behind a store;
- adds the semaphores: load -> compute (`full`), compute -> store (`done`),
  last reader or writer -> next fill of the slot (`free`), and unit -> unit inside a
  job. Every signal has exactly one wait, so semaphores are free again at the end. These
  are named pairs; `SemaphoreAllocator` gives each pair one of the machine's semaphores
  (`SEMAPHORES`, 63), reusing one as soon as its last wait is known to have run (free: the
  waits are unchanged), and puts a barrier in the layer only when none can be reused.

Everything an instruction waits for is emitted before it, and each engine runs its
instructions in emission order, so a scheduled program cannot deadlock.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from nncc.runtime import isa
from nncc.runtime.target import Target
from nncc.support.errors import NnccError

SLOTS = 2


@dataclass(frozen=True)
class BufRef:
    """A byte offset inside the current slot of buffer `kind`."""

    kind: str
    offset: int = 0


@dataclass(frozen=True)
class Transfer:
    """A DMA between DRAM (a `("DRAM", addr)` ref) and a buffer (`BufRef`)."""

    src: Any
    src_stride: tuple[int, int, int]
    dst: Any
    dst_stride: tuple[int, int, int]
    shape: tuple[int, int, int]
    pad: tuple[int, ...] = (0, 0, 0, 0, 0, 0)
    pad_value: float = 0.0


@dataclass(frozen=True)
class Compute:
    """A compute instruction whose REF operands may be `BufRef`s."""

    mnemonic: str
    operands: dict[str, Any]

    @property
    def unit(self) -> str:
        return self.operands.get("unit", "main")


@dataclass
class Job:
    core: int
    buffers: dict[str, Hashable]
    compute: list[Compute]
    loads: dict[str, list[Transfer]] = field(default_factory=dict)
    stores: dict[str, list[Transfer]] = field(default_factory=dict)


@dataclass(frozen=True)
class BufferKind:
    name: str
    memory: str
    slot_bytes: int
    shared: bool = False  # one slot state for all cores; loads multicast to the cores using them


@dataclass
class Occupancy:
    """One piece of data in one slot, from its first user job to its last."""

    kind: str
    slot: int
    key: Hashable
    first_job: int
    loads: list[Transfer]
    users: dict[int, list[int]] = field(default_factory=dict)  # core -> job indices
    stores: list[Transfer] = field(default_factory=list)
    store_core: int = 0
    previous: Occupancy | None = None
    next: Occupancy | None = None

    def last_job(self, core: int) -> int:
        return self.users[core][-1]


SEMAPHORES = isa.MAX_SEMAPHORES
"""Semaphores a layer may use (the machine's: `isa.MAX_SEMAPHORES`; tests lower it)."""
NEVER = 1 << 62  # sorts after every (seq, semaphore)


@dataclass(eq=False)
class Token:
    """One signal, to be consumed by exactly one wait; its semaphore is chosen at the wait."""

    clock: list[int]  # the signalling instruction's vector clock: what has happened before it
    signaller: int = -1  # the signalling instruction (its index in the output)
    cancelled: bool = False  # a barrier lies between the signal and its wait: neither is needed


def engine_count(target: Target) -> int:
    """Engines that run instructions: every core's units and the DMA channels."""
    return target.cores * len(target.units) + target.dma.channels


class SemaphoreAllocator:
    """Semaphore numbers for one layer's instructions, reused as soon as that is safe.

    Every signal is matched by one wait, emitted after it. The pair (S, W) gets its semaphore
    when W is emitted: one whose last pair (S', W') has W' happening before S and before the
    instruction that precedes W on W's engine (program order of engines and earlier semaphore
    pairs, tracked with vector clocks). Then W' has taken its token before S produces the new
    one, and W cannot start (so cannot take a token) before W' has, so no wait ever takes
    another pair's token and the program waits exactly as with one semaphore per pair: reuse
    costs nothing. When no semaphore can be reused and none is unused, a `barrier` goes before
    W instead: everything before it is done, so W need not wait, and neither need the waits
    of the other pairs that straddle the barrier; all semaphores are free again after it.
    The scheduler and the cost model (`cost_model.predict_jobs`) feed the same instruction
    sequence, so they place the same barriers.
    """

    def __init__(self, engines: int, count: int | None = None):
        self.count = SEMAPHORES if count is None else count
        self.engines: dict[Hashable, int] = {}  # engine -> its index in the clocks
        self.clocks: list[list[int]] = [[0] * engines for _ in range(engines)]  # per engine, since the last barrier
        # per engine: (seq, semaphore) of the semaphores whose last wait ran on it, in program
        # order: those free for a pair are a prefix
        self.waited: list[list[tuple[int, int]]] = [[] for _ in range(engines)]
        self.fresh = 0  # semaphores fresh..count-1 are unused since the last barrier
        self.outstanding: dict[Token, None] = {}  # tokens signalled, not yet waited for (cancelled by a barrier)
        self.barriers = 0

    def signal(self, clock: list[int], signaller: int = -1) -> Token:
        """A token of the instruction just issued (`clock` is the clock `issue` returned)."""
        token = Token(clock, signaller)
        self.outstanding[token] = None
        return token

    def reusable(self, token: Token, before: list[int]) -> int | None:
        """A semaphore whose last wait happened before the token's signal and before the waiting
        engine's previous instruction (clock `before`), else an unused one, else None. Best
        fit: the most recently waited of them (per engine, the last within what both know), so
        that the long-known ones stay free for pairs that know less (ResNet-50 at 224x224 on
        `vector` needs 41 semaphores so, 59 taking the least recently waited first)."""
        best = None
        for engine, queue in enumerate(self.waited):
            if queue:
                bound = min(token.clock[engine], before[engine])
                position = bisect.bisect_right(queue, (bound, NEVER)) - 1
                if position >= 0:
                    seq, semaphore = queue[position]
                    key = (bound - seq, semaphore)
                    if best is None or key < best[0]:
                        best = (key, engine, position)
        if best is not None:
            (_, semaphore), engine, position = best
            del self.waited[engine][position]
            return semaphore
        if self.fresh < self.count:
            self.fresh += 1
            return self.fresh - 1
        return None

    def issue(self, engine: Hashable, waits: Sequence[Token]):
        """An instruction on `engine` waiting on the signals `waits`: returns
        (barrier before it?, [(token, semaphore)] of its waits, its vector clock)."""
        index = self.engines.setdefault(engine, len(self.engines))
        live = [token for token in waits if not token.cancelled]
        before = self.clocks[index]
        pairs = []
        for token in live:
            semaphore = self.reusable(token, before)
            if semaphore is None:
                break
            pairs.append((token, semaphore))
        barrier = len(pairs) < len(live)
        if barrier:  # everything before is done: no pair that straddles the barrier needs its wait
            for token in self.outstanding:
                token.cancelled = True
            self.outstanding = {}
            self.barriers += 1
            self.fresh = 0
            self.waited = [[] for _ in self.waited]
            self.clocks = [[0] * len(before) for _ in self.clocks]
            live, pairs = [], []
            before = self.clocks[index]
        clock = before.copy()
        for token in live:
            del self.outstanding[token]
            clock = list(map(max, clock, token.clock))
        seq = clock[index] = before[index] + 1
        for _, semaphore in pairs:
            self.waited[index].append((seq, semaphore))
        self.clocks[index] = clock
        return barrier, pairs, clock


@dataclass
class Layout:
    """Where each buffer kind's slots live: memory and base addresses."""

    bases: dict[tuple[str, int], tuple[str, int]]

    @classmethod
    def allocate(cls, target: Target, kinds: Sequence[BufferKind], slots: int = SLOTS) -> Layout:
        used: dict[str, int] = {}
        bases = {}
        for kind in kinds:
            slot_bytes = -(-kind.slot_bytes // 64) * 64
            for slot in range(slots):
                start = used.get(kind.memory, 0)
                bases[kind.name, slot] = (kind.memory, start)
                used[kind.memory] = start + slot_bytes
        for memory, nbytes in used.items():
            if nbytes > target.memory(memory).size_bytes:
                raise NnccError(f"target {target.name}: a layer's buffers need {nbytes} bytes of {memory}, "
                                f"which has {target.memory(memory).size_bytes} (memory.{memory}.size_bytes)")
        return cls(bases)


def plan_occupancies(jobs: Sequence[Job], kinds: dict[str, BufferKind], slots: int = SLOTS):
    """First pass: the slot of every (job, kind), and the occupancies."""
    resident: dict[tuple[str, int | None], list[Occupancy | None]] = {}
    last_use: dict[tuple[str, int | None], list[int]] = {}  # per slot: the last job that used it
    slot_of: list[dict[str, Occupancy]] = []
    occupancies: list[Occupancy] = []
    for index, job in enumerate(jobs):
        chosen = {}
        for name, key in job.buffers.items():
            kind = kinds[name]
            scope = (name, None if kind.shared else job.core)
            slot_state = resident.setdefault(scope, [None] * slots)
            used = last_use.setdefault(scope, [-1] * slots)
            occupancy = next((o for o in slot_state if o is not None and o.key == key), None)
            if occupancy is None:
                # the least recently used slot: after a reused block (Scan) the refill never
                # lands in the slot the running job reads (round robin would, and stall)
                slot = min(range(slots), key=used.__getitem__)
                occupancy = Occupancy(name, slot, key, index, list(job.loads.get(name, [])),
                                      previous=slot_state[slot])
                if slot_state[slot] is not None:
                    slot_state[slot].next = occupancy
                slot_state[slot] = occupancy
                occupancies.append(occupancy)
            occupancy.users.setdefault(job.core, []).append(index)
            used[occupancy.slot] = index
            if job.stores.get(name):
                occupancy.stores, occupancy.store_core = list(job.stores[name]), job.core
            chosen[name] = occupancy
        slot_of.append(chosen)
    return slot_of, occupancies


def take_pending(pending: dict[int, list[tuple[Occupancy, int]]], occupancy: Occupancy | None):
    """Remove and return the pending stores of `occupancy` (the previous data of a slot about to
    be refilled)."""
    taken = []
    for core, stores in pending.items():
        taken += [store for store in stores if store[0] is occupancy]
        stores[:] = [store for store in stores if store[0] is not occupancy]
    return taken


class Scheduler:
    """Emits the instructions of one layer's jobs."""

    def __init__(self, target: Target, kinds: Sequence[BufferKind], slots: int = SLOTS):
        self.target = target
        self.kinds = {kind.name: kind for kind in kinds}
        self.slots = slots
        self.layout = Layout.allocate(target, kinds, slots)
        self.semaphores = SemaphoreAllocator(engine_count(target))
        self.tokens: dict[Hashable, deque[Token]] = {}  # semaphore name -> its tokens not yet waited for
        self.out: list[NamedTuple] = []

    # -- channels and addresses

    def load_channel(self, core: int) -> int:
        return core % self.target.dma.channels

    def store_channel(self, core: int) -> int:
        channels, cores = self.target.dma.channels, self.target.cores
        return (core + cores) % channels if channels > cores else core % channels

    def resolve(self, value: Any, slots: dict[str, Occupancy]) -> Any:
        if isinstance(value, BufRef):
            memory, base = self.layout.bases[value.kind, slots[value.kind].slot]
            return (memory, base + value.offset)
        return value

    # -- emission

    def emit(self, mnemonic: str, engine: Hashable, waits: Sequence[tuple], signals: Sequence[tuple],
             **operands: Any) -> None:
        """One instruction on `engine` that waits on and signals the named semaphores (a name's
        signals and waits pair up in emission order). A pair's number is chosen at its wait
        (`SemaphoreAllocator`) and added to the signalling instruction then."""
        tokens = [self.tokens[name].popleft() for name in waits]
        barrier, pairs, clock = self.semaphores.issue(engine, tokens)
        if barrier:
            self.out.append(isa.make("barrier"))
        for token, semaphore in pairs:
            ins = self.out[token.signaller]
            self.out[token.signaller] = ins._replace(signal=tuple(sorted((*ins.signal, semaphore))))
        index = len(self.out)
        for name in signals:
            self.tokens.setdefault(name, deque()).append(self.semaphores.signal(clock, index))
        self.out.append(isa.make(mnemonic, wait=tuple(sorted(p for _, p in pairs)), **operands))

    def schedule(self, jobs: Sequence[Job]) -> list[NamedTuple]:
        slot_of, _ = plan_occupancies(jobs, self.kinds, self.slots)
        # a core's stores wait until the loads of that core's next job are emitted, so that
        # on a channel shared by the core's loads and stores the next load never queues
        # behind a store (one job late per core, not one job late overall); a load into the
        # slot a pending store reads (one slot per buffer) takes that store out first, as
        # the load waits on it
        pending_stores: dict[int, list[tuple[Occupancy, int]]] = {}
        for index, job in enumerate(jobs):
            for occupancy in slot_of[index].values():
                if occupancy.first_job == index and occupancy.loads:
                    for store in take_pending(pending_stores, occupancy.previous):
                        self.emit_stores(*store)
                    self.emit_loads(occupancy)
            for occupancy, core in pending_stores.pop(job.core, []):
                self.emit_stores(occupancy, core)
            self.emit_compute(index, job, slot_of[index])
            for occupancy in slot_of[index].values():
                if occupancy.stores and occupancy.last_job(occupancy.store_core) == index and \
                        max(max(v) for v in occupancy.users.values()) == index:
                    pending_stores.setdefault(occupancy.store_core, []).append((occupancy, occupancy.store_core))
        for core in sorted(pending_stores):
            for occupancy, store_core in pending_stores[core]:
                self.emit_stores(occupancy, store_core)
        return self.out

    def emit_loads(self, occupancy: Occupancy) -> None:
        cores = sorted(occupancy.users)
        waits = self.free_waits(occupancy)
        signals = tuple(("full", occupancy.kind, core, occupancy.slot) for core in cores)
        if self.kinds[occupancy.kind].shared and self.target.cores > 1:
            # every fill of a shared slot waits on the same `free` semaphores: the fills must run
            # in program order, so on one channel (a fill on another channel could take an
            # earlier fill's tokens); the shared kinds' slots are spread over the channels.
            # One core: its load channel, as its other loads (stores keep their own channel)
            index = list(self.kinds).index(occupancy.kind) * self.slots + occupancy.slot
            channel = index % self.target.dma.channels
        else:
            channel = self.load_channel(cores[0])
        slots = {occupancy.kind: occupancy}
        for i, transfer in enumerate(occupancy.loads):
            last = i == len(occupancy.loads) - 1
            self.emit(
                "dma", ("dma", channel), waits if i == 0 else (), signals if last else (),
                ch=channel, src=transfer.src, src_stride=transfer.src_stride,
                dst=self.resolve(transfer.dst, slots), cores=cores, dst_stride=transfer.dst_stride,
                shape=transfer.shape, pad=transfer.pad, pad_value=transfer.pad_value)

    def free_waits(self, occupancy: Occupancy) -> tuple[tuple, ...]:
        """Before refilling a slot: its previous data's last reader (or store) is done."""
        previous = occupancy.previous
        if previous is None:
            return ()
        return tuple(("free", previous.kind, core, previous.slot) for core in sorted(previous.users))

    def emit_stores(self, occupancy: Occupancy, core: int) -> None:
        channel = self.store_channel(core)
        slots = {occupancy.kind: occupancy}
        for i, transfer in enumerate(occupancy.stores):
            last = i == len(occupancy.stores) - 1
            signal = ()
            if last and occupancy.next is not None:
                signal = (("free", occupancy.kind, core, occupancy.slot),)
            self.emit(
                "dma", ("dma", channel), (("done", occupancy.kind, core, occupancy.slot),) if i == 0 else (),
                signal, ch=channel, src=self.resolve(transfer.src, slots), src_core=core,
                src_stride=transfer.src_stride, dst=transfer.dst, cores=(0,),
                dst_stride=transfer.dst_stride, shape=transfer.shape)

    def emit_compute(self, index: int, job: Job, slots: dict[str, Occupancy]) -> None:
        first_waits, last_signals = self.job_edges(index, job, slots)
        instructions = job.compute
        for i, compute in enumerate(instructions):
            waits, signals = [], []
            if i == 0:
                waits += first_waits
            elif instructions[i - 1].unit != compute.unit:
                waits.append(("unit", job.core, instructions[i - 1].unit, compute.unit))
            if i + 1 < len(instructions) and instructions[i + 1].unit != compute.unit:
                signals.append(("unit", job.core, compute.unit, instructions[i + 1].unit))
            if i == len(instructions) - 1:
                signals += last_signals
            operands = {name: self.resolve(value, slots) for name, value in compute.operands.items()}
            self.emit(compute.mnemonic, (job.core, compute.unit), waits, signals, core=job.core, **operands)

    def job_edges(self, index: int, job: Job, slots: dict[str, Occupancy]):
        """Semaphores the job's first instruction waits on and its last one signals."""
        waits, signals = [], []
        for occupancy in slots.values():
            uses = occupancy.users[job.core]
            key = (occupancy.kind, job.core, occupancy.slot)
            if uses[0] == index:
                if occupancy.loads:
                    waits.append(("full", *key))
                elif occupancy.previous is not None and job.core in occupancy.previous.users:
                    waits.append(("free", *key))
            if uses[-1] == index:
                if occupancy.stores and occupancy.store_core == job.core:
                    signals.append(("done", *key))
                elif not occupancy.stores and occupancy.next is not None:
                    signals.append(("free", *key))
        return waits, signals
