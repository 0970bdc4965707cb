"""Convolution (and everything that is a convolution: 1x1, grouped, FC as 1x1) on tiles.

On chip, tiles are HWC so that output channels sit on the lanes (vector unit) or the
columns (matrix unit):

    input  slot  [ih][iw][ic]     DMA'd from NCHW DRAM, halo and zero padding included
    weight slot  [kh][kw][ic][oc] + bias[oc]   (DRAM keeps weights as [kh][kw][C][O])
    output slot  [oh][ow][oc]     stored back to NCHW

For every kernel position one `matmul`: batch = output rows, m = output columns,
n = output channels, k = input channels, accumulating over kernel positions and
input-channel tiles. The epilogue (bias, residual, activation) runs on the output
tile while it is on chip; a residual is DMA'd into the output slot first and the
matmuls accumulate onto it.

Loop order: output-channel tile, then groups of `cores` spatial tiles (one per core,
sharing the weight block by multicast), then input-channel tiles. `scan` order walks
spatial tiles and input-channel tiles serpentine-wise so that the block already on
chip is reused by the next tile.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, replace

import numpy as np
from xdsl.ir import SSAValue

from nncc.compiler.codegen.context import F32, Lowering, dram
from nncc.compiler.codegen.cost_model import conv_estimate, conv_estimates, predict_jobs
from nncc.compiler.codegen.epilogue import Epilogue
from nncc.compiler.codegen.scheduler import BufferKind, BufRef, Compute, Job, Transfer, gc_paused
from nncc.runtime.program import Program
from nncc.support.errors import NnccError


@dataclass(frozen=True)
class ConvShape:
    n: int
    c: int
    h: int
    w: int
    o: int
    kh: int
    kw: int
    oh: int
    ow: int
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilations: tuple[int, int]
    group: int

    @property
    def cg(self) -> int:
        return self.c // self.group

    @property
    def og(self) -> int:
        return self.o // self.group

    def input_extent(self, out_rows: int, axis: int) -> int:
        """Input rows (axis 0) or columns (axis 1) that `out_rows` outputs read."""
        k = (self.kh, self.kw)[axis]
        return (out_rows - 1) * self.strides[axis] + (k - 1) * self.dilations[axis] + 1


@dataclass(frozen=True)
class ConvTiles:
    toc: int
    tic: int
    toh: int
    tow: int
    # "spatial": the cores take different output tiles and share the weight block (multicast);
    # "channel": they take different output-channel tiles of one output tile and share the input block
    split: str = "spatial"

    def slot_bytes(self, s: ConvShape) -> dict[str, int]:
        return {
            "in": F32 * s.input_extent(self.toh, 0) * s.input_extent(self.tow, 1) * self.tic,
            "w": F32 * (s.kh * s.kw * self.tic * self.toc + self.toc),
            "out": F32 * self.toh * self.tow * self.toc,
        }


ROLE = {"in": "input", "w": "weight", "out": "output"}
TOLERANCE = 0.01  # cycles within 1 % of the fastest count as equal (then DRAM traffic, jobs decide)
BYTES_TOLERANCE = 0.05  # DRAM bytes within 5 % of the least count as equal (then fewer jobs win)
SHORTLIST_FAST, CHEAP_JOBS = 3, 600  # the closed form's fastest, if they have few jobs
SHORTLIST = 2  # candidates of the closed-form estimate that the job-level model then times


def fits(lowering: Lowering, slot_bytes: dict[str, int]) -> bool:
    """The slots of every kind (in, w, out -> bytes) fit in the memories that hold them."""
    return lowering.fits({ROLE[kind]: nbytes for kind, nbytes in slot_bytes.items()})


def candidates(limit: int, preferred: list[int]) -> list[int]:
    return sorted({v for v in preferred + [limit] if 1 <= v <= limit}, reverse=True)


def even_splits(size: int, parts: list[int]) -> list[int]:
    """Tile sizes that cut `size` into `p` nearly equal tiles (no small fragment at the end)."""
    return [-(-size // p) for p in parts if p <= size]


def estimate_cycles(lowering: Lowering, s: ConvShape, t: ConvTiles) -> float:
    """The closed-form estimate (cost_model.conv_estimate) of one tile choice, in cycles."""
    return conv_estimate(lowering.target, s, t, lowering.cores, t.split, lowering.tile_order == "scan")[0]


def tile_candidates(lowering: Lowering, s: ConvShape):
    """Arrays (toc, tic, toh, tow, channel split?) of the tile sizes worth ranking that fit (two
    slots per buffer kind). Tile sizes worth ranking: output channels in whole lane (column) multiples, input
    channels in powers of two or whole matrix rows, output tiles from common divisors and
    even splits (no small fragment at the end), for both core splits."""
    target = lowering.target
    main = target.main
    width = main.lanes if main.kind == "vector" else main.cols
    depth = main.rows if main.kind == "matrix" else 1
    splits = ["spatial"] + (["channel"] if s.group == 1 else [])
    ocs = candidates(s.og, [width * m for m in (1, 2, 3, 4, 6, 8, 16, 32, 64)]
                     + [v for v in even_splits(s.og, [2, 3, 4, 8]) if v % width == 0])
    ics = candidates(s.cg, [depth * m for m in (1, 2, 4, 8, 16, 32)] + [16, 32, 64, 128, 256, 512, 1024, 2048]
                     + even_splits(s.cg, [2, 3, 4]))
    ohs = candidates(s.oh, [1, 2, 4, 7, 8, 14, 16, 28, 32, 56] + even_splits(s.oh, [2, 3, 4, 8]))
    ows = candidates(s.ow, [7, 8, 14, 16, 28, 32, 56, 64, 112] + even_splits(s.ow, [2, 3, 4, 8]))
    grid = fitting_grid(lowering, s, ocs, ics, ohs, ows)
    if not grid.shape[1]:
        # even one output element's working set (the kernel window over the input channels of a
        # tile, and its weights) does not fit: split the reduction finer, down to one input
        # channel per tile (the matmuls accumulate over input-channel tiles)
        ics = candidates(s.cg, ics + [1, 2, 4, 8] + even_splits(s.cg, [6, 8, 12, 16, 24, 32, 48, 64]))
        grid = fitting_grid(lowering, s, ocs, ics, ohs, ows)
    if not grid.shape[1]:  # then output channels below the lane (column) count, columns down to one
        ocs = candidates(s.og, ocs + [1, 2, 4, 8, 16, 32, 64] + even_splits(s.og, [2, 3, 4, 8]))
        ows = candidates(s.ow, ows + [1, 2, 4])
        grid = fitting_grid(lowering, s, ocs, ics, ohs, ows)
    columns = [np.concatenate([grid[d]] * len(splits)) for d in range(4)]
    channel = np.concatenate([np.full(grid.shape[1], split == "channel") for split in splits])
    return (*columns, channel)


def fitting_grid(lowering: Lowering, s: ConvShape, ocs, ics, ohs, ows) -> np.ndarray:
    """The (4, n) array of the tilings from these sizes that fit (`grid_fits`)."""
    grid = np.array(np.meshgrid(ocs, ics, ohs, ows, indexing="ij")).reshape(4, -1)
    return grid[:, grid_fits(lowering, s, *grid)]


def shortfall(lowering: Lowering, s: ConvShape) -> str:
    """Why not even the smallest tiling fits (one output element of one output channel, one input
    channel at a time): the memories too small for its slots, and by how much."""
    rows, cols = s.input_extent(1, 0), s.input_extent(1, 1)
    sizes = {"input": F32 * rows * cols, "weight": F32 * (s.kh * s.kw + 1), "output": F32}
    need: dict[str, list] = {}
    for role, nbytes in sizes.items():
        memory = lowering.target.memory_for(role).name
        need.setdefault(memory, []).append((role, lowering.buffers * (-(-nbytes // 64) * 64)))
    parts = []
    for memory, uses in need.items():
        total, size = sum(n for _, n in uses), lowering.target.memory(memory).size_bytes
        if total > size:
            slot = " + ".join(f"{role} {n // lowering.buffers}" for role, n in uses)
            parts.append(f"{memory} needs {total} bytes ({lowering.buffers} x {slot}) but has {size} "
                         f"(memory.{memory}.size_bytes): {total - size} bytes short")
    return "; ".join(parts)


def grid_fits(lowering: Lowering, s: ConvShape, toc, tic, toh, tow) -> np.ndarray:
    """Which tilings (arrays) fit: the slots of the input window, the weights + bias and the
    output tile in the memories that hold them (`Lowering.fits`, vectorised)."""
    rows = (toh - 1) * s.strides[0] + (s.kh - 1) * s.dilations[0] + 1
    cols = (tow - 1) * s.strides[1] + (s.kw - 1) * s.dilations[1] + 1
    return lowering.fits({"input": F32 * rows * cols * tic, "weight": F32 * (s.kh * s.kw * tic * toc + toc),
                          "output": F32 * toh * tow * toc})


def choose_tiles(lowering: Lowering, s: ConvShape, name: str, bias: bool = True) -> ConvTiles:
    """The tile sizes (and core split) with the fewest predicted cycles under the capacity.

    Every candidate that fits (two slots per buffer kind) is ranked by the closed-form
    estimate (`conv_estimates`, vectorised); the best few are then timed by the job-level
    model (`predict_jobs`) on their real job lists, and the fastest (then the one with less
    DRAM traffic) wins."""
    key = ("tiles", s, bias)
    if key not in lowering.cost_cache:  # layers of one shape (ResNet blocks) share the choice
        lowering.cost_cache[key] = search_tiles(lowering, s, name, bias)
    return lowering.cost_cache[key]


def search_tiles(lowering: Lowering, s: ConvShape, name: str, bias: bool) -> ConvTiles:
    with gc_paused():
        return shortlist_and_time(lowering, s, name, bias)


def shortlist_and_time(lowering: Lowering, s: ConvShape, name: str, bias: bool) -> ConvTiles:
    target, scan = lowering.target, lowering.tile_order == "scan"
    toc, tic, toh, tow, channel = tile_candidates(lowering, s)
    if not len(toc):
        raise NnccError(f"layer {name}: even one output element of one channel, one input channel at a time, "
                        f"does not fit: {shortfall(lowering, s)}")
    cycles, nbytes = conv_estimates(target, s, toc, tic, toh, tow, channel, lowering.cores, scan, bias)
    jobs = -(-s.og // toc) * s.group * -(-s.cg // tic) * -(-s.oh // toh) * -(-s.ow // tow) * s.n
    order = preference(cycles, nbytes, jobs, lowering.objective)

    def tiles(i) -> ConvTiles:
        return ConvTiles(int(toc[i]), int(tic[i]), int(toh[i]), int(tow[i]), "channel" if channel[i] else "spatial")

    shortlist = [tiles(i) for i in order[:SHORTLIST]]
    extra = 0
    for i in np.argsort(cycles, kind="stable")[:8]:  # and the fastest by the closed form, if cheap to time
        if extra < SHORTLIST_FAST and jobs[i] <= CHEAP_JOBS and tiles(i) not in shortlist:
            shortlist.append(tiles(i))
            extra += 1
    for split in (False, True):  # the best of each core split, if it is close
        index = next((i for i in order if channel[i] == split), None)
        if index is not None and tiles(index) not in shortlist and cycles[index] < 1.1 * cycles.min():
            shortlist.append(tiles(index))
    if scan:  # the other order's favourite too: Scan walks its tiles at least as well
        other_cycles, other_bytes = conv_estimates(target, s, toc, tic, toh, tow, channel, lowering.cores, False,
                                                   bias)
        best_naive = tiles(preference(other_cycles, other_bytes, jobs, lowering.objective)[0])
        if best_naive not in shortlist:
            shortlist.append(best_naive)
    if len(shortlist) == 1:
        return shortlist[0]
    timed, seen = [], {}
    for candidate in shortlist:
        same = equivalence(s, candidate)
        if same not in seen:
            seen[same] = probe_prediction(lowering, "channels", s, candidate, bias)
        prediction, candidate_jobs = seen[same]
        timed.append((prediction.cycles, prediction.dram_read_bytes + prediction.dram_write_bytes,
                      candidate_jobs, candidate))
    best = preference(*(np.array([t[k] for t in timed]) for k in range(3)), lowering.objective)[0]
    return timed[best][3]


def equivalence(s: ConvShape, t: ConvTiles) -> Hashable:
    """Tilings with the same key have the same schedule up to the shape of their DMA boxes, so the
    same cycles and DRAM bytes: those of a pointwise (1x1, stride 1, unpadded) conv whose output
    tiles have the same area and divide the output evenly (no halo, no fragment: every job moves
    and computes as many elements, in as many tiles)."""
    if s.kh == s.kw == 1 and s.strides == (1, 1) and not any(s.pads) and s.oh % t.toh == 0 and s.ow % t.tow == 0:
        return (t.toc, t.tic, t.toh * t.tow, (s.oh // t.toh) * (s.ow // t.tow), t.split)
    return t


def probe_prediction(lowering: Lowering, mapping: str, s: ConvShape, tiles: ConvTiles, bias: bool):
    """(prediction, jobs) of a tiling of shape `s` under `mapping` ("channels" or "width"): the
    nest the layer would get (`conv_nest.probe_nest`: placeholder tensors, a ReLU epilogue, no
    residual), unrolled as lower-to-isa unrolls it, its schedule timed as the scheduler would emit
    it (barriers aside: see `cost_model.predict_jobs`). Kept per layer shape in `cost_cache`."""
    from nncc.compiler.codegen.conv_nest import probe_nest
    from nncc.compiler.codegen.nest import NestLowering

    key = ("probe", mapping, s, tiles, bias)
    found = lowering.cost_cache.get(key)
    if found is None:  # the placeholders get DRAM in a scratch program, not in the one being lowered
        scratch = replace(lowering, program=Program(lowering.target, []), addresses={}, weight_cache={})
        unrolled = NestLowering(scratch, probe_nest(scratch, s, tiles, mapping, bias))
        jobs = unrolled.jobs()
        found = lowering.cost_cache[key] = (
            predict_jobs(lowering.target, unrolled.kinds(), jobs, slots=lowering.buffers, barriers=False), len(jobs))
    return found


def preference(cycles: np.ndarray, nbytes: np.ndarray, jobs: np.ndarray, objective: str = "cycles") -> np.ndarray:
    """Candidates best first. Objective "cycles": within TOLERANCE of the fastest count as
    equally fast; among those, the ones within BYTES_TOLERANCE of the least DRAM traffic (DRAM
    energy) as equally frugal; among those, fewer jobs (instructions to compile and simulate),
    then fewer bytes and cycles. Objective "dram": the same with bytes and cycles swapped."""
    if objective == "dram":
        frugal = nbytes <= nbytes.min() * (1 + BYTES_TOLERANCE)
        fast = frugal & (cycles <= cycles[frugal].min() * (1 + TOLERANCE))
        return np.lexsort((nbytes, cycles, jobs, ~fast, ~frugal))
    near = cycles <= cycles.min() * (1 + TOLERANCE)
    frugal = near & (nbytes <= nbytes[near].min() * (1 + BYTES_TOLERANCE))
    return np.lexsort((cycles, nbytes, jobs, ~frugal, ~near))


def tile_ranges(size: int, tile: int) -> list[tuple[int, int]]:
    return [(start, min(tile, size - start)) for start in range(0, size, tile)]


def serpentine(items: list, reverse: bool) -> list:
    return items[::-1] if reverse else items


@dataclass(frozen=True)
class Operand:
    """A DRAM tensor and its element strides along named axes (NCHW by default)."""

    addr: int
    strides: tuple[int, ...]


def nchw(addr: int, shape) -> Operand:
    n, c, h, w = shape
    return Operand(addr, (c * h * w, h * w, w, 1))


@dataclass
class ConvLowering:
    """The jobs of a conv-shaped product that has no nest yet: matmul (`matmul.py`) and the gemms
    `conv_nest.gemm_tensors` cannot express (alpha or beta not 1, broadcast C). Convs, and the
    other gemms, are nests (`conv_nest.conv_nest`)."""

    PREDICTION = "prediction"  # cost_cache key of a layer's prediction (one per mapping)
    mapping = "channels"
    BIAS_STRIDE = (0, 0, 1)  # the bias [oc] over the [oh][ow][oc] output tile

    lowering: Lowering
    s: ConvShape
    tiles: ConvTiles
    x: Operand  # strides (n, c, h, w)
    w: Operand  # strides (group, kh, kw, c, o)
    b_addr: int | None
    y: Operand  # strides (n, o, oh, ow)
    epilogue: Epilogue
    residual: Operand | None
    scan: bool

    def kinds(self) -> list[BufferKind]:
        sizes = self.tiles.slot_bytes(self.s)
        target = self.lowering.target
        return [
            BufferKind("in", target.memory_for("input").name, sizes["in"], shared=self.tiles.split == "channel"),
            BufferKind("w", target.memory_for("weight").name, sizes["w"], shared=self.tiles.split != "channel"),
            BufferKind("out", target.memory_for("output").name, sizes["out"]),
        ]

    def jobs(self, record: bool = True) -> list[Job]:
        """The layer's jobs in tile order (and, with `record`, the cost model's prediction of them).

        spatial split: output-channel tile, then groups of `cores` output tiles (one per core,
        sharing the weight block), then input-channel tiles; channel split: output tile, then
        groups of `cores` output-channel tiles (sharing the input block), then input-channel
        tiles. Scan walks each level serpentine-wise (the direction flips at every turn), so the
        last blocks of one group are the first of the next and stay on chip."""
        s, t = self.s, self.tiles
        cores = self.lowering.cores
        spatial = [(n, oh0, toh, ow0, tow) for n in range(s.n)
                   for oh0, toh in tile_ranges(s.oh, t.toh) for ow0, tow in tile_ranges(s.ow, t.tow)]
        ic_tiles = tile_ranges(s.cg, t.tic)
        oc_tiles = [(g, oc0, toc) for g in range(s.group) for oc0, toc in tile_ranges(s.og, t.toc)]
        jobs: list[Job] = []
        turn = 0  # serpentine direction of the ic loop: flips at every group
        if t.split == "channel":
            outer = [(tile, [[oc] for oc in oc_tiles]) for tile in spatial]
        else:
            outer = [(oc, [[tile] for tile in spatial]) for oc in oc_tiles]
        for oi, (fixed, items) in enumerate(outer):
            items = [sum(items[i:i + cores], []) for i in range(0, len(items), cores)]
            for group in serpentine(items, self.scan and oi % 2 == 1):
                for ii, (ic0, tic) in enumerate(serpentine(ic_tiles, self.scan and turn % 2 == 1)):
                    first_ic, last_ic = ii == 0, ii == len(ic_tiles) - 1
                    for core, item in enumerate(group):
                        (g, oc0, toc), tile = (item, fixed) if t.split == "channel" else (fixed, item)
                        jobs.append(self.job(core, g, oc0, toc, ic0, tic, tile, first_ic, last_ic))
                turn += 1
        if record:
            key = (self.PREDICTION, s, t, self.b_addr is None, self.residual is None, self.epilogue, self.scan)
            if key not in self.lowering.cost_cache:
                self.lowering.cost_cache[key] = predict_jobs(self.lowering.target, self.kinds(), jobs,
                                                              slots=self.lowering.buffers)
            self.lowering.record_prediction(self.lowering.cost_cache[key])
            if self.scan and self.lowering.compare_orders:
                naive = replace(self, scan=False)
                self.lowering.record_naive_order(predict_jobs(self.lowering.target, naive.kinds(),
                                                              naive.jobs(record=False), slots=self.lowering.buffers))
        return jobs

    def job(self, core, g, oc0, toc, ic0, tic, tile, first_ic, last_ic) -> Job:
        s = self.s
        n, oh0, toh, ow0, tow = tile
        out_key = ("out", g, oc0, n, oh0, ow0)
        buffers = {"in": ("in", g, ic0, n, oh0, ow0), "w": ("w", g, oc0, ic0), "out": out_key}
        loads = {"in": [self.input_load(g, ic0, tic, n, oh0, toh, ow0, tow)],
                 "w": self.weight_loads(g, oc0, toc, ic0, tic)}
        if self.residual is not None and first_ic:
            loads["out"] = [self.output_transfer(self.residual, g, oc0, toc, n, oh0, toh, ow0, tow, load=True)]
        compute = self.matmuls(toc, tic, toh, tow, accumulate=not first_ic or self.residual is not None)
        bias = BufRef("w", F32 * s.kh * s.kw * tic * toc) if self.b_addr is not None else None
        if self.epilogue_on_matmuls:
            head, tail = self.epilogue.matmul_operands(bias, self.BIAS_STRIDE, first_ic, last_ic)
            compute[0] = Compute("matmul", {**compute[0].operands, **head})
            compute[-1] = Compute("matmul", {**compute[-1].operands, **tail})
        elif last_ic:
            compute += self.epilogue_instructions(toh, tow, toc, bias)
        stores = {}
        if last_ic:
            stores["out"] = [self.output_transfer(self.y, g, oc0, toc, n, oh0, toh, ow0, tow, load=False)]
        return Job(core, buffers, compute, loads, stores)

    @property
    def epilogue_on_matmuls(self) -> bool:
        """Bias and activation ride on the matmuls when a vector unit runs them (see epilogue.py)."""
        return self.lowering.vector_unit == "main"

    def epilogue_instructions(self, toh, tow, toc, bias: BufRef | None) -> list[Compute]:
        """Bias and activation on the [oh][ow][oc] output tile."""
        return self.epilogue.instructions(self.lowering, BufRef("out"), (toh, tow, toc), bias=bias)

    def input_window(self, g, ic0, n, oh0, toh, ow0, tow):
        """Where an output tile's input window starts in DRAM, its rows and columns, its
        zero padding at the image borders (top, bottom, left, right) and the input's strides."""
        s = self.s
        rows, cols = s.input_extent(toh, 0), s.input_extent(tow, 1)
        top, left = oh0 * s.strides[0] - s.pads[0], ow0 * s.strides[1] - s.pads[1]
        pads = (max(0, -top), max(0, top + rows - s.h), max(0, -left), max(0, left + cols - s.w))
        sn, sc, sh, sw = self.x.strides
        src = self.x.addr + F32 * (n * sn + (g * s.cg + ic0) * sc + max(top, 0) * sh + max(left, 0) * sw)
        return src, rows, cols, pads, (sc, sh, sw)

    def input_load(self, g, ic0, tic, n, oh0, toh, ow0, tow) -> Transfer:
        """The input window of an output tile, HWC on chip, zero padding at the image borders."""
        src, rows, cols, (top, bottom, left, right), (sc, sh, sw) = self.input_window(g, ic0, n, oh0, toh, ow0, tow)
        return Transfer(dram(src), (sh, sw, sc), BufRef("in"), (cols * tic, tic, 1),
                        (rows, cols, tic), (top, bottom, left, right, 0, 0))

    def weight_boxes(self, g, oc0, ic0) -> list[tuple[int, int]]:
        """(DRAM address, kernel positions) of the weight blocks: one box when the kernel
        positions are evenly spaced in DRAM, else one per kernel row."""
        s = self.s
        sg, skh, skw, sc, so = self.w.strides
        base = self.w.addr + F32 * (g * sg + ic0 * sc + oc0 * so)
        if s.kh * s.kw == 1 or skh == s.kw * skw:
            return [(base, s.kh * s.kw)]
        return [(base + F32 * i * skh, s.kw) for i in range(s.kh)]

    def bias_load(self, g, oc0, toc, tic) -> list[Transfer]:
        """The bias block, after the weights in the weight slot."""
        s = self.s
        if self.b_addr is None:
            return []
        return [Transfer(dram(self.b_addr + F32 * (g * s.og + oc0)), (0, 0, 1),
                         BufRef("w", F32 * s.kh * s.kw * tic * toc), (0, 0, 1), (1, 1, toc))]

    def weight_loads(self, g, oc0, toc, ic0, tic) -> list[Transfer]:
        """[kh][kw][ic][oc] blocks ([kh][kw][oc][ic] when channels are not last), then the bias [oc]."""
        s = self.s
        _, _, skw, sc, so = self.w.strides
        boxes = self.weight_boxes(g, oc0, ic0)
        if self.mapping == "channels":
            src_stride, chip_stride, box = (skw, sc, so), (tic * toc, toc, 1), (tic, toc)
        else:
            src_stride, chip_stride, box = (skw, so, sc), (tic * toc, tic, 1), (toc, tic)
        return [Transfer(dram(addr), src_stride, BufRef("w", F32 * i * s.kw * tic * toc * (len(boxes) > 1)),
                         chip_stride, (count, *box))
                for i, (addr, count) in enumerate(boxes)] + self.bias_load(g, oc0, toc, tic)

    def output_transfer(self, tensor: Operand, g, oc0, toc, n, oh0, toh, ow0, tow, load: bool) -> Transfer:
        """An output tile [oh][ow][oc] ([oh][oc][ow] when channels are not last) from or to DRAM."""
        s = self.s
        sn, so, sh, sw = tensor.strides
        base = tensor.addr + F32 * (n * sn + (g * s.og + oc0) * so + oh0 * sh + ow0 * sw)
        if self.mapping == "channels":
            dram_stride, chip_stride, box = (sh, sw, so), (tow * toc, toc, 1), (toh, tow, toc)
        else:
            dram_stride, chip_stride, box = (sh, so, sw), (toc * tow, tow, 1), (toh, toc, tow)
        if load:
            return Transfer(dram(base), dram_stride, BufRef("out"), chip_stride, box)
        return Transfer(BufRef("out"), chip_stride, dram(base), dram_stride, box)

    def matmuls(self, toc, tic, toh, tow, accumulate: bool) -> list[Compute]:
        """One batched matmul per kernel row (batch = output rows, m = output columns, n = output
        channels): without horizontal dilation, a row's kw positions x tic channels are one
        contiguous run of the HWC input tile and of the [kh][kw][ic][oc] weight tile, so they form
        one k = kw*tic reduction; with it, one matmul per kernel position (k = tic)."""
        s = self.s
        cols = s.input_extent(tow, 1)
        folded = s.dilations[1] == 1
        positions = [(i, None) for i in range(s.kh)] if folded else [(i, j) for i in range(s.kh) for j in range(s.kw)]
        out = []
        for index, (i, j) in enumerate(positions):
            a_offset = F32 * ((i * s.dilations[0] * cols + (j or 0) * s.dilations[1]) * tic)
            b_offset = F32 * ((i * s.kw + (j or 0)) * tic * toc)
            out.append(Compute("matmul", {
                "batch": toh, "mnk": (tow, toc, s.kw * tic if folded else tic),
                "a": BufRef("in", a_offset), "a_stride": (s.strides[0] * cols * tic, s.strides[1] * tic, 1),
                "b": BufRef("w", b_offset), "b_stride": (0, toc, 1),
                "c": BufRef("out"), "c_stride": (tow * toc, toc, 1),
                "acc": int(accumulate or index > 0),
            }))
        return out


def conv_shape(x: SSAValue, weight_shape, y: SSAValue, strides, pads, dilations, group) -> ConvShape:
    from nncc.dialects.nn import shape_of

    n, c, h, w = shape_of(x)
    o, _, kh, kw = weight_shape
    _, _, oh, ow = shape_of(y)
    return ConvShape(n, c, h, w, o, kh, kw, oh, ow, tuple(strides), tuple(pads), tuple(dilations), group)
