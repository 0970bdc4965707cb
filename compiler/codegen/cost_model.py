"""The compiler's cost model: cycles and DRAM bytes of a layer before it runs.

It is separate from the interpreter (it never calls it) and works from the target's
machine parameters and the layer's tile jobs (`scheduler.Job`), at two levels:

- `conv_estimate`: a closed-form estimate for one conv/gemm tile choice (compute with
  lane waste and pipeline depth, DRAM traffic with weight/input re-reads, DMA channel
  occupancy, latency of the first load and the last store). `choose_tiles` ranks every
  candidate with it and keeps a shortlist.
- `predict_jobs`: a job-level timeline of the scheduled layer, the model that predicts and
  is recorded in the report. It replays what the scheduler emits (which slot each job
  uses, which buffer is reloaded and which is reused because the block is already on chip,
  multicast, double buffering, stores one job late) on per-engine clocks: each compute
  instruction costs `max(issue, on-chip bytes / bandwidth) + pipeline depth`, each DMA
  `latency + transfer` with the DRAM bus shared first come first served, and every wait
  of the scheduler's semaphores becomes a max over the producer's end time.

Layers are separated by a barrier, so a layer's cycles run from its first load to its
last store; the timeline starts empty (pipeline fill) and drains at the end.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nncc.runtime import isa
from nncc.runtime.target import ComputeUnit, Target

F32 = 4


def cdiv(a: float, b: float) -> int:
    return math.ceil(a / b)


@dataclass
class Prediction:
    cycles: int = 0
    dram_read_bytes: int = 0
    dram_write_bytes: int = 0
    macs: int = 0
    busy: dict[str, int] | None = None  # predicted busy cycles per engine

    def row(self) -> dict[str, int]:
        return {"predicted_cycles": int(self.cycles), "predicted_dram_read_bytes": int(self.dram_read_bytes),
                "predicted_dram_write_bytes": int(self.dram_write_bytes)}

    def __add__(self, other: Prediction) -> Prediction:
        return Prediction(self.cycles + other.cycles, self.dram_read_bytes + other.dram_read_bytes,
                          self.dram_write_bytes + other.dram_write_bytes, self.macs + other.macs)


def roofline_cycles(target: Target, macs: int, dram_bytes: int) -> float:
    """The layer's bound on `target`: all MAC units busy, or DRAM streaming `dram_bytes` once."""
    return max(macs / target.mac_units, dram_bytes / target.dram_bytes_per_cycle)


# --------------------------------------------------------------------------- instruction costs


def footprint(shape: Sequence[int], strides: Sequence[int]) -> int:
    count = 1
    for size, stride in zip(shape, strides):
        if stride:
            count *= size
    return count


def matmul_issue(unit: ComputeUnit, batch: int, m: int, n: int, k: int) -> int:
    if unit.kind == "matrix":
        return batch * m * cdiv(k, unit.rows) * cdiv(n, unit.cols)
    return cdiv(batch * m * k * cdiv(n, unit.lanes), unit.macs_per_lane)


def vector_issue(unit: ComputeUnit, shape: Sequence[int], cost: int) -> int:
    n0, n1, n2 = (tuple(shape) + (1, 1, 1))[:3] if len(shape) < 3 else shape[:3]
    return cdiv(n0 * n1 * cdiv(n2, unit.lanes) * cost, unit.macs_per_lane)


