"""Convolution with scalar broadcast of weights: output width on the lanes (the FT-M7004 mapping).

The other vectorisation of a conv on a vector unit (issue 4). For every kernel position one
`matmul` with

    a = the weights [oc][ic] of that position   (m = output channels, k = input channels;
                                                 the scalars broadcast to the lanes)
    b = the input rows [ic][iw]                 (n = output columns on the lanes; b's column
                                                 stride is the conv's horizontal stride)
    c = the output [oc][ow] of one output row   (batch = output rows, a's batch stride 0)

On chip:

    input  slot  [ih][ic][iw]     DMA'd from NCHW DRAM (rows contiguous), halo and zero padding
    weight slot  [kh][kw][oc][ic] + bias[oc]   (DRAM keeps them as [g][kh][kw][O][C] when constant)
    output slot  [oh][oc][ow]     stored back to NCHW

The lanes carry output columns instead of output channels, so a layer with few output
channels (or a channel count that is not a multiple of the lanes) and a wide output keeps the
lanes busy. Both mappings are one nest builder (`conv_nest.conv_nest`, `mapping width`: same
tiles, slots, loop order, multicast and scan order; only the on-chip layouts and the
instructions, `compute_lowering.width_matmuls`, differ). This module chooses: `choose_mapping`
times both mappings' nests with the cost model and keeps the faster.
"""

from __future__ import annotations

import numpy as np

from nncc.compiler.codegen.context import F32, Lowering
from nncc.compiler.codegen.conv import (
    CHEAP_JOBS, TOLERANCE, ConvShape, ConvTiles, candidates, choose_tiles, compulsory_bytes, even_splits, grid_fits,
    preference, probe_prediction,
)
from nncc.compiler.codegen.cost_model import conv_estimates

SHORTLIST = 4  # width tilings of the closed-form ranking (`conv_estimates`, mapping "width") then timed


def width_tile_candidates(lowering: Lowering, s: ConvShape):
    """(toc, tic, toh, tow) arrays of width tilings that fit (`grid_fits`): output
    columns in whole lane multiples (or the whole row), output channels whole or evenly split."""
    target = lowering.target
    lanes = target.main.lanes
    ocs = candidates(s.og, [1, 2, 4, 8, 16, 32, 64, 128, 256] + even_splits(s.og, [2, 3, 4, 8]))
    ics = candidates(s.cg, [16, 32, 64, 128, 256, 512] + even_splits(s.cg, [2, 3, 4]))
    ohs = candidates(s.oh, [1, 2, 4, 7, 8, 14, 16, 28, 32, 56] + even_splits(s.oh, [2, 3, 4, 8]))
    ows = candidates(s.ow, [lanes * m for m in (1, 2, 3, 4, 6, 8, 16)]
                     + [v for v in even_splits(s.ow, [2, 3, 4, 8]) if v % lanes == 0])
    grid = np.array(np.meshgrid(ocs, ics, ohs, ows, indexing="ij")).reshape(4, -1)
    ok = grid_fits(lowering, s, *grid)
    return tuple(grid[d, ok] for d in range(4))


def score(lowering: Lowering, prediction) -> int:
    """What the tile objective minimises: cycles, or DRAM bytes read and written."""
    if lowering.objective == "dram":
        return prediction.dram_read_bytes + prediction.dram_write_bytes
    return prediction.cycles


def width_bound(lowering: Lowering, s: ConvShape, bias: bool) -> float:
    """A score no width tiling can beat. Cycles: every core's unit issues its share of the
    matmuls, whose output columns fill ceil(ow / lanes) lane passes per output row at best
    (`timing.matmul_issue_cycles`), and a layer lasts at least as long as its busiest unit.
    DRAM bytes: every weight (and bias) read, every output written, once."""
    if lowering.objective == "dram":
        return F32 * (s.kh * s.kw * s.cg * s.o + (s.o if bias else 0) + s.n * s.o * s.oh * s.ow)
    unit = lowering.target.main
    passes = s.n * s.oh * s.o * s.cg * s.kh * s.kw * -(-s.ow // unit.lanes)
    return passes / unit.macs_per_lane / max(1, lowering.cores)


def choose_width_tiles(lowering: Lowering, s: ConvShape, bias: bool = True) -> tuple[ConvTiles, object] | None:
    """The width tiling (spatial split) the job-level model prefers, as conv's tilings are
    preferred (`preference`: the fastest, or fewest DRAM bytes, then the other within its
    tolerance), and its prediction; None when no tiling fits."""
    key = ("width-tiles", s, bias)
    if key in lowering.cost_cache:
        return lowering.cost_cache[key]
    toc, tic, toh, tow = width_tile_candidates(lowering, s)
    best = None
    if len(toc):
        cycles, nbytes = conv_estimates(lowering.target, s, toc, tic, toh, tow, np.zeros(len(toc), dtype=bool),
                                        lowering.cores, lowering.tile_order == "scan", bias, mapping="width")
        jobs = -(-s.og // toc) * s.group * -(-s.cg // tic) * -(-s.oh // toh) * -(-s.ow // tow) * s.n
        floor = compulsory_bytes(s, bias)
        order = preference(cycles, nbytes, jobs, lowering.objective, floor)
        shortlist = [i for i in order if jobs[i] <= CHEAP_JOBS][:SHORTLIST] or list(order[:1])
        timed = []
        for i in shortlist:
            tiles = ConvTiles(int(toc[i]), int(tic[i]), int(toh[i]), int(tow[i]), "spatial")
            prediction, count = probe_prediction(lowering, "width", s, tiles, bias)
            timed.append((tiles, prediction, count))
        best = timed[preference(np.array([p.cycles for _, p, _ in timed]),
                                np.array([p.dram_read_bytes + p.dram_write_bytes for _, p, _ in timed]),
                                np.array([count for _, _, count in timed]), lowering.objective, floor)[0]][:2]
    lowering.cost_cache[key] = best
    return best


def choose_mapping(lowering: Lowering, s: ConvShape, name: str, bias: bool = True,
                   channels: ConvTiles | None = None) -> tuple[str, ConvTiles]:
    """("channels" or "width", tiles): the mapping whose tiling the job-level model scores better
    (faster, or fewer DRAM bytes under the "dram" objective; width only by more than TOLERANCE,
    1 %: near-ties keep the channels mapping),
    the channels tiling being `channels` (else the best, `choose_tiles`). Width is only tried on a
    vector main unit (matrix units keep the channels mapping), and only when its bound
    (`width_bound`) leaves it a chance to be clearly better."""
    if channels is None:
        channels = choose_tiles(lowering, s, name, bias, halo=True)
    if lowering.target.main.kind != "vector":
        return "channels", channels
    key = ("mapping", s, bias, channels)
    if key not in lowering.cost_cache:
        channel, _ = probe_prediction(lowering, "channels", s, channels, bias)
        choice = ("channels", channels)
        if width_bound(lowering, s, bias) < score(lowering, channel) * (1 - TOLERANCE):
            width = choose_width_tiles(lowering, s, bias)
            if width is not None and score(lowering, width[1]) < score(lowering, channel) * (1 - TOLERANCE):
                choice = ("width", width[0])  # clearly better
        lowering.cost_cache[key] = choice
    return lowering.cost_cache[key]
