"""autodiff: turn the inference @main into training steps (forward, loss, backward, SGD update).

The new @main takes the model's inputs and a `target` (one-hot labels for cross-entropy, the
wanted output for MSE) and returns the loss of every step, then per trainable weight its
gradient (of the last step) and its updated value, then the updated BatchNorm running
statistics, then (with momentum) the SGD velocities:

    func.func @main(%input, %target) -> (loss, grad.W..., updated.W..., updated.RUNNING..., velocity.W...)

- forward: the model's ops, BatchNorm in training mode (`nn.batch_norm_train`: batch
  statistics, running statistics updated with `bn-momentum`, ONNX's convention);
- loss: `nn.softmax_cross_entropy` of the logits (a trailing Softmax over the classes is folded
  into the loss: the model is trained on its logits), or `nn.mse_loss`;
- backward: one explicit op or a few per forward op, in reverse order, for the values that
  depend on a trainable weight (gradients of a value read twice are summed with `nn.add`);
- update: `nn.sgd` per trainable weight (lr, momentum, weight decay as torch.optim.SGD).

Trainable weights are the `nn.weight`s read as a conv's weight or bias, a gemm's or matmul's
operand, or a BatchNorm's scale or bias; a BatchNorm's mean and variance are its running
statistics; every other weight is a constant. `steps=K` unrolls K steps on the same batch, each
reading the weights the previous one updated. Every op emitted carries `nn.phase` (forward,
backward or update) and the ONNX nodes of the forward op it belongs to.

An op on the gradient path that has no gradient here is refused in one line naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, ModuleOp, StringAttr
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass

from nncc.compiler.nn_kernels import dropout_mask, lrn_window
from nncc.compiler.weights import sanitize, store_of
from nncc.dialects import nn
from nncc.support.errors import NnccError

LOSSES = ("cross-entropy", "mse")
DROPOUTS = ("seeded", "identity")
INPUT_NAMES, OUTPUT_NAMES = "nn.input_names", "nn.output_names"

TRAINABLE_OPERANDS: dict[type, tuple[str, ...]] = {
    nn.Conv2dOp: ("weight", "bias"),
    nn.GemmOp: ("a", "b", "c"),
    nn.MatMulOp: ("a", "b"),
    nn.BatchNormOp: ("scale", "bias"),
}
"""Operands whose `nn.weight` is a trainable parameter."""

UNARY_BACKWARD: dict[type, type] = {
    nn.ReluOp: nn.ReluBackwardOp,
    nn.SigmoidOp: nn.SigmoidBackwardOp,
    nn.HardSwishOp: nn.HardSwishBackwardOp,
    nn.TanhOp: nn.TanhBackwardOp,
    nn.SiluOp: nn.SiluBackwardOp,
    nn.GeluOp: nn.GeluBackwardOp,
}

GELU_TANH_C, GELU_TANH_K = float(np.sqrt(2.0 / np.pi)), 0.044715
"""GELU's tanh form: 0.5 x (1 + tanh(C (x + K x^3)))."""

DIFFERENTIABLE = (
    nn.Conv2dOp, nn.GemmOp, nn.MatMulOp, nn.BatchNormOp,
    nn.ReluOp, nn.SigmoidOp, nn.HardSwishOp, nn.LeakyReluOp, nn.ClipOp, nn.HardSigmoidOp,
    nn.TanhOp, nn.SiluOp, nn.GeluOp, nn.GeluTanhOp, nn.ErfOp, nn.ExpOp, nn.LogOp, nn.SqrtOp,
    nn.AddOp, nn.SubOp, nn.MulOp, nn.DivOp,
    nn.MaxPool2dOp, nn.AvgPool2dOp, nn.GlobalAvgPoolOp, nn.GlobalMaxPoolOp,
    nn.ReshapeOp, nn.TransposeOp, nn.ConcatOp, nn.ScaleOp, nn.SliceOp, nn.SoftmaxOp, nn.LRNOp, nn.DropoutOp,
)
"""Forward ops with a gradient; any other op on the gradient path is refused."""


def main_of(module: ModuleOp) -> func.FuncOp:
    for op in module.ops:
        if isinstance(op, func.FuncOp) and op.sym_name.data == "main":
            return op
    raise NnccError("autodiff: the module has no func.func @main")


def names_of(module: ModuleOp, key: str, count: int, default: str) -> list[str]:
    attr = module.attributes.get(key)
    if isinstance(attr, ArrayAttr) and len(attr.data) == count:
        return [a.data for a in attr.data]
    return [f"{default}{i}" for i in range(count)]


def describe(op: Operation) -> str:
    nodes = nn.onnx_nodes_of(op)
    return f"ONNX node '{nodes[0]}' ({op.name})" if nodes else f"{op.name} ({op.results[0].name_hint or 'unnamed'})"