class InstructionCosts:
    """Busy cycles of compute instructions described by `scheduler.Compute`."""

    def __init__(self, target: Target, memory_of: dict[str, str]):
        self.target = target
        self.memory_of = memory_of  # buffer kind -> memory name
        self.bandwidth = {m.name: m.bandwidth_bytes_per_cycle for m in target.memories}
        self.cache: dict[tuple, tuple[int, int]] = {}

    def memory(self, ref: Any) -> str:
        if hasattr(ref, "kind"):
            return self.memory_of[ref.kind]
        return ref[0]

    def cycles(self, mnemonic: str, ops: dict[str, Any]) -> tuple[int, int]:
        """(busy cycles, MACs) of one instruction (cached: a layer repeats a few shapes)."""
        key = (mnemonic, *((name, value.kind if hasattr(value, "kind") else value) for name, value in ops.items()))
        found = self.cache.get(key)
        if found is None:
            found = self.cache[key] = self.compute_cycles(mnemonic, ops)
        return found

    def compute_cycles(self, mnemonic: str, ops: dict[str, Any]) -> tuple[int, int]:
        unit = self.target.units[ops.get("unit", "main")]
        traffic: dict[str, int] = {}

        def touch(ref, shape, strides):
            name = self.memory(ref)
            traffic[name] = traffic.get(name, 0) + F32 * footprint(shape, strides)

        macs = 0
        if mnemonic == "matmul":
            batch = ops.get("batch", 1)
            m, n, k = ops["mnk"]
            touch(ops["a"], (batch, m, k), ops["a_stride"])
            touch(ops["b"], (batch, k, n), ops["b_stride"])
            touch(ops["c"], (batch, m, n), ops["c_stride"])
            if ops.get("acc", 0):
                touch(ops["c"], (batch, m, n), ops["c_stride"])
            epilogue = 0
            if ops.get("bias") is not None:
                touch(ops["bias"], (batch, m, n), ops["bias_stride"])
                epilogue += 1
            if ops.get("act", "none") != "none":
                epilogue += isa.ACTIVATIONS[ops["act"]]
            issue = matmul_issue(unit, batch, m, n, k)
            if epilogue:  # on the ALU slot, beside the MACs
                issue = max(issue, vector_issue(unit, (batch, m, n), epilogue))
            macs = batch * m * n * k
        elif mnemonic == "vpool":
            shape, window = ops["shape"], ops["window"]
            touch(ops["x"], (*shape, *window), (*ops["x_stride"], *ops["win_stride"]))
            touch(ops["z"], shape, ops["z_stride"])
            issue = vector_issue(unit, shape, window[0] * window[1])
        elif mnemonic == "vred":
            shape = ops["shape"]
            touch(ops["x"], shape, ops["x_stride"])
            z_stride = ops.get("z_stride", 1)
            touch(ops["z"], (shape[0],), (z_stride,))
            if ops.get("acc", 0):
                touch(ops["z"], (shape[0],), (z_stride,))
            issue = vector_issue(unit, shape, 1)
        else:
            shape = ops["shape"]
            for name in ("x", "y", "w", "z"):
                if name in ops:
                    touch(ops[name], shape, ops[f"{name}_stride"])
            if mnemonic == "vact":
                cost = isa.ACTIVATIONS[ops["func"]]
            else:
                cost = isa.BINARY_COST.get(mnemonic, 1)
            if mnemonic == "vfma":
                macs = shape[0] * shape[1] * shape[2]
            issue = vector_issue(unit, shape, cost)
        memory = max((cdiv(nbytes, self.bandwidth[name]) for name, nbytes in traffic.items() if name != "DRAM"),
                     default=0)
        return max(issue, memory) + unit.pipeline_depth, macs


# --------------------------------------------------------------------------- job-level timeline


class DmaClock:
    """DMA channels and the DRAM bus (first come, first served), as the machine model has them."""

    def __init__(self, target: Target):
        self.target = target
        self.dram_free = 0
        self.latency = target.dma.latency_cycles + target.dram_latency_cycles
        self.bandwidth = {m.name: m.bandwidth_bytes_per_cycle for m in target.memories}

    def transfer(self, start: int, onchip: str, read_bytes: int, copy_bytes: int, to_dram: bool) -> int:
        dma = self.target.dma
        t = cdiv(max(read_bytes, copy_bytes), dma.bandwidth_bytes_per_cycle)
        t = max(t, cdiv(copy_bytes if not to_dram else read_bytes, self.bandwidth[onchip]))
        dram_bytes = copy_bytes if to_dram else read_bytes
        slot = max(start + self.latency, self.dram_free)
        self.dram_free = slot + cdiv(dram_bytes, self.target.dram_bytes_per_cycle) if dram_bytes else slot
        return max(start + self.latency + t, self.dram_free)


def transfer_bytes(transfer) -> tuple[int, int]:
    """(DRAM-side bytes, one on-chip copy's bytes): padding is written but never read."""
    shape, pad = transfer.shape, transfer.pad
    inner = [n - pad[2 * d] - pad[2 * d + 1] for d, n in enumerate(shape)]
    return F32 * inner[0] * inner[1] * inner[2], F32 * shape[0] * shape[1] * shape[2]


