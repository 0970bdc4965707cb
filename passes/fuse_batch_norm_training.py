"""fuse-batch-norm-training: BatchNorm and ReLU of a training step fused into the neighbouring convs.

Seed paper 1 (Yang, Wang, Zhang 2023): in training, BatchNorm and ReLU are memory bound. For every
`nn.batch_norm_train` (explicit training ops, before `lower-training-ops`):

- **statistics as post-processing**: when its input is a conv's result (not grouped), the conv
  becomes `fused.conv2d_stats` (or `fused.conv2d_pre` with two more results), whose nest sums
  each output channel and its squares from the output tiles while they are on chip (the
  post-processing unit); otherwise (DenseNet's BatchNorm after a concat) the sums are a
  reduction of their own. `fused.batch_norm_factors` makes the mean, 1/std, the apply's
  per-channel `scale` = gamma / std and `shift` = beta - mean scale and the running statistics
  in one small nest;
- **apply + ReLU as pre-processing**: every forward conv that reads `relu(batch_norm(y))` becomes
  `fused.conv2d_pre` of `y` (scale, shift and the ReLU on the pre-processing unit over its input
  tiles as they arrive: the normalised tensor never goes to DRAM). Other readers get it from one
  `fused.batch_norm_apply` (scale, shift, ReLU in one pass); a residual block's end (BatchNorm,
  the shortcut's BatchNorm or the shortcut, add, ReLU) is one `fused.batch_norm_apply` too;
- **what backward needs**: the normalised activations `z` (the conv backward-filter's input, and
  ReLU's mask: z > 0 exactly where the BatchNorm output is) are made again from `y`: as
  pre-processing of an unpadded backward-filter's input tiles (`fused.conv2d_backward_filter_pre`,
  on the pre unit; `fused.bn = {saved = "backward-filter pre-processing"}` on the stats op) where
  the cost model times that faster than the recompute and the plain backward-filter, else
  by a `fused.batch_norm_apply` in the backward phase, just before their first backward reader
  (`saved = "recompute"`; "forward" when a forward op other than a conv needed them anyway).
  Storing them from the forward would cost one write of z in forward and one read in backward;
  the pre-processing reads y instead of z and writes nothing, the recompute one read of y and one
  write of z: neither loses to storing;
- **backward** (seed paper 1's scheme): each `nn.batch_norm_backward` (with the ReLU backward
  before it when that only feeds it) has its two reductions (sum g, sum g xhat per channel) and
  ReLU's mask done as post-processing of the output tiles of the stride-1 backward-data conv that
  gives its gradient, while they are on chip (`fused.conv2d_backward_data_sums`, post unit;
  residual fan-out: the shortcut's gradient added into the tiles, a stored block output's ReLU
  mask, the block's second BatchNorm of that gradient reduced from the same tiles: `second`),
  else as a pass of its own (`fused.batch_norm_backward_sums`); its elementwise part
  (dx = scale g + c2 y + c3) is pre-processing of the gradient tiles of the stride-1
  backward-data that reads dx (`fused.conv2d_backward_data_sums ... pre`, or
  `fused.conv2d_backward_data_pre`; it stores dx once for the backward-filter) where the cost
  model times that faster (`fused.bn = {backward = "pre-processing"}`), else one pass,
  `fused.batch_norm_backward_apply` (`backward = "pass"`). The normalised activations a
  backward-filter reads are made and stored by the backward-data that applies that BatchNorm's
  ReLU mask (`normalized`, `saved = "backward-data post-processing"`) where that pays.

    %y = nn.conv2d %x, %w1 ...                      %y, %sum, %sq = fused.conv2d_stats %x, %w1 ...
    %b, %m, %r, %rm, %rv = nn.batch_norm_train %y   %m, %r, %scale, %shift, %rm, %rv = fused.batch_norm_factors %sum, %sq, ...
    %z = nn.relu %b                         ->      %o = fused.conv2d_pre %y, %scale, %shift, %w2 ... pre relu
    %o = nn.conv2d %z, %w2 ...                      (backward: %dw2 = fused.conv2d_backward_filter_pre %y, %scale, %shift, %do;
                                                     %g, %dscale, %dbias, %c2, %c3 = fused.conv2d_backward_data_sums %do, %w2, %y, ... relu)

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

from nncc.compiler.codegen.training_nest import backward_data_shape
from nncc.compiler.weights import store_of
from nncc.dialects import fused, nn
from nncc.passes.decisions import module_target
from nncc.passes.lower_training_ops import Builder


@dataclass(frozen=True)
class FuseBatchNormTrainingPass(ModulePass):
    """Fuse every training BatchNorm's statistics into its producing conv and its apply (and ReLU)
    into its consuming convs."""

    name = "fuse-batch-norm-training"

    target: str = ""  # default: the module's tile.target, else vector (recorded, as partition-cores does)
    target_set: tuple[str, ...] = ()

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        store = store_of(op, self.name)
        target = module_target(op, self.name, self.target, self.target_set)
        convs = into_convs(target)
        for function in op.ops:
            if isinstance(function, func.FuncOp):
                bns = [o for o in function.body.block.ops if isinstance(o, nn.BatchNormTrainOp)]
                cache: dict = {"convs": convs}
                applied = {bn.result: factors(store, bn, cache) for bn in bns}
                for bn in bns:
                    if bn.result.uses:
                        apply_batch_norm(store, bn, applied, convs)
                for bn in bns:
                    bn.detach()
                    bn.erase()
                by_input = {a.y: a for a in applied.values()}
                probe = probe_lowering(store, target) if convs else None
                for backward in [o for o in function.body.block.ops if isinstance(o, nn.BatchNormBackwardOp)]:
                    if backward.input in by_input:
                        fuse_backward(store, backward, by_input[backward.input], probe)
                for z in [o for o in function.body.block.ops if isinstance(o, fused.BatchNormApplyOp)]:
                    if convs and nn.phase_of(z) == "backward" and z.input in by_input:
                        pre_process_backward_filters(z, by_input[z.input], probe)
                for dx in [o for o in function.body.block.ops if isinstance(o, fused.BatchNormBackwardApplyOp)]:
                    if convs and dx.input in by_input:
                        pre_process_gradient(dx, by_input[dx.input], probe)
                for z in [o for o in function.body.block.ops if isinstance(o, fused.BatchNormApplyOp)]:
                    if convs and nn.phase_of(z) == "backward" and z.input in by_input:
                        store_normalized(z, by_input[z.input], probe)


def into_convs(target) -> bool:
    """Whether the statistics and the apply go into the convs: on a core with pre- and
    post-processing units beside its main unit (`fusion`), where they run concurrently with the
    matrix unit. Without them (`vector`) that work would queue on the unit that runs the MACs, and
    a conv giving statistics runs on one core (one statistics buffer): ResNet-18 at 32x32, batch
    4, takes 2.05 M forward cycles unfused and 5.19 M with the convs fused on `vector`, so there
    only the per-channel numbers, the one-pass apply and the two-pass backward are fused."""
    return all(role in target.units for role in ("pre", "post"))


@dataclass
class Applied:
    """A BatchNorm's output as y * scale + shift, and the op that gives its statistics (if fused)."""

    y: SSAValue
    scale: SSAValue
    shift: SSAValue
    mean: SSAValue
    invstd: SSAValue
    stats: Operation | None


