"""Numpy implementations of the `nn` ops, on float32 NCHW arrays.

They define what each op computes: the reference interpreter runs them, the
ONNX importer folds constant subexpressions with them, and later stages are
tested against them. Each is written from the ONNX operator specification.
"""

from __future__ import annotations

from collections.abc import Sequence

import math
import zlib

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


def dropout_mask(seed: int, name: str, step: int, shape: tuple[int, ...], ratio: float) -> np.ndarray:
    """The training mask of the dropout `name` in step `step` (0, 1, ...): each element kept with
    probability 1 - ratio and scaled by 1 / (1 - ratio) (inverted dropout, as PyTorch), drawn
    from `seed`, the name and the step; the autodiff pass and the PyTorch check draw the same."""
    rng = np.random.default_rng([seed, step, zlib.crc32(name.encode())])
    kept = rng.random(shape) >= ratio
    return (kept / np.float32(1.0 - ratio)).astype(np.float32)


def lrn_channels(size: int) -> tuple[int, int]:
    """How many channels before and after its own an LRN window of `size` sums (ONNX: floor and
    ceil of (size - 1) / 2; PyTorch's local_response_norm puts the larger half before)."""
    return (size - 1) // 2, size - 1 - (size - 1) // 2


def lrn_window(channels: int, size: int) -> np.ndarray:
    """B[c, i] = 1 when channel i is in channel c's LRN window (`lrn_channels`, clipped)."""
    before, after = lrn_channels(size)
    band = np.zeros((channels, channels), dtype=np.float32)
    for c in range(channels):
        band[c, max(0, c - before):min(channels, c + after + 1)] = 1.0
    return band


