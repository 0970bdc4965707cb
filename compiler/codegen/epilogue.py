"""The epilogue of a conv/gemm tile: bias and activation, applied while the tile is on chip.

On a vector DSP (the matmuls run on a vector main unit) the epilogue rides on the matmuls
themselves: the bias on a tile's first matmul, the activation on its last, both on the unit's
ALU slot beside the MACs (`matmul_operands`)::

    matmul mnk=224,64,3 ... acc=0 bias=AM[0x6c00] bias_stride=0,0,1
    ...
    matmul mnk=224,64,3 ... acc=1 act=relu

Beside a matrix unit it is a `vadd` and a `vact` on the post-processing unit (`instructions`),
which overlaps the matrix unit's next tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nncc.compiler.codegen.scheduler import BufRef, Compute

ACTIVATIONS = {
    # nn/fused activation -> (vact func, parameter names)
    "relu": ("relu", ()),
    "clip": ("clip", ("min", "max")),
    "leaky_relu": ("leaky", ("alpha",)),
    "hard_swish": ("hardswish", ()),
    "hard_sigmoid": ("hardsigmoid", ("alpha", "beta")),
    "sigmoid": ("sigmoid", ()),
    "tanh": ("tanh", ()),
    "erf": ("erf", ()),
    "gelu": ("gelu", ()),
    "gelu_tanh": ("gelu_tanh", ()),
    "silu": ("silu", ()),
}


@dataclass(frozen=True)
class Epilogue:
    """act(tile + bias): `act` is a vact function name or None."""

    act: str | None = None
    p0: float = 0.0
    p1: float = 0.0

    def matmul_operands(self, bias: BufRef | None, bias_stride: tuple[int, int, int],
                        first: bool, last: bool) -> tuple[dict, dict]:
        """Extra operands of a tile's first matmul (the bias, added once) and of its last (the
        activation); `first`/`last`: whether this job holds the tile's first/last matmul."""
        head = {"bias": bias, "bias_stride": bias_stride} if first and bias is not None else {}
        tail = {"act": self.act, "p0": clamp(self.p0), "p1": clamp(self.p1)} if last and self.act else {}
        return head, tail

    def instructions(self, lowering, out: BufRef, shape: tuple[int, int, int],
                     bias: BufRef | None = None, layout: str = "channels_last",
                     row_pitch: int | None = None) -> list[Compute]:
        """`shape` is the tile's (rows, cols, channels) with layout "channels_last" ([oh][ow][oc]
        tiles), or its (rows, channels, cols) with "channels_middle" ([oh][oc][ow] tiles, the
        width mapping of conv_width): the bias [channels] is broadcast along the other axes.
        `row_pitch`: the element stride of a row, when the tile sits in a wider buffer."""
        unit = lowering.vector_unit
        stride = (row_pitch or shape[1] * shape[2], shape[2], 1)
        bias_stride = (0, 0, 1) if layout == "channels_last" else (0, 1, 0)
        out_list = []
        if bias is not None:
            out_list.append(Compute("vadd", {"unit": unit, "shape": shape, "x": out, "x_stride": stride,
                                             "y": bias, "y_stride": bias_stride, "z": out, "z_stride": stride}))
        if self.act is not None:
            out_list.append(Compute("vact", {"unit": unit, "func": self.act, "p0": clamp(self.p0),
                                             "p1": clamp(self.p1), "shape": shape, "x": out,
                                             "x_stride": stride, "z": out, "z_stride": stride}))
        return out_list


def clamp(value: float) -> float:
    """vact parameters are finite: an unbounded clip side becomes the largest float32."""
    if math.isinf(value):
        return math.copysign(3.4028234663852886e38, value)
    return value


def fused_epilogue(op) -> Epilogue:
    """The activation of a fused op's epilogue (none for an nn op)."""
    fused = getattr(op, "epilogue", None)
    if fused is None or fused.act == "none":
        return Epilogue()
    func, params = ACTIVATIONS[str(fused.act)]
    defaults = {"min": -math.inf, "max": math.inf, "alpha": None, "beta": None}
    values = [getattr(fused, p) if getattr(fused, p) is not None else defaults[p] for p in params]
    return Epilogue(func, *values)