def factors(store, bn: nn.BatchNormTrainOp, cache: dict) -> Applied:
    """The statistics (from the producing conv when it is one) and `fused.batch_norm_factors`; the
    BatchNorm's saved mean, 1/std and running statistics replaced by its rows."""
    b = Builder(store, bn)
    y, sums, squares, stats = statistics(b, bn, cache)
    shape = nn.shape_of(y)
    count = int(np.prod(shape)) // shape[1]
    numbers = b.op(fused.BatchNormFactorsOp(sums, squares, bn.scale, bn.bias, bn.running_mean, bn.running_var, count,
                                            bn.epsilon.value.data, bn.momentum.value.data))
    rows = dict(zip(fused.BatchNormFactorsOp.ROWS, numbers.owner.results))
    for old, name in zip(bn.results[1:], ("mean", "invstd", "running_mean", "running_var")):
        old.replace_all_uses_with(rows[name])
    return Applied(y, rows["scale"], rows["shift"], rows["mean"], rows["invstd"], stats)


def apply_batch_norm(store, bn: nn.BatchNormTrainOp, applied: dict[SSAValue, Applied], convs: bool) -> None:
    """The BatchNorm's output for its readers: ReLU's consuming convs pre-process y, a residual
    block's end is one `fused.batch_norm_apply` (with the shortcut, the add and the ReLU), other
    readers get it (and the ReLU) from `fused.batch_norm_apply` in the forward, or recomputed
    before the first backward reader."""
    a = applied[bn.result]
    relu = single_forward_relu(bn.result)
    end = residual_end(bn.result, applied) if relu is None else None
    if relu is not None:
        consumers = [use.operation for use in list(relu.result.uses)
                     if convs and is_fusable_consumer(use.operation, relu.result)]
        for conv in consumers:
            replace_consumer(conv, a.y, a.scale, a.shift, applied)
        for use in list(bn.result.uses):
            if isinstance(use.operation, nn.ReluBackwardOp):  # z > 0 exactly where the BatchNorm's output is
                use.operation.operands[use.index] = relu.result
        saved = materialize(store, relu, [a.y, a.scale, a.shift])
        record(a, "pre" if consumers else "layer", saved)
    elif end is not None:
        add, relu, other = end
        others = [other] if other not in applied else [applied[other].y, applied[other].scale, applied[other].shift]
        for use in list(add.result.uses):
            if isinstance(use.operation, nn.ReluBackwardOp):
                use.operation.operands[use.index] = relu.result
        z = Builder(store, add).op(fused.BatchNormApplyOp(a.y, a.scale, a.shift, others, "relu"))
        relu.result.replace_all_uses_with(z)
        for op in (relu, add):
            op.detach()
            op.erase()
        record(a, "layer (with the residual add and ReLU)", "none")
        if other in applied:
            record(applied[other], "layer (with the residual add and ReLU)", "none")
    else:
        y = Builder(store, bn).op(fused.BatchNormApplyOp(a.y, a.scale, a.shift))
        bn.result.replace_all_uses_with(y)
        record(a, "layer", "none")


