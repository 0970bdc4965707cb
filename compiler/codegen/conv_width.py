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
lanes busy. The tiles, slots, loop order, multicast and scan order are ConvLowering's; only the
on-chip layouts and the instructions differ. `choose_mapping` times both mappings with the
job-level model and keeps the faster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nncc.compiler.codegen.context import F32, Lowering, dram
from nncc.compiler.codegen.conv import (
    CHEAP_JOBS, TOLERANCE, ConvLowering, ConvShape, ConvTiles, Operand, candidates, choose_tiles, even_splits, grid_fits,
    nchw, preference, probe_prediction,
)
from nncc.compiler.codegen.cost_model import conv_estimates
from nncc.compiler.codegen.epilogue import Epilogue
from nncc.compiler.codegen.scheduler import BufRef, Compute, Transfer

SHORTLIST = 4  # width tilings of the closed-form ranking (`conv_estimates`, mapping "width") then timed


def width_packed_weight(addr: int, s: ConvShape) -> Operand:
    """Weights laid out by `width_weight_layout`: strides of (group, kh, kw, c, o)."""
    return Operand(addr, (s.kh * s.kw * s.cg * s.og, s.kw * s.cg * s.og, s.cg * s.og, 1, s.cg))


@dataclass
class WidthConvLowering(ConvLowering):
    """ConvLowering with the weights broadcast and the output width on the lanes."""

    PREDICTION = "prediction-width"
    mapping = "width"
    BIAS_STRIDE = (0, 1, 0)  # the bias [oc] over the [oh][oc][ow] output tile

    @classmethod
    def probe(cls, lowering: Lowering, s: ConvShape, tiles: ConvTiles, bias: bool) -> WidthConvLowering:
        return cls(lowering, s, tiles, x=nchw(0, (s.n, s.c, s.h, s.w)), w=width_packed_weight(0, s),
                   b_addr=0 if bias else None, y=nchw(0, (s.n, s.o, s.oh, s.ow)), epilogue=Epilogue("relu"),
                   residual=None, scan=lowering.tile_order == "scan")

    def epilogue_instructions(self, toh, tow, toc, bias: BufRef | None) -> list[Compute]:
        """Bias (a stride (0, 1, 0) operand) and activation on the [oh][oc][ow] output tile."""
        return self.epilogue.instructions(self.lowering, BufRef("out"), (toh, toc, tow), bias=bias,
                                          layout="channels_middle")

    def input_load(self, g, ic0, tic, n, oh0, toh, ow0, tow) -> Transfer:
        """The input window of an output tile as [rows][ic][cols], zero padding at the borders."""
        src, rows, cols, (top, bottom, left, right), (sc, sh, sw) = self.input_window(g, ic0, n, oh0, toh, ow0, tow)
        return Transfer(dram(src), (sh, sc, sw), BufRef("in"), (tic * cols, cols, 1),
                        (rows, tic, cols), (top, bottom, 0, 0, left, right))

    def matmuls(self, toc, tic, toh, tow, accumulate: bool) -> list[Compute]:
        s = self.s
        cols = s.input_extent(tow, 1)
        out = []
        for i in range(s.kh):
            for j in range(s.kw):
                a_offset = F32 * ((i * s.kw + j) * toc * tic)
                b_offset = F32 * (i * s.dilations[0] * tic * cols + j * s.dilations[1])
                out.append(Compute("matmul", {
                    "batch": toh, "mnk": (toc, tow, tic),
                    "a": BufRef("w", a_offset), "a_stride": (0, tic, 1),
                    "b": BufRef("in", b_offset), "b_stride": (s.strides[0] * tic * cols, cols, s.strides[1]),
                    "c": BufRef("out"), "c_stride": (toc * tow, tow, 1),
                    "acc": int(accumulate or (i, j) != (0, 0)),
                }))
        return out


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
        order = preference(cycles, nbytes, jobs, lowering.objective)
        shortlist = [i for i in order if jobs[i] <= CHEAP_JOBS][:SHORTLIST] or list(order[:1])
        timed = []
        for i in shortlist:
            tiles = ConvTiles(int(toc[i]), int(tic[i]), int(toh[i]), int(tow[i]), "spatial")
            prediction, count = probe_prediction(lowering, WidthConvLowering, s, tiles, bias)
            timed.append((tiles, prediction, count))
        best = timed[preference(np.array([p.cycles for _, p, _ in timed]),
                                np.array([p.dram_read_bytes + p.dram_write_bytes for _, p, _ in timed]),
                                np.array([count for _, _, count in timed]), lowering.objective)[0]][:2]
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
        channels = choose_tiles(lowering, s, name, bias)
    if lowering.target.main.kind != "vector":
        return "channels", channels
    key = ("mapping", s, bias, channels)
    if key not in lowering.cost_cache:
        channel, _ = probe_prediction(lowering, ConvLowering, s, channels, bias)
        choice = ("channels", channels)
        if width_bound(lowering, s, bias) < score(lowering, channel) * (1 - TOLERANCE):
            width = choose_width_tiles(lowering, s, bias)
            if width is not None and score(lowering, width[1]) < score(lowering, channel) * (1 - TOLERANCE):
                choice = ("width", width[0])  # clearly better
        lowering.cost_cache[key] = choice
    return lowering.cost_cache[key]