def predict_jobs(target: Target, kinds, jobs, dma: DmaClock | None = None, start: int = 0,
                 slots: int | None = None) -> Prediction:
    """Timeline of one phase of scheduled jobs, with `slots` per buffer kind (default: 2, double buffering).

    The jobs become the operations the scheduler emits (loads of new occupancies, stores one
    job late, each compute instruction), each on its engine (DMA channel, core unit) with the
    operations it waits for (data loaded, slot free, store after the last writer, unit to
    unit inside a job). They are then dispatched as the machine does: always the operation
    that can start earliest, so the shared DRAM bus is handed out in time order."""
    from nncc.compiler.codegen.scheduler import SLOTS, plan_occupancies, take_pending

    kinds_by_name = {kind.name: kind for kind in kinds}
    costs = InstructionCosts(target, {kind.name: kind.memory for kind in kinds})
    dma = dma or DmaClock(target)
    slot_count = slots or SLOTS
    slot_of, _ = plan_occupancies(jobs, kinds_by_name, slot_count)
    channels, cores = target.dma.channels, target.cores
    engines: dict[Hashable, list[int]] = {}
    # operation i: (engine, deps, payload); payload = ("dma", memory, dram bytes, copy bytes, to_dram)
    # or ("compute", cycles)
    ops: list[tuple[Hashable, tuple[int, ...], tuple]] = []
    full: dict[int, int] = {}  # id(occupancy) -> op of its last load
    done: dict[int, int] = {}  # id(occupancy) -> op of its last writer (before the store)
    free: dict[tuple[int, int], int] = {}  # (id(occupancy), core) -> op after which the slot is free
    pred = Prediction()

    def add(engine, deps, payload) -> int:
        ops.append((engine, tuple(d for d in deps if d is not None), payload))
        engines.setdefault(engine, []).append(len(ops) - 1)
        return len(ops) - 1

    def add_dma(channel: int, deps, transfers, to_dram: bool, memory: str) -> int:
        op = None
        for i, transfer in enumerate(transfers):
            dram_bytes, copy = transfer_bytes(transfer)
            if to_dram:
                pred.dram_write_bytes += copy
            else:
                pred.dram_read_bytes += dram_bytes
            op = add(("dma", channel), deps if i == 0 else (), ("dma", memory, dram_bytes, copy, to_dram))
        return op

    kind_order = [kind.name for kind in kinds]

    def emit_loads(occupancy) -> None:
        users = sorted(occupancy.users)
        previous = occupancy.previous
        deps = [] if previous is None else [free.get((id(previous), core)) for core in sorted(previous.users)]
        if kinds_by_name[occupancy.kind].shared and cores > 1:  # one channel per shared slot
            channel = (kind_order.index(occupancy.kind) * slot_count + occupancy.slot) % channels
        else:
            channel = users[0] % channels
        full[id(occupancy)] = add_dma(channel, deps, occupancy.loads, False,
                                      kinds_by_name[occupancy.kind].memory)

    def emit_stores(occupancy, core: int) -> None:
        channel = (core + cores) % channels if channels > cores else core % channels
        free[(id(occupancy), core)] = add_dma(channel, [done.get(id(occupancy))], occupancy.stores, True,
                                              kinds_by_name[occupancy.kind].memory)

    pending: dict[int, list] = {}  # core -> stores emitted after the loads of its next job
    for index, job in enumerate(jobs):
        slots = slot_of[index]
        for occupancy in slots.values():
            if occupancy.first_job == index and occupancy.loads:
                for store in take_pending(pending, occupancy.previous):
                    emit_stores(*store)
                emit_loads(occupancy)
        for occupancy, core in pending.pop(job.core, []):
            emit_stores(occupancy, core)
        first_deps = []
        for occupancy in slots.values():
            uses = occupancy.users[job.core]
            if uses[0] == index:
                if occupancy.loads:
                    first_deps.append(full[id(occupancy)])
                elif occupancy.previous is not None and job.core in occupancy.previous.users:
                    first_deps.append(free.get((id(occupancy.previous), job.core)))
        op, previous_unit = None, None
        for compute in job.compute:
            unit = compute.unit
            if previous_unit is None:
                deps = first_deps
            elif previous_unit != unit:  # the scheduler's unit -> unit semaphore
                deps = [op]
            else:
                deps = ()
            cycles, macs = costs.cycles(compute.mnemonic, compute.operands)
            pred.macs += macs
            op = add((job.core, unit), deps, ("compute", cycles))
            previous_unit = unit
        for occupancy in slots.values():
            uses = occupancy.users[job.core]
            if uses[-1] == index:
                if occupancy.stores and occupancy.store_core == job.core:
                    done[id(occupancy)] = op
                elif not occupancy.stores:
                    free[(id(occupancy), job.core)] = op
            if occupancy.stores and occupancy.last_job(occupancy.store_core) == index and \
                    max(max(v) for v in occupancy.users.values()) == index:
                pending.setdefault(occupancy.store_core, []).append((occupancy, occupancy.store_core))
    for core in sorted(pending):
        for occupancy, store_core in pending[core]:
            emit_stores(occupancy, store_core)
    pred.cycles, pred.busy = dispatch(ops, engines, dma, start, semaphore_barriers(target, ops))
    pred.cycles -= start
    return pred