def record(a: Applied, apply: str, saved: str) -> None:
    if a.stats is not None:
        a.stats.attributes["fused.bn"] = DictionaryAttr({"apply": StringAttr(apply), "saved": StringAttr(saved)})


def residual_end(value: SSAValue, applied: dict[SSAValue, Applied]):
    """(add, relu, the add's other operand) when `value` is read only by a forward add whose only
    forward reader is a ReLU (a residual block's end); the other operand, when it is a BatchNorm's
    output too, must be read only by that add."""
    users = [use.operation for use in value.uses]
    if len(users) != 1 or not isinstance(users[0], nn.AddOp) or nn.phase_of(users[0]) != "forward":
        return None
    add = users[0]
    if nn.shape_of(add.lhs) != nn.shape_of(add.rhs):
        return None
    relu = single_forward_relu(add.result)
    if relu is None:
        return None
    other = add.rhs if add.lhs is value else add.lhs
    if other is value or (other in applied and len(list(other.uses)) != 1):
        return None
    return add, relu, other


def statistics(b: Builder, bn: nn.BatchNormTrainOp, cache: dict) -> tuple[SSAValue, SSAValue, SSAValue, Operation | None]:
    """(y, per-channel sums, sums of squares, the fused.conv2d_stats op or None): from the
    producing conv's post-processing when it is a conv; for a channel concat (DenseNet), the
    concat of its inputs' statistics (each from its own conv: computed once, shared by every
    BatchNorm that reads it; BN fission, Jung et al. 2019); else a reduction of its own."""
    sums, squares = value_statistics(b, bn.input, cache)
    y = bn.input  # the conv's result is now its fused.conv2d_stats's
    return y, sums, squares, y.owner if isinstance(y.owner, fused.Conv2dStatsOp) else None


def value_statistics(b: Builder, y: SSAValue, cache: dict) -> tuple[SSAValue, SSAValue]:
    if y in cache:
        return cache[y]
    conv = y.owner
    if cache["convs"] and isinstance(conv, nn.Conv2dOp) and conv.group.value.data == 1:
        stats = fused.Conv2dStatsOp(conv.input, conv.weight, conv.bias, nn.ints(conv.strides), nn.ints(conv.pads),
                                    nn.ints(conv.dilations), conv.group.value.data)
        stats.attributes.update(conv.attributes)
        stats.results[0].name_hint = conv.result.name_hint
        stats.sums.name_hint, stats.squares.name_hint = (f"{conv.result.name_hint}_sum",
                                                         f"{conv.result.name_hint}_squares")
        conv.parent.insert_op_before(stats, conv)
        conv.result.replace_all_uses_with(stats.result)
        conv.detach()
        conv.erase()
        y = stats.result
        result = (stats.sums, stats.squares)
    elif isinstance(conv, fused.Conv2dStatsOp) and y is conv.result:
        result = (conv.sums, conv.squares)
    elif isinstance(conv, nn.ConcatOp) and conv.axis.value.data == 1 and len(nn.shape_of(y)) == 4:
        pieces = [value_statistics(b, piece, cache) for piece in conv.inputs]
        result = tuple(b.op(nn.ConcatOp([p[k] for p in pieces], 0)) for k in range(2))
    else:
        result = (b.channel(y), b.channel(b.mul(y, y)))
    cache[y] = result
    return result