def lrn(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    c = x.shape[1]
    before, after = lrn_channels(size)
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


# --------------------------------------------------------------------------- training
# The backward, loss and optimiser ops of the `autodiff` pass (docs/training.md). Scatters go
# through the same window geometry as the forward ops: one strided slice per kernel tap.


def _tap_slices(i: int, j: int, strides, dilations, out_hw) -> tuple[slice, slice]:
    """Where kernel tap (i, j) reads, for every output pixel, in the padded input."""
    (sh, sw), (dh, dw), (oh, ow) = strides, dilations, out_hw
    return (slice(i * dh, i * dh + (oh - 1) * sh + 1, sh), slice(j * dw, j * dw + (ow - 1) * sw + 1, sw))


def _padded_zeros(input_shape, kernel, strides, pads, dilations, out_hw) -> np.ndarray:
    """Zeros of the padded input, with ceil_mode's overhang (as `_windows` pads)."""
    n, c, h, w = input_shape
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, strides, dilations, out_hw
    height = max(h + pads[0] + pads[2], (oh - 1) * sh + dh * (kh - 1) + 1)
    width = max(w + pads[1] + pads[3], (ow - 1) * sw + dw * (kw - 1) + 1)
    return np.zeros((n, c, height, width), dtype=np.float32)


def _crop(padded: np.ndarray, input_shape, pads) -> np.ndarray:
    h, w = input_shape[2:]
    return np.ascontiguousarray(padded[:, :, pads[0]: pads[0] + h, pads[1]: pads[1] + w])


def conv2d_backward_data(dy: np.ndarray, w: np.ndarray, input_shape, strides, pads, dilations,
                         group: int) -> np.ndarray:
    """d(conv2d)/d(input): every output gradient times the weights, added back onto the input
    pixels its window read (rows the forward conv never read get 0)."""
    o, cg, kh, kw = w.shape
    n, _, oh, ow = dy.shape
    dxp = _padded_zeros(input_shape, (kh, kw), strides, pads, dilations, (oh, ow))
    dyg = dy.reshape(n, group, o // group, oh, ow)
    wg = w.reshape(group, o // group, cg, kh, kw)
    for i in range(kh):
        for j in range(kw):
            rows, cols = _tap_slices(i, j, strides, dilations, (oh, ow))
            part = np.einsum("ngohw,goc->ngchw", dyg, wg[:, :, :, i, j], optimize=True)
            dxp[:, :, rows, cols] += part.reshape(n, group * cg, oh, ow)
    return _crop(dxp, input_shape, pads)


def conv2d_backward_filter(x: np.ndarray, dy: np.ndarray, weight_shape, strides, pads, dilations,
                           group: int) -> np.ndarray:
    """d(conv2d)/d(weight): for each tap, the output gradient against the input pixels the tap
    read, summed over the batch and the output pixels."""
    o, cg, kh, kw = weight_shape
    n, _, oh, ow = dy.shape
    xp = _padded_zeros(x.shape, (kh, kw), strides, pads, dilations, (oh, ow))
    xp[:, :, pads[0]: pads[0] + x.shape[2], pads[1]: pads[1] + x.shape[3]] = x
    dyg = dy.reshape(n, group, o // group, oh, ow)
    dw = np.zeros(weight_shape, dtype=np.float32)
    for i in range(kh):
        for j in range(kw):
            rows, cols = _tap_slices(i, j, strides, dilations, (oh, ow))
            xs = xp[:, :, rows, cols].reshape(n, group, cg, oh, ow)
            dw[:, :, i, j] = np.einsum("ngohw,ngchw->goc", dyg, xs, optimize=True).reshape(o, cg)
    return dw


def reduce_sum(x: np.ndarray, axes) -> np.ndarray:
    return np.asarray(x.sum(axis=tuple(axes), dtype=np.float32), dtype=np.float32).reshape(
        [d for i, d in enumerate(x.shape) if i not in tuple(axes)])


def scale(x, factor: float):
    return (x * np.float32(factor)).astype(np.float32)


def step(x):
    return (x > 0).astype(np.float32)


def log(x):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(x).astype(np.float32)


def _channel_axes(x: np.ndarray) -> tuple[int, ...]:
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def batch_norm_train(x, scale_, bias, running_mean, running_var, epsilon: float, momentum: float):
    """(y, batch mean, 1 / sqrt(batch var + eps), new running mean, new running var); the
    statistics in float64 (two passes), rounded to float32."""
    axes = _channel_axes(x)
    count = x.size // x.shape[1]
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes)
    var = ((x64 - _per_channel(mean, x.ndim)) ** 2).mean(axis=axes)
    invstd = 1.0 / np.sqrt(var + epsilon)
    y = ((x64 - _per_channel(mean, x.ndim)) * _per_channel(invstd * scale_, x.ndim) + _per_channel(bias, x.ndim))
    new_mean = momentum * running_mean + (1 - momentum) * mean
    new_var = momentum * running_var + (1 - momentum) * var * count / (count - 1)
    return tuple(np.asarray(a, dtype=np.float32) for a in (y, mean, invstd, new_mean, new_var))


def batch_norm_backward(dy, x, scale_, mean, invstd):
    """(dx, dscale, dbias) of batch normalisation with batch statistics (float64 sums)."""
    axes = _channel_axes(x)
    count = x.size // x.shape[1]
    dy64 = dy.astype(np.float64)
    xhat = (x.astype(np.float64) - _per_channel(mean, x.ndim)) * _per_channel(invstd, x.ndim)
    dbias = dy64.sum(axis=axes)
    dscale = (dy64 * xhat).sum(axis=axes)
    dx = _per_channel(scale_ * invstd.astype(np.float64), x.ndim) * (
        dy64 - _per_channel(dbias / count, x.ndim) - xhat * _per_channel(dscale / count, x.ndim))
    return tuple(np.asarray(a, dtype=np.float32) for a in (dx, dscale, dbias))


def relu_backward(dy, x):
    return np.where(x > 0, dy, np.float32(0)).astype(np.float32)


def sigmoid_backward(dy, x):
    s = sigmoid(x)
    return (dy * s * (np.float32(1) - s)).astype(np.float32)


def hard_swish_backward(dy, x):
    slope = np.where(x < -3, np.float32(0), np.where(x > 3, np.float32(1), x / np.float32(3) + np.float32(0.5)))
    return (dy * slope).astype(np.float32)


def exp(x):
    with np.errstate(over="ignore"):
        return np.exp(x).astype(np.float32)


def tanh_backward(dy, x):
    t = np.tanh(x.astype(np.float64))
    return (dy * (1 - t * t)).astype(np.float32)


def silu_backward(dy, x):
    with np.errstate(over="ignore"):
        s = 1 / (1 + np.exp(-x.astype(np.float64)))
    return (dy * s * (1 + x * (1 - s))).astype(np.float32)


def gelu_backward(dy, x):
    x64 = np.asarray(x, np.float64)
    cdf = 0.5 * (1 + _ERF(x64 / np.sqrt(2))) if x64.size else x64
    pdf = np.exp(-0.5 * x64 * x64) / np.sqrt(2 * np.pi)
    return (dy * (cdf + x64 * pdf)).astype(np.float32)


def leaky_relu_backward(dy, x, alpha: float):
    return np.where(x > 0, dy, dy * np.float32(alpha)).astype(np.float32)


def clip_backward(dy, x, low: float, high: float):
    return np.where((x >= np.float32(low)) & (x <= np.float32(high)), dy, np.float32(0)).astype(np.float32)


def hard_sigmoid_backward(dy, x, alpha: float, beta: float):
    inner = x * np.float32(alpha) + np.float32(beta)
    return np.where((inner > 0) & (inner < 1), dy * np.float32(alpha), np.float32(0)).astype(np.float32)


def max_pool_backward(dy, x, kernel, strides, pads, dilations, ceil_mode: bool) -> np.ndarray:
    """Each output gradient to its window's first maximum (row-major), as PyTorch."""
    out_hw = dy.shape[2:]
    win = _windows(x, kernel, strides, pads, dilations, out_hw, -np.inf)
    n, c, oh, ow, kh, kw = win.shape
    winner = win.reshape(n, c, oh, ow, kh * kw).argmax(axis=4)
    dxp = _padded_zeros(x.shape, kernel, strides, pads, dilations, out_hw)
    for i in range(kh):
        for j in range(kw):
            rows, cols = _tap_slices(i, j, strides, dilations, out_hw)
            dxp[:, :, rows, cols] += np.where(winner == i * kw + j, dy, np.float32(0))
    return _crop(dxp, x.shape, pads)


def avg_pool_backward(dy, input_shape, kernel, strides, pads, dilations, ceil_mode: bool,
                      count_include_pad: bool) -> np.ndarray:
    out_hw = dy.shape[2:]
    ones = np.ones((1, 1) + tuple(input_shape[2:]), dtype=np.float32)
    ones = np.pad(ones, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])),
                  constant_values=1.0 if count_include_pad else 0.0)
    count = _windows(ones, kernel, strides, (0, 0, 0, 0), dilations, out_hw, 0.0).sum(axis=(4, 5))
    share = (dy / count).astype(np.float32)
    dxp = _padded_zeros(input_shape, kernel, strides, pads, dilations, out_hw)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows, cols = _tap_slices(i, j, strides, dilations, out_hw)
            dxp[:, :, rows, cols] += share
    return _crop(dxp, input_shape, pads)