def semaphore_barriers(target: Target, ops) -> list[int]:
    """The operations the scheduler puts a barrier before because no semaphore is free
    (`scheduler.SemaphoreAllocator`, fed the same waits: every dependency is one semaphore)."""
    from nncc.compiler.codegen import scheduler

    pairs = sum(len(deps) for _, deps, _ in ops)
    if pairs <= scheduler.SEMAPHORES:  # a fresh semaphore for every pair
        return []
    consumers = [0] * len(ops)
    for _, deps, _ in ops:
        for dep in deps:
            consumers[dep] += 1
    allocator = scheduler.SemaphoreAllocator(scheduler.engine_count(target))
    tokens: list = [None] * len(ops)
    barriers = []
    for index, (engine, deps, _) in enumerate(ops):
        if not deps and not consumers[index]:
            continue  # only its own engine's later instructions see it: the order of theirs is kept
        barrier, _, clock = allocator.issue(engine, [tokens[dep].popleft() for dep in deps])
        if barrier:
            barriers.append(index)
        if consumers[index]:
            tokens[index] = deque(allocator.signal(clock) for _ in range(consumers[index]))
    return barriers


def dispatch(ops, engines, dma: DmaClock, start: int, barriers: Sequence[int] = ()) -> tuple[int, dict[str, int]]:
    """Run the operations: each engine in order, always the one that can start earliest. A
    barrier before operation b (`barriers`) starts it and everything after it when all before
    it are done (the dependencies across it are dropped, as the scheduler drops their waits)."""
    end = [-1] * len(ops)
    busy: dict[str, int] = {}
    last = start
    bounds = [0, *barriers, len(ops)]
    for low, high in zip(bounds, bounds[1:]):
        segment = engines if len(bounds) == 2 else {
            engine: [op for op in indices if low <= op < high] for engine, indices in engines.items()}
        last = dispatch_segment(ops, {e: i for e, i in segment.items() if i}, dma, last, end, busy, low)
    return last, busy


def dispatch_segment(ops, engines, dma: DmaClock, start: int, end: list[int], busy: dict[str, int],
                     low: int) -> int:
    """Operations `engines` (all at or after `low`, all before the next barrier) from `start`."""
    queues = [(engine, engines[engine]) for engine in engines]
    heads = [0] * len(queues)
    engine_free = [start] * len(queues)
    busy_by = [0] * len(queues)
    active = list(range(len(queues)))
    last = start
    while active:
        best_begin, best_op, best_q = None, None, None
        for q in active:
            op = queues[q][1][heads[q]]
            begin = engine_free[q]
            for dep in ops[op][1]:
                if dep < low:  # before a barrier: done
                    continue
                e = end[dep]
                if e < 0:
                    break
                if e > begin:
                    begin = e
            else:
                if best_begin is None or begin < best_begin or (begin == best_begin and op < best_op):
                    best_begin, best_op, best_q = begin, op, q
        payload = ops[best_op][2]
        if payload[0] == "compute":
            finish = best_begin + payload[1]
        else:
            _, memory, dram_bytes, copy, to_dram = payload
            finish = dma.transfer(best_begin, memory, copy if to_dram else dram_bytes, copy, to_dram)
        end[best_op] = finish
        engine_free[best_q] = finish
        busy_by[best_q] += finish - best_begin
        if finish > last:
            last = finish
        heads[best_q] += 1
        if heads[best_q] == len(queues[best_q][1]):
            active.remove(best_q)
    for (engine, _), cycles in zip(queues, busy_by):
        name = f"dma{engine[1]}" if engine[0] == "dma" else f"core{engine[0]}.{engine[1]}"
        busy[name] = busy.get(name, 0) + cycles
    return last


# --------------------------------------------------------------------------- closed form (tile search)