def single_forward_relu(value: SSAValue) -> nn.ReluOp | None:
    """The ReLU that reads the BatchNorm's output, when that and ReLU's backward are its only readers."""
    relus = [use.operation for use in value.uses if isinstance(use.operation, nn.ReluOp)]
    others = [use.operation for use in value.uses
              if not isinstance(use.operation, (nn.ReluOp, nn.ReluBackwardOp))]
    return relus[0] if len(relus) == 1 and not others else None


def is_fusable_consumer(op: Operation, z: SSAValue) -> bool:
    """A forward conv (not grouped; statistics fused or not) that reads `z` as its input."""
    return isinstance(op, (nn.Conv2dOp, fused.Conv2dStatsOp)) and op.input is z and op.group.value.data == 1 \
        and nn.phase_of(op) == "forward"


def replace_consumer(conv: Operation, y: SSAValue, scale: SSAValue, shift: SSAValue,
                     applied: dict[SSAValue, Applied]) -> None:
    """`conv` as `fused.conv2d_pre` of y (with the statistics when it gave them)."""
    stats = isinstance(conv, fused.Conv2dStatsOp)
    fused_conv = fused.Conv2dPreOp(y, scale, shift, conv.weight, conv.bias, nn.ints(conv.strides), nn.ints(conv.pads),
                                   nn.ints(conv.dilations), conv.group.value.data, "relu", stats)
    fused_conv.attributes.update(conv.attributes)
    for old, new in zip(conv.results, fused_conv.results):
        new.name_hint = old.name_hint
        old.replace_all_uses_with(new)
    for a in applied.values():
        if a.stats is conv:
            a.stats, a.y = fused_conv, fused_conv.result
    conv.parent.insert_op_before(fused_conv, conv)
    conv.detach()
    conv.erase()


def materialize(store, relu: nn.ReluOp, applied: list[SSAValue]) -> str:
    """Make relu(batch_norm(y)) again, as one `fused.batch_norm_apply`, for the ReLU's remaining
    readers: in the forward when a forward op other than a fused conv reads it, else just before
    its first backward reader (recompute). Returns what was chosen: "forward", "recompute", "none"."""
    readers = [use.operation for use in relu.result.uses]
    if not readers:
        relu.detach()
        relu.erase()
        return "none"
    if any(nn.phase_of(r) == "forward" for r in readers):
        anchor, chosen = relu, "forward"
    else:
        anchor, chosen = min(readers, key=relu.parent.get_operation_index), "recompute"
    b = Builder(store, anchor)
    b.hint = f"{relu.result.name_hint or 'relu'}_{chosen}"
    z = b.op(fused.BatchNormApplyOp(*applied, act="relu"))
    relu.result.replace_all_uses_with(z)
    relu.detach()
    relu.erase()
    return chosen


