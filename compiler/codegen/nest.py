"""Unroll a `tile.nest` into the scheduler's jobs: the last step between a loop nest and instructions.

The loops are walked in the order they say (serpentine, cores in waves); every load and store
becomes a `Transfer` between a DRAM slice and a buffer view, every compute op its instructions
(`compute_lowering`). The compute ops of one loop-body iteration are one job, which carries the
loads issued since the previous job of its core; a store goes to the last job of its core that
used the buffer. A buffer's contents are identified by what was loaded into it (the
scheduler reuses a slot that already holds them: Scan's saving), or, for a buffer that is only
computed into (an accumulator, or an intermediate of a fused group, which never sees DRAM), by
the iteration of the loops around all its uses.

    tile.for %ic[%tic] = 0 to 3 step 3 order serpentine {
      tile.load %X[...] [...] -> %in[0] dims [2, 3, 1]        -> Transfer(DRAM -> in slot)
      tile.conv %in[0], %wt[0] -> %out[0] ...                 -> matmul, matmul, matmul (one job)
    }
    tile.store %out[0] -> %Y[...] [...] dims [2, 3, 1]        -> Transfer(out slot -> DRAM)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from xdsl.ir import Operation, SSAValue
from xdsl.ir.affine import AffineMap

from nncc.compiler.codegen.compute_lowering import instructions
from nncc.compiler.codegen.context import F32, Lowering, dram
from nncc.compiler.codegen.scheduler import BufferKind, BufRef, Job, Schedule, Transfer, gc_paused
from nncc.dialects import tile
from nncc.support.errors import NnccError


# --------------------------------------------------------------------------- index expressions

_COMPILED: dict[AffineMap, Callable] = {}


def compiled(*maps: AffineMap) -> Callable:
    """`maps` (over the same dims) as one Python function of the dims returning all their
    results in a row (built once per distinct combination)."""
    function = _COMPILED.get(maps)
    if function is None:
        names = [f"d{i}" for i in range(maps[0].num_dims)]
        body = ", ".join(tile.expr_text(e, names) for map_ in maps for e in map_.results)
        function = eval(f"lambda {', '.join(names)}: ({body},)")  # noqa: S307  (our own expression text)
        _COMPILED[maps] = function
    return function


@dataclass(frozen=True)
class DramTensor:
    """A tensor in DRAM: byte address, shape and element strides."""

    addr: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def row_major(shape: Sequence[int]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


# --------------------------------------------------------------------------- slices -> transfers


def dense(sizes: Sequence[int]) -> tuple[int, ...]:
    return row_major(sizes)


def slice_transfer(tensor: DramTensor, offsets, sizes, dims, chip: BufRef, chip_strides, load: bool,
                   pad_value: float = 0.0) -> list[Transfer]:
    """The DMA boxes of one slice: up to three buffer dimensions per box (more are merged where
    both sides are contiguous, else the outer ones become separate boxes); the part of a
    loaded slice outside the tensor is padding; an empty slice (a clipped tile of no rows) none."""
    if not all(sizes):
        return []
    shape, strides = tensor.shape, tensor.strides
    base = 0
    for d in range(len(shape)):
        if d not in dims:
            if sizes[d] != 1:
                raise NnccError(f"tile: dimension {d} of a slice is not in the buffer but has size {sizes[d]}")
            base += offsets[d] * strides[d]
    box, src_strides, pads = [], [], []
    for d in dims:
        offset, size, extent = offsets[d], sizes[d], shape[d]
        low = -offset if offset < 0 else 0
        high = offset + size - extent if offset + size > extent else 0
        if low or high:
            if not load:
                raise NnccError("tile: a store outside its tensor")
            low = min(low, size)  # a window wholly outside (ceil-mode pooling) is all padding
            high = min(high, size - low)
        base += min(max(offset, 0), extent - 1) * strides[d]
        box.append(size)
        src_strides.append(strides[d])
        pads.append((low, high))
    chip_strides = list(chip_strides) if chip_strides else list(dense(box))
    address = tensor.addr + F32 * base
    if len(box) <= 3:  # one box (the common case, kept short)
        fill = 3 - len(box)
        shape3, src3, chip3 = (1,) * fill + tuple(box), (0,) * fill + tuple(src_strides), (0,) * fill + tuple(chip_strides)
        if load:
            pad6 = (0, 0) * fill + tuple(v for pair in pads for v in pair)
            return [Transfer(dram(address), src3, chip, chip3, shape3, pad6, pad_value)]
        return [Transfer(chip, chip3, dram(address), src3, shape3)]
    box, src_strides, chip_strides, pads = merge_boxes(box, src_strides, chip_strides, pads)
    transfers = []
    for outer, chip_offset, dram_offset, outside in outer_boxes(box, src_strides, chip_strides, pads):
        shape3 = (1,) * (3 - len(outer)) + tuple(outer)
        src3 = (0,) * (3 - len(outer)) + tuple(src_strides[-len(outer):])
        chip3 = (0,) * (3 - len(outer)) + tuple(chip_strides[-len(outer):])
        inner = [(0, 0)] * (3 - len(outer)) + pads[-len(outer):]
        if outside:  # an outer index in the padding (a row above the image): the whole box is padding
            inner[0] = (shape3[0], 0)
        pad6 = tuple(v for pair in inner for v in pair)
        ref = BufRef(chip.kind, chip.offset + F32 * chip_offset)
        if load:
            transfers.append(Transfer(dram(address + F32 * dram_offset), src3, ref, chip3, shape3, pad6, pad_value))
        else:
            transfers.append(Transfer(ref, chip3, dram(address + F32 * dram_offset), src3, shape3))
    return transfers


def merge_boxes(box, src, chip, pads):
    """Drop dimensions of one element (no padding), then merge neighbouring dimensions (no padding,
    contiguous on both sides) until at most three remain."""
    keep = [d for d in range(len(box)) if box[d] != 1 or pads[d] != (0, 0)] or [len(box) - 1]
    box, src, chip, pads = ([values[d] for d in keep] for values in (box, src, chip, pads))
    i = 0
    while len(box) > 3 and i < len(box) - 1:
        if pads[i] == (0, 0) and pads[i + 1] == (0, 0) and src[i] == box[i + 1] * src[i + 1] \
                and chip[i] == box[i + 1] * chip[i + 1]:
            box[i:i + 2] = [box[i] * box[i + 1]]
            src[i:i + 2] = [src[i + 1]]
            chip[i:i + 2] = [chip[i + 1]]
            pads[i:i + 2] = [(0, 0)]
        else:
            i += 1
    return box, src, chip, pads


def outer_boxes(box, src, chip, pads=None):
    """(the last three sizes, chip offset, DRAM offset, wholly padding) of every box, looping over
    the outer dims; an outer index in its dimension's padding reads nothing (its DRAM offset the
    nearest index inside the tensor: DRAM offsets count from the first)."""
    outer = box[:-3]
    if not outer:
        return [(box, 0, 0, False)]
    pads = pads or [(0, 0)] * len(box)
    boxes = []
    for index in np.ndindex(*outer):
        outside = any(i < low or i >= size - high for i, size, (low, high) in zip(index, outer, pads))
        inside = [min(max(i - low, 0), size - low - high - 1) for i, size, (low, high) in zip(index, outer, pads)]
        boxes.append((box[-3:], sum(i * s for i, s in zip(index, chip)), sum(i * s for i, s in zip(inside, src)),
                      outside))
    return boxes


# --------------------------------------------------------------------------- the walk


@dataclass
class CoreState:
    """What one core's walk knows: the loads waiting for its next job, the key of every
    buffer's contents, the last job that used each buffer, and the job the current loop-body
    iteration's compute ops join."""

    core: int
    pending: dict[int, list[Transfer]] = field(default_factory=dict)  # by id of the buffer
    keys: dict[int, tuple] = field(default_factory=dict)
    last_job: dict[int, Job] = field(default_factory=dict)
    open_job: Job | None = None
    windows: dict[int, tuple] = field(default_factory=dict)  # a ring buffer's last load: (values, transfers)


