"""Numpy implementations of the `nn` ops, on float32 NCHW arrays.

They define what each op computes: the reference interpreter runs them, the
ONNX importer folds constant subexpressions with them, and later stages are
tested against them. Each is written from the ONNX operator specification.
"""

from __future__ import annotations

from collections.abc import Sequence

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from nncc.dialects.nn import window_output_size


def _out_hw(x: np.ndarray, kernel, strides, pads, dilations, ceil_mode: bool) -> tuple[int, int]:
    h, w = x.shape[2:]
    return (window_output_size(h, kernel[0], strides[0], pads[0], pads[2], dilations[0], ceil_mode),
            window_output_size(w, kernel[1], strides[1], pads[1], pads[3], dilations[1], ceil_mode))


def _windows(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int],
             pads: Sequence[int], dilations: Sequence[int], out_hw: tuple[int, int],
             pad_value: float) -> np.ndarray:
    """View of every (dilated) window of an NCHW array: N x C x OH x OW x KH x KW.

    The array is padded by `pads` and, at the end, by whatever more the
    `out_hw` windows need (ceil_mode's overhang), all with `pad_value`.
    """
    h, w = x.shape[2:]
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, strides, dilations, out_hw
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    extra_h = max(0, (oh - 1) * sh + span_h - (h + pads[0] + pads[2]))
    extra_w = max(0, (ow - 1) * sw + span_w - (w + pads[1] + pads[3]))
    padded = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2] + extra_h), (pads[1], pads[3] + extra_w)),
                    constant_values=pad_value)
    view = sliding_window_view(padded, (span_h, span_w), axis=(2, 3))
    return view[:, :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw, ::dh, ::dw]


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, strides: Sequence[int],
           pads: Sequence[int], dilations: Sequence[int], group: int) -> np.ndarray:
    o, cg, kh, kw = w.shape
    out_hw = _out_hw(x, (kh, kw), strides, pads, dilations, False)
    win = _windows(x, (kh, kw), strides, pads, dilations, out_hw, 0.0)
    n, c, oh, ow = win.shape[:4]
    if group == 1:
        out = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)
    elif cg == 1 and o == group:
        out = _depthwise(win, w)
    else:
        win = win.reshape(n, group, cg, oh, ow, kh, kw)
        wg = w.reshape(group, o // group, cg, kh, kw)
        out = np.einsum("ngchwij,gocij->ngohw", win, wg, optimize=True).reshape(n, o, oh, ow)
    out = np.ascontiguousarray(out, dtype=np.float32)
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


def _depthwise(win: np.ndarray, w: np.ndarray) -> np.ndarray:
    """One filter per channel: accumulate kernel taps one at a time (fast in numpy)."""
    n, c, oh, ow, kh, kw = win.shape
    out = np.zeros((n, c, oh, ow), dtype=np.float32)
    for i in range(kh):
        for j in range(kw):
            out += win[:, :, :, :, i, j] * w[:, 0, i, j].reshape(1, c, 1, 1)
    return out


def max_pool(x: np.ndarray, kernel, strides, pads, dilations, ceil_mode: bool) -> np.ndarray:
    out_hw = _out_hw(x, kernel, strides, pads, dilations, ceil_mode)
    win = _windows(x, kernel, strides, pads, dilations, out_hw, -np.inf)
    return np.ascontiguousarray(win.max(axis=(4, 5)), dtype=np.float32)


def avg_pool(x: np.ndarray, kernel, strides, pads, dilations, ceil_mode: bool,
             count_include_pad: bool) -> np.ndarray:
    out_hw = _out_hw(x, kernel, strides, pads, dilations, ceil_mode)
    total = _windows(x, kernel, strides, pads, dilations, out_hw, 0.0).sum(axis=(4, 5))
    # The divisor counts each window's real elements, plus the explicit pads with
    # count_include_pad; never the overhang that ceil_mode adds past the pads.
    ones = np.ones((1, 1) + x.shape[2:], dtype=np.float32)
    pad_value = 1.0 if count_include_pad else 0.0
    ones = np.pad(ones, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])), constant_values=pad_value)
    count = _windows(ones, kernel, strides, (0, 0, 0, 0), dilations, out_hw, 0.0).sum(axis=(4, 5))
    return np.ascontiguousarray(total / count, dtype=np.float32)


