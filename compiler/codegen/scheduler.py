"""Tile jobs -> one schedule of operations -> synchronised, double-buffered instructions.

An op's code generator describes its work as a list of `Job`s: which data each job
needs in which on-chip buffer (`buffers`: kind -> key), the DMAs that fill a buffer
(`loads`) or empty it (`stores`), and the compute instructions, whose operands
name buffers (`BufRef`) rather than addresses. The scheduler turns them into a
`Schedule`: the layer's operations in emission order, each on its engine (a DMA channel or
a core's unit) with the operations it waits for. It

- gives every buffer kind two slots per core (double buffering) and reuses a slot
  whose data is already on chip (same key: Scan order saves DRAM reads this way);
- sends one DMA to every core that needs the same data (`shared` kinds: multicast); all
  fills of one shared slot go on one DMA channel (they wait on the same `free` semaphores,
  so they must run in program order), on several cores the shared kinds' slots spread
  over the channels;
- puts each core's loads and stores on DMA channels, a core's stores after the loads of
  its next job so that those loads never queue behind a store;
- makes the dependencies: load -> compute (`full`), compute -> store (`done`),
  last reader or writer -> next fill of the slot (`free`), and unit -> unit inside a
  job.

Two analyses read that one list. `Schedule.instructions` emits it: every dependency is a
semaphore pair (every signal has exactly one wait, so semaphores are free again at the end);
`SemaphoreAllocator` gives each pair one of the machine's semaphores (`SEMAPHORES`, 63),
reusing one as soon as its last wait is known to have run (free: the waits are unchanged),
and puts a barrier in the layer only when none can be reused (`Schedule.allocation`). The
cost model (`cost_model.time_schedule`) times the same operations, barriers included, with
the machine's timing rules (`runtime/timing.py`, as the interpreter does): there is no second
description of the schedule to keep in step.

Everything an instruction waits for is emitted before it, and each engine runs its
instructions in emission order, so a scheduled program cannot deadlock.
"""

from __future__ import annotations

import bisect
import gc
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
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