class NestLowering:
    """The buffer kinds and jobs of one `tile.nest`."""

    def __init__(self, lowering: Lowering, nest: tile.NestOp, original: tile.NestOp | None = None):
        self.lowering = lowering
        self.nest = nest
        self.tensors = NestTensors(lowering, nest, original or nest)
        self.compiled: dict[tuple[Operation, str], tuple[Callable, tuple[SSAValue, ...]]] = {}
        self.statics: dict[tuple[int, str], object] = {}
        self.view_names: dict[int, list[str]] = {}
        self.block_plans: dict[int, list] = {}
        self.transfer_cache: dict[tuple, list[Transfer]] = {}
        self.compute_cache: dict[tuple, list] = {}
        self.placed: dict[tuple, list[Transfer]] = {}  # slices at offset 0, by op and sizes
        self.buffers: dict[SSAValue, BufferKind] = {}
        self.slots: dict[SSAValue, int] = {}
        for op in nest.block.walk():
            if isinstance(op, tile.BufferOp):
                name = op.result.name_hint or f"buffer{len(self.buffers)}"
                self.buffers[op.result] = BufferKind(name, op.memory, F32 * op.elements, shared=op.shared is not None,
                                                     resident=op.resident is not None, ring=op.ring is not None)
                if op.resident is None and op.ring is None:
                    self.slots[op.result] = op.slots.value.data
        # the walk's dictionaries are keyed by id (an xDSL value's own hash is a Python call: too slow here)
        self.scope: dict[tuple[int, int], tuple[int, ...]] = {}  # (buffer, op) -> ids of the ivs (scope_loops)
        self.written = {id(written_buffer(op)) for op in nest.block.walk() if isinstance(op, tile.ComputeOp)}
        self.loaded = {id(op.buffer) for op in nest.block.walk() if isinstance(op, (tile.LoadOp, tile.CopyOp))}
        # line buffers (a fused chain's kept rows): a compute op with nothing to do (rows outside
        # the image) makes no job, so that no job is empty
        self.lines = any(isinstance(op, tile.CopyOp) for op in nest.block.walk())
        self.env: dict[int, int] = {}  # index values by id of the SSA value
        self.first_last: dict[int, tuple[bool, bool]] = {}  # by id of a loop's iv
        self.entries: dict[tile.ForOp, int] = {}
        self.states: dict[int, CoreState] = {}
        self.load_events = 0

    def kinds(self) -> list[BufferKind]:
        return list(self.buffers.values())

    def slot_count(self) -> int:
        counts = set(self.slots.values())
        if len(counts) != 1:
            raise NnccError(f"layer {self.nest.layer.data}: buffers with different slot counts {sorted(counts)}")
        return counts.pop()

    def jobs(self) -> list[Job]:
        out: list[Job] = []
        with gc_paused():  # jobs by the thousand: no collections walking the whole heap meanwhile
            self.run_block(self.nest.block, 0, out)
        return out

    def state(self, core: int) -> CoreState:
        if core not in self.states:
            self.states[core] = CoreState(core)
        return self.states[core]

    # -- the walk

    def values(self, op: Operation, *names: str) -> tuple[int, ...]:
        """The values of `op`'s index expressions `names` (properties; all of them in a row) at
        the current iteration."""
        entry = self.compiled.get((id(op), names))
        if entry is None:
            maps = [getattr(op, name).data for name in names]
            entry = self.compiled[id(op), names] = (compiled(*maps), tuple(map(id, op.indices)))
        function, indices = entry
        return function(*map(self.env.__getitem__, indices))

    def static(self, op: Operation, build: Callable):
        """`build(op)`, once per op and builder: what does not change between iterations."""
        key = (id(op), build.__qualname__)
        info = self.statics.get(key)
        if info is None:
            info = self.statics[key] = build(op)
        return info

    def run_block(self, block, core: int, out: list[Job]) -> None:
        for step, op in self.plan_of(block):
            step(op, core, out)
        self.state(core).open_job = None

    def plan_of(self, block) -> list[tuple[Callable, Operation]]:
        """What running `block` does: (step, op) per op (`step_of`)."""
        plan = self.block_plans.get(id(block))
        if plan is None:
            plan = self.block_plans[id(block)] = [(self.step_of(op), op) for op in block.ops]
        return plan

    def step_of(self, op: Operation) -> Callable:
        """What executing `op` does (a function taking the op, the core and the job list)."""
        for kind, step in ((tile.ForOp, self.run_for), (tile.LoadOp, self.load_step), (tile.StoreOp, self.store_step),
                           (tile.ComputeOp, self.compute_step), (tile.BoundOp, self.run_bound),
                           (tile.CopyOp, self.copy_step)):
            if isinstance(op, kind):
                return step if kind in (tile.ForOp, tile.BoundOp) else step(op)
        return lambda op, core, out: None  # buffers and relayouts: declarations

    def load_step(self, op: tile.LoadOp) -> Callable:
        """`run_load` with what does not change between iterations looked up once."""
        tensor, buffer, dims, kind, pad, names = self.static(op, self.slice_static)
        if self.buffers[buffer].ring:
            return self.ring_load_step(op)
        function, indices = compiled(*[getattr(op, name).data for name in names]), tuple(map(id, op.indices))
        env, cache, key_op, key_buffer, states = self.env, self.transfer_cache, id(op), id(buffer), self.states
        lines = self.lines

        def step(op: tile.LoadOp, core: int, out: list[Job]) -> None:
            values = function(*[env[i] for i in indices])
            found = cache.get((key_op, values))
            if found is None:
                found = cache[key_op, values] = self.slice_transfers(op, values, True)
            pending = (states.get(core) or self.state(core)).pending
            loads = pending.get(key_buffer)
            if loads is None:
                pending[key_buffer] = list(found)
            else:
                if lines:  # loads no compute op consumed (rows outside the image): what this one overwrites goes
                    places = {(t.dst, t.dst_stride, t.shape) for t in found}
                    loads[:] = [t for t in loads if (t.dst, t.dst_stride, t.shape) not in places]
                loads.extend(found)
        return step

    def ring_load_step(self, op: tile.LoadOp) -> Callable:
        """A load into a `ring` buffer: the rows its window shares with the window loaded last (on
        this core) stay on chip, copied to where this window wants them; the others come from
        DRAM (`ring_transfers`). The same window again is the same load (its data still there)."""
        buffer = id(self.static(op, self.slice_static)[1])
        names = self.static(op, self.slice_static)[5]
        function, indices = compiled(*[getattr(op, name).data for name in names]), tuple(map(id, op.indices))
        env = self.env

        def step(op: tile.LoadOp, core: int, out: list[Job]) -> None:
            values = function(*[env[i] for i in indices])
            state = self.state(core)
            before = state.windows.get(buffer)
            if before is not None and before[0] == values:
                found = before[1]
            else:
                found = self.ring_transfers(op, values, before[0] if before is not None else None)
            state.windows[buffer] = (values, found)
            state.pending.setdefault(buffer, []).extend(found)
        return step

    def ring_transfers(self, op: tile.LoadOp, values: tuple[int, ...], before: tuple[int, ...] | None):
        """The transfers of a ring load at `values` after the window at `before`: when the two
        windows differ in one dimension only and overlap at one end of it, an on-chip copy of the
        shared part (from the slot the scheduler kept it in; a box of the buffer's layout) and a
        DMA of the rest; else the whole window from DRAM.

            window rows [4, 8) after [2, 6): copy rows 2..3 of the slot to rows 0..1, load rows 6..7
            window columns [4, 8) after [2, 6): copy columns 2..3 of every row to 0..1, load 6..7"""
        tensor, buffer, dims, kind, pad, _ = self.static(op, self.slice_static)
        rank = len(self.tensors[tensor].shape)
        offsets, sizes, at = values[:rank], values[rank:2 * rank], values[2 * rank]
        if before is None or len(values) > 2 * rank + 1 or len(dims) > 3 or before[2 * rank] != at:
            return self.slice_transfers(op, values, True)
        moved = [d for d in range(rank) if before[d] != offsets[d] or before[rank + d] != sizes[d]]
        if len(moved) != 1 or moved[0] not in dims:
            return self.slice_transfers(op, values, True)
        d = moved[0]
        c0, c1 = offsets[d], offsets[d] + sizes[d]
        p0, p1 = before[d], before[d] + before[rank + d]
        if p0 < c0 < p1 < c1:  # moving forward: the window's first rows (columns) are the last window's last
            kept, src_at, dst_at, new_lo, new_hi, new_at = p1 - c0, c0 - p0, 0, p1, c1, p1 - c0
        elif c0 < p0 < c1 < p1:  # moving back: its last ones are the last window's first
            kept, src_at, dst_at, new_lo, new_hi, new_at = c1 - p0, 0, p0 - c0, c0, p0, 0
        else:
            return self.slice_transfers(op, values, True)
        box = [sizes[x] for x in dims]
        strides = list(row_major(box))
        j = dims.index(d)
        if j == 0:  # whole rows: one contiguous run
            shape, chip = (1, 1, kept * strides[0]), (0, 0, 1)
        else:
            box[j] = kept
            shape, chip = tuple([1] * (3 - len(box)) + box), tuple([0] * (3 - len(box)) + strides)
        copy = Transfer(BufRef(kind, F32 * (at + src_at * strides[j])), chip,
                        BufRef(kind, F32 * (at + dst_at * strides[j])), chip, shape)
        new_offsets, new_sizes = list(offsets), list(sizes)
        new_offsets[d], new_sizes[d] = new_lo, new_hi - new_lo
        fresh = slice_transfer(self.tensors[tensor], new_offsets, new_sizes, dims,
                               BufRef(kind, F32 * (at + new_at * strides[j])), strides, True, pad)
        transfers = [copy, *fresh]
        self.check_inside(buffer, transfers, True)
        return transfers

    def copy_step(self, op: tile.CopyOp) -> Callable:
        """A line buffer's kept rows moved inside its one slot: an on-chip DMA that fills the
        buffer's next occupancy from the one before (the scheduler runs it after that one's last
        use and before the new rows are written). The buffer's contents get a new key even when
        nothing is copied (a band's first strip), so its writers wait for the readers before."""
        buffer = id(op.buffer)
        kind = self.buffers[op.buffer].name

        def step(op: tile.CopyOp, core: int, out: list[Job]) -> None:
            source, target, count = self.values(op, "views", "sizes")
            state = self.state(core)
            self.load_events += 1
            state.keys[buffer] = ("kept", self.load_events)
            if count > 0:
                transfers = [Transfer(BufRef(kind, F32 * source), (0, 0, 1), BufRef(kind, F32 * target), (0, 0, 1),
                                      (1, 1, count))]
                self.check_inside(op.buffer, transfers, True)
                self.check_inside(op.buffer, [transfers[0]._replace(dst=transfers[0].src)], True)
                state.pending.setdefault(buffer, []).extend(transfers)
        return step

    def store_step(self, op: tile.StoreOp) -> Callable:
        """`run_store` with what does not change between iterations looked up once."""
        tensor, buffer, dims, kind, pad, names = self.static(op, self.slice_static)
        function, indices = compiled(*[getattr(op, name).data for name in names]), tuple(map(id, op.indices))
        env, cache, key_op, key_buffer, states = self.env, self.transfer_cache, id(op), id(buffer), self.states
        rank = len(self.tensors[tensor].shape)

        def step(op: tile.StoreOp, core: int, out: list[Job]) -> None:
            values = function(*[env[i] for i in indices])
            if not all(values[rank:2 * rank]):  # a slice of nothing (a line buffer's prologue strip)
                return
            job = (states.get(core) or self.state(core)).last_job.get(key_buffer)
            if job is None:
                raise NnccError(f"layer {self.nest.layer.data}: a store of a buffer no compute op used")
            found = cache.get((key_op, values))
            if found is None:
                found = cache[key_op, values] = self.slice_transfers(op, values, False)
            stores = job.stores.get(kind)
            if stores is None:
                job.stores[kind] = list(found)
            else:
                stores.extend(found)
        return step

    def compute_step(self, op: tile.ComputeOp) -> Callable:
        """`run_compute` with what does not change between iterations looked up once."""
        kinds = [(buffer, kind, buffer in self.written, buffer in self.loaded)
                 for buffer, kind in self.buffer_kinds(op)]
        indices, ivs = compute_scope(op)
        env, first_last, cache, key_op, states = self.env, self.first_last, self.compute_cache, id(op), self.states
        skip_empty = self.lines

        def step(op: tile.ComputeOp, core: int, out: list[Job]) -> None:
            key = (key_op, tuple([env[i] for i in indices]), tuple([first_last[i] for i in ivs]))
            found = cache.get(key)
            if found is None:
                found = cache[key] = instructions(self, op)
            if not found and skip_empty:  # nothing to do: no job, the loads wait for the next op
                return
            state = states.get(core) or self.state(core)
            job = state.open_job
            if job is None:
                job = state.open_job = Job(core, {}, [], {}, {})
                out.append(job)
            pending, last_job, buffers = state.pending, state.last_job, job.buffers
            for buffer, kind, written, loads_into in kinds:  # buffer ids
                if kind not in buffers:  # `key`, its common cases inline
                    loaded = pending.get(buffer)
                    if loaded and buffer in state.windows:  # a ring holds its last window
                        key = state.keys[buffer] = ("ring", state.windows[buffer][0])
                    elif loaded:
                        self.load_events += 1
                        key = state.keys[buffer] = (tuple(loaded), self.load_events) if written else tuple(loaded)
                    elif loads_into and buffer in state.keys:
                        key = state.keys[buffer]
                    else:
                        key = self.key(buffer, state, op)
                    buffers[kind] = key
                loaded = pending.pop(buffer, None)
                if loaded:
                    if kind in job.loads:
                        job.loads[kind] += loaded
                    else:
                        job.loads[kind] = loaded
                last_job[buffer] = job
            job.compute += found
        return step

    def run_load(self, op: tile.LoadOp, core: int, out: list[Job]) -> None:
        buffer = self.static(op, self.slice_static)[1]
        self.state(core).pending.setdefault(id(buffer), []).extend(self.transfers(op, load=True))

    def run_bound(self, op: tile.BoundOp, core: int, out: list[Job]) -> None:
        self.env[id(op.result)] = (max if isinstance(op, tile.MaxOp) else min)(self.values(op, "exprs"))

    def run_for(self, loop: tile.ForOp, core: int, out: list[Job]) -> None:
        points, serpentine, cores = self.static(loop, loop_plan)
        entry = self.entries.get(loop, 0)
        self.entries[loop] = entry + 1
        reverse = serpentine and entry % 2 == 1
        if not cores:
            self.run_points(loop, core, points[::-1] if reverse else points, out)
            return
        waves = [points[i:i + cores] for i in range(0, len(points), cores)]
        for wave in waves[::-1] if reverse else waves:
            self.run_wave(loop, wave, out)

    def run_points(self, loop: tile.ForOp, core: int, points, out: list[Job]) -> None:
        ids = self.static(loop, loop_ids)
        env, first_last, last = self.env, self.first_last, len(points) - 1
        plan, state = self.plan_of(loop.block), self.state(core)
        for index, point in enumerate(points):
            for (iv, extent_id), (value, extent) in zip(ids, point):
                env[iv] = value
                env[extent_id] = extent
                first_last[iv] = (index == 0, index == last)
            for step, op in plan:  # run_block
                step(op, core, out)
            state.open_job = None

    def run_wave(self, loop: tile.ForOp, wave, out: list[Job]) -> None:
        """One iteration per core; the cores' jobs interleaved step by step (their inner loops
        start together, so their serpentine directions are those of the wave's first core)."""
        entries, after = dict(self.entries), None
        streams: list[list[Job]] = []
        for core, point in enumerate(wave):
            self.entries = dict(entries)
            stream: list[Job] = []
            self.run_points(loop, core, [point], stream)
            streams.append(stream)
            if core == 0:
                after = self.entries
        self.entries = after
        for step in range(max(len(stream) for stream in streams)):
            out += [stream[step] for stream in streams if step < len(stream)]

    def run_store(self, op: tile.StoreOp, core: int, out: list[Job]) -> None:
        _, buffer, _, kind, _, _ = self.static(op, self.slice_static)
        job = self.state(core).last_job.get(id(buffer))
        if job is None:
            raise NnccError(f"layer {self.nest.layer.data}: a store of a buffer no compute op used")
        job.stores.setdefault(kind, []).extend(self.transfers(op, load=False))

    def transfers(self, op: tile.SliceOp, load: bool) -> list[Transfer]:
        tensor, buffer, dims, kind, pad, names = self.static(op, self.slice_static)
        values = self.values(op, *names)
        key = (id(op), values)
        found = self.transfer_cache.get(key)
        if found is None:
            found = self.transfer_cache[key] = self.slice_transfers(op, values, load)
        return found

    def slice_transfers(self, op: tile.SliceOp, values: tuple[int, ...], load: bool) -> list[Transfer]:
        """`slice_transfer` of `op` at these index values. A slice inside its tensor is the one at
        offset 0 with the same sizes (made and checked once) moved in DRAM: only the address changes."""
        tensor, buffer, dims, kind, pad, _ = self.static(op, self.slice_static)
        dram_tensor = self.tensors[tensor]
        shape, strides = dram_tensor.shape, dram_tensor.strides
        rank = len(shape)
        offsets, sizes = values[:rank], values[rank:2 * rank]
        for d in dims:
            if not 0 <= offsets[d] < shape[d] or offsets[d] + sizes[d] > shape[d]:  # padding: the general case
                found = slice_transfer(dram_tensor, offsets, sizes, dims, BufRef(kind, F32 * values[2 * rank]),
                                       values[2 * rank + 1:] or None, load, pad)
                self.check_inside(buffer, found, load)
                return found
        key = (id(op), values[rank:])
        placed = self.placed.get(key)
        if placed is None:
            placed = self.placed[key] = slice_transfer(
                dram_tensor, (0,) * rank, sizes, dims, BufRef(kind, F32 * values[2 * rank]),
                values[2 * rank + 1:] or None, load, pad)
            self.check_inside(buffer, placed, load)
        shift = F32 * sum([offset * stride for offset, stride in zip(offsets, strides)])
        if not shift:
            return placed
        if load:
            return [Transfer(dram(t.src[1] + shift), t.src_stride, t.dst, t.dst_stride, t.shape, t.pad,
                             t.pad_value) for t in placed]
        return [Transfer(t.src, t.src_stride, dram(t.dst[1] + shift), t.dst_stride, t.shape) for t in placed]

    def check_inside(self, buffer: SSAValue, transfers: list[Transfer], load: bool) -> None:
        """A load or store stays inside its buffer's slot (hand-edited tile sizes may not)."""
        slot = self.buffers[buffer].slot_bytes
        for transfer in transfers:
            ref, strides = (transfer.dst, transfer.dst_stride) if load else (transfer.src, transfer.src_stride)
            end = ref.offset + F32 * (1 + sum((n - 1) * step for n, step in zip(transfer.shape, strides)))
            if ref.offset < 0 or end > slot:
                raise NnccError(f"layer {self.nest.layer.data}: a {'load into' if load else 'store from'} buffer "
                                f"%{self.buffers[buffer].name} reaches byte {end} of its {slot}-byte slot "
                                f"(tile {list(transfer.shape)}): the tile sizes (loop steps) do not fit the buffer")

    def slice_static(self, op: tile.SliceOp):
        pad = float(op.pad.value.data) if isinstance(op, tile.LoadOp) and op.pad is not None else 0.0
        names = ("offsets", "sizes", "at") + (("strides",) if op.strides is not None else ())
        return (op.tensor, op.buffer, tile.ints(op.dims), self.buffers[op.buffer].name, pad, names)

    # -- jobs

    def key(self, buffer: int, state: CoreState, op: tile.ComputeOp) -> tuple:
        """What `buffer` (by id) holds in this job: what was loaded into it, else the iteration
        (of the loops around its uses, ids and values)."""
        loaded = state.pending.get(buffer)
        if loaded and buffer in state.windows:  # a ring holds its last window (its transfers depend on the one before)
            key = state.keys[buffer] = ("ring", state.windows[buffer][0])
            return key
        if loaded:
            self.load_events += 1
            key = (tuple(loaded), self.load_events) if buffer in self.written else tuple(loaded)
            state.keys[buffer] = key
            return key
        if buffer in self.loaded and buffer in state.keys:
            return state.keys[buffer]
        scope = self.scope.get((buffer, id(op)))
        if scope is None:
            value = next(v for v in op.buffers if id(v) == buffer)
            scope = self.scope[buffer, id(op)] = tuple(id(iv) for iv in scope_loops(self.nest, value, op))
        return ("iteration", scope, tuple(self.env[iv] for iv in scope))

    def run_compute(self, op: tile.ComputeOp, core: int, out: list[Job]) -> None:
        state = self.state(core)
        job = state.open_job
        if job is None:
            job = state.open_job = Job(core, {}, [], {}, {})
            out.append(job)
        for buffer, kind in self.static(op, self.buffer_kinds):  # buffer ids
            if kind not in job.buffers:
                job.buffers[kind] = self.key(buffer, state, op)
            loaded = state.pending.pop(buffer, None)
            if loaded:
                job.loads.setdefault(kind, []).extend(loaded)
            state.last_job[buffer] = job
        job.compute += self.instructions(op)

    def instructions(self, op: tile.ComputeOp) -> list:
        """`compute_lowering.instructions` of `op` at this iteration, made once per distinct value of
        what they depend on: the op's index operands and the first/last flags of the loops around it
        (jobs of one nest repeat a handful of instruction lists thousands of times; the lists are
        shared, never changed)."""
        indices, ivs = self.static(op, compute_scope)
        env, first_last = self.env, self.first_last
        key = (id(op), tuple([env[i] for i in indices]), tuple([first_last[i] for i in ivs]))
        found = self.compute_cache.get(key)
        if found is None:
            found = self.compute_cache[key] = instructions(self, op)
        return found

    def buffer_kinds(self, op: tile.ComputeOp) -> list[tuple[int, str]]:
        """The distinct buffers (ids) a compute op uses and their kinds' names."""
        return [(id(buffer), self.buffers[buffer].name) for buffer in dict.fromkeys(op.buffers)]

    def view(self, op: tile.ComputeOp, index: int, offsets: tuple[int, ...]) -> BufRef:
        kinds = self.view_names.get(id(op))
        if kinds is None:
            kinds = self.view_names[id(op)] = self.view_kinds(op)
        return BufRef(kinds[index], F32 * offsets[index])

    def view_kinds(self, op: tile.ComputeOp) -> list[str]:
        """The kind names of a compute op's buffer operands, in order."""
        return [self.buffers[buffer].name for buffer in op.buffers]