@functools.lru_cache(maxsize=4096)
def extent_sum(s, tile: int, axis: int) -> int:
    """Input rows (axis 0) or columns (axis 1) read by all output tiles along that axis."""
    size_in, size_out = (s.h, s.oh) if axis == 0 else (s.w, s.ow)
    stride, pad = s.strides[axis], s.pads[axis]
    total = 0
    for o0 in range(0, size_out, tile):
        top = o0 * stride - pad
        total += min(size_in, top + s.input_extent(min(tile, size_out - o0), axis)) - max(0, top)
    return total


def ring_loads(groups: int, ic_tiles: int, scan: bool) -> int:
    """Loads of a block keyed by (ic tile) that is walked `groups` times in a row through a
    two-slot ring (the scheduler reuses a slot whose key matches): all of them stay resident
    when there are at most two; scan (serpentine) finds the last two again at every turn."""
    if ic_tiles <= 2:
        return ic_tiles
    return ic_tiles + (groups - 1) * (ic_tiles - 2 if scan else ic_tiles)


_MACHINES: dict[int, tuple] = {}


def machine(target: Target):
    """The target constants the closed form uses (looked up once per target object)."""
    found = _MACHINES.get(id(target))
    if found is not None and found[0] is target:
        return found[1]
    _MACHINES[id(target)] = (target, _machine(target))
    return _MACHINES[id(target)][1]


def _machine(target: Target):
    bw = {m.name: m.bandwidth_bytes_per_cycle for m in target.memories}
    in_mem, w_mem, out_mem = (target.memory_for(r).name for r in ("input", "weight", "output"))
    vec_role = next((r for r in ("main", "post", "pre") if r in target.units and target.units[r].kind == "vector"),
                    None)
    return (target.main, bw, in_mem, w_mem, out_mem, target.dma.latency_cycles + target.dram_latency_cycles,
            target.dram_bytes_per_cycle, target.dma.bandwidth_bytes_per_cycle, vec_role)


def per_value(values: np.ndarray, function) -> np.ndarray:
    """`function` of every element, computed once per distinct value."""
    unique, inverse = np.unique(values, return_inverse=True)
    return np.array([function(int(v)) for v in unique], dtype=np.int64)[inverse]


def conv_estimate(target: Target, s, t, cores: int, mode: str, scan: bool, bias: bool = True,
                  epilogue_ops: int = 1) -> tuple[float, int]:
    """(cycles, DRAM bytes) of conv shape `s` with tiles `t` (closed form, for ranking tiles)."""
    cycles, nbytes = conv_estimates(target, s, [t.toc], [t.tic], [t.toh], [t.tow], [mode == "channel"], cores,
                                    scan, bias, epilogue_ops)
    return float(cycles[0]), int(nbytes[0])