class Transfer(NamedTuple):
    """A DMA between DRAM (a `("DRAM", addr)` ref) and a buffer (`BufRef`). A named tuple: made,
    hashed and compared by the hundred thousand in a compile (a slot's key is its loads)."""

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
    resident: bool = False  # one slot whatever the layer's slot count (data every job reuses)
    ring: bool = False  # one slot that keeps a window's halo rows for the next window (a line buffer)

    def slot_count(self, slots: int) -> int:
        return 1 if self.resident or self.ring else slots


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
    previous: Occupancy | None = None  # the slot's data before (no link forward: no reference cycles)
    source: Occupancy | None = None  # the kind's data used last before: what an on-chip copy reads
    last: int = -1  # the last job (of any core) that uses it

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
    `Schedule.allocation` runs it once per schedule; the instructions and the cost model's
    timing both read its barriers.
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
        `vector` needs 42 semaphores so; 59 took the least recently waited first)."""
        best = None
        for queue, known, waiter_knows in zip(self.waited, token.clock, before):
            if queue:
                bound = known if known < waiter_knows else waiter_knows
                position = bisect.bisect_right(queue, (bound, NEVER)) - 1
                if position >= 0:
                    seq, semaphore = queue[position]
                    key = (bound - seq, semaphore)
                    if best is None or key < best[0]:
                        best = (key, queue, position)
        if best is not None:
            (_, semaphore), queue, position = best
            del queue[position]
            return semaphore
        if self.fresh < self.count:
            self.fresh += 1
            return self.fresh - 1
        return None

    def issue(self, engine: Hashable, waits: Sequence[Token]):
        """An instruction on `engine` waiting on the signals `waits`: returns
        (barrier before it?, [(token, semaphore)] of its waits, its vector clock)."""
        index = self.engines.setdefault(engine, len(self.engines))
        before = self.clocks[index]
        if not waits:
            clock = before.copy()
            clock[index] += 1
            self.clocks[index] = clock
            return False, [], clock
        live = [token for token in waits if not token.cancelled]
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
    """Where each buffer kind's slots live: memory and base addresses. A kind each core has its
    own of (not `shared`) in a memory with one instance for all cores (`edge`'s BUF) gets one
    copy per core, `core_strides[kind]` bytes apart; elsewhere every core sees its slot at the
    same address of its own instance."""

    bases: dict[tuple[str, int], tuple[str, int]]
    core_strides: dict[str, int] = field(default_factory=dict)

    @classmethod
    def allocate(cls, target: Target, kinds: Sequence[BufferKind], slots: int = SLOTS,
                 cores: int = 1) -> Layout:
        used: dict[str, int] = {}
        bases, core_strides = {}, {}
        for kind in kinds:
            slot_bytes = -(-kind.slot_bytes // 64) * 64
            copies = per_core_copies(target, kind, cores)
            if copies > 1:
                core_strides[kind.name] = slot_bytes
            for slot in range(kind.slot_count(slots)):
                start = used.get(kind.memory, 0)
                bases[kind.name, slot] = (kind.memory, start)
                used[kind.memory] = start + slot_bytes * copies
        for memory, nbytes in used.items():
            if nbytes > target.memory(memory).size_bytes:
                raise NnccError(f"target {target.name}: a layer's buffers need {nbytes} bytes of {memory}, "
                                f"which has {target.memory(memory).size_bytes} (memory.{memory}.size_bytes)")
        return cls(bases, core_strides)

    def address(self, ref: BufRef, slot: int, core: int) -> tuple[str, int]:
        """The (memory, address) of `ref` in `slot`, as `core` sees it."""
        memory, base = self.bases[ref.kind, slot]
        return memory, base + ref.offset + self.core_strides.get(ref.kind, 0) * core


def per_core_copies(target: Target, kind: BufferKind, cores: int) -> int:
    """Copies of a buffer kind in its memory: one per core when each core has its own slots but
    the memory has one instance for all cores, else one."""
    return cores if not kind.shared and target.memory(kind.memory).shared else 1


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside. Building, timing and emitting schedules allocates
    objects by the hundred thousand, each allocation counting towards a collection that walks
    the whole heap (the IR, the jobs): about a fifth of the compile time. The few cycles made
    meanwhile (occupancies link to their neighbours) are collected after.

    The objects made meanwhile that are still alive (the IR a compile builds) join the oldest
    generation when the collector resumes: left in the youngest, the first collection after
    would walk them all (0.5 s after a ResNet-50 compile). Objects someone froze (`gc.freeze`)
    stay frozen: the move (freeze, then unfreeze, O(1)) is skipped then."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if not gc.get_freeze_count():
            gc.freeze()
            gc.unfreeze()
        gc.enable()


def plan_occupancies(jobs: Sequence[Job], kinds: dict[str, BufferKind], slots: int = SLOTS):
    """First pass: the slot of every (job, kind), and the occupancies."""
    resident: dict[tuple[str, int | None], list[Occupancy | None]] = {}
    latest: dict[tuple[str, int | None], Occupancy] = {}  # per scope: the occupancy used last
    last_use: dict[tuple[str, int | None], list[int]] = {}  # per slot: the last job that used it
    shared = {name: kind.shared for name, kind in kinds.items()}
    slot_of: list[dict[str, Occupancy]] = []
    occupancies: list[Occupancy] = []
    for index, job in enumerate(jobs):
        chosen = {}
        core = job.core
        for name, key in job.buffers.items():
            scope = (name, None if shared[name] else core)
            slot_state = resident.get(scope)
            if slot_state is None:
                count = kinds[name].slot_count(slots)
                slot_state = resident[scope] = [None] * count
                last_use[scope] = [-1] * count
            used = last_use[scope]
            for occupancy in slot_state:
                if occupancy is not None and occupancy.key == key:
                    break
            else:
                # the least recently used slot: after a reused block (Scan) the refill never
                # lands in the slot the running job reads (round robin would, and stall)
                slot = min(range(len(used)), key=used.__getitem__)
                occupancy = Occupancy(name, slot, key, index, list(job.loads.get(name, ())),
                                      previous=slot_state[slot], source=latest.get(scope))
                slot_state[slot] = occupancy
                occupancies.append(occupancy)
            users = occupancy.users.get(core)
            if users is None:
                occupancy.users[core] = [index]
            else:
                users.append(index)
            occupancy.last = index
            latest[scope] = occupancy
            used[occupancy.slot] = index
            stores = job.stores.get(name)
            if stores:
                occupancy.stores, occupancy.store_core = list(stores), core
            chosen[name] = occupancy
        slot_of.append(chosen)
    return slot_of, occupancies


def stages(computes: Sequence[Compute]) -> tuple[Sequence[Compute], Sequence[Compute]]:
    """A job's compute instructions as two software-pipeline stages when it starts on the main
    unit and comes back to it after another unit (a fused group on a matrix unit with a
    post-processing unit: the expand, the depthwise on the post unit, the projection on the
    matrix unit again): the stage from that return on is emitted after the first stage of the
    core's next job, so the matrix unit expands the next block while the post unit is still on
    this one (units run their instructions in program order). Else (every layer's job) one
    stage: `(computes, [])`."""
    if not computes:
        return computes, []
    units = [compute.operands.get("unit", "main") for compute in computes]
    if units[0] != "main":
        return computes, []
    for i in range(len(units) - 1, 0, -1):
        if units[i] == "main" and units[i - 1] != "main":
            return computes[:i], computes[i:]
    return computes, []


def take_pending(pending: dict[int, list[tuple[Occupancy, int]]], occupancy: Occupancy | None):
    """Remove and return the pending stores of `occupancy` (the previous data of a slot about to
    be refilled)."""
    taken = []
    for core, stores in pending.items():
        taken += [store for store in stores if store[0] is occupancy]
        stores[:] = [store for store in stores if store[0] is not occupancy]
    return taken


class Operation(NamedTuple):
    """One instruction of a schedule, before its semaphores and addresses are chosen."""

    engine: Hashable  # (core, unit), or ("dma", channel)
    deps: tuple[int, ...]  # the operations it waits for (one semaphore pair each), in wait order
    compute: Compute | None  # the compute instruction, or None for a DMA
    job: int  # a compute's job (its slots resolve the buffer operands); -1 for a DMA
    transfer: Transfer | None  # a DMA's box
    occupancy: Occupancy | None  # the slot a DMA fills (load) or empties (store)
    cores: tuple[int, ...]  # a load's destination cores; a store's source core; a compute's core
    store: bool = False  # a DMA from a buffer to DRAM


@dataclass
class Allocation:
    """The semaphores of a schedule: what each operation waits on and signals, and the operations
    a barrier goes before (none while the machine has semaphores to spare)."""

    waits: list[tuple[int, ...]]
    signals: list[tuple[int, ...]]
    barriers: list[int]


class Schedule:
    """One phase of a layer: its jobs as operations in emission order (`ops`), with slots.

    Built once from the jobs; `instructions` emits it, `cost_model.time_schedule` times it."""

    def __init__(self, target: Target, kinds: Sequence[BufferKind], jobs: Sequence[Job], slots: int = SLOTS):
        self.target = target
        self.kind_list = list(kinds)
        self.kinds = {kind.name: kind for kind in self.kind_list}
        self.kind_index = {kind.name: index for index, kind in enumerate(self.kind_list)}
        self.slots = slots
        self.jobs = jobs
        self.slot_of, self.occupancies = plan_occupancies(jobs, self.kinds, slots)
        self.ops: list[Operation] = []
        self._writers: dict[int, tuple[int, int, str]] = {}  # occupancy id -> (op, job, unit) last writing it
        self._allocation: Allocation | None = None
        self._fingerprint: list | None = None  # set when `of` keeps it for the emission
        with gc_paused():
            self._build()

    @classmethod
    def of(cls, target: Target, kinds: Sequence[BufferKind], jobs: Sequence[Job], slots: int = SLOTS) -> Schedule:
        """The schedule of `jobs`: the one built last if it is of these very jobs, unchanged
        (the cost model times a layer's schedule just before the scheduler emits it), else a new one."""
        last = _LAST[0]
        if last is not None and last.jobs is jobs and last.target is target and last.slots == slots and \
                last.kind_list == list(kinds) and last._fingerprint == fingerprint(jobs):
            return last
        schedule = _LAST[0] = cls(target, kinds, jobs, slots)
        schedule._fingerprint = fingerprint(jobs)
        return schedule

    # -- building

    def _add(self, engine, deps, compute, job, transfer, occupancy, cores, store=False) -> int:
        self.ops.append(Operation(engine, deps, compute, job, transfer, occupancy, cores, store))
        return len(self.ops) - 1

    def _build(self) -> None:
        full: dict[int, int] = {}  # id(occupancy) -> its last load
        done: dict[int, int] = {}  # id(occupancy) -> its last writer, which its store waits for
        free: dict[tuple[int, int], int] = {}  # (id(occupancy), core) -> after it, the slot may be refilled
        # a core's stores wait until the loads of that core's next job are emitted, so that
        # on a channel shared by the core's loads and stores the next load never queues
        # behind a store (one job late per core, not one job late overall); a load into the
        # slot a pending store reads (one slot per buffer) takes that store out first, as
        # the load waits on it
        pending: dict[int, list[tuple[Occupancy, int]]] = {}
        waiting: set[int] = set()  # id() of the occupancies with pending stores
        # per core, the second stage of its last job when it is software-pipelined (`stages`):
        # (job index, its compute ops, the op the stage waits for, the first-use waits its
        # buffers still owe, the last op using each buffer kind); emitted after the first stage
        # of the core's next job
        deferred: dict[int, tuple] = {}

        def finish(index: int, last_op: int, last_use: dict[str, int] | None = None) -> None:
            job = self.jobs[index]
            slots = self.slot_of[index]
            self._finish(index, job, slots, last_op, done, free, last_use)
            for occupancy in slots.values():
                if occupancy.stores and occupancy.last == index and occupancy.store_core == job.core:
                    pending.setdefault(occupancy.store_core, []).append((occupancy, occupancy.store_core))
                    waiting.add(id(occupancy))

        def flush(core: int) -> None:
            if core in deferred:
                index, ops, after, owed, last_use = deferred.pop(core)
                finish(index, self._compute_ops(index, self.jobs[index], ops, (after,), owed, last_use), last_use)

        for index, job in enumerate(self.jobs):
            slots = self.slot_of[index]
            for occupancy in slots.values():  # a slot refilled after a deferred stage used it: that stage first
                previous = occupancy.previous if occupancy.first_job == index else None
                for core in (previous.users if previous is not None else ()):
                    if core in deferred and deferred[core][0] in previous.users[core]:
                        flush(core)
            for occupancy in slots.values():
                if occupancy.first_job == index and occupancy.loads:
                    if id(occupancy.previous) in waiting:
                        waiting.discard(id(occupancy.previous))
                        for store in take_pending(pending, occupancy.previous):
                            self._stores(*store, done, free)
                    self._loads(occupancy, full, free)
            for occupancy, core in pending.pop(job.core, ()):
                waiting.discard(id(occupancy))
                self._stores(occupancy, core, done, free)
            head, tail = stages(job.compute) if self.slots >= 2 else (job.compute, [])
            if not tail:
                last_op = self._compute_ops(index, job, head, self._first_deps(index, job, slots, full, free))
                flush(job.core)
                finish(index, last_op)
                continue
            # a pipelined job: each instruction waits for the buffers it is the first to use, and
            # a buffer's slot is free after the last instruction that uses it
            owed = self._first_deps_by_kind(index, job, slots, full, free)
            last_use: dict[str, int] = {}
            last_op = self._compute_ops(index, job, head, (), owed, last_use)
            flush(job.core)
            deferred[job.core] = (index, tail, last_op, owed, last_use)
        for core in sorted(deferred):
            flush(core)
        for core in sorted(pending):
            for occupancy, store_core in pending[core]:
                self._stores(occupancy, store_core, done, free)

    def load_channel(self, occupancy: Occupancy, cores: tuple[int, ...]) -> int:
        channels = self.target.dma.channels
        if self.kinds[occupancy.kind].shared and self.target.cores > 1:
            # every fill of a shared slot waits on the same `free` semaphores: the fills must run
            # in program order, so on one channel (a fill on another channel could take an
            # earlier fill's tokens); the shared kinds' slots are spread over the channels.
            # One core: its load channel, as its other loads (stores keep their own channel)
            return (self.kind_index[occupancy.kind] * self.slots + occupancy.slot) % channels
        return cores[0] % channels

    def store_channel(self, core: int) -> int:
        channels, cores = self.target.dma.channels, self.target.cores
        return (core + cores) % channels if channels > cores else core % channels

    def _loads(self, occupancy: Occupancy, full: dict, free: dict) -> None:
        """The fill of a new occupancy, after its slot's previous data is no longer needed."""
        cores = tuple(sorted(occupancy.users))
        previous = occupancy.previous
        deps = () if previous is None else tuple(free[id(previous), core] for core in sorted(previous.users))
        source = occupancy.source
        if source is not None and source is not previous and id(source) in full and \
                occupancy.loads[0].src.__class__ is BufRef:
            deps += (full[id(source)],)  # an on-chip copy of the rows a ring kept: after they are in
        engine = ("dma", self.load_channel(occupancy, cores))
        op = -1
        for i, transfer in enumerate(occupancy.loads):
            op = self._add(engine, deps if i == 0 else (), None, -1, transfer, occupancy, cores)
        full[id(occupancy)] = op

    def _stores(self, occupancy: Occupancy, core: int, done: dict, free: dict) -> None:
        """The stores of an occupancy, after its last writer."""
        engine = ("dma", self.store_channel(core))
        deps = (done[id(occupancy)],)
        op = -1
        for i, transfer in enumerate(occupancy.stores):
            op = self._add(engine, deps if i == 0 else (), None, -1, transfer, occupancy, (core,), True)
        free[id(occupancy), core] = op

    def _first_deps(self, index: int, job: Job, slots: dict[str, Occupancy], full: dict, free: dict) -> tuple:
        """What a job's first compute instruction waits for: its data loaded, or its slot free."""
        core = job.core
        first = []
        for occupancy in slots.values():
            if occupancy.users[core][0] == index:
                if occupancy.loads:
                    first.append(full[id(occupancy)])
                elif occupancy.previous is not None and core in occupancy.previous.users:
                    first.append(free[id(occupancy.previous), core])
        return tuple(first)

    def _first_deps_by_kind(self, index: int, job: Job, slots: dict[str, Occupancy], full: dict,
                            free: dict) -> dict[str, int]:
        """`_first_deps` per buffer kind: kind -> what its first user in the job waits for."""
        core = job.core
        owed = {}
        for name, occupancy in slots.items():
            if occupancy.users[core][0] == index:
                if occupancy.loads:
                    owed[name] = full[id(occupancy)]
                elif occupancy.previous is not None and core in occupancy.previous.users:
                    owed[name] = free[id(occupancy.previous), core]
        return owed

    def _compute_ops(self, index: int, job: Job, computes: Sequence[Compute], first: tuple,
                     owed: dict[str, int] | None = None, last_use: dict[str, int] | None = None) -> int:
        """Compute instructions of a job, in order: the first waits for `first`, each that changes
        unit for the one before (unit -> unit inside the job); the last one's index. With `owed`
        (a pipelined job) an instruction also waits for what the buffers it uses first are owed,
        and `last_use` records the last instruction using each buffer kind."""
        op, previous_unit, cores = -1, None, (job.core,)
        slots, writers = self.slot_of[index], self._writers
        for compute in computes:
            unit = compute.operands.get("unit", "main")
            if previous_unit is None:
                deps = first
            elif previous_unit != unit:  # unit -> unit inside the job
                deps = (op,)
            else:
                deps = ()
            kinds = () if owed is None else {ref.kind for ref in compute.operands.values() if isinstance(ref, BufRef)}
            if owed:
                deps = deps + tuple(owed.pop(kind) for kind in sorted(kinds) if kind in owed)
            if writers:
                deps = deps + self._written_by(index, unit, compute, slots)
            op = self._add((job.core, unit), deps, compute, index, None, None, cores)
            for name in ("c", "z"):
                ref = compute.operands.get(name)
                if isinstance(ref, BufRef) and ref.kind in slots and not self.kinds[ref.kind].resident:
                    writers[id(slots[ref.kind])] = (op, index, unit)
            if last_use is not None:
                for kind in kinds:
                    last_use[kind] = op
            previous_unit = unit
        return op

    def _written_by(self, index: int, unit: str, compute: Compute, slots: dict[str, Occupancy]) -> tuple:
        """The instructions of earlier jobs, on another unit, that last wrote the data `compute`
        uses (a fused chain's intermediate, computed once per tile and read by the tile's channel
        blocks, each its own job): it waits for them."""
        deps = []
        for value in compute.operands.values():
            if isinstance(value, BufRef) and value.kind in slots:
                writer = self._writers.get(id(slots[value.kind]))
                if writer is not None and writer[1] != index and writer[2] != unit and writer[0] not in deps:
                    deps.append(writer[0])
        return tuple(deps)

    def _finish(self, index: int, job: Job, slots: dict[str, Occupancy], op: int, done: dict, free: dict,
                last_use: dict[str, int] | None = None) -> None:
        """After the job's last compute instruction `op`: what its stores and the slots' next fills
        wait for (a pipelined job's slot: the last instruction that used it, `last_use`)."""
        core = job.core
        for name, occupancy in slots.items():
            if occupancy.users[core][-1] == index:
                if occupancy.stores:
                    if occupancy.store_core == core:
                        done[id(occupancy)] = op
                else:
                    free[id(occupancy), core] = last_use.get(name, op) if last_use else op

    # -- semaphores and instructions

    @property
    def allocation(self) -> Allocation:
        """Every dependency a semaphore pair, numbered by `SemaphoreAllocator` in emission order."""
        if self._allocation is None:
            with gc_paused():
                # layers of one shape (ResNet's blocks) have the same engines and dependencies,
                # so the same allocation: made once
                key = (engine_count(self.target), SEMAPHORES, tuple((op.engine, op.deps) for op in self.ops))
                self._allocation = _ALLOCATIONS.get(key)
                if self._allocation is None:
                    if len(_ALLOCATIONS) >= 64:
                        _ALLOCATIONS.clear()
                    self._allocation = _ALLOCATIONS[key] = allocate(self.target, self.ops)
        return self._allocation

    def instructions(self, layout: Layout | None = None, relocate: Callable | None = None) -> list[NamedTuple]:
        """The instructions: every operation with its semaphores, its buffer operands resolved to
        the addresses of their slots, and a barrier before the operations `allocation` says need one.
        `relocate` maps the DRAM ends of the DMAs (`("DRAM", addr)`) elsewhere: the same schedule
        emitted for another layer of the same shape (`nest.lower_nest`)."""
        layout = layout or Layout.allocate(self.target, self.kind_list, self.slots, self.core_count)
        bases, strides = layout.bases, layout.core_strides
        one_instance = {m.name for m in self.target.memories if m.shared}
        allocation = self.allocation
        barriers = set(allocation.barriers)
        make = isa.make
        out: list[NamedTuple] = []
        with gc_paused():
            for index, op in enumerate(self.ops):
                if index in barriers:
                    out.append(make("barrier"))
                wait, signal = allocation.waits[index], allocation.signals[index]
                compute = op.compute
                core = op.cores[0]
                if compute is not None:
                    slots = self.slot_of[op.job]
                    operands = {}
                    for name, value in compute.operands.items():
                        if value.__class__ is BufRef:
                            memory, base = bases[value.kind, slots[value.kind].slot]
                            value = (memory, base + value.offset + (strides.get(value.kind, 0) * core if strides else 0))
                        operands[name] = value
                    out.append(make(compute.mnemonic, wait=wait, signal=signal, core=core, **operands))
                    continue
                transfer, occupancy = op.transfer, op.occupancy
                src, dst = transfer.src, transfer.dst
                if relocate is not None:
                    src, dst = (v if v.__class__ is BufRef else relocate(v) for v in (src, dst))
                if op.store:  # buffer -> DRAM
                    out.append(make("dma", wait=wait, signal=signal, ch=op.engine[1],
                                    src=layout.address(src, occupancy.slot, core), src_core=core,
                                    src_stride=transfer.src_stride, dst=dst, cores=(0,),
                                    dst_stride=transfer.dst_stride, shape=transfer.shape))
                else:
                    dst = layout.address(dst, occupancy.slot, core)
                    src_core = 0
                    if src.__class__ is BufRef:  # a ring's kept rows, copied on chip from the data before
                        source = occupancy.source or occupancy  # (its one slot: nothing before it yet)
                        src, src_core = layout.address(src, source.slot, core), core
                    # a memory with one instance for all cores is written once, not multicast
                    cores = op.cores[:1] if dst[0] in one_instance else op.cores
                    out.append(make("dma", wait=wait, signal=signal, ch=op.engine[1], src=src, src_core=src_core,
                                    src_stride=transfer.src_stride, dst=dst,
                                    cores=cores, dst_stride=transfer.dst_stride, shape=transfer.shape,
                                    pad=transfer.pad, pad_value=transfer.pad_value))
        return out

    @property
    def core_count(self) -> int:
        """Cores the schedule's operations run on (1 + the highest core number)."""
        return 1 + max((max(op.cores) for op in self.ops), default=0)


_LAST: list[Schedule | None] = [None]  # the schedule built last (`Schedule.of`)
_ALLOCATIONS: dict[tuple, Allocation] = {}  # by the engines and dependencies of the operations


def fingerprint(jobs: Sequence[Job]) -> list:
    """What a schedule depends on in its jobs (the objects themselves: compared by identity first),
    so that a job list changed after it was scheduled is scheduled again."""
    return [(job.core, tuple(job.buffers.items()), tuple(job.compute),
             tuple((name, tuple(transfers)) for name, transfers in job.loads.items()),
             tuple((name, tuple(transfers)) for name, transfers in job.stores.items())) for job in jobs]


def allocate(target: Target, ops: Sequence[Operation]) -> Allocation:
    """The semaphores of `ops` (every dependency one pair), and where barriers go."""
    consumers = [0] * len(ops)
    for op in ops:
        for dep in op.deps:
            consumers[dep] += 1
    allocator = SemaphoreAllocator(engine_count(target))
    tokens: list[deque[Token] | None] = [None] * len(ops)
    waits: list[tuple[int, ...]] = [()] * len(ops)
    signals: list[tuple[int, ...]] = [()] * len(ops)
    barriers = []
    for index, op in enumerate(ops):
        if not op.deps and not consumers[index]:
            continue  # no semaphore: only its own engine's order, which is kept, relates it to the others
        barrier, pairs, clock = allocator.issue(op.engine, [tokens[dep].popleft() for dep in op.deps])
        if barrier:
            barriers.append(index)
        if pairs:
            waits[index] = tuple(sorted(semaphore for _, semaphore in pairs))
            for token, semaphore in pairs:
                signals[token.signaller] = tuple(sorted((*signals[token.signaller], semaphore)))
        if consumers[index]:
            tokens[index] = deque(allocator.signal(clock, index) for _ in range(consumers[index]))
    return Allocation(waits, signals, barriers)


class Scheduler:
    """Emits the instructions of one layer's jobs (`Schedule.instructions`)."""

    def __init__(self, target: Target, kinds: Sequence[BufferKind], slots: int = SLOTS, cores: int = 1):
        self.target = target
        self.kinds = list(kinds)
        self.slots = slots
        self.layout = Layout.allocate(target, kinds, slots, cores)  # buffers that do not fit fail here

    def schedule(self, jobs: Sequence[Job] | Schedule, relocate: Callable | None = None) -> list[NamedTuple]:
        """The instructions of `jobs`, or of a `Schedule` made of them already (`relocate`: see
        `Schedule.instructions`)."""
        schedule = jobs if isinstance(jobs, Schedule) else Schedule.of(self.target, self.kinds, jobs, self.slots)
        return schedule.instructions(self.layout, relocate)
