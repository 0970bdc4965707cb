"""lower-training-ops: rewrite autodiff's training ops into forward `nn` ops the back end lowers.

`--emit=nn` after `autodiff` shows the explicit backward ops; for an accelerator target this
pass (in the fused stage) rewrites each into forward ops, so that they go through the same
tiling, vectorisation and double-buffered DMA as the forward layers:

- `nn.conv2d_backward_data` of a stride-1 conv (group 1, or several channels per group on both
  sides) and `nn.conv2d_backward_filter` of a group-1 conv are left to the back end, which
  writes the first as a conv nest reading its tensors through views and the second as a gemm
  whose rows are (kernel tap, input channel) pairs (`compiler/codegen/training_nest.py`: no
  transposed, flipped or spread copies);
- a strided `nn.conv2d_backward_data` (group 1, or several channels per group on both sides,
  no phase needing the output gradient cropped) is left to the back end too: one nest in which
  each phase of the input (rows r, r + s, ...; columns likewise) is a stride-1 conv of the
  output gradient with the kernel taps that reach it, stored in place through a strided view of
  dx (`training_nest.phases_nest`: no zero-insertion, no wasted MACs, no transposes);
- any other `nn.conv2d_backward_data` (depthwise, a phase whose gradient would
  need cropping): a stride-1 conv of the output gradient, spread (zero-inserted
  between rows and columns for stride > 1, and padded or cropped) by two 0/1 matmuls, with the
  weights transposed per group and flipped (`nn.slice` with steps -1);
- any other `nn.conv2d_backward_filter`: a conv whose "batch" is the input channels of a group and whose
  "channels" are the images: x (C, N, H, W) with the output gradient (O, N, OH, OW) as its
  weights, the forward strides as dilations and the dilations as strides; its reduction runs
  over the batch and the output pixels. Cropped to the kernel and transposed to (O, C/g, KH, KW);
- `nn.reduce_sum`: a transpose and a row reduction (a global average pool times the row
  length: `vred` on the back end; also every per-channel sum);
- `nn.batch_norm_train`, `nn.batch_norm_backward`: per-channel means as row reductions, the
  elementwise rest as broadcasting nn ops, the normalisation itself an `nn.batch_norm` with
  run-time statistics;
- activation backward: masks from `nn.step` (1 where x > 0), times the gradient;
- `nn.max_pool_backward`, `nn.avg_pool_backward` are left to the back end: one nest that
  recomputes each window's maximum and scatters dy into dx tiles on chip
  (`compiler/codegen/pool_backward_nest.py`);
- the losses and their gradients (the cross-entropy as -sum(target * logits) + max(logits) -
  log(max(softmax)), so no logarithm of a tiny probability), `nn.scale`. `nn.sgd` is left to
  the back end (one pass over each weight, `training_nest.sgd_nest`).

In global max pooling every maximum of a plane gets the gradient (ties being measure-zero). The
rewrite is exact in float32 up to summation order (the 0/1 matmuls add one product and zeros): the nn interpreter runs the
rewritten module to the same values (tests/training/test_lower_training_ops.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from nncc.compiler.codegen.training_nest import kept_for_back_end
from nncc.compiler.weights import WeightStore, sanitize, store_of
from nncc.dialects import nn
from nncc.support.errors import NnccError


class Builder:
    """Inserts ops before `anchor` with its phase and ONNX nodes; constants go to the store."""

    def __init__(self, store: WeightStore, anchor: Operation):
        self.store, self.anchor = store, anchor
        self.hint = sanitize(anchor.results[0].name_hint or anchor.name.removeprefix("nn."))
        self.count = 0

    def op(self, op: Operation) -> SSAValue:
        for key in (nn.PHASE, nn.ONNX_NODES):
            if key in self.anchor.attributes:
                op.attributes[key] = self.anchor.attributes[key]
        self.count += 1
        for index, result in enumerate(op.results):
            result.name_hint = f"{self.hint}_{self.count}" + (f"_{index}" if index else "")
        self.anchor.parent.insert_op_before(op, self.anchor)
        lowered = lower_op(self, op)  # a training op made here is lowered too
        return lowered[0] if lowered is not None else op.results[0]

    def const(self, name: str, array) -> SSAValue:
        array = np.asarray(array, dtype=np.float32)
        ref = self.store.add(f"{self.hint}.{name}", array)
        weight = nn.WeightOp(ref, array.shape)
        weight.result.name_hint = sanitize(ref)
        self.anchor.parent.insert_op_before(weight, self.anchor)
        return weight.result

    def scalar(self, value: float) -> SSAValue:
        return self.const(f"c{self.count}", [value])

    # elementwise helpers
    def add(self, a, b):
        return self.op(nn.AddOp(a, b))

    def sub(self, a, b):
        return self.op(nn.SubOp(a, b))

    def mul(self, a, b):
        return self.op(nn.MulOp(a, b))

    def div(self, a, b):
        return self.op(nn.DivOp(a, b))

    def scale(self, a, factor: float):
        return a if factor == 1.0 else self.op(nn.ScaleOp(a, factor))

    def step(self, a):
        return self.op(nn.StepOp(a))

    def not_step(self, a):
        """1 where a <= 0."""
        return self.sub(self.scalar(1.0), self.step(a))

    def reshape(self, a, shape):
        return a if nn.shape_of(a) == tuple(shape) else self.op(nn.ReshapeOp(a, shape))

    def transpose(self, a, perm):
        return a if list(perm) == list(range(len(perm))) else self.op(nn.TransposeOp(a, perm))

    def matmul(self, a, b):
        return self.op(nn.MatMulOp(a, b))

    def row_sums(self, rows: SSAValue, factor: float = 1.0) -> SSAValue:
        """(K, R) -> (K,): each row's sum (times `factor`) as the row's mean (a global average
        pool of K channels of R x 1: the back end's row reduction, `vred`, R on the lanes)
        times R x `factor`."""
        k, r = nn.shape_of(rows)
        means = self.op(nn.GlobalAvgPoolOp(self.reshape(rows, (1, k, r, 1))))
        return self.reshape(self.scale(means, r * factor), (k,))

    def reduce(self, x: SSAValue, axes, factor: float = 1.0) -> SSAValue:
        """Sum over `axes` (they disappear), times `factor`."""
        shape = nn.shape_of(x)
        kept = [i for i in range(len(shape)) if i not in axes]
        moved = self.transpose(x, kept + list(axes))
        k = int(np.prod([shape[i] for i in kept]))
        sums = self.row_sums(self.reshape(moved, (k, int(np.prod([shape[i] for i in axes])))), factor)
        return self.reshape(sums, tuple(shape[i] for i in kept))

    def channel(self, x: SSAValue, factor: float = 1.0) -> SSAValue:
        """(N, C, ...) -> (C,): sums over every axis but 1, times `factor`: the rows of (N C, H W)
        summed first (no transpose of the whole tensor), then the small (C, N) transposed."""
        shape = nn.shape_of(x)
        n, c, plane = shape[0], shape[1], int(np.prod(shape[2:]))
        if plane == 1:
            return self.reduce(x, [0, *range(2, len(shape))], factor)
        sums = self.row_sums(self.reshape(x, (n * c, plane)), factor)
        return self.reshape(sums, (c,)) if n == 1 else self.reduce(self.reshape(sums, (n, c)), [0])

    def per_channel(self, v: SSAValue, rank: int) -> SSAValue:
        return self.reshape(v, (1, nn.shape_of(v)[0]) + (1,) * (rank - 2))


def lower_op(b: Builder, op: Operation) -> list[SSAValue] | None:
    """The replacement values of a training op's results (its ops inserted before it), or None
    for an op this pass leaves alone."""
    rule = RULES.get(type(op))
    if rule is None or kept_for_back_end(op):
        return None
    inner = Builder(b.store, op)
    inner.count = b.count * 100  # distinct names for nested rewrites
    values = rule(inner, op)
    for old, new in zip(op.results, values):
        old.replace_all_uses_with(new)
    op.detach()
    op.erase()
    return values


# --------------------------------------------------------------------------- conv


def spread(b: Builder, dy: SSAValue, axis: int, length: int, offset: int, stride: int) -> SSAValue:
    """Along `axis` (2 or 3) of (N, C, H, W): element i moves to offset + i * stride of a zero
    axis of `length` (elements that land outside are dropped): a matmul with a 0/1 matrix."""
    size = nn.shape_of(dy)[axis]
    matrix = np.zeros((size, length), dtype=np.float32)
    for i in range(size):
        if 0 <= offset + i * stride < length:
            matrix[i, offset + i * stride] = 1.0
    select = b.const(f"spread{axis}", matrix)
    if axis == 3:
        return b.matmul(dy, select)
    swapped = b.transpose(dy, [0, 1, 3, 2])
    return b.transpose(b.matmul(swapped, select), [0, 1, 3, 2])


def transposed_weight(b: Builder, w: SSAValue, group: int) -> SSAValue:
    """(O, C/g, KH, KW) -> (C, O/g, KH, KW), each group's block transposed, kernels flipped."""
    o, cg, kh, kw = nn.shape_of(w)
    og = o // group
    if group == 1:
        t = b.transpose(w, [1, 0, 2, 3])
    elif cg == 1:
        t = b.reshape(w, (group, og, kh, kw))
    else:
        t = b.reshape(b.transpose(b.reshape(w, (group, og, cg, kh, kw)), [0, 2, 1, 3, 4]), (group * cg, og, kh, kw))
    if kh == kw == 1:
        return t
    return b.op(nn.SliceOp(t, [0, 0, kh - 1, kw - 1], [1, 1, -1, -1], nn.shape_of(t)))


def conv_backward_data(b: Builder, op: nn.Conv2dBackwardDataOp) -> list[SSAValue]:
    (sh, sw), pads, (dh, dw), group = op.conv_properties()
    dy = op.grad
    _, _, h, w = nn.shape_of(op.result)
    _, _, kh, kw = nn.shape_of(op.weight)
    _, _, oh, ow = nn.shape_of(dy)
    off_h, off_w = (kh - 1) * dh - pads[0], (kw - 1) * dw - pads[1]
    zh, zw = h + (kh - 1) * dh, w + (kw - 1) * dw  # the spread gradient: a stride-1 "valid" conv gives h x w
    weights = transposed_weight(b, op.weight, group)
    tail_h, tail_w = zh - off_h - (oh - 1) * sh - 1, zw - off_w - (ow - 1) * sw - 1
    if (sh, sw) == (1, 1) and min(off_h, off_w, tail_h, tail_w) >= 0:
        conv = nn.Conv2dOp(dy, weights, None, (1, 1), (off_h, off_w, tail_h, tail_w), (dh, dw), group)
    else:
        spread_dy = spread(b, spread(b, dy, 3, zw, off_w, sw), 2, zh, off_h, sh)
        conv = nn.Conv2dOp(spread_dy, weights, None, (1, 1), (0, 0, 0, 0), (dh, dw), group)
    return [b.op(conv)]


def conv_backward_filter(b: Builder, op: nn.Conv2dBackwardFilterOp) -> list[SSAValue]:
    strides, pads, dilations, group = op.conv_properties()
    x, dy = op.input, op.grad
    n, c, h, w = nn.shape_of(x)
    o, cg, kh, kw = nn.shape_of(op.result)
    if group == 1 or cg == 1:
        xt = b.transpose(x, [1, 0, 2, 3])
        xt = xt if group == 1 else b.reshape(xt, (1, c * n, h, w))
    else:
        xt = b.reshape(b.transpose(b.reshape(x, (n, group, cg, h, w)), [2, 1, 0, 3, 4]), (cg, group * n, h, w))
    kernel = b.transpose(dy, [1, 0, 2, 3])  # (O, N, OH, OW)
    full = b.op(nn.Conv2dOp(xt, kernel, None, dilations, pads, strides, group))  # (C/g, O, KH', KW')
    if nn.shape_of(full)[2:] != (kh, kw):
        full = b.op(nn.SliceOp(full, [0, 0, 0, 0], [1, 1, 1, 1], (cg, o, kh, kw)))
    if cg == 1:
        return [b.reshape(full, (o, 1, kh, kw))]
    return [b.transpose(full, [1, 0, 2, 3])]


# --------------------------------------------------------------------------- batch norm


def batch_norm_train(b: Builder, op: nn.BatchNormTrainOp) -> list[SSAValue]:
    x = op.input
    shape = nn.shape_of(x)
    m = int(np.prod(shape)) // shape[1]
    eps, momentum = op.epsilon.value.data, op.momentum.value.data
    mean = b.channel(x, 1.0 / m)
    centered = b.sub(x, b.per_channel(mean, len(shape)))
    var = b.channel(b.mul(centered, centered), 1.0 / m)
    invstd = b.div(b.scalar(1.0), b.op(nn.SqrtOp(b.add(var, b.scalar(eps)))))
    y = b.op(nn.BatchNormOp(x, op.scale, op.bias, mean, var, eps))
    new_mean = b.add(b.scale(op.running_mean, momentum), b.scale(mean, 1 - momentum))
    new_var = b.add(b.scale(op.running_var, momentum), b.scale(var, (1 - momentum) * m / (m - 1)))
    return [y, mean, invstd, new_mean, new_var]


def batch_norm_backward(b: Builder, op: nn.BatchNormBackwardOp) -> list[SSAValue]:
    dy, x = op.grad, op.input
    shape = nn.shape_of(x)
    rank, m = len(shape), int(np.prod(shape)) // shape[1]
    xhat = b.mul(b.sub(x, b.per_channel(op.saved_mean, rank)), b.per_channel(op.saved_invstd, rank))
    dbias = b.channel(dy)
    dscale = b.channel(b.mul(dy, xhat))
    centered = b.sub(dy, b.per_channel(b.scale(dbias, 1.0 / m), rank))
    centered = b.sub(centered, b.mul(xhat, b.per_channel(b.scale(dscale, 1.0 / m), rank)))
    factor = b.mul(op.scale, op.saved_invstd)
    return [b.mul(centered, b.per_channel(factor, rank)), dscale, dbias]


# --------------------------------------------------------------------------- activations


def relu_backward(b: Builder, op) -> list[SSAValue]:
    return [b.mul(op.grad, b.step(op.input))]


def leaky_relu_backward(b: Builder, op) -> list[SSAValue]:
    alpha = op.alpha.value.data
    slope = b.add(b.scale(b.step(op.input), 1.0 - alpha), b.scalar(alpha))
    return [b.mul(op.grad, slope)]


def clip_backward(b: Builder, op) -> list[SSAValue]:
    low, high = op.min.value.data, op.max.value.data
    mask = None
    if np.isfinite(low):  # x >= low
        mask = b.not_step(b.sub(b.scalar(low), op.input))
    if np.isfinite(high):  # x <= high
        upper = b.not_step(b.sub(op.input, b.scalar(high)))
        mask = upper if mask is None else b.mul(mask, upper)
    return [op.grad if mask is None else b.mul(op.grad, mask)]


def hard_sigmoid_backward(b: Builder, op) -> list[SSAValue]:
    alpha, beta = op.alpha.value.data, op.beta.value.data
    inner = b.add(b.scale(op.input, alpha), b.scalar(beta))
    mask = b.mul(b.step(inner), b.step(b.sub(b.scalar(1.0), inner)))
    return [b.mul(b.scale(op.grad, alpha), mask)]


def hard_swish_backward(b: Builder, op) -> list[SSAValue]:
    """0 below -3, x / 3 + 1 / 2 up to 3 (1.5 at 3, as PyTorch), 1 above (0 at -3 exactly)."""
    x = op.input
    ramp = b.add(b.scale(x, 1.0 / 3.0), b.scalar(0.5))
    above = b.step(b.sub(x, b.scalar(3.0)))
    inside = b.mul(b.step(b.add(x, b.scalar(3.0))), b.sub(b.scalar(1.0), above))
    return [b.mul(op.grad, b.add(b.mul(ramp, inside), above))]


def sigmoid_backward(b: Builder, op) -> list[SSAValue]:
    s = b.op(nn.SigmoidOp(op.input))
    return [b.mul(op.grad, b.mul(s, b.sub(b.scalar(1.0), s)))]


def tanh_backward(b: Builder, op) -> list[SSAValue]:
    t = b.op(nn.TanhOp(op.input))
    return [b.mul(op.grad, b.sub(b.scalar(1.0), b.mul(t, t)))]


def silu_backward(b: Builder, op) -> list[SSAValue]:
    s = b.op(nn.SigmoidOp(op.input))
    inner = b.add(b.scalar(1.0), b.mul(op.input, b.sub(b.scalar(1.0), s)))
    return [b.mul(op.grad, b.mul(s, inner))]


def gelu_backward(b: Builder, op) -> list[SSAValue]:
    x = op.input
    cdf = b.scale(b.add(b.op(nn.ErfOp(b.scale(x, 1 / np.sqrt(2.0)))), b.scalar(1.0)), 0.5)
    pdf = b.scale(b.op(nn.ExpOp(b.scale(b.mul(x, x), -0.5))), 1 / np.sqrt(2 * np.pi))
    return [b.mul(op.grad, b.add(cdf, b.mul(x, pdf)))]


# --------------------------------------------------------------------------- pooling


def global_avg_pool_backward(b: Builder, op) -> list[SSAValue]:
    shape = nn.shape_of(op.result)
    plane = np.full((1, 1) + shape[2:], 1.0 / np.prod(shape[2:]), dtype=np.float32)
    return [b.mul(op.grad, b.const("plane", plane))]


def global_max_pool_backward(b: Builder, op) -> list[SSAValue]:
    y = b.op(nn.GlobalMaxPoolOp(op.input))
    return [b.mul(op.grad, b.not_step(b.sub(y, op.input)))]


# --------------------------------------------------------------------------- losses, update, helpers


def softmax_cross_entropy(b: Builder, op) -> list[SSAValue]:
    logits, target = op.input, op.target
    n, classes = nn.shape_of(logits)
    column = (n, 1, classes, 1)
    top = b.reshape(b.op(nn.GlobalMaxPoolOp(b.reshape(logits, column))), (n,))
    probs = b.op(nn.SoftmaxOp(logits, 1))
    top_prob = b.reshape(b.op(nn.GlobalMaxPoolOp(b.reshape(probs, column))), (n,))
    # per row: -sum(t * x) + max(x) + log(sum(exp(x - max))) = -sum(t * x) + max(x) - log(max(softmax))
    rows = b.sub(b.sub(top, b.row_sums(b.mul(target, logits))), b.op(nn.LogOp(top_prob)))
    return [b.reshape(b.row_sums(b.reshape(rows, (1, n)), 1.0 / n), nn.LOSS_SHAPE)]


def softmax_cross_entropy_backward(b: Builder, op) -> list[SSAValue]:
    n = nn.shape_of(op.input)[0]
    return [b.scale(b.sub(b.op(nn.SoftmaxOp(op.input, 1)), op.target), 1.0 / n)]


def mse_loss(b: Builder, op) -> list[SSAValue]:
    diff = b.sub(op.input, op.target)
    size = int(np.prod(nn.shape_of(diff)))
    return [b.reshape(b.row_sums(b.reshape(b.mul(diff, diff), (1, size)), 1.0 / size), nn.LOSS_SHAPE)]


def mse_loss_backward(b: Builder, op) -> list[SSAValue]:
    size = int(np.prod(nn.shape_of(op.input)))
    return [b.scale(b.sub(op.input, op.target), 2.0 / size)]


def sgd(b: Builder, op: nn.SgdOp) -> list[SSAValue]:
    lr, momentum, decay = op.lr.value.data, op.momentum.value.data, op.weight_decay.value.data
    step = op.grad if not decay else b.add(op.grad, b.scale(op.weight, decay))
    if op.velocity is not None:
        step = b.add(b.scale(op.velocity, momentum), step)
    new_weight = b.sub(op.weight, b.scale(step, lr))
    return [new_weight] if op.velocity is None else [new_weight, step]


def reduce_sum(b: Builder, op: nn.ReduceSumOp) -> list[SSAValue]:
    return [b.reduce(op.input, list(nn.ints(op.axes)))]


RULES = {
    nn.Conv2dBackwardDataOp: conv_backward_data,
    nn.Conv2dBackwardFilterOp: conv_backward_filter,
    nn.ReduceSumOp: reduce_sum,
    nn.BatchNormTrainOp: batch_norm_train,
    nn.BatchNormBackwardOp: batch_norm_backward,
    nn.ReluBackwardOp: relu_backward,
    nn.LeakyReluBackwardOp: leaky_relu_backward,
    nn.ClipBackwardOp: clip_backward,
    nn.HardSigmoidBackwardOp: hard_sigmoid_backward,
    nn.HardSwishBackwardOp: hard_swish_backward,
    nn.SigmoidBackwardOp: sigmoid_backward,
    nn.TanhBackwardOp: tanh_backward,
    nn.SiluBackwardOp: silu_backward,
    nn.GeluBackwardOp: gelu_backward,
    nn.GlobalAvgPoolBackwardOp: global_avg_pool_backward,
    nn.GlobalMaxPoolBackwardOp: global_max_pool_backward,
    nn.SoftmaxCrossEntropyOp: softmax_cross_entropy,
    nn.SoftmaxCrossEntropyBackwardOp: softmax_cross_entropy_backward,
    nn.MseLossOp: mse_loss,
    nn.MseLossBackwardOp: mse_loss_backward,
}
"""Training op -> its rewrite (the replacement values of its results)."""


@dataclass(frozen=True)
class LowerTrainingOpsPass(ModulePass):
    """Rewrite every training op of @main into forward nn ops."""

    name = "lower-training-ops"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        store = store_of(op, "lower-training-ops")
        for function in op.ops:
            if not isinstance(function, func.FuncOp):
                continue
            for inner in [o for o in function.body.block.ops if type(o) in RULES and not kept_for_back_end(o)]:
                lower_op(Builder(store, inner), inner)
        missing = {o.name for o in op.walk() if type(o) in RULES and not kept_for_back_end(o)}
        if missing:
            raise NnccError(f"lower-training-ops: {', '.join(sorted(missing))} left")
