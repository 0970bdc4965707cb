"""Sliding-window layers on tiles: max/avg pooling (and the geometry depthwise conv shares).

A window layer's output is cut into (channels, output rows, output columns) tiles. Each tile's
input window, halo and border padding included (`pad_value` -inf for max pooling), is DMA'd
from NCHW DRAM into one of two on-chip layouts, whichever wastes fewer lanes:

    hwc  [rows][cols][channels]  channels on lanes (the usual case: C >= lanes)
    chw  [channels][rows][cols]  output columns on lanes (few channels, wide images)

One `vpool` then computes the whole output tile (the window stride is folded into `x_stride`,
the dilation into `win_stride`). Average pooling whose divisor varies over the image (padding
not counted, ceil_mode overhang) sums with `vpool sum` and multiplies by the reciprocal of the
divisor map, a compile-time constant [OH][OW] tensor loaded like a weight (stride 0 over
channels); a uniform divisor is `vpool avg`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr, StringAttr, i64
from xdsl.ir import Operation

from nncc.compiler.codegen.context import F32, TILE_ATTR, Lowering, dram, layer_name
from nncc.compiler.codegen.conv import tile_ranges
from nncc.compiler.codegen.scheduler import BufRef, Transfer
from nncc.dialects import nn
from nncc.support.errors import NnccError

JOB_OVERHEAD = 100
"""Rough cycles of fixed cost per job (DMA set-up, semaphores) for tile choice."""


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Window:
    """A 2-D sliding window over an NCHW tensor."""

    n: int
    c: int
    h: int
    w: int
    oh: int
    ow: int
    kh: int
    kw: int
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    dilations: tuple[int, int]

    def extent(self, out: int, axis: int) -> int:
        """Input rows (axis 0) or columns (axis 1) read by `out` consecutive outputs."""
        k = (self.kh, self.kw)[axis]
        return (out - 1) * self.strides[axis] + (k - 1) * self.dilations[axis] + 1


@dataclass(frozen=True)
class WindowTiles:
    tc: int
    toh: int
    tow: int
    layout: str  # "hwc" or "chw"
    # "recompute": every tile loads its whole input window; "cache": strips of whole rows (hwc)
    # walked down the image on one core, the input a `ring` that keeps the halo rows
    halo: str = "recompute"

    def in_elems(self, g: Window) -> int:
        return g.extent(self.toh, 0) * g.extent(self.tow, 1) * self.tc

    def out_elems(self) -> int:
        return self.toh * self.tow * self.tc


def lane_waste(size: int, lanes: int) -> float:
    """Fraction of lane slots left idle when `size` elements are spread over `lanes`."""
    return 1 - size / (math.ceil(size / lanes) * lanes)


def choose_layout(g: Window, lanes: int) -> str:
    """Channels on lanes unless the output columns fill them clearly better."""
    return "chw" if lane_waste(g.ow, lanes) < lane_waste(g.c, lanes) - 1e-9 else "hwc"


def values(limit: int, preferred) -> list[int]:
    return sorted({v for v in [*preferred, limit] if 1 <= v <= limit}, reverse=True)


def choose_window_tiles(lowering: Lowering, g: Window, name: str, sizes, layout: str | None = None,
                        roles=("input", "output"), accesses: int | None = None, halo: bool = False) -> WindowTiles:
    """The cheapest (channels, rows, columns) tile whose buffers fit, two slots each.

    `sizes(tiles)` gives the bytes of every buffer kind (by role) for a candidate; `accesses`
    is the on-chip reads and writes per output element (default: a pooling window and a write).
    The estimate is a software pipeline: the DRAM traffic of every job (shared by the cores) or
    the compute of each core's jobs, whichever is longer, plus one job's load, compute and store
    that cannot overlap, plus a fixed cost per job. With `halo` (a depthwise conv on one core,
    hwc) and `--tile-objective=dram`, the cheapest tiling with a cached halo
    (`cache_window_tiles`) competes with that one when it reads fewer bytes (`conv.preference`).
    """
    target = lowering.target
    lanes = lowering.lanes
    unit = target.units[lowering.vector_unit]
    bandwidth = target.memory_for(roles[0]).bandwidth_bytes_per_cycle
    dram = target.dram_bytes_per_cycle
    window = g.kh * g.kw
    accesses = accesses if accesses is not None else window + 1
    layout = layout or choose_layout(g, lanes)
    best, best_cost = None, math.inf
    c_pref = [lanes * m for m in (1, 2, 4, 8, 16, 32, 64)] + [1, 2, 4, 8]
    h_pref = [1, 2, 4, 7, 8, 14, 16, 28, 32, 56, 64, 112]
    for tc in values(g.c, c_pref):
        for toh in values(g.oh, h_pref):
            for tow in values(g.ow, h_pref + [lanes * m for m in (1, 2, 4, 8)]):
                tiles = WindowTiles(tc, toh, tow, layout)
                if not lowering.fits(sizes(tiles)):
                    continue
                jobs = g.n * math.ceil(g.c / tc) * math.ceil(g.oh / toh) * math.ceil(g.ow / tow)
                lane_axis = tc if layout == "hwc" else tow
                out = tiles.out_elems()
                issue = out / lane_axis * math.ceil(lane_axis / lanes) * window / unit.macs_per_lane
                compute = max(issue, F32 * out * accesses / bandwidth) + unit.pipeline_depth
                load, store = F32 * tiles.in_elems(g) / dram, F32 * out / dram
                steady = max(jobs * (load + store), math.ceil(jobs / lowering.cores) * compute)
                cost = steady + load + compute + store + jobs * JOB_OVERHEAD
                if cost < best_cost:
                    best, best_cost = tiles, cost
    if best is not None:  # its DRAM bytes: every tile's input window inside the image, the output once
        best_bytes = F32 * g.n * g.c * (window_span(g, best.toh, 0) * window_span(g, best.tow, 1) + g.oh * g.ow)
    if best is None:
        raise NnccError(f"layer {name}: even a 1x1x1 tile does not fit in "
                        f"{lowering.target.memory_for(roles[0]).name}")
    # offered for DRAM bytes only: the closed form does not time a one-slot ring's serialised
    # strips well enough to choose it for cycles (a conv's cached halos are timed exactly)
    cached = cache_window_tiles(lowering, g, sizes, accesses) \
        if halo and layout == "hwc" and lowering.objective == "dram" else None
    if cached is None or cached[1] >= best_bytes:  # nothing to save: the input is read once already
        return best
    from nncc.compiler.codegen.conv import preference

    cost, nbytes, tiles = cached
    jobs = [math.ceil(g.c / t.tc) * math.ceil(g.oh / t.toh) * math.ceil(g.ow / t.tow) for t in (best, tiles)]
    order = preference(np.array([best_cost, cost]), np.array([best_bytes, nbytes]), np.array(jobs), lowering.objective)
    return (best, tiles)[order[0]]


def window_span(g: Window, tile: int, axis: int) -> int:
    """Input rows (axis 0) or columns (1) inside the image that the tiles of `tile` outputs read, summed."""
    size, out, pad = (g.h, g.oh, g.pads[0]) if axis == 0 else (g.w, g.ow, g.pads[1])
    return sum(max(0, min(start * g.strides[axis] - pad + g.extent(min(tile, out - start), axis), size)
                   - max(start * g.strides[axis] - pad, 0)) for start in range(0, out, tile))


def cache_window_tiles(lowering: Lowering, g: Window, sizes, accesses: int):
    """(cost, DRAM bytes, tiles) of the cheapest tiling with a cached halo, or None: strips of
    whole rows, channels on the lanes, on one core (consecutive strips on one core), the input
    a one-slot ring that loads only each strip's new rows; the input and output once. The ring
    has one slot, so a strip's loads (the on-chip copy of the kept rows, then the new rows, each
    with its DMA latency) wait for the strip before: they add to its compute."""
    if lowering.cores != 1 or g.extent(1, 0) <= g.strides[0]:
        return None
    target, lanes = lowering.target, lowering.lanes
    unit = target.units[lowering.vector_unit]
    bandwidth, dram = target.memory_for("input").bandwidth_bytes_per_cycle, target.dram_bytes_per_cycle
    found = None
    for tc in values(g.c, [lanes * m for m in (1, 2, 4, 8, 16, 32, 64)]):
        for toh in values(g.oh - 1, [1, 2, 3, 4, 7, 8, 14, 16, 28, 32, 56, 64, 112]):  # two strips or more
            tiles = WindowTiles(tc, toh, g.ow, "hwc", "cache")
            if not lowering.fits(sizes(tiles), single=("input",)):
                continue
            jobs = g.n * math.ceil(g.c / tc) * math.ceil(g.oh / toh)
            out = tiles.out_elems()
            issue = out / tc * math.ceil(tc / lanes) * g.kh * g.kw / unit.macs_per_lane
            compute = max(issue, F32 * out * accesses / bandwidth) + unit.pipeline_depth
            new_rows = F32 * toh * g.strides[0] * g.extent(g.ow, 1) * tc / dram
            store = F32 * out / dram
            latency = 2 * (target.dma.latency_cycles + target.dram_latency_cycles)
            cost = jobs * (latency + new_rows + compute + JOB_OVERHEAD) + F32 * tiles.in_elems(g) / dram + store
            nbytes = F32 * g.n * g.c * (g.h * g.w + g.oh * g.ow)
            if found is None or cost < found[0]:
                found = (cost, nbytes, tiles)
    return found


WINDOW_TILE_KEYS = ("c", "oh", "ow")


def window_tile_attribute(t: WindowTiles) -> DictionaryAttr:
    """`tile = {c = 32, oh = 8, ow = 8, layout = "hwc"}` (channels, output rows and columns per tile)."""
    return DictionaryAttr({"c": IntegerAttr(t.tc, i64), "oh": IntegerAttr(t.toh, i64),
                           "ow": IntegerAttr(t.tow, i64), "layout": StringAttr(t.layout),
                           "halo": StringAttr(t.halo)})


def given_window_tiles(op: Operation, g: Window, name: str) -> WindowTiles | None:
    """The op's `tile` attribute (window_tile_attribute), checked against the layer's extents."""
    attr = op.attributes.get(TILE_ATTR)
    if attr is None:
        return None
    try:
        sizes = {key: attr.data[key].value.data for key in WINDOW_TILE_KEYS}
        layout = attr.data["layout"].data if "layout" in attr.data else "hwc"
        halo = attr.data["halo"].data if "halo" in attr.data else "recompute"
    except (AttributeError, KeyError) as error:
        raise NnccError(f"layer {name}: bad tile attribute {attr} (missing {error})") from None
    limits = {"c": g.c, "oh": g.oh, "ow": g.ow}
    if any(not 1 <= sizes[key] <= limit for key, limit in limits.items()) or layout not in ("hwc", "chw") \
            or halo not in ("recompute", "cache"):
        raise NnccError(f"layer {name}: tile sizes {sizes} must lie within {limits}, layout hwc or chw, "
                        f"halo recompute or cache")
    return WindowTiles(sizes["c"], sizes["oh"], sizes["ow"], layout, halo)


def given_or_chosen(lowering: Lowering, given: WindowTiles | None, g: Window, name: str, sizes,
                    **choice) -> WindowTiles:
    """`given` tiles when they fit the memories (else a one-line error), or the cheapest ones
    (`choose_window_tiles` with the `choice` options)."""
    if given is None:
        return choose_window_tiles(lowering, g, name, sizes, **choice)
    if not lowering.fits(sizes(given), single=("input",) if given.halo == "cache" else ()):
        raise NnccError(f"layer {name}: tile sizes {given} do not fit the target's memories")
    return given




def window_of(op: Operation, kernel=None, strides=None, pads=None, dilations=None) -> Window:
    n, c, h, w = nn.shape_of(op.input)
    _, _, oh, ow = nn.shape_of(op.result)
    kernel = kernel if kernel is not None else nn.ints(op.kernel)
    return Window(n, c, h, w, oh, ow, kernel[0], kernel[1],
                  tuple(strides if strides is not None else nn.ints(op.strides)),
                  tuple(pads if pads is not None else nn.ints(op.pads)),
                  tuple(dilations if dilations is not None else nn.ints(op.dilations)))


# --------------------------------------------------------------------------- transfers


@dataclass(frozen=True)
class Spot:
    """One output tile: image n, channels c0.., rows oh0.., columns ow0.. (sizes tc, toh, tow)."""

    n: int
    c0: int
    tc: int
    oh0: int
    toh: int
    ow0: int
    tow: int


def spots(g: Window, t: WindowTiles) -> list[Spot]:
    """Every output tile, channel tile outermost (so a channel tile's weights are loaded once)."""
    return [Spot(n, c0, tc, oh0, toh, ow0, tow)
            for c0, tc in tile_ranges(g.c, t.tc) for n in range(g.n)
            for oh0, toh in tile_ranges(g.oh, t.toh) for ow0, tow in tile_ranges(g.ow, t.tow)]


def clipped(start: int, extent: int, size: int) -> tuple[int, int]:
    """(padding before, padding after) of the input range [start, start + extent) of 0..size."""
    before = min(max(0, -start), extent)
    after = min(max(0, start + extent - size), extent - before)
    return before, after


def input_load(g: Window, t: WindowTiles, x_addr: int, spot: Spot, kind: str = "in",
               pad_value: float = 0.0) -> Transfer:
    """The input window of an output tile in the tile's layout, border padding by the DMA."""
    rows, cols = g.extent(spot.toh, 0), g.extent(spot.tow, 1)
    top, left = spot.oh0 * g.strides[0] - g.pads[0], spot.ow0 * g.strides[1] - g.pads[1]
    pt, pb = clipped(top, rows, g.h)
    pl, pr = clipped(left, cols, g.w)
    row0, col0 = min(max(top, 0), g.h - 1), min(max(left, 0), g.w - 1)
    src = x_addr + F32 * (((spot.n * g.c + spot.c0) * g.h + row0) * g.w + col0)
    sr, sc, sch = chip_in_strides(g, t, spot)
    if t.layout == "hwc":
        return Transfer(dram(src), (g.w, 1, g.h * g.w), BufRef(kind), (sr, sc, sch), (rows, cols, spot.tc),
                        (pt, pb, pl, pr, 0, 0), pad_value)
    return Transfer(dram(src), (g.h * g.w, g.w, 1), BufRef(kind), (sch, sr, sc), (spot.tc, rows, cols),
                    (0, 0, pt, pb, pl, pr), pad_value)


def chip_in_strides(g: Window, t: WindowTiles, spot: Spot) -> tuple[int, int, int]:
    """(row, col, channel) strides of a (possibly fragmentary) input tile, packed densely."""
    rows, cols = g.extent(spot.toh, 0), g.extent(spot.tow, 1)
    if t.layout == "hwc":
        return (cols * spot.tc, spot.tc, 1)
    return (cols, 1, rows * cols)


def chip_out_strides(t: WindowTiles, spot: Spot) -> tuple[int, int, int]:
    if t.layout == "hwc":
        return (spot.tow * spot.tc, spot.tc, 1)
    return (spot.tow, 1, spot.toh * spot.tow)


def compute_shape(t: WindowTiles, spot: Spot) -> tuple[int, int, int]:
    """The 3-D shape compute instructions walk: lanes on the last axis."""
    return (spot.toh, spot.tow, spot.tc) if t.layout == "hwc" else (spot.tc, spot.toh, spot.tow)


def order(t: WindowTiles, strides: tuple[int, int, int]) -> tuple[int, int, int]:
    """(row, col, channel) strides in the compute shape's axis order."""
    r, c, ch = strides
    return (r, c, ch) if t.layout == "hwc" else (ch, r, c)


def output_transfer(g: Window, t: WindowTiles, y_addr: int, spot: Spot, kind: str = "out",
                    load: bool = False) -> Transfer:
    """Store (or load, for a residual) an output tile to (from) NCHW DRAM."""
    base = y_addr + F32 * (((spot.n * g.c + spot.c0) * g.oh + spot.oh0) * g.ow + spot.ow0)
    chip = order(t, chip_out_strides(t, spot))
    far = order(t, (g.ow, 1, g.oh * g.ow))
    shape = compute_shape(t, spot)
    if load:
        return Transfer(dram(base), far, BufRef(kind), chip, shape)
    return Transfer(BufRef(kind), chip, dram(base), far, shape)


def window_strides(g: Window, t: WindowTiles, spot: Spot):
    """x_stride (window step folded in) and win_stride of the input tile, in compute order."""
    sr, sc, sch = chip_in_strides(g, t, spot)
    x_stride = order(t, (g.strides[0] * sr, g.strides[1] * sc, sch))
    return x_stride, (g.dilations[0] * sr, g.dilations[1] * sc)


# --------------------------------------------------------------------------- pooling


def divisor_counts(g: Window, count_include_pad: bool) -> np.ndarray:
    """[OH][OW] number of elements each average window divides by (as the reference does)."""
    def counts(size, out, k, stride, pad0, pad1, dilation):
        low, high = (-pad0, size + pad1) if count_include_pad else (0, size)
        return np.array([sum(low <= o * stride - pad0 + i * dilation < high for i in range(k))
                         for o in range(out)], dtype=np.float64)
    rows = counts(g.h, g.oh, g.kh, g.strides[0], g.pads[0], g.pads[2], g.dilations[0])
    cols = counts(g.w, g.ow, g.kw, g.strides[1], g.pads[1], g.pads[3], g.dilations[1])
    return np.outer(rows, cols)


@dataclass
class PoolTiling:
    """The tiles of a pooling layer: `given` (its `tile` attribute) when they fit, else the
    cheapest. `func` is max, avg, or sum (average pooling whose divisors vary: the sums are
    then multiplied by [OH][OW] reciprocal divisors, a weight-role buffer)."""

    lowering: Lowering
    g: Window
    func: str
    name: str
    given: WindowTiles | None = None

    def tiles(self) -> WindowTiles:
        return given_or_chosen(self.lowering, self.given, self.g, self.name, self.sizes)

    def sizes(self, t: WindowTiles) -> dict[str, int]:
        sizes = {"input": F32 * t.in_elems(self.g), "output": F32 * t.out_elems()}
        if self.func == "sum":
            sizes["weight"] = F32 * t.toh * t.tow
        return sizes


def pool_probe(lowering: Lowering, op: Operation) -> PoolTiling | None:
    """The tiling of a max/avg pooling op (its `tile` attribute, else the cheapest), or None
    for other ops."""
    if op.name not in ("nn.max_pool", "nn.avg_pool"):
        return None
    g, name = window_of(op), layer_name(op)
    func = "max" if op.name == "nn.max_pool" else "avg"
    if func == "avg" and not np.all(divisor_counts(g, bool(op.count_include_pad.value)) == g.kh * g.kw):
        func = "sum"
    return PoolTiling(lowering, g, func, name, given_window_tiles(op, g, name))