def global_avg_pool_backward(dy, input_shape) -> np.ndarray:
    plane = math.prod(input_shape[2:])
    return np.ascontiguousarray(np.broadcast_to(dy / np.float32(plane), input_shape), dtype=np.float32)


def global_max_pool_backward(dy, x) -> np.ndarray:
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    dx = np.zeros_like(flat, dtype=np.float32)
    np.put_along_axis(dx, flat.argmax(axis=2)[:, :, None], dy.reshape(n, c, 1), axis=2)
    return dx.reshape(x.shape)


def _log_softmax(x):
    shifted = x.astype(np.float64) - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax_cross_entropy(logits, target) -> np.ndarray:
    loss = -(target * _log_softmax(logits)).sum() / logits.shape[0]
    return np.array([loss], dtype=np.float32)


def softmax_cross_entropy_backward(logits, target) -> np.ndarray:
    return ((np.exp(_log_softmax(logits)) - target) / logits.shape[0]).astype(np.float32)


def mse_loss(prediction, target) -> np.ndarray:
    diff = prediction.astype(np.float64) - target
    return np.array([(diff * diff).mean()], dtype=np.float32)


def mse_loss_backward(prediction, target) -> np.ndarray:
    return ((prediction - target) * np.float32(2 / prediction.size)).astype(np.float32)


def sgd(weight, grad, velocity, lr: float, momentum: float, weight_decay: float):
    """(new weight, new velocity or None), torch.optim.SGD's update."""
    step = grad + np.float32(weight_decay) * weight if weight_decay else grad
    if velocity is not None:
        step = np.float32(momentum) * velocity + step
    new_weight = (weight - np.float32(lr) * step).astype(np.float32)
    return new_weight, (step.astype(np.float32) if velocity is not None else None)
