"""Depthwise convolution (group = input channels = output channels): its window and tile choice.

A depthwise conv has one kh x kw filter per channel: as matmuls (the grouped-conv path) every
instruction would have n = k = 1, one lane busy out of 16 or 32. Instead it uses the tile
layout of pooling (`pool.py`: hwc with channels on lanes, or chw with output columns on lanes
when the channels are few) and one `vfma` per kernel tap over the whole output tile (its nest:
`window_nest.depthwise_nest`; its instructions: `compute_lowering.depthwise_instructions`).
Weights live in DRAM as [kh*kw][C] (constant) so that a channel tile's filter taps are one box;
a weight computed at run time is read from its OIHW tensor with strides.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.ir import Operation

from nncc.compiler.codegen.context import F32, Lowering, layer_name
from nncc.compiler.codegen.pool import Window, WindowTiles, given_or_chosen, given_window_tiles


def is_depthwise(s) -> bool:
    """One input channel and one output channel per group (ConvShape `s`)."""
    return s.group == s.c and s.o == s.c and s.group > 1


@dataclass
class DepthwiseTiling:
    """The tiles of a depthwise conv: `given` (its `tile` attribute) when they fit, else the cheapest."""

    lowering: Lowering
    g: Window
    name: str
    given: WindowTiles | None = None

    def tiles(self) -> WindowTiles:
        return given_or_chosen(self.lowering, self.given, self.g, self.name, self.sizes,
                               roles=("input", "weight", "output"), accesses=3 * self.taps + 1, halo=True)

    @property
    def taps(self) -> int:
        return self.g.kh * self.g.kw

    def sizes(self, t: WindowTiles) -> dict[str, int]:
        return {"input": F32 * t.in_elems(self.g), "weight": F32 * (self.taps + 1) * t.tc,
                "output": F32 * t.out_elems()}


def depthwise_window(s) -> Window:
    """The sliding window of a depthwise conv of shape `s` (a conv.ConvShape)."""
    return Window(s.n, s.c, s.h, s.w, s.oh, s.ow, s.kh, s.kw, s.strides, s.pads, s.dilations)


def depthwise_probe(lowering: Lowering, s, name: str) -> DepthwiseTiling:
    """The tiling a depthwise conv of shape `s` gets without a `tile` attribute."""
    return DepthwiseTiling(lowering, depthwise_window(s), name)


def depthwise_tiles(lowering: Lowering, op: Operation, s) -> WindowTiles:
    """The tiles of depthwise conv `op` (shape `s`): its `tile` attribute (checked to fit), else the cheapest."""
    name = layer_name(op)
    return DepthwiseTiling(lowering, depthwise_window(s), name, given_window_tiles(op, depthwise_window(s), name)).tiles()