def fuse_backward(store, backward: nn.BatchNormBackwardOp, a: Applied, lowering) -> None:
    """BatchNorm's backward (and the backward of the ReLU after it, when its gradient goes only
    there): its reductions (and the ReLU's mask) as post-processing of the backward-data conv
    that gives its gradient (`fused.conv2d_backward_data_sums`, on a target with pre/post units:
    `post_processed`), else a pass of their own, `fused.batch_norm_backward_sums`; then
    `fused.batch_norm_backward_apply` (the input gradient)."""
    grad, relu, mask = backward.grad, False, None
    owner = grad.owner
    if isinstance(owner, nn.ReluBackwardOp) and len(list(grad.uses)) == 1:
        z = owner.input.owner
        if isinstance(z, fused.BatchNormApplyOp) and not z.others and z.act.data == "relu" and \
                (z.input, z.scale, z.shift) == (a.y, a.scale, a.shift):
            grad, relu, mask = owner.grad, True, owner
    b = Builder(store, backward)
    convs = lowering is not None
    sums = post_processed(grad, relu, a) if convs else None
    shared = second_post_processed(grad, relu, a, lowering) if convs and sums is None else None
    if sums is not None:
        grad, relu = sums.result, False  # masked already
        _, dscale, dbias, c2, c3 = sums.results[:5]
    elif shared is not None:
        grad = shared.result
        dscale, dbias, c2, c3 = shared.second_sums
    else:
        dscale, dbias, c2, c3 = b.op(fused.BatchNormBackwardSumsOp(grad, a.y, a.scale, a.shift, a.mean, a.invstd,
                                                                   relu)).owner.results
    dx = b.op(fused.BatchNormBackwardApplyOp(grad, a.y, a.scale, a.shift, c2, c3, relu))
    for old, new in zip(backward.results, (dx, dscale, dbias)):
        old.replace_all_uses_with(new)
    backward.detach()
    backward.erase()
    if mask is not None:
        mask.detach()
        mask.erase()


def post_processed(grad: SSAValue, relu: bool, a: Applied) -> fused.Conv2dBackwardDataSumsOp | None:
    """`grad` (masked by this BatchNorm's ReLU when `relu`) as a `fused.conv2d_backward_data_sums`
    when it is a stride-1 backward-data conv's result, or the sum of one and another gradient
    (residual fan-out: the other is added into the conv's output tiles), or such a sum masked
    by a stored ReLU output's `nn.relu_backward` (a residual block's end, whose mask the block's
    BatchNorms share: the first one's backward takes the conv, the others read the masked sum).
    The conv (and the add, the ReLU backward) are replaced; None when the pattern is not there."""
    mask_op = grad.owner if not relu and isinstance(grad.owner, nn.ReluBackwardOp) else None
    total = mask_op.grad if mask_op is not None else grad
    if len(list(total.uses)) != 1:
        return None
    conv, residual = split_sum(total)
    if conv is None:
        return None
    anchor = total.owner
    sums = fused.Conv2dBackwardDataSumsOp(conv.grad, conv.weight, a.y, a.scale, a.shift, a.mean, a.invstd,
                                          nn.ints(conv.strides), nn.ints(conv.pads), nn.ints(conv.dilations),
                                          conv.group.value.data, relu, residual,
                                          mask_op.input if mask_op is not None else None)
    sums.attributes.update(conv.attributes)
    for result, hint in zip(sums.results, ("", "_dscale", "_dbias", "_c2", "_c3")):
        result.name_hint = f"{conv.result.name_hint}{hint}"
    anchor.parent.insert_op_before(sums, anchor)
    (grad if mask_op is not None else total).replace_all_uses_with(sums.result)
    for op in (mask_op, anchor if anchor is not conv else None, conv):
        if op is not None:
            op.detach()
            op.erase()
    return sums


def second_post_processed(grad: SSAValue, relu: bool, a: Applied, lowering) -> fused.Conv2dBackwardDataSumsOp | None:
    """When `grad` is the (masked) result of a `fused.conv2d_backward_data_sums` of another
    BatchNorm (a residual block's end: bn3 took the conv, this is the shortcut's BatchNorm), that
    op with this BatchNorm's reductions too (`second`), in its place, when its buffers fit; None
    otherwise."""
    from nncc.compiler.codegen.bn_nest import backward_data_sums_nest
    from nncc.compiler.codegen.group_nest import scratch
    from nncc.support.errors import NnccError

    old = grad.owner
    if relu or not isinstance(old, fused.Conv2dBackwardDataSumsOp) or grad is not old.result or old.second \
            or old.relu is not None or old.pre or old.normalized or nn.shape_of(a.y) != nn.shape_of(old.input):
        return None
    new = sums_like(old, old.grad, (), False, False, [a.y, a.scale, a.mean, a.invstd])
    try:
        backward_data_sums_nest(scratch(lowering), new).erase()
    except NnccError:  # the second BatchNorm's buffers do not fit beside the conv's
        new.erase()
        return None
    replace_conv(old, new)
    for result, hint in zip(new.second_sums, ("_dscale2", "_dbias2", "_c2_2", "_c3_2")):
        result.name_hint = f"{new.result.name_hint}{hint}"
    return new