def conv_estimates(target: Target, s, toc, tic, toh, tow, channel, cores: int, scan: bool, bias: bool = True,
                   epilogue_ops: int = 1):
    """The closed form over arrays of tile choices: (cycles, DRAM bytes) arrays.

    `channel` is True where the cores take different output-channel tiles of one output tile
    and share the input block, False where they take different output tiles and share the
    weight block (multicast). Steady state of the double-buffered pipeline: the slowest of
    compute, the DMA channels and the DRAM bus, plus the first load (pipeline fill) and the
    last epilogue and store (drain). Weight and input blocks are counted as often as the
    two-slot reuse lets them be loaded (scan finds the last two blocks again at each turn)."""
    unit, bw, in_mem, w_mem, out_mem, latency, dram_bw, ch_bw, vec_role = machine(target)
    toc, tic, toh, tow = (np.asarray(v, dtype=np.int64) for v in (toc, tic, toh, tow))
    channel = np.asarray(channel, dtype=bool)
    f = np.float64
    oc_n = -(-s.og // toc)
    ic_n = -(-s.cg // tic)
    sp_n = (-(-s.oh // toh)) * (-(-s.ow // tow)) * s.n
    rows = per_value(toh, lambda v: extent_sum(s, v, 0)).astype(f)
    cols = per_value(tow, lambda v: extent_sum(s, v, 1)).astype(f)
    in_pass = F32 * s.n * rows * cols * s.cg
    w_pass = F32 * (s.kh * s.kw * s.cg * s.og + s.og * ic_n).astype(f)
    outer = np.where(channel, sp_n, oc_n * s.group).astype(f)
    items = np.where(channel, oc_n, sp_n).astype(f)
    groups = -(-items // cores)
    shared_pass = np.where(channel, in_pass / sp_n, w_pass / oc_n)
    own_pass = np.where(channel, w_pass / oc_n, in_pass / sp_n)
    steps = outer * groups * ic_n
    # the shared (multicast) block: per outer item, ic tiles walked `groups` times
    ring = np.where(ic_n <= 2, ic_n, ic_n + (groups - 1) * (ic_n - 2 if scan else ic_n))
    shared_loads = outer * ring
    # the per-core block: keyed by (item, ic tile), repeated at every outer item
    if scan:
        repeat = np.where(groups <= 2, groups, groups + (outer - 1) * (groups - 2))
    else:
        repeat = np.where(groups <= 2, groups, groups * outer)
    saved = (outer - 1) * np.minimum(2, ic_n) * np.minimum(cores, items) if scan else 0
    own_loads = np.where(ic_n == 1, repeat * items / groups, np.maximum(outer * items * ic_n - saved, items * ic_n))
    shared_bytes = shared_loads * shared_pass / ic_n
    own_bytes = own_loads * own_pass / ic_n
    out_bytes = F32 * s.n * s.o * s.oh * s.ow
    dram_bytes = shared_bytes + own_bytes + out_bytes
    # compute of one full job on one core: a matmul per kernel row (k = kw * tic) without
    # horizontal dilation, else per kernel position (k = tic)
    matmuls, k = (s.kh, s.kw * tic) if s.dilations[1] == 1 else (s.kh * s.kw, tic)
    if unit.kind == "matrix":
        issue = toh * tow * (-(-k // unit.rows)) * (-(-toc // unit.cols))
    else:
        issue = -(-(toh * tow * k * (-(-toc // unit.lanes))) // unit.macs_per_lane)
    traffic: dict[str, Any] = {}
    for name, nbytes in ((in_mem, F32 * toh * tow * k), (w_mem, F32 * k * toc), (out_mem, 2 * F32 * toh * tow * toc)):
        traffic[name] = traffic.get(name, 0) + nbytes
    memory = np.max([np.ceil(b / bw[m]) for m, b in traffic.items()], axis=0)
    job = matmuls * (np.maximum(issue, memory) + unit.pipeline_depth)
    epi = np.zeros(len(toc))
    if vec_role == "main":  # bias on the first matmul, act on the last, beside the MACs: only an excess costs
        passes = np.ceil(toh * tow * (-(-toc // unit.lanes)) / unit.macs_per_lane)
        epi = sum(np.maximum(0, passes * ops - issue) for ops in (epilogue_ops, 1 if bias else 0))
    elif vec_role is not None:
        vu = target.units[vec_role]
        one = np.maximum(np.ceil(toh * tow * (-(-toc // vu.lanes)) / vu.macs_per_lane),
                         np.ceil(2 * F32 * toh * tow * toc / bw[out_mem]))
        epi = (epilogue_ops + (1 if bias else 0)) * (one + vu.pipeline_depth)
    if vec_role == "main":
        compute = steps * job + steps / ic_n * epi
    else:
        compute = np.maximum(steps * job, steps / ic_n * epi)
    # DMA channels: every transfer costs latency + bytes / channel bandwidth on its channel;
    # multicasts rotate over the channels, a core's own blocks and (with as many channels as
    # cores) its stores use its channel; a lone channel cannot hide its latency behind others.
    w_boxes = (1 if s.kh * s.kw == 1 else s.kh) + (1 if bias else 0)
    shared_dmas = shared_loads * np.where(channel, 1, w_boxes)
    own_dmas = own_loads * np.where(channel, w_boxes, 1)
    stores = outer * groups * cores * (1 if target.dma.channels <= cores else 0)
    active = np.where(own_loads > shared_loads, max(1, min(target.dma.channels, cores)), 1)
    per_channel = (shared_dmas + own_dmas + stores) / active
    channel_bytes = (shared_bytes + own_bytes + (out_bytes if target.dma.channels <= cores else 0)) / active
    dma = per_channel * latency + channel_bytes / np.where(active > 1, ch_bw, min(ch_bw, dram_bw))
    steady = np.maximum(np.maximum(compute, dram_bytes / dram_bw), dma)
    in_block = per_value(toh, lambda v: s.input_extent(v, 0)) * per_value(tow, lambda v: s.input_extent(v, 1))
    first = latency + F32 * (in_block * tic + s.kh * s.kw * tic * toc) * np.where(channel, cores, 1) / dram_bw
    last = epi + latency + F32 * toh * tow * toc * cores / dram_bw
    return steady + first + last, dram_bytes.astype(np.int64)
