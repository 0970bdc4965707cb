"""fuse-batch-norm-training: BatchNorm and ReLU of a training step fused into the neighbouring convs.

Seed paper 1 (Yang, Wang, Zhang 2023): in training, BatchNorm and ReLU are memory bound. For every
`nn.batch_norm_train` (explicit training ops, before `lower-training-ops`):

- **statistics as post-processing**: when its input is a conv's result (not depthwise), the conv
  becomes `fused.conv2d_stats`, whose nest sums each output channel and its squares from the
  output tiles while they are on chip (the post-processing unit); the mean, the variance
  (E[x^2] - mean^2), 1/sqrt(var + eps), the apply's per-channel `scale` = gamma / std and
  `shift` = beta - mean scale and the running statistics are small per-channel ops;
  otherwise (DenseNet's BatchNorm after a concat) the sums are a reduction of their own;
- **apply + ReLU as pre-processing**: every forward conv that reads `relu(batch_norm(y))` becomes
  `fused.conv2d_pre` of `y` (scale, shift and the ReLU on the pre-processing unit over its input
  tiles as they arrive: the normalised tensor never goes to DRAM); a BatchNorm without a ReLU
  after it, or whose ReLU another forward op reads (max pooling, a residual add), is applied by
  `nn.batch_norm` with the run-time statistics (one pass) for those readers;
- **what backward needs**: the normalised activations `z` (the conv backward-filter's input, and
  ReLU's mask: z > 0 exactly where the BatchNorm output is) are recomputed from `y` in the
  backward phase, just before their first backward reader (`fused.saved = "recompute"` on the
  stats op). Storing them from the forward would cost the same DRAM traffic as the recompute
  (one write of z in forward and one read in backward, against one read of y and one write of
  z), so recomputing never loses; the attribute says which was chosen per layer.

    %y = nn.conv2d %x, %w1 ...                      %y, %sum, %sq = fused.conv2d_stats %x, %w1 ...
    %b, %m, %r, %rm, %rv = nn.batch_norm_train %y   (per-channel: mean, var, scale, shift, running)
    %z = nn.relu %b                         ->      %o = fused.conv2d_pre %y, %scale, %shift, %w2 ... pre relu
    %o = nn.conv2d %z, %w2 ...                      (backward: %z recomputed where it is first read)

`--disable-pass=fuse-batch-norm-training` gives the unfused step (each BatchNorm and ReLU its own
layers, each a DRAM round trip): the same results up to float32 summation order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import DictionaryAttr, ModuleOp, StringAttr
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from nncc.compiler.weights import store_of
from nncc.dialects import fused, nn
from nncc.passes.lower_training_ops import Builder


@dataclass(frozen=True)
class FuseBatchNormTrainingPass(ModulePass):
    """Fuse every training BatchNorm's statistics into its producing conv and its apply (and ReLU)
    into its consuming convs."""

    name = "fuse-batch-norm-training"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        store = store_of(op, self.name)
        for function in op.ops:
            if isinstance(function, func.FuncOp):
                for bn in [o for o in function.body.block.ops if isinstance(o, nn.BatchNormTrainOp)]:
                    fuse(store, bn)


def fuse(store, bn: nn.BatchNormTrainOp) -> None:
    """Rewrite one BatchNorm (and the ReLU after it) as described in the module docstring."""
    b = Builder(store, bn)
    y, sums, squares, stats = statistics(b, bn)
    shape = nn.shape_of(y)
    count = int(np.prod(shape)) // shape[1]
    eps, momentum = bn.epsilon.value.data, bn.momentum.value.data
    mean = b.scale(sums, 1.0 / count)
    var = b.sub(b.scale(squares, 1.0 / count), b.mul(mean, mean))
    invstd = b.div(b.scalar(1.0), b.op(nn.SqrtOp(b.add(var, b.scalar(eps)))))
    scale = b.mul(bn.scale, invstd)
    shift = b.sub(bn.bias, b.mul(mean, scale))
    new_mean = b.add(b.scale(bn.running_mean, momentum), b.scale(mean, 1 - momentum))
    new_var = b.add(b.scale(bn.running_var, momentum), b.scale(var, (1 - momentum) * count / (count - 1)))
    for old, new in zip(bn.results[1:], (mean, invstd, new_mean, new_var)):
        old.replace_all_uses_with(new)
    relu = single_forward_relu(bn.result)
    apply = "layer"
    if relu is not None:
        consumers = [use.operation for use in list(relu.result.uses) if is_fusable_consumer(use.operation, relu.result)]
        for conv in consumers:
            replace_consumer(conv, y, scale, shift)
        apply = "pre" if consumers else "layer"
        saved = materialize_relu(store, relu, bn, y, mean, var, scale, shift, eps)
    else:
        saved = "none"
        applied = Builder(store, bn).op(nn.BatchNormOp(y, bn.scale, bn.bias, mean, var, eps))
        bn.result.replace_all_uses_with(applied)
    if stats is not None:
        stats.attributes["fused.bn"] = DictionaryAttr({"apply": StringAttr(apply), "saved": StringAttr(saved)})
    bn.detach()
    bn.erase()


def statistics(b: Builder, bn: nn.BatchNormTrainOp) -> tuple[SSAValue, SSAValue, SSAValue, Operation | None]:
    """(y, per-channel sums, sums of squares, the fused.conv2d_stats op or None): from the
    producing conv's post-processing when it is a conv, else a reduction of its own."""
    y = bn.input
    conv = y.owner
    if isinstance(conv, nn.Conv2dOp) and conv.group.value.data == 1:
        stats = fused.Conv2dStatsOp(conv.input, conv.weight, conv.bias, nn.ints(conv.strides), nn.ints(conv.pads),
                                    nn.ints(conv.dilations), conv.group.value.data)
    elif isinstance(conv, fused.Conv2dPreOp) and not conv.stats:  # its input normalised, its output too
        stats = conv.with_stats()
    else:
        return y, b.channel(y), b.channel(b.mul(y, y)), None
    stats.attributes.update(conv.attributes)
    stats.results[0].name_hint = conv.result.name_hint
    sums, squares = stats.results[1:]
    sums.name_hint, squares.name_hint = f"{conv.result.name_hint}_sum", f"{conv.result.name_hint}_squares"
    conv.parent.insert_op_before(stats, conv)
    conv.result.replace_all_uses_with(stats.results[0])
    conv.detach()
    conv.erase()
    return stats.results[0], sums, squares, stats