def split_sum(total: SSAValue) -> tuple[nn.Conv2dBackwardDataOp | None, SSAValue | None]:
    """(the stride-1 backward-data conv whose result is `total` or one addend of it, the other
    addend or None)."""
    def nest_conv(value: SSAValue) -> bool:
        op = value.owner
        return isinstance(op, nn.Conv2dBackwardDataOp) and len(list(value.uses)) == 1 and \
            backward_data_shape(op) is not None
    if nest_conv(total):
        return total.owner, None
    add = total.owner
    if isinstance(add, nn.AddOp) and nn.shape_of(add.lhs) == nn.shape_of(add.rhs) and add.lhs is not add.rhs:
        for value, other in ((add.lhs, add.rhs), (add.rhs, add.lhs)):
            if nest_conv(value):
                return value.owner, other
    return None, None


def pre_process_backward_filters(z: fused.BatchNormApplyOp, a: Applied, lowering) -> None:
    """A recomputed relu(batch_norm(y)) read only by unpadded backward-filters (as their input):
    each becomes `fused.conv2d_backward_filter_pre` of y, normalising its input tiles on the
    pre unit, and the recompute goes (`fused.bn = {saved = "backward-filter pre-processing"}`),
    when the cost model times that faster than the recompute and the plain backward-filters (a
    tile is re-normalised on every reload, and its lanes are the batch)."""
    readers = [use.operation for use in z.result.uses]
    if z.others or (z.input, z.scale, z.shift) != (a.y, a.scale, a.shift) or not readers or not all(
            isinstance(r, nn.Conv2dBackwardFilterOp) and r.input is z.result and r.grad is not z.result
            and r.group.value.data == 1 and not any(nn.ints(r.pads)) for r in readers):
        return
    pres = []
    for reader in readers:
        pre = fused.Conv2dBackwardFilterPreOp(z.input, z.scale, z.shift, reader.grad, reader.result.type,
                                              nn.ints(reader.strides), nn.ints(reader.pads), nn.ints(reader.dilations),
                                              1, z.act.data)
        pre.attributes.update(reader.attributes)
        pre.result.name_hint = reader.result.name_hint
        reader.parent.insert_op_before(pre, reader)
        pres.append(pre)
    if not pre_processing_pays(lowering, z, readers, pres):
        for pre in pres:
            pre.detach()
            pre.erase()
        return
    for reader, pre in zip(readers, pres):
        reader.result.replace_all_uses_with(pre.result)
        reader.detach()
        reader.erase()
    z.detach()
    z.erase()
    if a.stats is not None and "fused.bn" in a.stats.attributes:
        record(a, a.stats.attributes["fused.bn"].data["apply"].data, "backward-filter pre-processing")


def pre_process_gradient(dx: fused.BatchNormBackwardApplyOp, a: Applied, lowering) -> None:
    """BatchNorm backward's elementwise part (dx = scale g + c2 y + c3) as pre-processing of the
    gradient tiles of the stride-1 backward-data of a "same" conv that reads dx: a
    `fused.conv2d_backward_data_sums` gets `pre` operands, a plain one becomes
    `fused.conv2d_backward_data_pre` (either reads g and y and makes dx on the pre unit,
    concurrently with the matrix unit), where the cost model times that faster than the pass
    and the conv alone. The conv stores dx once (its last result) for dx's other readers (the
    backward-filter), which move after it when they were before;
    `fused.bn = {backward = "pre-processing"}` on the stats op, else "pass"."""
    readers = [use.operation for use in dx.result.uses if use.operation.parent is dx.parent]  # (no probe nests)
    convs = [r for r in readers if pre_processable_reader(r, dx.result)]
    if len(convs) != 1:
        return record_backward(a, "pass")
    old = convs[0]
    block = old.parent
    where = block.get_operation_index
    early = [r for r in dict.fromkeys(readers) if r is not old and where(r) < where(old)]
    if any(where(use.operation) <= where(old) for r in early for result in r.results for use in result.uses):
        return record_backward(a, "pass")
    new = pre_processing_form(old, dx)
    if not gradient_pre_processing_pays(lowering, dx, old, new):
        new.erase()
        return record_backward(a, "pass")
    dy = new.dy[0] if isinstance(new, fused.Conv2dBackwardDataSumsOp) else new.dy
    replace_conv(old, new)
    dy.name_hint = dx.result.name_hint
    dx.result.replace_all_uses_with(dy)
    anchor = new
    for reader in sorted(early, key=where):
        reader.detach()
        block.insert_op_after(reader, anchor)
        anchor = reader
    dx.detach()
    dx.erase()
    record_backward(a, "pre-processing")