def loop_plan(loop: tile.ForOp) -> tuple[list, bool, int]:
    """What a loop walks, the same every time it starts: its points ((value, extent) per
    dimension, row-major), whether it is serpentine, and the cores its iterations are dealt to
    (0: none)."""
    points = product([[(v, min(step, high - v)) for v in range(low, high, step)] for low, high, step in loop.bounds])
    if loop.path is not None:  # order path: the points in the order listed
        points = [points[i] for i in tile.ints(loop.path)]
    return points, loop.order.data == "serpentine", loop.cores.value.data if loop.cores is not None else 0


def compute_scope(op: tile.ComputeOp) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Ids of what a compute op's instructions depend on: its index operands, and the ivs of the
    loops around it (their first/last flags: the epilogue on the last input-channel tile)."""
    ivs, parent = [], op.parent_op()
    while isinstance(parent, tile.ForOp):
        ivs += [id(parent.block.args[2 * d]) for d in range(len(parent.bounds))]
        parent = parent.parent_op()
    return tuple(map(id, op.indices)), tuple(ivs)


def loop_ids(loop: tile.ForOp) -> list[tuple[int, int]]:
    """(id of the iv, id of the extent) of every dimension of `loop` (keys of the walk's values)."""
    args = loop.block.args
    return [(id(args[2 * d]), id(args[2 * d + 1])) for d in range(len(loop.bounds))]


def written_buffer(op: tile.ComputeOp) -> SSAValue:
    """The buffer a compute op writes: a fill's only one, a pool's or a reduce's second, a map's
    last, else the third."""
    return op.buffers[{tile.FillOp: 0, tile.PoolOp: 1, tile.ReduceOp: 1, tile.MapOp: len(op.buffers) - 1}.get(type(op), 2)]


def product(ranges):
    """Row-major product of the per-dimension (value, extent) lists."""
    points = [()]
    for values in ranges:
        points = [point + (value,) for point in points for value in values]
    return points


def scope_loops(nest: tile.NestOp, buffer: SSAValue, op: Operation | None = None) -> list[SSAValue]:
    """The induction variables of the loops around every use of `buffer` (outermost first); with
    `op`, of the uses inside the same outermost loop as `op` (loops one after the other that
    share a buffer, as the pieces of a concat, each fill it anew)."""
    chains = []
    for use in buffer.uses:
        chain, parent = [], use.operation.parent_op()
        while parent is not None and parent is not nest:
            if isinstance(parent, tile.ForOp):
                chain.append(parent)
            parent = parent.parent_op()
        chains.append(chain[::-1])
    if op is not None:
        mine = chains[[use.operation for use in buffer.uses].index(op)]
        if mine:
            chains = [chain for chain in chains if chain and chain[0] is mine[0]]
    common = []
    for loops in zip(*chains):
        if any(loop is not loops[0] for loop in loops):
            break
        common.append(loops[0])
    return [loop.block.args[2 * d] for loop in common for d in range(len(loop.bounds))]


# --------------------------------------------------------------------------- a nest as a layer


class NestTensors(dict):
    """The DRAM tensor of every block argument and relayout of a nest, made when first used: inputs
    where their producers (or the weight image) put them, outputs where the lowering allocates
    them, relayouts of constants as their own copies in the weight image (a weight only read
    through its relayout is placed once, in that layout)."""

    def __init__(self, lowering: Lowering, nest: tile.NestOp, original: tile.NestOp):
        """`original`: the nest in @main whose operands and results `nest` (it, or a copy of it
        walked another way) stands for."""
        super().__init__()
        self.lowering = lowering
        self.values = dict(zip(nest.block.args, [*original.inputs, *original.outputs]))
        self.outputs = set(original.outputs)

    def __missing__(self, value: SSAValue) -> DramTensor:
        from nncc.compiler.codegen.context import source_address

        owner = value.owner
        if isinstance(owner, tile.RelayoutOp):
            tensor = relayout_tensor(self.lowering, owner, self.values[owner.input])
        elif isinstance(owner, tile.ViewOp):  # a strided view of a row-major tensor
            base = self[owner.input]
            tensor = DramTensor(base.addr + F32 * owner.offset.value.data, tuple(owner.result.type.get_shape()),
                                owner.strides)
        else:
            outer = self.values[value]
            shape = tuple(outer.type.get_shape())
            addr = self.lowering.address(outer) if outer in self.outputs else source_address(self.lowering, outer)
            tensor = DramTensor(addr, shape, row_major(shape))
        self[value] = tensor
        return tensor


def relayout_tensor(lowering: Lowering, op: tile.RelayoutOp, value: SSAValue) -> DramTensor:
    """A constant in the new layout in the DRAM image; a run-time tensor through permuted strides."""
    shape, perm = tile.ints(op.shape), tile.ints(op.permutation)
    result_shape = tuple(shape[p] for p in perm)
    constant = lowering.constant(value)
    if constant is not None:
        packed = np.ascontiguousarray(constant.reshape(shape).transpose(perm))
        addr = lowering.weight(value.owner.ref.data, "".join(map(str, perm)), packed)
        return DramTensor(addr, result_shape, row_major(result_shape))
    strides = row_major(shape)
    return DramTensor(lowering.address(value), result_shape, tuple(strides[p] for p in perm))


def signature(nest: tile.NestOp) -> tuple:
    """What the schedule of `nest` depends on: its ops, their properties and operand structure
    (not the DRAM addresses): nests of one shape (ResNet's blocks) share their prediction."""
    numbering: dict[SSAValue, int] = {arg: i for i, arg in enumerate(nest.block.args)}
    parts: list = [tuple(arg.type for arg in nest.block.args)]
    for op in nest.block.walk():
        parts.append((op.name, tuple(sorted(op.properties.items())), tuple(numbering[v] for v in op.operands)))
        for value in [*op.results, *(arg for region in op.regions for arg in region.block.args)]:
            numbering[value] = len(numbering)
    return tuple(parts)


def lower_nest(lowering: Lowering, nest: tile.NestOp):
    """The (buffer kinds, schedule, slots[, relocation]) of `nest`, and the cost model's prediction
    recorded. A nest of the same shape as one lowered before (ResNet's repeated blocks: half of
    ResNet-50's jobs) reuses its schedule, moved to its own DRAM tensors (`Unrolled`)."""
    from nncc.compiler.codegen.cost_model import time_schedule

    unrolled = NestLowering(lowering, nest)
    if not unrolled.buffers:  # a nest that moves nothing (a concat whose inputs are all in place)
        return []
    shape = signature(nest)
    key = ("nest", shape)
    before = lowering.cost_cache.get(("unrolled", shape))
    if before is not None:
        relocate = before.relocation(unrolled)
        if relocate is not None:
            lowering.record_prediction(lowering.cost_cache[key])
            compare_orders(lowering, nest, before.kinds, before.slots)
            return [(before.kinds, before.schedule, before.slots, relocate)]
    jobs, kinds, slots = unrolled.jobs(), unrolled.kinds(), unrolled.slot_count()
    with gc_paused():
        schedule = Schedule(lowering.target, kinds, jobs, slots)  # the one emitted and the one timed
        # timed even when a nest of this shape was (its relocation failed: other DRAM addresses,
        # whose bursts and DRAM rows may differ)
        lowering.cost_cache[key] = time_schedule(schedule, schedule.allocation.barriers)
    lowering.cost_cache["unrolled", shape] = Unrolled(unrolled, kinds, schedule, slots)
    lowering.record_prediction(lowering.cost_cache[key])
    compare_orders(lowering, nest, kinds, slots)
    return [(kinds, schedule, slots)]


def compare_orders(lowering: Lowering, nest: tile.NestOp, kinds, slots: int) -> None:
    """With `compare_orders`, the DRAM bytes of a Scan nest walked in naive order (and of a nest
    walked in a path, in serpentine order too: `tile_order.other_orders`), recorded."""
    from nncc.compiler.codegen.cost_model import predict_jobs
    from nncc.compiler.codegen.tile_order import other_orders

    if lowering.compare_orders:
        for record, variant in other_orders(lowering, nest):
            walked = NestLowering(lowering, variant, original=nest)
            record(predict_jobs(lowering.target, kinds, walked.jobs(), slots=slots))


def positions(nest: tile.NestOp) -> list[SSAValue]:
    """The values of a nest in `signature`'s numbering: nests of one signature have them in step."""
    values = list(nest.block.args)
    for op in nest.block.walk():
        values += [*op.results, *(arg for region in op.regions for arg in region.block.args)]
    return values


@dataclass
class Unrolled:
    """A nest's kinds, schedule and slots, and the DRAM tensors its transfers read and write (in
    the order the walk placed them), for the next nest of its signature to reuse."""

    kinds: list[BufferKind]
    schedule: Schedule
    slots: int
    tensors: list[tuple[int, DramTensor]]  # (position, tensor) in the order the walk made them

    def __init__(self, unrolled: NestLowering, kinds, schedule, slots: int):
        index = {id(value): i for i, value in enumerate(positions(unrolled.nest))}
        self.kinds, self.schedule, self.slots = kinds, schedule, slots
        self.tensors = [(index[id(value)], tensor) for value, tensor in unrolled.tensors.items()]

    def relocation(self, other: NestLowering) -> Callable | None:
        """A function moving this nest's DRAM addresses to `other`'s tensors, whose DRAM tensors
        it places as its own walk would (same order: weights land where they would); None when a
        tensor's shape or strides differ (a weight here, a run-time tensor there) or two tensors
        that overlap would move apart (then `other` is unrolled)."""
        values = positions(other.nest)
        moves = []
        for position, tensor in self.tensors:
            mine = other.tensors[values[position]]
            if (mine.shape, mine.strides) != (tensor.shape, tensor.strides):
                return None
            end = tensor.addr + F32 * (1 + sum((n - 1) * step for n, step in zip(tensor.shape, tensor.strides)))
            moves.append((tensor.addr, end, mine.addr - tensor.addr))
        if any(a < stop and b < end and shift != other for a, end, shift in moves for b, stop, other in moves):
            return None
        moved: dict[tuple, tuple] = {}

        def relocate(ref: tuple) -> tuple:
            found = moved.get(ref)
            if found is None:
                shift = next((shift for start, end, shift in moves if start <= ref[1] < end), None)
                if shift is None:
                    raise AssertionError(f"DRAM address {ref[1]} is in none of the nest's tensors")
                found = moved[ref] = dram(ref[1] + shift)
            return found
        return relocate


def lower_detached(lowering: Lowering, op: Operation, nest: tile.NestOp):
    """`lower_nest` of a nest made for `op` at lowering time (not in @main): its result is `op`'s
    (a layer tile-layers did not write as a nest)."""
    lowering.addresses[nest.results[0]] = lowering.address(op.result)
    return lower_nest(lowering, nest)


def loops_of(nest: tile.NestOp) -> list[tile.ForOp]:
    return [op for op in nest.block.walk() if isinstance(op, tile.ForOp)]