def global_avg_pool(x: np.ndarray) -> np.ndarray:
    axes = tuple(range(2, x.ndim))
    return x.mean(axis=axes, keepdims=True, dtype=np.float32)


def global_max_pool(x: np.ndarray) -> np.ndarray:
    axes = tuple(range(2, x.ndim))
    return x.max(axis=axes, keepdims=True)


def batch_norm(x, scale, bias, mean, var, epsilon: float) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    factor = (scale / np.sqrt(var + np.float32(epsilon))).astype(np.float32)
    return ((x - mean.reshape(shape)) * factor.reshape(shape) + bias.reshape(shape)).astype(np.float32)


def lrn(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    c = x.shape[1]
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    squares = np.pad(x * x, ((0, 0), (before, after), (0, 0), (0, 0)))
    window_sum = sum(squares[:, i : i + c] for i in range(size))
    return (x / (bias + alpha / size * window_sum) ** beta).astype(np.float32)


def gemm(a, b, c, trans_a: bool, trans_b: bool, alpha: float, beta: float) -> np.ndarray:
    a = a.T if trans_a else a
    b = b.T if trans_b else b
    y = np.float32(alpha) * (a @ b) if alpha != 1.0 else a @ b
    if c is not None:
        y = y + (np.float32(beta) * c if beta != 1.0 else c)
    return np.ascontiguousarray(y, dtype=np.float32)


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return (shifted / shifted.sum(axis=axis, keepdims=True)).astype(np.float32)


def relu(x):
    return np.maximum(x, np.float32(0))


def leaky_relu(x, alpha: float):
    return np.where(x >= 0, x, x * np.float32(alpha)).astype(np.float32)


def clip(x, low: float, high: float):
    return np.clip(x, np.float32(low), np.float32(high)).astype(np.float32)


def sigmoid(x):
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def sqrt(x):
    with np.errstate(invalid="ignore"):
        return np.sqrt(x).astype(np.float32)


def hard_sigmoid(x, alpha: float, beta: float):
    return np.clip(x * np.float32(alpha) + np.float32(beta), 0, 1).astype(np.float32)


def hard_swish(x):
    return (x * np.clip(x / np.float32(6) + np.float32(0.5), 0, 1)).astype(np.float32)


def tanh(x):
    return np.tanh(x).astype(np.float32)


_ERF = np.vectorize(math.erf, otypes=[np.float64])


def erf(x):
    """erf elementwise: float64 math.erf rounded to float32 (numpy has no erf)."""
    return _ERF(np.asarray(x, np.float64)).astype(np.float32) if np.size(x) else np.asarray(x, np.float32)


def gelu(x):
    """x / 2 * (1 + erf(x / sqrt(2))), ONNX Gelu approximate="none"."""
    return (x * (0.5 * (1 + erf(x / np.float32(np.sqrt(2)))))).astype(np.float32)


def gelu_tanh(x):
    """ONNX Gelu approximate="tanh", evaluated in float64."""
    x64 = np.asarray(x, np.float64)
    return (0.5 * x64 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64**3)))).astype(np.float32)


def silu(x):
    """x * sigmoid(x)."""
    with np.errstate(over="ignore"):
        return (x / (1 + np.exp(-x))).astype(np.float32)


BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
}


def strided_box(x, starts, steps, shape):
    """result[i, ...] = x[starts[0] + i * steps[0], ...] (nn.slice; steps may be negative)."""
    index = tuple(start + step * np.arange(size) for start, step, size in zip(starts, steps, shape))
    return np.ascontiguousarray(x[np.ix_(*index)]) if index else np.array(x, copy=True)