def cut_axes(op: nn.SliceOp) -> list[int]:
    """The axes where a slice does more than copy: shorter, or starting later, or stepping (a
    reversed axis of the same length too); none for a copy."""
    starts, steps = nn.ints(op.starts), nn.ints(op.steps)
    return [axis for axis, (a, b) in enumerate(zip(nn.shape_of(op.input), nn.shape_of(op.result)))
            if a != b or starts[axis] != 0 or (steps[axis] != 1 and b > 1)]


def weight_ref(value: SSAValue) -> str | None:
    return value.owner.ref.data if isinstance(value.owner, nn.WeightOp) else None


@dataclass
class Builder:
    """The new @main's ops, in order, each tagged with its phase and ONNX nodes."""

    ops: list[Operation] = field(default_factory=list)

    def emit(self, op: Operation, phase: str, like: Operation | None = None, hint: str | None = None) -> Operation:
        op.attributes[nn.PHASE] = StringAttr(phase)
        if like is not None and nn.onnx_nodes_of(like):
            op.attributes[nn.ONNX_NODES] = nn.onnx_nodes_attr(nn.onnx_nodes_of(like))
        if hint:
            for index, result in enumerate(op.results):
                result.name_hint = sanitize(hint if index == 0 else f"{hint}_{index}")
        self.ops.append(op)
        return op


@dataclass(frozen=True)
class AutodiffPass(ModulePass):
    """One training step (or `steps`) of @main: forward, loss, backward, SGD update."""

    name = "autodiff"

    loss: str = "cross-entropy"
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    steps: int = 1
    bn_momentum: float = 0.9
    dropout: str = "seeded"  # "seeded": each step its own mask (`nn_kernels.dropout_mask`); "identity"
    dropout_seed: int = 0

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.loss not in LOSSES:
            raise NnccError(f"autodiff: loss '{self.loss}' is not one of {', '.join(LOSSES)}")
        if self.dropout not in DROPOUTS:
            raise NnccError(f"autodiff: dropout '{self.dropout}' is not one of {', '.join(DROPOUTS)}")
        if self.steps < 1:
            raise NnccError(f"autodiff: steps must be at least 1, got {self.steps}")
        if self.lr < 0 or self.momentum < 0 or self.weight_decay < 0:
            raise NnccError("autodiff: lr, momentum and weight decay must be >= 0")
        Autodiff(self, op).run()