def pre_processable_reader(op: Operation, dx: SSAValue) -> bool:
    """A stride-1 backward-data of a "same" conv (plain or with a BatchNorm's sums) that reads `dx`
    as its gradient only."""
    from nncc.compiler.codegen.bn_nest import backward_data_conv, pre_processable

    if isinstance(op, fused.Conv2dBackwardDataSumsOp) and not op.pre:
        s = backward_data_shape(backward_data_conv(op))
    elif isinstance(op, nn.Conv2dBackwardDataOp):
        s = backward_data_shape(op)
    else:
        return False
    return op.grad is dx and list(op.operands).count(dx) == 1 and s is not None and pre_processable(s)


def pre_processing_form(old: Operation, dx: fused.BatchNormBackwardApplyOp) -> Operation:
    """`old` (a backward-data reading dx) reading dx's g and y instead, not in a block."""
    conv = (nn.ints(old.strides), nn.ints(old.pads), nn.ints(old.dilations), old.group.value.data)
    if isinstance(old, fused.Conv2dBackwardDataSumsOp):
        return sums_like(old, dx.grad, [dx.input, dx.scale, dx.shift, dx.c2, dx.c3], dx.relu is not None,
                         bool(old.normalized))
    new = fused.Conv2dBackwardDataPreOp(dx.grad, old.weight, dx.input, dx.scale, dx.shift, dx.c2, dx.c3,
                                        old.result.type, *conv, dx.relu is not None)
    new.attributes.update(old.attributes)
    return new


def sums_like(old: fused.Conv2dBackwardDataSumsOp, grad: SSAValue, pre, pre_relu: bool,
              normalized: bool, second=None) -> fused.Conv2dBackwardDataSumsOp:
    """`old` with another gradient, pre-processing, normalized result (and second BatchNorm), not
    in a block."""
    new = fused.Conv2dBackwardDataSumsOp(grad, old.weight, old.input, old.scale, old.shift, old.mean, old.invstd,
                                         nn.ints(old.strides), nn.ints(old.pads), nn.ints(old.dilations),
                                         old.group.value.data, old.relu is not None, old.residual, old.mask,
                                         list(pre), pre_relu, normalized,
                                         list(old.second) if second is None else list(second))
    new.attributes.update(old.attributes)
    return new


def replace_conv(old: Operation, new: Operation) -> None:
    """`new` in `old`'s place, for its results (names kept; `new` may have more)."""
    for result, previous in zip(new.results, old.results):
        result.name_hint = previous.name_hint
    old.parent.insert_op_before(new, old)
    for previous, result in zip(old.results, new.results):
        if previous.type == result.type:
            previous.replace_all_uses_with(result)
    old.detach()
    old.erase()


def store_normalized(z: fused.BatchNormApplyOp, a: Applied, lowering) -> None:
    """A recomputed relu(batch_norm(y)) (the backward-filters' input) made instead by the
    backward-data that post-processes this BatchNorm's backward with its ReLU
    (`fused.conv2d_backward_data_sums ... relu`, whose post unit has y scale + shift of each output
    tile anyway: one more map, and a store), when it comes before z's first reader and the cost
    model times that faster than it and the recompute pass: its `normalized` result
    (`fused.bn = {saved = "backward-data post-processing"}`)."""
    readers = [use.operation for use in z.result.uses if use.operation.parent is z.parent]
    if z.others or z.act.data != "relu" or (z.input, z.scale, z.shift) != (a.y, a.scale, a.shift) or not readers:
        return
    block = z.parent
    where = block.get_operation_index
    first = min(where(r) for r in readers)
    convs = [use.operation for use in a.y.uses
             if isinstance(use.operation, fused.Conv2dBackwardDataSumsOp) and use.operation.parent is block
             and use.operation.input is a.y
             and use.operation.relu is not None and not use.operation.normalized
             and (use.operation.scale, use.operation.shift) == (a.scale, a.shift) and where(use.operation) < first]
    if len(convs) != 1:
        return
    old = convs[0]
    new = sums_like(old, old.grad, old.pre, old.pre_relu is not None, True)
    if not normalized_pays(lowering, z, old, new):
        new.erase()
        return
    replace_conv(old, new)
    new.normalized[0].name_hint = (z.result.name_hint or "relu").replace("_recompute", "") + "_post"
    z.result.replace_all_uses_with(new.normalized[0])
    z.detach()
    z.erase()
    if a.stats is not None and "fused.bn" in a.stats.attributes:
        a.stats.attributes["fused.bn"] = DictionaryAttr(dict(a.stats.attributes["fused.bn"].data)
                                                        | {"saved": StringAttr("backward-data post-processing")})


