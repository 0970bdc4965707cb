"""The compiler's cost model: cycles and DRAM bytes of a layer before it runs.

It is separate from the interpreter (it never calls it) and works from the target's
machine parameters and the layer's tile jobs (`scheduler.Job`), at two levels:

- `conv_estimates`: a closed-form estimate of conv/gemm tile choices (compute with lane
  waste and pipeline depth, DRAM traffic with weight/input re-reads, DMA channel occupancy,
  latency of the first load and the last store), vectorised over every candidate.
  `choose_tiles` ranks the candidates with it and keeps a shortlist.
- `time_schedule` (`predict_jobs` from jobs): the layer's `scheduler.Schedule` -- the very
  operations the scheduler emits, with their dependencies and the barriers its semaphore
  allocation places -- dispatched on per-engine clocks as the machine runs them: always the
  operation that can start earliest, a compute instruction busy for
  `timing.compute_cycles`, a DMA ending at `timing.DmaModel.finish_time` (the DRAM bus shared
  first come first served). These are the functions the interpreter times its instructions
  with, so the prediction is the simulation; this is the model recorded in the report.

Layers are separated by a barrier, so a layer's cycles run from its first load to its
last store; the timeline starts empty (pipeline fill) and drains at the end.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nncc.compiler.codegen.scheduler import SLOTS, BufRef, Schedule, gc_paused
from nncc.runtime import timing
from nncc.runtime.target import Target

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


# --------------------------------------------------------------------------- the schedule, timed


def predict_jobs(target: Target, kinds, jobs, dma: timing.DmaModel | None = None, start: int = 0,
                 slots: int | None = None, barriers: bool = True) -> Prediction:
    """Cycles and DRAM bytes of one phase of jobs, with `slots` per buffer kind (default: 2,
    double buffering): their `Schedule` (the one the scheduler then emits), timed.

    `barriers=False` leaves the semaphore allocation out (the tile search: a barrier needs more
    semaphore pairs in flight than the machine's 63, which no measured layer has); the
    prediction of a layer that is emitted counts them (`time_schedule`)."""
    with gc_paused():
        if not barriers:
            return time_schedule(Schedule(target, kinds, jobs, slots or SLOTS), (), dma, start)
        schedule = Schedule.of(target, kinds, jobs, slots or SLOTS)  # kept for the scheduler to emit
        return time_schedule(schedule, schedule.allocation.barriers, dma, start)


def time_schedule(schedule: Schedule, barriers: Sequence[int] = (), dma: timing.DmaModel | None = None,
                  start: int = 0) -> Prediction:
    """Run a schedule's operations as the machine runs its instructions: each engine in order,
    always the operation that can start earliest (so the DRAM bus is handed out in time order);
    an operation starts when its engine is free and the operations it depends on have ended.
    A barrier before operation b starts it and everything after it when all before it are done
    (the dependencies across it are dropped, as the allocator drops their semaphores)."""
    target = schedule.target
    dma = dma or timing.DmaModel(target)
    memory_of = {name: kind.memory for name, kind in schedule.kinds.items()}

    def memory(ref: Any) -> str:
        return memory_of[ref.kind] if isinstance(ref, BufRef) else ref[0]

    prediction = Prediction()
    payloads = operation_costs(schedule, memory, prediction)
    prediction.cycles, prediction.busy = dispatch(schedule.ops, payloads, dma, start, barriers)
    prediction.cycles -= start
    return prediction


def operation_costs(schedule: Schedule, memory, prediction: Prediction) -> list:
    """Per operation: a compute's busy cycles (int), or a DMA's `timing.dma_payload` (src memory,
    dst memory, bytes read, bytes written per copy, copies, DRAM runs); the MACs and DRAM bytes are
    added to `prediction`."""
    target = schedule.target
    memory_of = {name: kind.memory for name, kind in schedule.kinds.items()}
    costs: dict = {}  # compute instructions repeat: each kind timed once
    by_id: dict = {}  # the same Compute object (jobs share them: nest.NestLowering.instructions), by id
    boxes: dict = {}  # a DMA's geometry -> timing.dma_payload
    payloads: list = []
    macs = read = written = 0
    for op in schedule.ops:
        compute = op.compute
        if compute is not None:
            found = by_id.get(id(compute))
            if found is not None:
                payloads.append(found[0])
                macs += found[1]
                continue
            operands = compute.operands
            try:
                key = (compute.mnemonic, *operands.items())
                found = costs.get(key)
            except TypeError:  # an unhashable operand value
                key, found = None, None
            if found is None:
                operand = operands.get
                found = (timing.compute_cycles(target, compute.mnemonic, operand, memory),
                         timing.instruction_macs(compute.mnemonic, operand))
                if key is not None:
                    costs[key] = found
            by_id[id(compute)] = found
            payloads.append(found[0])
            macs += found[1]
            continue
        transfer = op.transfer
        src, dst = transfer.src, transfer.dst  # `memory`, inline
        src = memory_of[src.kind] if src.__class__ is BufRef else src[0]
        dst = memory_of[dst.kind] if dst.__class__ is BufRef else dst[0]
        copies = 1 if op.store else len(op.cores)
        box = (src, dst, transfer.shape, transfer.pad, transfer.src_stride, transfer.dst_stride, copies)
        payload = boxes.get(box)
        if payload is None:
            payload = boxes[box] = timing.dma_payload(*box)
        if src == "DRAM":
            read += payload[2]
        if dst == "DRAM":
            written += payload[3] * copies
        payloads.append(payload)
    prediction.macs += macs
    prediction.dram_read_bytes += read
    prediction.dram_write_bytes += written
    return payloads


def dispatch(ops, payloads, dma: timing.DmaModel, start: int, barriers: Sequence[int] = ()) -> tuple[int, dict]:
    """End of the last operation, and the busy cycles per engine (`dispatch_segment` between barriers)."""
    end = [-1] * len(ops)
    busy: dict[str, int] = {}
    last = start
    bounds = [0, *barriers, len(ops)]
    for low, high in zip(bounds, bounds[1:]):
        if low:  # a barrier before `low`: all engines meet, then wait the barrier's cost
            last += dma.target.barrier_cycles
        if high > low:
            last = dispatch_segment(ops, payloads, dma, last, end, busy, low, high)
    return last, busy


def dispatch_segment(ops, payloads, dma: timing.DmaModel, start: int, end: list[int], busy: dict[str, int],
                     low: int, high: int) -> int:
    """Operations low..high-1 from `start`: a heap of the engines' next operations whose
    dependencies have ended, keyed (start, operation) as the interpreter's dispatcher picks.
    An engine's next operation that would come first off the heap anyway runs at once."""
    numbers: dict = {}  # engine -> its number
    lists: list[list[int]] = []  # per engine: its operations in order
    engine_of = [0] * len(ops)
    waiting = [0] * len(ops)  # dependencies (inside the segment) not yet run
    consumers: list = [()] * len(ops)
    for index in range(low, high):
        op = ops[index]
        number = numbers.get(op.engine)
        if number is None:
            number = numbers[op.engine] = len(lists)
            lists.append([])
        engine_of[index] = number
        lists[number].append(index)
        for dep in op.deps:
            if dep >= low:
                waiting[index] += 1
                if consumers[dep]:
                    consumers[dep].append(index)
                else:
                    consumers[dep] = [index]
    launchers, owed = dma_launchers(ops, payloads, dma.target, low, high), {}
    heads = [0] * len(lists)
    free = [start] * len(lists)
    busy_by = [0] * len(lists)
    heap: list[tuple[int, int, int]] = []
    push, pop = heapq.heappush, heapq.heappop

    def begin_of(number: int, index: int) -> int:
        begin = free[number]
        for dep in ops[index].deps:
            if dep >= low and end[dep] > begin:
                begin = end[dep]
        return begin

    for number, indices in enumerate(lists):
        if not waiting[indices[0]]:
            push(heap, (begin_of(number, indices[0]), indices[0], number))
    last = start
    done = 0
    while heap:
        begin, index, number = pop(heap)
        queue = lists[number]
        while True:
            payload = payloads[index]
            if payload.__class__ is int:
                finish = begin + payload
                if owed and launchers[index] is not None:  # its core's DMA launches since its last
                    finish += owed.pop(launchers[index], 0)
            else:
                finish = dma.finish_time(begin, *payload)
                if launchers:
                    for core in launchers[index]:
                        owed[core] = owed.get(core, 0) + dma.target.dma.launch_cycles
            end[index] = finish
            free[number] = finish
            busy_by[number] += finish - begin
            if finish > last:
                last = finish
            done += 1
            for consumer in consumers[index]:
                waiting[consumer] -= 1
                if not waiting[consumer]:
                    other = engine_of[consumer]
                    if lists[other][heads[other]] == consumer:
                        push(heap, (begin_of(other, consumer), consumer, other))
            head = heads[number] = heads[number] + 1
            if head == len(queue):
                break
            following = queue[head]
            if waiting[following]:
                break
            begin = finish
            for dep in ops[following].deps:
                if dep >= low and end[dep] > begin:
                    begin = end[dep]
            if heap and (heap[0][0] < begin or (heap[0][0] == begin and heap[0][1] < following)):
                push(heap, (begin, following, number))
                break
            index = following
    if done != high - low:
        raise AssertionError("the schedule deadlocks: an operation waits for one emitted after it")
    for engine, number in numbers.items():
        name = f"dma{engine[1]}" if engine[0] == "dma" else f"core{engine[0]}.{engine[1]}"
        busy[name] = busy.get(name, 0) + busy_by[number]
    return last


def dma_launchers(ops, payloads, target: Target, low: int, high: int) -> dict:
    """With `dma.launch_cycles`: per operation low..high-1, a DMA's launching cores
    (`timing.dma_launch_cores`, as the scheduler emits its `cores`), a main-unit compute's core
    (which pays them), else None; without, {} (nothing to charge)."""
    if not target.dma.launch_cycles:
        return {}
    shared = {m.name for m in target.memories if m.shared}
    out: dict = {}
    for index in range(low, high):
        op = ops[index]
        if op.compute is not None:
            out[index] = op.engine[0] if op.engine[1] == "main" else None
        else:
            dst = payloads[index][1]
            out[index] = timing.dma_launch_cores(dst, op.cores[:1] if dst in shared else op.cores, op.cores[0])
    return out


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


_KERNEL_ISSUE: dict[tuple, dict[tuple[int, int, int], int]] = {}  # (unit, staged, half) -> {(m, n, k): cycles}


def kernel_issue(target: Target, rows, lane, k, staged: bool) -> np.ndarray:
    """`timing.matmul_issue_cycles` of accumulating matmuls (rows x lane x k), over arrays: once
    per distinct shape, remembered across searches (ResNet-50's 53 rankings share 9k shapes of 66k)."""
    unit = target.main
    half = target.memory(unit.broadcast_memory).size_bytes // 2
    known = _KERNEL_ISSUE.setdefault((unit, staged, half), {})
    rows, lane, k = np.broadcast_arrays(*(np.asarray(v, dtype=np.int64) for v in (rows, lane, k)))
    keys = (rows * (int(lane.max()) + 1) + lane) * (int(k.max()) + 1) + k
    _, first, inverse = np.unique(keys.reshape(-1), return_index=True, return_inverse=True)
    cycles = []
    for shape in zip(rows.reshape(-1)[first].tolist(), lane.reshape(-1)[first].tolist(), k.reshape(-1)[first].tolist()):
        found = known.get(shape)
        if found is None:
            found = known[shape] = timing.matmul_issue_cycles(unit, 1, *shape, 1, staged, half)
        cycles.append(found)
    return np.array(cycles, dtype=np.int64)[inverse.reshape(-1)].reshape(rows.shape)


def conv_estimate(target: Target, s, t, cores: int, mode: str, scan: bool, bias: bool = True,
                  epilogue_ops: int = 1, mapping: str = "channels") -> tuple[float, int]:
    """(cycles, DRAM bytes) of conv shape `s` with tiles `t` (closed form, for ranking tiles)."""
    cycles, nbytes = conv_estimates(target, s, [t.toc], [t.tic], [t.toh], [t.tow], [mode == "channel"], cores,
                                    scan, bias, epilogue_ops, mapping)
    return float(cycles[0]), int(nbytes[0])


def conv_estimates(target: Target, s, toc, tic, toh, tow, channel, cores: int, scan: bool, bias: bool = True,
                   epilogue_ops: int = 1, mapping: str = "channels"):
    """The closed form over arrays of tile choices: (cycles, DRAM bytes) arrays.

    `channel` is True where the cores take different output-channel tiles of one output tile
    and share the input block, False where they take different output tiles and share the
    weight block (multicast). Steady state of the double-buffered pipeline: the slowest of
    compute, the DMA channels and the DRAM bus, plus the first load (pipeline fill) and the
    last epilogue and store (drain). Weight and input blocks are counted as often as the
    two-slot reuse lets them be loaded (scan finds the last two blocks again at each turn).

    `mapping` is the lane mapping, which changes only the compute: "channels" (output channels
    on the lanes) or "width" (output columns on the lanes, the weights broadcast: `tile.conv ...
    mapping width`); tiles, loop order and DMAs are the same."""
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
    w_pass = F32 * (s.kh * s.kw * s.cg * s.og + s.og * ic_n * bool(bias)).astype(f)  # the bias with every block
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
    # compute of one full job on one core: matmuls of `rows` rows (batch x m), reduction k, and
    # `lane` elements (n) on the lanes or columns
    if mapping == "width":  # a matmul per kernel position: m = output channels, k = input channels
        matmuls, rows, k, lane = s.kh * s.kw, toh * toc, tic, tow
        a, b = (w_mem, F32 * toc * tic), (in_mem, F32 * toh * tic * tow)
    else:  # a matmul per kernel row (k = kw * tic) without horizontal dilation, else per kernel position
        matmuls, k = (s.kh, s.kw * tic) if s.dilations[1] == 1 else (s.kh * s.kw, tic)
        rows, lane = toh * tow, toc
        a, b = (in_mem, F32 * rows * k), (w_mem, F32 * k * toc)
    if unit.kind == "matrix":
        issue = rows * (-(-k // unit.rows)) * (-(-lane // unit.cols))
    elif unit.micro_kernel:  # the kernel calls of runtime/timing.py, per distinct shape (accumulating)
        issue = kernel_issue(target, rows, lane, k, a[0] != unit.broadcast_memory)
    else:
        issue = -(-(rows * k * (-(-lane // unit.lanes))) // unit.macs_per_lane)
    if unit.micro_kernel:  # the calls count their loads, stores and fill/drain
        job = matmuls * issue
    else:
        traffic: dict[str, Any] = {}
        for name, nbytes in (a, b, (out_mem, 2 * F32 * rows * lane)):
            traffic[name] = traffic.get(name, 0) + nbytes
        memory = np.max([np.ceil(b / bw[m]) for m, b in traffic.items()], axis=0)
        job = matmuls * (np.maximum(issue, memory) + unit.pipeline_depth)
    epi = np.zeros(len(toc))
    if vec_role == "main":  # bias on the first matmul, act on the last, beside the MACs: only an excess costs
        passes = np.ceil(rows * (-(-lane // unit.lanes)) / unit.macs_per_lane)
        epi = sum(np.maximum(0, passes * ops - issue) for ops in (epilogue_ops, 1 if bias else 0))
    elif vec_role is not None:
        vu = target.units[vec_role]
        one = np.maximum(np.ceil(rows * (-(-lane // vu.lanes)) / vu.macs_per_lane),
                         np.ceil(2 * F32 * rows * lane / bw[out_mem]))
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
    # the DRAM bus: on a burst-timed DRAM every contiguous run moves whole bursts at the sustained
    # bandwidth and costs at least `run_cycles` (timing.dram_bus_cycles), else bytes at peak
    x_run, w_run, y_run = run_floats(s, toc, tic, toh, tow)
    burst = burst_factor(target)
    shared_run, own_run = np.where(channel, x_run, w_run), np.where(channel, w_run, x_run)
    bus_bytes = shared_bytes * burst(shared_run) + own_bytes * burst(own_run) + out_bytes * burst(y_run)
    bus_bw = dram_bw * (target.dram.sustained_fraction if target.dram.burst_timing else 1.0)
    bus = bus_bytes / bus_bw
    if target.dram.burst_timing and target.dram.run_cycles:
        runs = (shared_bytes / shared_run + own_bytes / own_run + out_bytes / y_run) / F32
        bus = np.maximum(bus, runs * target.dram.run_cycles)
    steady = np.maximum(np.maximum(compute, bus), dma)
    in_block = per_value(toh, lambda v: s.input_extent(v, 0)) * per_value(tow, lambda v: s.input_extent(v, 1))
    first = latency + F32 * (in_block * tic * burst(x_run) + s.kh * s.kw * tic * toc * burst(w_run)) * np.where(
        channel, cores, 1) / bus_bw
    last = epi + latency + F32 * toh * tow * toc * cores * burst(y_run) / bus_bw
    return steady + first + last, dram_bytes.astype(np.int64)


def run_floats(s, toc, tic, toh, tow):
    """Floats per contiguous DRAM run of a full-size job's input window, weight block and output
    tile (`timing.dram_runs` of their boxes: dimensions merge while contiguous), in the layouts
    the shape expects (`ConvShape.x_nhwc`, `y_nhwc`; weights packed [kh][kw][c][o])."""
    rows = np.minimum(per_value(toh, lambda v: s.input_extent(v, 0)), s.h)
    cols = np.minimum(per_value(tow, lambda v: s.input_extent(v, 1)), s.w)
    if s.x_nhwc:  # a pixel's channels; whole rows of pixels when the tile has every channel
        x_run = np.where(tic < s.c, tic, np.where(cols < s.w, tic * cols, rows * s.w * s.c))
    else:  # a row of the tile; whole planes when it has every column and row
        x_run = np.where(cols < s.w, cols, np.where(rows < s.h, rows * s.w, tic * s.h * s.w))
    w_run = np.where(toc < s.og, toc, np.where(tic < s.cg, tic * toc, s.kh * s.kw * s.cg * s.og))
    if s.y_nhwc:
        y_run = np.where(toc < s.o, toc, np.where(tow < s.ow, toc * tow, toh * s.ow * s.o))
    else:
        y_run = np.where(tow < s.ow, tow, np.where(toh < s.oh, toh * s.ow, toc * s.oh * s.ow))
    return (np.asarray(r, dtype=np.float64) for r in (x_run, w_run, y_run))


def burst_factor(target: Target):
    """Bytes the DRAM bus moves per byte of runs of r floats: whole bursts on a burst-timed DRAM
    (a 56-byte row costs a 64-byte burst), else 1."""
    if not target.dram.burst_timing:
        return lambda runs: 1.0
    burst = target.dram.burst_bytes
    return lambda runs: np.ceil(F32 * runs / burst) * burst / (F32 * runs)