class Autodiff:
    def __init__(self, options: AutodiffPass, module: ModuleOp):
        self.options, self.module = options, module
        self.main = main_of(module)
        self.block = self.main.body.block
        self.store = store_of(module, "autodiff")
        self.builder = Builder()
        returned = self.block.last_op
        assert isinstance(returned, func.ReturnOp)
        if len(returned.operands) != 1:
            raise NnccError(f"autodiff: training needs a model with one output (the prediction), "
                            f"this one has {len(returned.operands)}")
        self.output = returned.operands[0]
        self.forward_ops = [o for o in self.block.ops if not isinstance(o, (nn.WeightOp, func.ReturnOp))]
        self.weight_ops = [o for o in self.block.ops if isinstance(o, nn.WeightOp)]
        self.trainable, self.running = self.classify_weights()
        self.folded_softmax = self.softmax_to_fold()
        self.check_supported()

    # ------------------------------------------------------------------ analysis

    def classify_weights(self) -> tuple[list[SSAValue], list[SSAValue]]:
        trainable: list[SSAValue] = []
        running: list[SSAValue] = []
        for op in self.forward_ops:
            for operand_name in TRAINABLE_OPERANDS.get(type(op), ()):
                value = getattr(op, operand_name)
                if value is not None and weight_ref(value) is not None and value not in trainable:
                    trainable.append(value)
            if isinstance(op, nn.BatchNormOp):
                running += [v for v in (op.mean, op.var) if weight_ref(v) is not None and v not in running]
        order = {w.result: i for i, w in enumerate(self.weight_ops)}
        trainable.sort(key=order.__getitem__)
        running = [v for v in running if v not in trainable]
        if not trainable:
            raise NnccError("autodiff: the model has no trainable weight (conv, gemm, matmul or BatchNorm "
                            "parameters given as initializers)")
        return trainable, running

    def softmax_to_fold(self) -> nn.SoftmaxOp | None:
        owner = self.output.owner
        if self.options.loss != "cross-entropy":
            return None
        if isinstance(owner, nn.SoftmaxOp) and len(nn.shape_of(owner.input)) == 2 and owner.axis.value.data == 1:
            return owner
        return None

    def requires_grad(self) -> set[SSAValue]:
        """Values of the inference @main that depend on a trainable weight."""
        needs = set(self.trainable)
        for op in self.forward_ops:
            if any(operand in needs for operand in op.operands):
                needs.update(op.results)
        return needs

    def check_supported(self) -> None:
        needs = self.requires_grad()
        logits = self.folded_softmax.input if self.folded_softmax else self.output
        if logits not in needs:
            raise NnccError("autodiff: the model's output does not depend on any trainable weight")
        for op in self.forward_ops:
            if op is self.folded_softmax or not any(r in needs for r in op.results):
                continue
            if not isinstance(op, DIFFERENTIABLE):
                raise NnccError(f"autodiff: {describe(op)} has no gradient in training mode")
            if isinstance(op, nn.MatMulOp) and min(len(nn.shape_of(op.a)), len(nn.shape_of(op.b))) < 2:
                raise NnccError(f"autodiff: {describe(op)}: a matmul with a 1-D operand has no gradient yet")
        shape = nn.shape_of(logits)
        if self.options.loss == "cross-entropy" and len(shape) != 2:
            raise NnccError(f"autodiff: --loss cross-entropy needs N x classes logits, the model's output has "
                            f"shape {list(shape)} (use --loss mse)")

    # ------------------------------------------------------------------ building

    def dropout(self, op: nn.DropoutOp, x: SSAValue, index: int) -> SSAValue:
        """`x` times this step's seeded mask (0, or 1 / (1 - ratio)): an `nn.mul` by a constant;
        `x` itself with dropout=identity or ratio 0.

            %mask = nn.weight "classifier.2.mask0" : tensor<2x4096xf32>
            %y = nn.mul %x, %mask : (tensor<2x4096xf32>, tensor<2x4096xf32>) -> tensor<2x4096xf32>
        """
        ratio = op.ratio.value.data
        if self.options.dropout == "identity":
            return x
        if nn.RATIO_INPUT in op.attributes:
            raise NnccError(f"autodiff: {describe(op)}: its ratio is the graph input "
                            f"'{op.attributes[nn.RATIO_INPUT].data}', known only at run time; training needs a "
                            "constant ratio (or --dropout identity)")
        if ratio == 0.0:
            return x
        name = op.result.name_hint or ""  # as the PyTorch check names it (training_torch.py)
        shape = nn.shape_of(x)
        ref = self.store.add(f"{name}.mask{index}", dropout_mask(self.options.dropout_seed, name, index, shape, ratio))
        mask = nn.WeightOp(ref, shape)
        mask.result.name_hint = sanitize(ref)
        self.builder.ops.append(mask)
        product = self.builder.emit(nn.MulOp(x, mask.result), "forward", op, op.result.name_hint)
        return product.results[0]

    def run(self) -> None:
        b = self.builder
        input_types = [arg.type for arg in self.block.args]
        target_shape = nn.shape_of(self.folded_softmax.input if self.folded_softmax else self.output)
        new_block = Block(arg_types=[*input_types, nn.tensor_type(target_shape)])
        for old, new in zip(self.block.args, new_block.args):
            new.name_hint = old.name_hint
        new_block.args[-1].name_hint = "target"
        inputs = {old: new for old, new in zip(self.block.args, new_block.args)}
        target = new_block.args[-1]

        weights: dict[SSAValue, SSAValue] = {}
        for weight in self.weight_ops:
            clone = nn.WeightOp(weight.ref.data, nn.shape_of(weight.result))
            clone.result.name_hint = weight.result.name_hint
            b.ops.append(clone)
            weights[weight.result] = clone.result
        velocities: dict[SSAValue, SSAValue] = {}
        if self.options.momentum:
            for w in self.trainable:
                ref = self.store.add(f"{weight_ref(w)}.velocity", np.zeros(nn.shape_of(w), np.float32))
                clone = nn.WeightOp(ref, nn.shape_of(w))
                clone.result.name_hint = sanitize(ref)
                b.ops.append(clone)
                velocities[w] = clone.result

        losses, grads = [], {}
        for index in range(self.options.steps):
            loss, grads = self.step(index, inputs, target, weights, velocities)
            losses.append(loss)
        if len(losses) > 1:
            losses = [b.emit(nn.ConcatOp(losses, 0), "forward", hint="loss").results[0]]

        outputs = [("loss", losses[0])]
        outputs += [(f"grad.{weight_ref(w)}", grads[w]) for w in self.trainable]
        outputs += [(f"updated.{weight_ref(w)}", weights[w]) for w in (*self.trainable, *self.running)]
        outputs += [(f"velocity.{weight_ref(w)}", velocities[w]) for w in self.trainable if w in velocities]
        new_block.add_ops(b.ops)
        new_block.add_op(func.ReturnOp(*(value for _, value in outputs)))
        function = func.FuncOp("main", (list(new_block.arg_types), [v.type for _, v in outputs]), Region(new_block))
        self.main.detach()
        self.module.body.block.add_op(function)
        input_names = names_of(self.module, INPUT_NAMES, len(self.block.args), "input")
        target_name = "target" if "target" not in input_names else "target.1"
        self.module.attributes[INPUT_NAMES] = ArrayAttr([StringAttr(n) for n in (*input_names, target_name)])
        self.module.attributes[OUTPUT_NAMES] = ArrayAttr([StringAttr(n) for n, _ in outputs])
        self.module.attributes[nn.MODE] = StringAttr("training")

    def step(self, index: int, inputs: dict, target: SSAValue, weights: dict, velocities: dict):
        """Step `index`: the forward ops read `weights` (updated in place to the new values)."""
        b = self.builder
        values: dict[SSAValue, SSAValue] = {**inputs, **weights}
        saved: dict[Operation, nn.BatchNormTrainOp] = {}
        for op in self.forward_ops:
            if op is self.folded_softmax:
                continue
            if isinstance(op, nn.DropoutOp):
                values[op.result] = self.dropout(op, values[op.input], index)
                continue
            if isinstance(op, nn.BatchNormOp):
                train = nn.BatchNormTrainOp(*(values[v] for v in op.operands), op.epsilon.value.data,
                                            self.options.bn_momentum)
                b.emit(train, "forward", op, op.result.name_hint)
                saved[op] = train
                values[op.result] = train.result
                continue
            clone = op.clone(value_mapper=values)
            b.emit(clone, "forward", op)
            for old, new in zip(op.results, clone.results):
                new.name_hint = old.name_hint
                values[old] = new
        prediction = values[self.folded_softmax.input if self.folded_softmax else self.output]
        loss_op, grad_op = ((nn.SoftmaxCrossEntropyOp, nn.SoftmaxCrossEntropyBackwardOp)
                            if self.options.loss == "cross-entropy" else (nn.MseLossOp, nn.MseLossBackwardOp))
        loss = b.emit(loss_op(prediction, target), "forward", hint="loss").results[0]
        seed = b.emit(grad_op(prediction, target), "backward", hint="loss_grad").results[0]

        needs = self.requires_grad()
        grads: dict[SSAValue, SSAValue] = {}

        def accumulate(old: SSAValue, grad: SSAValue, like: Operation) -> None:
            if old not in needs:
                return
            if old in grads:
                grads[old] = b.emit(nn.AddOp(grads[old], grad), "backward", like,
                                    f"{old.name_hint or 'v'}_grad_sum").results[0]
            else:
                grads[old] = grad

        accumulate(self.folded_softmax.input if self.folded_softmax else self.output, seed, grad_op)
        for op in reversed(self.forward_ops):
            if op is self.folded_softmax or op.results[0] not in grads:
                continue
            Backward(b, op, values, grads[op.results[0]], accumulate, needs, saved.get(op), self.store).run()

        for w in self.trainable:
            grad = grads.get(w)
            if grad is None:
                continue
            velocity = velocities.get(w)
            sgd = nn.SgdOp(weights[w], grad, velocity, self.options.lr, self.options.momentum,
                           self.options.weight_decay)
            b.emit(sgd, "update", hint=f"{weight_ref(w)}_updated")
            weights[w] = sgd.result
            if velocity is not None:
                velocities[w] = sgd.new_velocity
        for op, train in saved.items():
            for old, new in ((op.mean, train.new_running_mean), (op.var, train.new_running_var)):
                if old in self.running:
                    weights[old] = new
        return loss, {w: grads[w] for w in self.trainable if w in grads}


