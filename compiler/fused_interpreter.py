"""Reference execution of the `fused` dialect with numpy (xDSL interpreter functions).

A fused op computes exactly what the `nn` ops it replaced computed, in the same
order and precision: the compute kernel of `nn_kernels` (bias included), then
the residual add, then the activation kernel. `run_reference` registers these
functions beside the `nn` ones, so `nncc MODEL --target=reference --run --check`
executes the IR after the graph passes:

    y = act(conv2d(x, w) + bias + residual)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from xdsl.interpreter import Interpreter, InterpreterFunctions, impl, register_impls

from nncc.compiler import nn_kernels as k
from nncc.dialects import fused, nn
from nncc.dialects.fused import Activation, Epilogue

Args = tuple[Any, ...]


def apply_epilogue(z: np.ndarray, residual: np.ndarray | None, epilogue: Epilogue) -> np.ndarray:
    """act(z + residual), with the `nn` kernels of the ops the epilogue replaced."""
    if residual is not None:
        z = np.add(z, residual).astype(np.float32)
    act = epilogue.act
    if act == Activation.NONE:
        return z
    if act == Activation.RELU:
        return k.relu(z)
    if act == Activation.CLIP:
        low = -np.inf if epilogue.min is None else epilogue.min
        high = np.inf if epilogue.max is None else epilogue.max
        return k.clip(z, low, high)
    if act == Activation.LEAKY_RELU:
        return k.leaky_relu(z, epilogue.alpha)
    if act == Activation.HARD_SWISH:
        return k.hard_swish(z)
    if act == Activation.HARD_SIGMOID:
        return k.hard_sigmoid(z, epilogue.alpha, epilogue.beta)
    if act == Activation.SIGMOID:
        return k.sigmoid(z)
    simple = {Activation.TANH: k.tanh, Activation.ERF: k.erf, Activation.GELU: k.gelu,
              Activation.GELU_TANH: k.gelu_tanh, Activation.SILU: k.silu}
    if act in simple:
        return simple[act](z)
    raise NotImplementedError(f"activation {act}")


@register_impls
class FusedFunctions(InterpreterFunctions):
    """Interpreter functions of the `fused` dialect; values are float32 numpy arrays."""

    @impl(fused.Conv2dOp)
    def run_conv2d(self, interpreter: Interpreter, op: fused.Conv2dOp, args: Args):
        x, w, rest = args[0], args[1], list(args[2:])
        bias = rest.pop(0) if op.bias is not None else None
        residual = rest.pop(0) if op.residual is not None else None
        z = k.conv2d(x, w, bias, nn.ints(op.strides), nn.ints(op.pads), nn.ints(op.dilations),
                     op.group.value.data)
        return (apply_epilogue(z, residual, op.epilogue),)

    @impl(fused.GemmOp)
    def run_gemm(self, interpreter: Interpreter, op: fused.GemmOp, args: Args):
        a, b, rest = args[0], args[1], list(args[2:])
        c = rest.pop(0) if op.c is not None else None
        residual = rest.pop(0) if op.residual is not None else None
        z = k.gemm(a, b, c, op.trans_a.value, op.trans_b.value, float(op.alpha.value.data),
                   float(op.beta.value.data))
        return (apply_epilogue(z, residual, op.epilogue),)