def single_forward_relu(value: SSAValue) -> nn.ReluOp | None:
    """The ReLU that reads the BatchNorm's output, when that and ReLU's backward are its only readers."""
    relus = [use.operation for use in value.uses if isinstance(use.operation, nn.ReluOp)]
    others = [use.operation for use in value.uses
              if not isinstance(use.operation, (nn.ReluOp, nn.ReluBackwardOp))]
    return relus[0] if len(relus) == 1 and not others else None


def is_fusable_consumer(op: Operation, z: SSAValue) -> bool:
    """A forward conv (not depthwise, not grouped) that reads `z` as its input."""
    return isinstance(op, nn.Conv2dOp) and op.input is z and op.group.value.data == 1 and nn.phase_of(op) == "forward"


def replace_consumer(conv: nn.Conv2dOp, y: SSAValue, scale: SSAValue, shift: SSAValue) -> None:
    fused_conv = fused.Conv2dPreOp(y, scale, shift, conv.weight, conv.bias, nn.ints(conv.strides), nn.ints(conv.pads),
                                   nn.ints(conv.dilations), conv.group.value.data, "relu")
    fused_conv.attributes.update(conv.attributes)
    fused_conv.result.name_hint = conv.result.name_hint
    conv.parent.insert_op_before(fused_conv, conv)
    conv.result.replace_all_uses_with(fused_conv.result)
    conv.detach()
    conv.erase()


def materialize_relu(store, relu: nn.ReluOp, bn: nn.BatchNormTrainOp, y, mean, var, scale, shift,
                     eps: float) -> str:
    """Make relu(batch_norm(y)) again for its remaining readers: in the forward when a forward op
    other than a fused conv reads it, else just before its first backward reader (recompute);
    ReLU's backward reads it for its mask. Returns what was chosen: "forward", "recompute", "none"."""
    for use in list(bn.result.uses):
        if isinstance(use.operation, nn.ReluBackwardOp):
            use.operation.operands[use.index] = relu.result
    readers = [use.operation for use in relu.result.uses]
    if not readers:
        relu.detach()
        relu.erase()
        return "none"
    forward = [r for r in readers if nn.phase_of(r) == "forward"]
    if forward:
        anchor, chosen = relu, "forward"
    else:
        block = relu.parent
        anchor = min(readers, key=block.get_operation_index)
        chosen = "recompute"
    b = Builder(store, anchor)
    b.hint = f"{relu.result.name_hint or 'relu'}_{chosen}"
    normalised = b.op(nn.BatchNormOp(y, bn.scale, bn.bias, mean, var, eps))
    z = b.op(nn.ReluOp(normalised))
    relu.result.replace_all_uses_with(z)
    relu.detach()
    relu.erase()
    return chosen
