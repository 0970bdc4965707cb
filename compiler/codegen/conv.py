"""Convolution (and everything that is a convolution: 1x1, grouped, FC and matmul as 1x1): the
problem's shape, its tiles and the tile search. The nest a tiling gives is conv_nest.py's; its
instructions are compute_lowering.py's.

On chip, tiles are HWC so that output channels sit on the lanes (vector unit) or the
columns (matrix unit):

    input  slot  [ih][iw][ic]     DMA'd from NCHW DRAM, halo and zero padding included
    weight slot  [kh][kw][ic][oc] + bias[oc]   (DRAM keeps weights as [kh][kw][C][O])
    output slot  [oh][ow][oc]     stored back to NCHW

Loop order: output-channel tile, then groups of `cores` spatial tiles (one per core,
sharing the weight block by multicast), then input-channel tiles. `scan` order walks
spatial tiles and input-channel tiles serpentine-wise so that the block already on
chip is reused by the next tile.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, replace

import numpy as np
from xdsl.ir import Operation, SSAValue

from nncc.compiler.codegen.context import F32, Lowering
from nncc.compiler.codegen.cost_model import conv_estimate, conv_estimates, predict_jobs
from nncc.compiler.codegen.scheduler import gc_paused
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
    # DRAM layouts the tile search assumes for the input and the output: True where the tensor is
    # expected channels-last (`stored_channels_last`; a gemm's [M, K] rows always are), which a
    # DRAM timed in bursts per run (`dram.burst_timing`) makes matter
    x_nhwc: bool = False
    y_nhwc: bool = False

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
    # "recompute": every tile loads its input window whole (halo rows included); "cache": strips
    # of whole rows walked down the image, the input a `ring` buffer (one slot) that keeps the
    # halo rows the next strip shares, so each input row comes from DRAM once (`cache_tiles`)
    halo: str = "recompute"
    # images per tile (row stride 1 only): their rows interleaved on chip, [rows][images][columns][channels],
    # so one matmul per kernel row covers them all (a feature map of a few pixels per image)
    images: int = 1

    def slot_bytes(self, s: ConvShape) -> dict[str, int]:
        return {
            "in": F32 * s.input_extent(self.toh, 0) * s.input_extent(self.tow, 1) * self.tic * self.images,
            "w": F32 * (s.kh * s.kw * self.tic * self.toc + self.toc),
            "out": F32 * self.toh * self.tow * self.toc * self.images,
        }


ROLE = {"in": "input", "w": "weight", "out": "output"}
TOLERANCE = 0.01  # cycles within 1 % of the fastest count as equal (then DRAM traffic, jobs decide)
BYTES_TOLERANCE = 0.05  # DRAM bytes within 5 % of the least count as equal (then fewer jobs win)
COMPULSORY_SLACK = 0.001  # under the DRAM objective, excesses this fraction of the compulsory traffic apart tie (1.000x)
SHORTLIST_FAST, CHEAP_JOBS = 3, 600  # the closed form's fastest, if they have few jobs
SHORTLIST = 2  # candidates of the closed-form estimate that the job-level model then times


def fits(lowering: Lowering, slot_bytes: dict[str, int], halo: str = "recompute") -> bool:
    """The slots of every kind (in, w, out -> bytes) fit in the memories that hold them (a cached
    halo's input: one slot, the ring)."""
    return lowering.fits({ROLE[kind]: nbytes for kind, nbytes in slot_bytes.items()},
                         single=("input",) if halo == "cache" else ())


def halo_rows(s: ConvShape) -> int:
    """Input rows that consecutive strips of output rows share (0: a cached halo saves nothing)."""
    return max(0, (s.kh - 1) * s.dilations[0] + 1 - s.strides[0])


def cache_tiles(lowering: Lowering, s: ConvShape) -> list[ConvTiles]:
    """The tilings with a cached halo worth timing, best first by the objective's closed form:
    strips of whole output rows (every input channel in one block, so consecutive loads are
    consecutive strips), the output-channel tiles inside the strip loop (`split` channel: the
    cores share the strip), the input a one-slot ring. DRAM bytes: the input once, the output
    once, the weights once when all their blocks stay on chip (two slots: at most two blocks,
    Scan walking them serpentine), else every strip reloads the blocks it does not find."""
    if not halo_rows(s) or s.group != 1:
        return []
    main = lowering.target.main
    width = main.lanes if main.kind == "vector" else main.cols
    ocs = candidates(s.og, [width * m for m in (1, 2, 3, 4, 6, 8, 16, 32, 64)]
                     + [v for v in even_splits(s.og, [2, 3, 4, 8]) if v % width == 0])
    ohs = candidates(s.oh, [1, 2, 3, 4, 7, 8, 14, 16, 28, 32, 56] + even_splits(s.oh, [2, 3, 4, 8]))
    found = [ConvTiles(toc, s.cg, toh, s.ow, "channel", "cache") for toc in ocs for toh in ohs if toh < s.oh]
    found = [t for t in found if fits(lowering, t.slot_bytes(s), t.halo)]
    if not found:
        return []
    toc, toh = (np.array([getattr(t, name) for t in found]) for name in ("toc", "toh"))
    cycles, _ = conv_estimates(lowering.target, s, toc, np.full(len(found), s.cg), toh, np.full(len(found), s.ow),
                               np.ones(len(found), dtype=bool), lowering.cores, lowering.tile_order == "scan")
    strips, blocks = -(-s.oh // toh) * s.n, -(-s.og // toc)
    walked = blocks + (strips - 1) * (blocks - 2) if lowering.tile_order == "scan" else strips * blocks
    weight_loads = np.where(blocks <= 2, blocks, walked)
    nbytes = F32 * (s.n * s.c * s.h * s.w + s.n * s.o * s.oh * s.ow) \
        + weight_loads * F32 * (s.kh * s.kw * s.cg * toc + toc)
    order = preference(cycles, nbytes.astype(np.float64), strips * blocks, lowering.objective,
                       compulsory_bytes(s))
    return [found[i] for i in order]


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
                     + [v for v in even_splits(s.og, [2, 3, 4, 8]) if v % width == 0]
                     + narrow_channel_tiles(lowering, s, width))
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


def narrow_channel_tiles(lowering: Lowering, s: ConvShape, width: int) -> list[int]:
    """Output-channel tiles narrower than the unit's columns (lanes), 3/4 to 1/4 of them, offered
    under the DRAM objective to layers bound by their DRAM traffic (a matrix-vector product: an FC
    layer at batch 1), where the weight blocks they leave room for keep the whole input on chip:
    only when the MACs at a quarter of the columns still take no longer than the compulsory
    traffic (`compulsory_bytes`) on the DRAM bus, so the idle columns cost no cycles the bus does
    not cost anyway. E.g. FC 4096x4096 on `edge`: 65.5K cycles of MACs at full width against
    1.05M of DRAM: tiles of 12 outputs and 2048 inputs move the compulsory 67.1 MB."""
    target = lowering.target
    if lowering.objective != "dram" or width < 4:
        return []
    macs = s.n * s.o * s.oh * s.ow * s.cg * s.kh * s.kw
    compute = 4 * macs / (target.main.macs_per_cycle * max(1, lowering.cores))
    if compute > compulsory_bytes(s) / target.dram_bytes_per_cycle:
        return []
    return [width * 3 // 4, width // 2, width // 4]


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
        need.setdefault(memory, []).append((role, -(-nbytes // 64) * 64))
    parts = []
    for memory, uses in need.items():
        copies = lowering.copies(memory) * lowering.buffers
        total, size = copies * sum(n for _, n in uses), lowering.target.memory(memory).size_bytes
        if total > size:
            slot = " + ".join(f"{role} {n}" for role, n in uses)
            parts.append(f"{memory} needs {total} bytes ({copies} x {slot}) but has {size} "
                         f"(memory.{memory}.size_bytes): {total - size} bytes short")
    return "; ".join(parts)


def grid_fits(lowering: Lowering, s: ConvShape, toc, tic, toh, tow) -> np.ndarray:
    """Which tilings (arrays) fit: the slots of the input window, the weights + bias and the
    output tile in the memories that hold them (`Lowering.fits`, vectorised)."""
    rows = (toh - 1) * s.strides[0] + (s.kh - 1) * s.dilations[0] + 1
    cols = (tow - 1) * s.strides[1] + (s.kw - 1) * s.dilations[1] + 1
    return lowering.fits({"input": F32 * rows * cols * tic, "weight": F32 * (s.kh * s.kw * tic * toc + toc),
                          "output": F32 * toh * tow * toc})


def choose_tiles(lowering: Lowering, s: ConvShape, name: str, bias: bool = True, halo: bool = False) -> ConvTiles:
    """The tile sizes (and core split) with the fewest predicted cycles under the capacity.

    Every candidate that fits (two slots per buffer kind) is ranked by the closed-form
    estimate (`conv_estimates`, vectorised); the best few are then timed by the job-level
    model (`predict_jobs`) on their real job lists, and the fastest (then the one with less
    DRAM traffic) wins. With `halo`, the best `SHORTLIST` tilings with a cached halo
    (`cache_tiles`) are timed beside them (a forward conv's nest: `conv_nest` writes the ring)."""
    key = ("tiles", s, bias, halo)
    if key not in lowering.cost_cache:  # layers of one shape (ResNet blocks) share the choice
        lowering.cost_cache[key] = search_tiles(lowering, s, name, bias, halo)
    return lowering.cost_cache[key]


def search_tiles(lowering: Lowering, s: ConvShape, name: str, bias: bool, halo: bool = False) -> ConvTiles:
    with gc_paused():
        return shortlist_and_time(lowering, s, name, bias, halo)


def shortlist_and_time(lowering: Lowering, s: ConvShape, name: str, bias: bool, halo: bool = False) -> ConvTiles:
    target, scan = lowering.target, lowering.tile_order == "scan"
    toc, tic, toh, tow, channel = tile_candidates(lowering, s)
    if not len(toc):
        raise NnccError(f"layer {name}: even one output element of one channel, one input channel at a time, "
                        f"does not fit: {shortfall(lowering, s)}")
    cycles, nbytes = conv_estimates(target, s, toc, tic, toh, tow, channel, lowering.cores, scan, bias)
    jobs = -(-s.og // toc) * s.group * -(-s.cg // tic) * -(-s.oh // toh) * -(-s.ow // tow) * s.n
    floor = compulsory_bytes(s, bias)
    order = preference(cycles, nbytes, jobs, lowering.objective, floor)

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
        best_naive = tiles(preference(other_cycles, other_bytes, jobs, lowering.objective, floor)[0])
        if best_naive not in shortlist:
            shortlist.append(best_naive)
    if halo:
        shortlist += cache_tiles(lowering, s)[:SHORTLIST]
    if len(shortlist) == 1:
        return shortlist[0]
    timed, seen = [], {}
    for candidate in shortlist:
        same = equivalence(s, candidate, target.dram.burst_timing or target.main.micro_kernel)
        if same not in seen:
            seen[same] = probe_prediction(lowering, "channels", s, candidate, bias)
        prediction, candidate_jobs = seen[same]
        timed.append((prediction.cycles, prediction.dram_read_bytes + prediction.dram_write_bytes,
                      candidate_jobs, candidate))
    best = preference(*(np.array([t[k] for t in timed]) for k in range(3)), lowering.objective, floor)[0]
    return timed[best][3]


def equivalence(s: ConvShape, t: ConvTiles, shape_matters: bool = False) -> Hashable:
    """Tilings with the same key have the same schedule up to the shape of their DMA boxes, so the
    same cycles and DRAM bytes: those of a pointwise (1x1, stride 1, unpadded) conv whose output
    tiles have the same area and divide the output evenly (no halo, no fragment: every job moves
    and computes as many elements, in as many tiles). Not where the shape matters
    (`shape_matters`): a DRAM timed by bursts per contiguous run (`dram.burst_timing`) or a
    micro-kernel unit, whose matmuls of toh x tow rows split into calls by their rows."""
    if shape_matters:
        return t
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


def preference(cycles: np.ndarray, nbytes: np.ndarray, jobs: np.ndarray, objective: str = "cycles",
               floor: float = 0.0) -> np.ndarray:
    """Candidates best first. Objective "cycles": within TOLERANCE of the fastest count as
    equally fast; among those, the ones within BYTES_TOLERANCE of the least DRAM traffic (DRAM
    energy) as equally frugal; among those, fewer jobs (instructions to compile and simulate),
    then fewer bytes and cycles. Objective "dram": the same with bytes and cycles swapped, the
    tolerance taken on the bytes above `floor` (the layer's compulsory traffic, which no tiling
    avoids): tilings whose excess is within BYTES_TOLERANCE of the least excess, or within
    COMPULSORY_SLACK of the floor (a difference a ratio to it shows only in its fourth digit),
    count as equally frugal. E.g. excesses 0 and 0.6 MB over 67.1 MB: only the first is frugal
    (the total's 5 % would take both); 0 and 4 KB over 5.1 MB: both."""
    if objective == "dram":
        excess = np.maximum(nbytes - floor, 0)
        frugal = excess <= excess.min() + max(excess.min() * BYTES_TOLERANCE, floor * COMPULSORY_SLACK)
        fast = frugal & (cycles <= cycles[frugal].min() * (1 + TOLERANCE))
        return np.lexsort((nbytes, cycles, jobs, ~fast, ~frugal))
    near = cycles <= cycles.min() * (1 + TOLERANCE)
    frugal = near & (nbytes <= nbytes[near].min() * (1 + BYTES_TOLERANCE))
    return np.lexsort((cycles, nbytes, jobs, ~frugal, ~near))


def compulsory_bytes(s: ConvShape, bias: bool = True) -> int:
    """DRAM bytes every tiling of `s` moves: its input, weights (and bias) and output once."""
    return F32 * (s.n * s.c * s.h * s.w + s.kh * s.kw * s.cg * s.o + (s.o if bias else 0) + s.n * s.o * s.oh * s.ow)


def tile_ranges(size: int, tile: int) -> list[tuple[int, int]]:
    return [(start, min(tile, size - start)) for start in range(0, size, tile)]


def conv_shape(x: SSAValue, weight_shape, y: SSAValue, strides, pads, dilations, group) -> ConvShape:
    from nncc.dialects.nn import shape_of

    n, c, h, w = shape_of(x)
    o, _, kh, kw = weight_shape
    _, _, oh, ow = shape_of(y)
    return ConvShape(n, c, h, w, o, kh, kw, oh, ow, tuple(strides), tuple(pads), tuple(dilations), group,
                     stored_channels_last(x), stored_channels_last(y))


LOAD_STORE_LAYERS = ("nn.conv2d", "fused.conv2d", "nn.max_pool", "nn.avg_pool", "tile.nest")
"""Layers whose nests only load and store their feature maps (no `tile.view` of them), which
`dram-layout` (passes/dram_layout.py) may store channels-last."""


def stored_channels_last(value: SSAValue) -> bool:
    """The tile search's guess of `dram-layout`'s decision for `value` before the nests exist (that
    pass decides on the nests): a 4-D feature map of more than one channel and pixel, made by a
    load/store layer and read only by such layers (not the program's input or output)."""
    from nncc.dialects.nn import shape_of

    shape = shape_of(value)
    if len(shape) != 4 or shape[1] == 1 or shape[2] * shape[3] == 1:
        return False
    if not isinstance(value.owner, Operation) or value.owner.name not in LOAD_STORE_LAYERS:
        return False
    users = [use.operation for use in value.uses]
    return bool(users) and all(user.name in LOAD_STORE_LAYERS for user in users)