class Backward:
    """The backward ops of one forward op `op` (of the inference @main): `dy` is the gradient
    of its (first) result; `values` maps its operands to the training step's values."""

    def __init__(self, builder: Builder, op: Operation, values: dict, dy: SSAValue, accumulate,
                 needs: set[SSAValue], train: nn.BatchNormTrainOp | None, store=None):
        self.b, self.op, self.values, self.dy, self.accumulate = builder, op, values, dy, accumulate
        self.needs, self.train, self.store = needs, train, store
        self.hint = op.results[0].name_hint or op.name.removeprefix("nn.")

    def emit(self, op: Operation, suffix: str) -> SSAValue:
        return self.b.emit(op, "backward", self.op, f"{self.hint}_{suffix}").results[0]

    def give(self, operand: SSAValue, grad: SSAValue) -> None:
        self.accumulate(operand, grad, self.op)

    def v(self, operand: SSAValue) -> SSAValue:
        return self.values[operand]

    def reduce_to(self, grad: SSAValue, shape: tuple[int, ...], suffix: str) -> SSAValue:
        """`grad` summed over the axes a broadcast to its shape added or stretched."""
        full = nn.shape_of(grad)
        if full == tuple(shape):
            return grad
        lead = len(full) - len(shape)
        axes = list(range(lead)) + [i for i in range(lead, len(full)) if shape[i - lead] == 1 and full[i] != 1]
        if axes:
            grad = self.emit(nn.ReduceSumOp(grad, axes), f"{suffix}_sum")
        if nn.shape_of(grad) != tuple(shape):
            grad = self.emit(nn.ReshapeOp(grad, shape), f"{suffix}_shape")
        return grad

    def run(self) -> None:
        op, dy = self.op, self.dy
        method = getattr(self, f"grad_{type(op).__name__}", None)
        if method is not None:
            method(op, dy)
        elif type(op) in UNARY_BACKWARD:
            self.give(op.input, self.emit(UNARY_BACKWARD[type(op)](dy, self.v(op.input)), "grad"))
        else:  # check_supported refused it
            raise NnccError(f"autodiff: {describe(op)} has no gradient in training mode")

    # ------------------------------------------------------------------ one method per op type

    def grad_Conv2dOp(self, op: nn.Conv2dOp, dy: SSAValue) -> None:
        attrs = (nn.ints(op.strides), nn.ints(op.pads), nn.ints(op.dilations), op.group.value.data)
        wanted = self.wanted()
        if op.input in wanted:
            self.give(op.input, self.emit(nn.Conv2dBackwardDataOp(dy, self.v(op.weight), nn.shape_of(op.input),
                                                                  *attrs), "grad_input"))
        if op.weight in wanted:
            self.give(op.weight, self.emit(nn.Conv2dBackwardFilterOp(self.v(op.input), dy, nn.shape_of(op.weight),
                                                                     *attrs), "grad_weight"))
        if op.bias is not None and op.bias in wanted:
            self.give(op.bias, self.emit(nn.ReduceSumOp(dy, [0, 2, 3]), "grad_bias"))

    def grad_GemmOp(self, op: nn.GemmOp, dy: SSAValue) -> None:
        ta, tb, alpha, beta = bool(op.trans_a.value), bool(op.trans_b.value), op.alpha.value.data, op.beta.value.data
        a, bb = self.v(op.a), self.v(op.b)
        da = (nn.GemmOp(dy, bb, None, False, not tb, alpha, 0.0) if not ta
              else nn.GemmOp(bb, dy, None, tb, True, alpha, 0.0))
        if op.a in self.wanted():
            self.give(op.a, self.emit(da, "grad_a"))
        db = (nn.GemmOp(a, dy, None, not ta, False, alpha, 0.0) if not tb
              else nn.GemmOp(dy, a, None, True, ta, alpha, 0.0))
        if op.b in self.wanted():
            self.give(op.b, self.emit(db, "grad_b"))
        if op.c is not None and op.c in self.wanted():
            dc = self.reduce_to(dy, nn.shape_of(op.c), "grad_c")
            if beta != 1.0:
                dc = self.emit(nn.ScaleOp(dc, beta), "grad_c_scaled")
            self.give(op.c, dc)

    def swap_last(self, value: SSAValue, suffix: str) -> SSAValue:
        rank = len(nn.shape_of(value))
        perm = list(range(rank - 2)) + [rank - 1, rank - 2]
        return self.emit(nn.TransposeOp(value, perm), suffix)

    def grad_MatMulOp(self, op: nn.MatMulOp, dy: SSAValue) -> None:
        a, bb = self.v(op.a), self.v(op.b)
        if op.a in self.wanted():
            da = self.emit(nn.MatMulOp(dy, self.swap_last(bb, "b_t")), "grad_a")
            self.give(op.a, self.reduce_to(da, nn.shape_of(op.a), "grad_a"))
        if op.b in self.wanted():
            db = self.emit(nn.MatMulOp(self.swap_last(a, "a_t"), dy), "grad_b")
            self.give(op.b, self.reduce_to(db, nn.shape_of(op.b), "grad_b"))

    def grad_BatchNormOp(self, op: nn.BatchNormOp, dy: SSAValue) -> None:
        t = self.train
        back = nn.BatchNormBackwardOp(dy, t.input, t.scale, t.saved_mean, t.saved_invstd)
        self.b.emit(back, "backward", op, f"{self.hint}_grad")
        self.give(op.input, back.result)
        self.give(op.scale, back.grad_scale)
        self.give(op.bias, back.grad_bias)

    def grad_LeakyReluOp(self, op: nn.LeakyReluOp, dy: SSAValue) -> None:
        self.give(op.input, self.emit(nn.LeakyReluBackwardOp(dy, self.v(op.input), op.alpha.value.data), "grad"))

    def grad_ClipOp(self, op: nn.ClipOp, dy: SSAValue) -> None:
        self.give(op.input, self.emit(nn.ClipBackwardOp(dy, self.v(op.input), op.min.value.data,
                                                        op.max.value.data), "grad"))

    def grad_HardSigmoidOp(self, op: nn.HardSigmoidOp, dy: SSAValue) -> None:
        self.give(op.input, self.emit(nn.HardSigmoidBackwardOp(dy, self.v(op.input), op.alpha.value.data,
                                                               op.beta.value.data), "grad"))

    def grad_ScaleOp(self, op: nn.ScaleOp, dy: SSAValue) -> None:
        self.give(op.input, self.emit(nn.ScaleOp(dy, op.factor.value.data), "grad"))

    def grad_AddOp(self, op: nn.AddOp, dy: SSAValue) -> None:
        for operand, suffix in ((op.lhs, "grad_lhs"), (op.rhs, "grad_rhs")):
            if operand in self.wanted():
                self.give(operand, self.reduce_to(dy, nn.shape_of(operand), suffix))

    def grad_SubOp(self, op: nn.SubOp, dy: SSAValue) -> None:
        if op.lhs in self.wanted():
            self.give(op.lhs, self.reduce_to(dy, nn.shape_of(op.lhs), "grad_lhs"))
        if op.rhs in self.wanted():
            reduced = self.reduce_to(dy, nn.shape_of(op.rhs), "grad_rhs")
            self.give(op.rhs, self.emit(nn.ScaleOp(reduced, -1.0), "grad_rhs_neg"))

    def grad_MulOp(self, op: nn.MulOp, dy: SSAValue) -> None:
        if op.lhs in self.wanted():
            prod = self.emit(nn.MulOp(dy, self.v(op.rhs)), "grad_lhs_mul")
            self.give(op.lhs, self.reduce_to(prod, nn.shape_of(op.lhs), "grad_lhs"))
        if op.rhs in self.wanted():
            prod = self.emit(nn.MulOp(dy, self.v(op.lhs)), "grad_rhs_mul")
            self.give(op.rhs, self.reduce_to(prod, nn.shape_of(op.rhs), "grad_rhs"))

    def grad_DivOp(self, op: nn.DivOp, dy: SSAValue) -> None:
        rhs = self.v(op.rhs)
        if op.lhs in self.wanted():
            quotient = self.emit(nn.DivOp(dy, rhs), "grad_lhs_div")
            self.give(op.lhs, self.reduce_to(quotient, nn.shape_of(op.lhs), "grad_lhs"))
        if op.rhs in self.wanted():  # d(l / r)/dr = -(l / r) / r
            prod = self.emit(nn.MulOp(dy, self.v(op.result)), "grad_rhs_mul")
            quotient = self.emit(nn.DivOp(prod, rhs), "grad_rhs_div")
            reduced = self.reduce_to(quotient, nn.shape_of(op.rhs), "grad_rhs")
            self.give(op.rhs, self.emit(nn.ScaleOp(reduced, -1.0), "grad_rhs_neg"))

    def pool_attrs(self, op) -> tuple:
        return (nn.ints(op.kernel), nn.ints(op.strides), nn.ints(op.pads), nn.ints(op.dilations), bool(op.ceil_mode.value))

    def grad_MaxPool2dOp(self, op: nn.MaxPool2dOp, dy: SSAValue) -> None:
        self.give(op.input, self.emit(nn.MaxPool2dBackwardOp(dy, self.v(op.input), *self.pool_attrs(op)), "grad"))

    def grad_AvgPool2dOp(self, op: nn.AvgPool2dOp, dy: SSAValue) -> None:
        back = nn.AvgPool2dBackwardOp(dy, nn.shape_of(op.input), *self.pool_attrs(op), bool(op.count_include_pad.value))
        self.give(op.input, self.emit(back, "grad"))

    def grad_GlobalAvgPoolOp(self, op: nn.GlobalAvgPoolOp, dy: SSAValue) -> None:
        self.give(op.input, self.emit(nn.GlobalAvgPoolBackwardOp(dy, nn.shape_of(op.input)), "grad"))

    def grad_GlobalMaxPoolOp(self, op: nn.GlobalMaxPoolOp, dy: SSAValue) -> None:
        self.give(op.input, self.emit(nn.GlobalMaxPoolBackwardOp(dy, self.v(op.input)), "grad"))

    def grad_ReshapeOp(self, op: nn.ReshapeOp, dy: SSAValue) -> None:
        self.give(op.input, self.emit(nn.ReshapeOp(dy, nn.shape_of(op.input)), "grad"))

    def grad_TransposeOp(self, op: nn.TransposeOp, dy: SSAValue) -> None:
        perm = nn.ints(op.perm)
        inverse = [perm.index(i) for i in range(len(perm))]
        self.give(op.input, self.emit(nn.TransposeOp(dy, inverse), "grad"))

    def grad_ConcatOp(self, op: nn.ConcatOp, dy: SSAValue) -> None:
        axis, offset = op.axis.value.data, 0
        for index, operand in enumerate(op.inputs):
            shape = nn.shape_of(operand)
            if operand in self.wanted():
                starts = [offset if i == axis else 0 for i in range(len(shape))]
                self.give(operand, self.emit(nn.SliceOp(dy, starts, [1] * len(shape), shape), f"grad_{index}"))
            offset += shape[axis]

    def grad_SliceOp(self, op: nn.SliceOp, dy: SSAValue) -> None:
        """The gradient scattered back to its place, one cut axis at a time (the last first):
        a reversed axis (negative step) reversed back first (`nn.slice` with step -1), so that
        it is the slice with the positive step from its lowest element; a strided axis
        interleaved with zeros (a concat on a new axis, then a reshape), zeros before and after
        (a concat).

            slice [1::2] of 6 rows:  dy (2 rows) -> [dy0, 0, dy1, 0] -> [0, dy0, 0, dy1, 0, 0]
            slice [4::-2] of 6 rows: dy (3 rows) -> [dy2, dy1, dy0] -> [dy2, 0, dy1, 0, dy0, 0]
        """
        shape, grad = nn.shape_of(op.input), dy
        starts, steps = nn.ints(op.starts), nn.ints(op.steps)
        for axis in reversed(cut_axes(op)):
            start, step, count = starts[axis], steps[axis], nn.shape_of(grad)[axis]
            if step < 0:
                start, step = start + (count - 1) * step, -step
                if count > 1:
                    grad = self.reverse(grad, axis, f"grad{axis}_reversed")
            grad = self.unslice(grad, axis, shape[axis], start, step, f"grad{axis}")
        self.give(op.input, grad)

    def reverse(self, value: SSAValue, axis: int, suffix: str) -> SSAValue:
        """`value` with `axis` reversed: an `nn.slice` from its last element by step -1."""
        shape = nn.shape_of(value)
        starts = [size - 1 if i == axis else 0 for i, size in enumerate(shape)]
        steps = [-1 if i == axis else 1 for i in range(len(shape))]
        return self.emit(nn.SliceOp(value, starts, steps, shape), suffix)

    def unslice(self, grad: SSAValue, axis: int, length: int, start: int, step: int, suffix: str) -> SSAValue:
        """`grad` (a slice's gradient along `axis`: `start`, `step`) placed in `length` positions."""
        shape = nn.shape_of(grad)
        count = shape[axis]
        if step > 1 and count > 1:
            column = shape[:axis + 1] + (1,) + shape[axis + 1:]
            gaps = self.zeros(shape[:axis + 1] + (step - 1,) + shape[axis + 1:])
            spread = self.emit(nn.ConcatOp([self.emit(nn.ReshapeOp(grad, column), f"{suffix}_column"), gaps], axis + 1),
                               f"{suffix}_spread")
            grad = self.emit(nn.ReshapeOp(spread, shape[:axis] + (count * step,) + shape[axis + 1:]), f"{suffix}_rows")
            if start + count * step > length:  # the gaps after the last element run past the end
                kept = shape[:axis] + (length - start,) + shape[axis + 1:]
                grad = self.emit(nn.SliceOp(grad, [0] * len(shape), [1] * len(shape), kept), f"{suffix}_trim")
        covered = nn.shape_of(grad)[axis]
        parts = []
        for size, part in ((start, None), (covered, grad), (length - start - covered, None)):
            if size:
                parts.append(part if part is not None else self.zeros(shape[:axis] + (size,) + shape[axis + 1:]))
        return self.emit(nn.ConcatOp(parts, axis), f"{suffix}_place") if len(parts) > 1 else grad

    def zeros(self, shape: tuple[int, ...]) -> SSAValue:
        return self.constant("zeros", np.zeros(shape, dtype=np.float32))

    def constant(self, name: str, array: np.ndarray) -> SSAValue:
        """A constant tensor of the backward graph (a weight that is not trained)."""
        ref = self.store.add(f"{self.hint}.{name}", np.asarray(array, dtype=np.float32))
        weight = nn.WeightOp(ref, tuple(np.shape(array)))
        weight.result.name_hint = sanitize(ref)
        self.b.ops.append(weight)
        return weight.result

    def grad_DropoutOp(self, op: nn.DropoutOp, dy: SSAValue) -> None:
        """dy times the step's mask (the forward's `nn.mul` operand), or dy (identity)."""
        forward = self.v(op.result)
        if forward is self.v(op.input):
            self.give(op.input, dy)
        else:
            self.give(op.input, self.emit(nn.MulOp(dy, forward.owner.rhs), "grad"))

    def grad_SoftmaxOp(self, op: nn.SoftmaxOp, dy: SSAValue) -> None:
        """dx = y (dy - sum(dy y)) along the axis (a Softmax inside the model, or the output's with
        --loss mse)."""
        y, axis = self.v(op.result), op.axis.value.data
        shape = nn.shape_of(y)
        sums = self.emit(nn.ReduceSumOp(self.emit(nn.MulOp(dy, y), "grad_dy_y"), [axis]), "grad_sum")
        kept = self.emit(nn.ReshapeOp(sums, shape[:axis] + (1,) + shape[axis + 1:]), "grad_sum_kept")
        self.give(op.input, self.emit(nn.MulOp(y, self.emit(nn.SubOp(dy, kept), "grad_centred")), "grad"))

    def grad_LRNOp(self, op: nn.LRNOp, dy: SSAValue) -> None:
        """y = x d^-beta, d = bias + alpha / size * B x^2 with B the channel window (a 1x1 conv):
        dx = dy d^-beta - 2 alpha beta / size * x * B^T (dy y / d)."""
        x, y = self.v(op.input), self.v(op.result)
        size, alpha, beta, bias = (op.size.value.data, op.alpha.value.data, op.beta.value.data,
                                   op.bias.value.data)
        window = lrn_window(nn.shape_of(x)[1], size)

        def channel_sums(value: SSAValue, band: np.ndarray, suffix: str) -> SSAValue:
            weight = self.constant(f"{suffix}_band", band[:, :, None, None])
            return self.emit(nn.Conv2dOp(value, weight, None, (1, 1), (0, 0, 0, 0), (1, 1), 1), suffix)

        squares = channel_sums(self.emit(nn.MulOp(x, x), "grad_square"), window, "grad_window")
        d = self.emit(nn.AddOp(self.emit(nn.ScaleOp(squares, alpha / size), "grad_scaled"),
                               self.constant("bias", np.array([bias]))), "grad_d")
        power = self.emit(nn.ExpOp(self.emit(nn.ScaleOp(self.emit(nn.LogOp(d), "grad_log"), -beta), "grad_exponent")),
                          "grad_power")
        direct = self.emit(nn.MulOp(dy, power), "grad_direct")
        spread = channel_sums(self.emit(nn.DivOp(self.emit(nn.MulOp(dy, y), "grad_dy_y"), d), "grad_ratio"),
                              window.T, "grad_spread")
        through = self.emit(nn.ScaleOp(self.emit(nn.MulOp(x, spread), "grad_x_spread"), -2 * alpha * beta / size),
                            "grad_through")
        self.give(op.input, self.emit(nn.AddOp(direct, through), "grad"))

    def grad_GeluTanhOp(self, op: nn.GeluTanhOp, dy: SSAValue) -> None:
        """t = tanh(C x (1 + K x^2)): dx = dy (0.5 (1 + t) + 0.5 C x (1 - t^2) (1 + 3 K x^2))."""
        x = self.v(op.input)
        one = self.constant("one", np.array([1.0]))
        square = self.emit(nn.MulOp(x, x), "grad_square")

        def one_plus(factor: float, suffix: str) -> SSAValue:  # 1 + factor x^2
            return self.emit(nn.AddOp(self.emit(nn.ScaleOp(square, factor), f"{suffix}_x2"), one), suffix)

        inner = self.emit(nn.ScaleOp(self.emit(nn.MulOp(x, one_plus(GELU_TANH_K, "grad_cubic")), "grad_u0"),
                                     GELU_TANH_C), "grad_u")
        t = self.emit(nn.TanhOp(inner), "grad_tanh")
        half = self.emit(nn.ScaleOp(self.emit(nn.AddOp(t, one), "grad_1t"), 0.5), "grad_half")
        sech2 = self.emit(nn.SubOp(one, self.emit(nn.MulOp(t, t), "grad_t2")), "grad_sech2")
        slope = self.emit(nn.ScaleOp(one_plus(3 * GELU_TANH_K, "grad_du"), 0.5 * GELU_TANH_C), "grad_slope")
        rest = self.emit(nn.MulOp(self.emit(nn.MulOp(x, sech2), "grad_x_sech2"), slope), "grad_rest")
        self.give(op.input, self.emit(nn.MulOp(dy, self.emit(nn.AddOp(half, rest), "grad_deriv")), "grad"))

    def grad_ErfOp(self, op: nn.ErfOp, dy: SSAValue) -> None:
        """erf'(x) = 2 / sqrt(pi) exp(-x^2): dx = dy * scale(exp(scale(x * x, -1)), 2 / sqrt(pi))."""
        x = self.v(op.input)
        gauss = self.emit(nn.ExpOp(self.emit(nn.ScaleOp(self.emit(nn.MulOp(x, x), "grad_square"), -1.0),
                                             "grad_minus_square")), "grad_gauss")
        slope = self.emit(nn.ScaleOp(gauss, float(2.0 / np.sqrt(np.pi))), "grad_slope")
        self.give(op.input, self.emit(nn.MulOp(dy, slope), "grad"))

    def grad_ExpOp(self, op: nn.ExpOp, dy: SSAValue) -> None:
        self.give(op.input, self.emit(nn.MulOp(dy, self.v(op.result)), "grad"))

    def grad_LogOp(self, op: nn.LogOp, dy: SSAValue) -> None:
        self.give(op.input, self.emit(nn.DivOp(dy, self.v(op.input)), "grad"))

    def grad_SqrtOp(self, op: nn.SqrtOp, dy: SSAValue) -> None:
        quotient = self.emit(nn.DivOp(dy, self.v(op.result)), "grad_div")
        self.give(op.input, self.emit(nn.ScaleOp(quotient, 0.5), "grad"))

    def wanted(self) -> set[SSAValue]:
        """The operands of `op` that want a gradient (depend on a trainable weight)."""
        return {operand for operand in self.op.operands if operand in self.needs}