def normalized_pays(lowering, z: fused.BatchNormApplyOp, old, new) -> bool:
    """Whether the backward-data giving the normalized input (`new`, not in a block) is predicted
    faster than the plain one (`old`, out of its block while its nest is built) and the recompute."""
    from nncc.compiler.codegen import bn_nest
    from nncc.compiler.codegen.group_nest import predict, scratch
    from nncc.support.errors import NnccError

    probe = scratch(lowering)
    block, after = old.parent, old.next_op
    old.detach()
    try:
        plain = predict(probe, bn_nest.backward_data_sums_nest(probe, old)).cycles
        plain += predict(probe, bn_nest.apply_nest(probe, z, probe.buffers)).cycles
        try:
            fused_cycles = predict(probe, bn_nest.backward_data_sums_nest(probe, new)).cycles
        except NnccError:  # its buffers do not fit
            return False
    finally:
        block.insert_op_before(old, after)
    return fused_cycles < plain


def record_backward(a: Applied, where: str) -> None:
    """Where BatchNorm backward's elementwise part runs, beside the forward's choices in `fused.bn`."""
    if a.stats is not None and "fused.bn" in a.stats.attributes:
        a.stats.attributes["fused.bn"] = DictionaryAttr(dict(a.stats.attributes["fused.bn"].data)
                                                        | {"backward": StringAttr(where)})


def gradient_pre_processing_pays(lowering, dx: fused.BatchNormBackwardApplyOp, old, new) -> bool:
    """Whether the backward-data with the gradient pre-processed (`new`, not in a block) is
    predicted faster than the pass `dx` and the plain one (`old`). `old` is out of its block
    while its nest is built (its constants are probes' too)."""
    from nncc.compiler.codegen import bn_nest, training_nest
    from nncc.compiler.codegen.group_nest import predict, scratch
    from nncc.support.errors import NnccError

    probe = scratch(lowering)
    block, after = old.parent, old.next_op
    old.detach()
    try:
        if isinstance(old, fused.Conv2dBackwardDataSumsOp):
            plain = predict(probe, bn_nest.backward_data_sums_nest(probe, old)).cycles
        else:
            plain = sum(predict(probe, nest).cycles for nest in training_nest.backward_nests(probe, old, probe.buffers))
        plain += predict(probe, bn_nest.backward_apply_nest(probe, dx, probe.buffers)).cycles
        try:
            nest = bn_nest.backward_data_sums_nest(probe, new) if isinstance(new, fused.Conv2dBackwardDataSumsOp) \
                else bn_nest.backward_data_pre_nest(probe, new)
            fused_cycles = predict(probe, nest).cycles
        except NnccError:  # its buffers do not fit
            return False
    finally:
        block.insert_op_before(old, after)
    return fused_cycles < plain


def probe_lowering(store, target):
    """A scratch lowering for the cost model's comparisons (scan order, double buffers)."""
    from nncc.compiler.codegen.context import Lowering
    from nncc.runtime.program import Program

    return Lowering(target, Program(target, []), store, tile_order="scan", buffers=2)


def pre_processing_pays(lowering, z: fused.BatchNormApplyOp, readers, pres) -> bool:
    """Whether the backward-filters with pre-processing (`pres`) are predicted faster than the
    recompute `z` and the plain backward-filters (`readers`)."""
    from nncc.compiler.codegen import bn_nest, training_nest
    from nncc.compiler.codegen.group_nest import predict, scratch

    probe = scratch(lowering)
    fused_cycles = sum(predict(probe, bn_nest.backward_filter_pre_nest(probe, pre)).cycles for pre in pres)
    plain_cycles = predict(probe, bn_nest.apply_nest(probe, z, probe.buffers)).cycles
    for reader in readers:
        nests = training_nest.backward_nests(probe, reader, probe.buffers)
        plain_cycles += sum(predict(probe, nest).cycles for nest in nests)
    return fused_cycles < plain_cycles
