"""Depthwise convolution (group = input channels = output channels) on the vector unit.

A depthwise conv has one kh x kw filter per channel: as matmuls (the grouped-conv path) every
instruction would have n = k = 1, one lane busy out of 16 or 32. Instead, on the tile layout of
pooling (`pool.py`: hwc with channels on lanes, or chw with output columns on lanes when the
channels are few), each kernel position (i, j) is one `vfma` over the whole output tile:

    out = in[shifted by (i*dh, j*dw), stride folded in] * w[i, j, channel] + out

with the weight operand walking channels only (stride 0 over rows and columns). The first
position starts from the bias (stride-0 broadcast over the tile), from the residual (DMA'd
into the output slot first) or from nothing (`vmul`). The activation of a fused conv follows
on the same tile. On `fusion` and `edge` this runs on the post-processing vector unit (the
matrix unit runs matmul only).

Weights live in DRAM as [kh*kw][C] (constant) so that a channel tile's filter taps are one
box; a weight computed at run time is read from its OIHW tensor with strides.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.ir import Operation

from nncc.compiler.codegen.context import F32, Lowering, dram
from nncc.compiler.codegen.epilogue import Epilogue
from nncc.compiler.codegen.pool import (
    Window, WindowTiles, chip_in_strides, chip_out_strides, compute_shape, given_or_chosen, given_window_tiles,
    input_load, order, output_transfer, spots,
)
from nncc.compiler.codegen.scheduler import BufferKind, BufRef, Compute, Job, Transfer


def is_depthwise(s) -> bool:
    """One input channel and one output channel per group (ConvShape `s`)."""
    return s.group == s.c and s.o == s.c and s.group > 1


@dataclass
class DepthwiseLowering:
    lowering: Lowering
    g: Window
    w_addr: int
    w_strides: tuple[int, int]  # element strides of (kernel position, channel)
    b_addr: int | None
    x_addr: int
    y_addr: int
    residual_addr: int | None
    epilogue: Epilogue
    name: str
    given: WindowTiles | None = None  # the op's tile attribute

    def tiles(self) -> WindowTiles:
        return given_or_chosen(self.lowering, self.given, self.g, self.name, self.sizes,
                               roles=("input", "weight", "output"), accesses=3 * self.taps + 1)

    @property
    def taps(self) -> int:
        return self.g.kh * self.g.kw

    def sizes(self, t: WindowTiles) -> dict[str, int]:
        return {"input": F32 * t.in_elems(self.g), "weight": F32 * (self.taps + 1) * t.tc,
                "output": F32 * t.out_elems()}

    def layers(self):
        g = self.g
        t = self.tiles()
        sizes = self.sizes(t)
        target = self.lowering.target
        kinds = [BufferKind("in", target.memory_for("input").name, sizes["input"]),
                 BufferKind("w", target.memory_for("weight").name, sizes["weight"], shared=True),
                 BufferKind("out", target.memory_for("output").name, sizes["output"])]
        jobs = []
        cores = self.lowering.cores
        tiles = spots(g, t)
        for i, spot in enumerate(tiles):
            # channel tiles are outermost: the cores share (multicast) one weight block
            core = i % cores
            jobs.append(self.job(core, t, spot))
        return [(kinds, jobs)]

    def job(self, core: int, t: WindowTiles, spot) -> Job:
        g = self.g
        unit = self.lowering.vector_unit
        shape = compute_shape(t, spot)
        sr, sc, sch = chip_in_strides(g, t, spot)
        x_stride = order(t, (g.strides[0] * sr, g.strides[1] * sc, sch))
        w_stride = order(t, (0, 0, 1))
        z_stride = order(t, chip_out_strides(t, spot))
        bias = BufRef("w", F32 * self.taps * spot.tc)
        out = BufRef("out")
        compute = []
        for i in range(g.kh):
            for j in range(g.kw):
                x = BufRef("in", F32 * (i * g.dilations[0] * sr + j * g.dilations[1] * sc))
                w = BufRef("w", F32 * (i * g.kw + j) * spot.tc)
                first = not compute
                if first and self.residual_addr is None and self.b_addr is None:
                    compute.append(Compute("vmul", {"unit": unit, "shape": shape, "x": x, "x_stride": x_stride,
                                                    "y": w, "y_stride": w_stride, "z": out, "z_stride": z_stride}))
                    continue
                init, init_stride = (bias, w_stride) if first and self.residual_addr is None else (out, z_stride)
                compute.append(Compute("vfma", {"unit": unit, "shape": shape, "x": x, "x_stride": x_stride,
                                                "y": w, "y_stride": w_stride, "w": init, "w_stride": init_stride,
                                                "z": out, "z_stride": z_stride}))
        if self.residual_addr is not None and self.b_addr is not None:
            compute.append(Compute("vadd", {"unit": unit, "shape": shape, "x": out, "x_stride": z_stride,
                                            "y": bias, "y_stride": w_stride, "z": out, "z_stride": z_stride}))
        compute += self.epilogue.instructions(self.lowering, out, shape)
        buffers = {"in": ("in", spot), "w": ("w", spot.c0, spot.tc), "out": ("out", spot)}
        loads = {"in": [input_load(g, t, self.x_addr, spot)], "w": self.weight_loads(spot)}
        if self.residual_addr is not None:
            loads["out"] = [output_transfer(g, t, self.residual_addr, spot, load=True)]
        stores = {"out": [output_transfer(g, t, self.y_addr, spot)]}
        return Job(core, buffers, compute, loads, stores)

    def weight_loads(self, spot) -> list[Transfer]:
        s_tap, s_ch = self.w_strides
        loads = [Transfer(dram(self.w_addr + F32 * spot.c0 * s_ch), (0, s_tap, s_ch), BufRef("w"),
                          (0, spot.tc, 1), (1, self.taps, spot.tc))]
        if self.b_addr is not None:
            loads.append(Transfer(dram(self.b_addr + F32 * spot.c0), (0, 0, 1),
                                  BufRef("w", F32 * self.taps * spot.tc), (0, 0, 1), (1, 1, spot.tc)))
        return loads


def depthwise_window(s) -> Window:
    """The sliding window of a depthwise conv of shape `s` (a conv.ConvShape)."""
    return Window(s.n, s.c, s.h, s.w, s.oh, s.ow, s.kh, s.kw, s.strides, s.pads, s.dilations)


def depthwise_probe(lowering: Lowering, s, name: str) -> DepthwiseLowering:
    """A DepthwiseLowering with placeholder addresses: its `tiles()` are the ones lowering would choose."""
    return DepthwiseLowering(lowering, depthwise_window(s), 0, (0, 0), None, 0, 0, None, Epilogue(), name)


def lower_depthwise(lowering: Lowering, op: Operation, s, epilogue: Epilogue, name: str,
                    x_addr: int, y_addr: int, b_addr: int | None, residual_addr: int | None):
    """The layers of a depthwise conv `op` of shape `s` (a conv.ConvShape)."""
    g = depthwise_window(s)
    taps = s.kh * s.kw
    constant = lowering.constant(op.weight)
    if constant is not None:
        packed = constant.reshape(s.c, taps).T
        w_addr, w_strides = lowering.weight(op.weight.owner.ref.data, "dw", packed), (s.c, 1)
    else:  # OIHW [C][1][kh][kw] computed at run time
        w_addr, w_strides = lowering.address(op.weight), (1, taps)
    return DepthwiseLowering(lowering, g, w_addr, w_strides, b_addr, x_addr, y_addr, residual_addr,
                             epilogue, name, given_window_tiles(op, g, name)).layers()
