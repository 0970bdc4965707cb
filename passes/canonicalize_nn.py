"""canonicalize-nn: remove `nn` ops that do nothing, merge chains that do one thing.

- a reshape to the shape it already has, or an identity transpose, disappears;
- reshape(reshape(x)) becomes one reshape, transpose(transpose(x)) one transpose;
- a clip with both bounds infinite disappears, and so does a dropout (the identity in
  inference; a module marked `nn.mode = "training"` keeps it for the autodiff pass);
- ops (and weights) whose results nobody uses are erased;
- GELU as PyTorch exports it, x * 0.5 * (1 + erf(x / sqrt(2))) (nn.div or nn.mul by 1/sqrt(2),
  nn.erf, nn.add of 1, two nn.mul in any association and operand order), becomes one
  `nn.gelu`, its tanh form 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))) (products
  in any association) one `nn.gelu_tanh`, and SiLU, x * sigmoid(x), one `nn.silu`, so that fuse-epilogues can make them a
  conv/gemm's activation. The constants are read from the weight store (opened only when the
  module has an nn.erf; without a store, GELU stays as it is).

    %a = nn.reshape %x : (tensor<1x8x1x1xf32>) -> tensor<1x8xf32>
    %b = nn.reshape %a : (tensor<1x8xf32>) -> tensor<8xf32>
  becomes
    %b = nn.reshape %x : (tensor<1x8x1x1xf32>) -> tensor<8xf32>
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from nncc.compiler.weights import store_of
from nncc.dialects import nn
from nncc.support.errors import NnccError


def inherit_onnx_nodes(new_op, *old_ops) -> None:
    """`new_op` implements the ONNX nodes of all `old_ops`."""
    names: list[str] = []
    for op in old_ops:
        names += [n for n in nn.onnx_nodes_of(op) if n not in names]
    if names:
        new_op.attributes[nn.ONNX_NODES] = nn.onnx_nodes_attr(names)


class RemoveDropout(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: nn.DropoutOp, rewriter: PatternRewriter):
        rewriter.replace(op, [], [op.input])


def in_training(module: ModuleOp) -> bool:
    """The module is (or becomes) a training step: `nn.mode = "training"`, set at import by
    `nncc --train` and kept by autodiff."""
    mode = module.attributes.get(nn.MODE)
    return mode is not None and mode.data == "training"


class RemoveIdentityReshape(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: nn.ReshapeOp, rewriter: PatternRewriter):
        if nn.shape_of(op.input) == nn.shape_of(op.result):
            rewriter.replace(op, [], [op.input])


class MergeReshapes(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: nn.ReshapeOp, rewriter: PatternRewriter):
        producer = op.input.owner
        if isinstance(producer, nn.ReshapeOp):
            merged = nn.ReshapeOp(producer.input, nn.shape_of(op.result))
            inherit_onnx_nodes(merged, producer, op)
            rewriter.replace(op, merged)


class RemoveIdentityTranspose(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: nn.TransposeOp, rewriter: PatternRewriter):
        if list(nn.ints(op.perm)) == list(range(len(nn.ints(op.perm)))):
            rewriter.replace(op, [], [op.input])


class MergeTransposes(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: nn.TransposeOp, rewriter: PatternRewriter):
        producer = op.input.owner
        if isinstance(producer, nn.TransposeOp):
            inner, outer = nn.ints(producer.perm), nn.ints(op.perm)
            merged = nn.TransposeOp(producer.input, [inner[p] for p in outer])
            inherit_onnx_nodes(merged, producer, op)
            rewriter.replace(op, merged)


class RemoveUnboundedClip(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: nn.ClipOp, rewriter: PatternRewriter):
        low, high = op.min.value.data, op.max.value.data
        if math.isinf(low) and low < 0 and math.isinf(high) and high > 0:
            rewriter.replace(op, [], [op.input])


def single_use_owner(value: SSAValue, op_type: type):
    """The `op_type` op computing `value` when `value` has no other user, else None."""
    op = value.owner
    return op if isinstance(op, op_type) and value.has_one_use() else None


class FuseSilu(RewritePattern):
    """mul(x, sigmoid(x)) or mul(sigmoid(x), x) -> silu(x)."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: nn.MulOp, rewriter: PatternRewriter):
        for x, s in ((op.lhs, op.rhs), (op.rhs, op.lhs)):
            sigmoid = single_use_owner(s, nn.SigmoidOp)
            if sigmoid is not None and sigmoid.input == x and nn.shape_of(x) == nn.shape_of(op.result):
                silu = nn.SiluOp(x)
                inherit_onnx_nodes(silu, sigmoid, op)
                silu.result.name_hint = op.result.name_hint
                rewriter.replace(op, silu)
                rewriter.erase(sigmoid)
                return


class FuseGelu(RewritePattern):
    """x * 0.5 * (1 + erf(x / sqrt(2))), as PyTorch exports F.gelu -> gelu(x).

    The root is the outer nn.mul; its three factors x, 0.5 and (1 + erf(...)) may be associated
    either way. Every intermediate result must have no other user (x may have any)."""

    def __init__(self, scalar: Callable[[SSAValue], float | None]):
        self.scalar = scalar

    def is_const(self, value: SSAValue, expected: float) -> bool:
        found = self.scalar(value)
        return found is not None and math.isclose(found, expected, rel_tol=1e-6)

    def scaled_input(self, value: SSAValue) -> tuple[SSAValue, Operation] | None:
        """(x, op) when `value` is x / sqrt(2) or x * (1 / sqrt(2))."""
        op = value.owner
        if not value.has_one_use():
            return None
        if isinstance(op, nn.DivOp) and self.is_const(op.rhs, math.sqrt(2)):
            return op.lhs, op
        if isinstance(op, nn.MulOp):
            for x, c in ((op.lhs, op.rhs), (op.rhs, op.lhs)):
                if self.is_const(c, 1 / math.sqrt(2)):
                    return x, op
        return None

    def one_plus_erf(self, value: SSAValue) -> tuple[SSAValue, list[Operation]] | None:
        """(x, [scale, erf, add]) when `value` is 1 + erf(x / sqrt(2)) (either add order)."""
        add = single_use_owner(value, nn.AddOp)
        if add is None:
            return None
        for e, one in ((add.lhs, add.rhs), (add.rhs, add.lhs)):
            erf = single_use_owner(e, nn.ErfOp)
            if erf is not None and self.is_const(one, 1.0) and (scaled := self.scaled_input(erf.input)):
                return scaled[0], [scaled[1], erf, add]
        return None

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: nn.MulOp, rewriter: PatternRewriter):
        # the three factors: one operand of the root is itself a single-use product
        for inner_value, third in ((op.lhs, op.rhs), (op.rhs, op.lhs)):
            inner = single_use_owner(inner_value, nn.MulOp)
            if inner is None:
                continue
            factors = [inner.lhs, inner.rhs, third]
            for i, j, k in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
                x, half, sum_ = factors[i], factors[j], factors[k]
                match = self.one_plus_erf(sum_)  # first: no store is opened unless there is an erf
                if match is None or match[0] != x or nn.shape_of(x) != nn.shape_of(op.result):
                    continue
                if not self.is_const(half, 0.5):
                    continue
                chain = match[1]
                gelu = nn.GeluOp(x)
                inherit_onnx_nodes(gelu, *chain, inner, op)
                gelu.result.name_hint = op.result.name_hint
                rewriter.replace(op, gelu)
                for dead in (inner, *reversed(chain)):
                    rewriter.erase(dead)
                return


def product_factors(value: SSAValue, root: bool = True) -> tuple[list[SSAValue], list[Operation]]:
    """The factors of a tree of `nn.mul` ops rooted at `value` (every inner product used once,
    by the tree) and the ops of the tree: x * (x * x) -> [x, x, x]."""
    op = value.owner
    if isinstance(op, nn.MulOp) and (root or value.has_one_use()):
        lhs, lhs_ops = product_factors(op.lhs, False)
        rhs, rhs_ops = product_factors(op.rhs, False)
        return lhs + rhs, [op, *lhs_ops, *rhs_ops]
    return [value], []


class FuseGeluTanh(RewritePattern):
    """0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))) -> gelu_tanh(x): GELU with
    approximate='tanh' as the legacy exporter spells it (x * x * x, Mul, Add, Mul, Tanh, Add, Mul,
    Mul), as the ONNX function body of Gelu does (Pow 3, imported as products) and as
    hand-written code does (HF's NewGELU). Each product may be associated and ordered any way;
    every intermediate result must have no other user (x may have any)."""

    def __init__(self, scalar: Callable[[SSAValue], float | None]):
        self.scalar = scalar

    def split(self, factors: list[SSAValue], constant: float) -> list[SSAValue] | None:
        """`factors` without the one scalar constant equal to `constant`, else None."""
        found = [i for i, f in enumerate(factors) if (c := self.scalar(f)) is not None
                 and math.isclose(c, constant, rel_tol=1e-6)]
        return None if len(found) != 1 else factors[:found[0]] + factors[found[0] + 1:]

    def sum_with(self, value: SSAValue, term: Callable[[SSAValue], list[Operation] | None],
                 other: Callable[[SSAValue], bool]) -> list[Operation] | None:
        """The ops of `value` = a + b (single use, either order), `term(a)` matching and `other(b)`."""
        add = single_use_owner(value, nn.AddOp)
        if add is None:
            return None
        for a, b in ((add.lhs, add.rhs), (add.rhs, add.lhs)):
            if other(b) and (ops := term(a)) is not None:
                return [add, *ops]
        return None

    def cubic(self, value: SSAValue, x: SSAValue) -> list[Operation] | None:
        """The ops of `value` = 0.044715 * x * x * x (single use)."""
        if not value.has_one_use():
            return None
        factors, ops = product_factors(value, False)
        return ops if ops and self.split(factors, 0.044715) == [x, x, x] else None

    def tanh_argument(self, value: SSAValue, x: SSAValue) -> list[Operation] | None:
        """The ops of `value` = sqrt(2 / pi) * (x + 0.044715 * x^3) (single use)."""
        if not value.has_one_use():
            return None
        factors, ops = product_factors(value, False)
        rest = self.split(factors, math.sqrt(2 / math.pi))
        if not ops or rest is None or len(rest) != 1:
            return None
        more = self.sum_with(rest[0], lambda a: self.cubic(a, x), lambda b: b == x)
        return None if more is None else ops + more

    def tanh(self, value: SSAValue, x: SSAValue) -> list[Operation] | None:
        """The ops of `value` = tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)) (single use)."""
        op = single_use_owner(value, nn.TanhOp)
        more = self.tanh_argument(op.input, x) if op is not None else None
        return None if more is None else [op, *more]

    def match(self, root: nn.MulOp) -> tuple[SSAValue, list[Operation]] | None:
        """(x, the ops to replace, root first and every op before the ops it reads) or None."""
        factors, ops = product_factors(root.result)
        rest = self.split(factors, 0.5)
        if rest is None or len(rest) != 2:
            return None
        for x, phi in ((rest[0], rest[1]), (rest[1], rest[0])):
            if nn.shape_of(x) != nn.shape_of(root.result):
                continue
            more = self.sum_with(phi, lambda a, x=x: self.tanh(a, x),
                                 lambda b: (c := self.scalar(b)) is not None and math.isclose(c, 1.0))
            if more is not None:
                return x, ops + more
        return None

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: nn.MulOp, rewriter: PatternRewriter):
        match = self.match(op)
        if match is None:
            return
        x, chain = match
        gelu = nn.GeluTanhOp(x)
        inherit_onnx_nodes(gelu, *chain)
        gelu.result.name_hint = op.result.name_hint
        rewriter.replace(op, gelu)
        for dead in chain[1:]:
            if not dead.results[0].uses:
                rewriter.erase(dead)


class StoreScalars:
    """Single-element `nn.weight` values, read from the module's weight store on first use."""

    def __init__(self, module: ModuleOp):
        self.module = module
        self.store = None
        self.failed = False

    def __call__(self, value: SSAValue) -> float | None:
        op = value.owner
        if not isinstance(op, nn.WeightOp) or math.prod(nn.shape_of(value)) != 1 or self.failed:
            return None
        if self.store is None:
            try:
                self.store = store_of(self.module, "canonicalize-nn")
            except NnccError:
                self.failed = True
                return None
        return float(np.asarray(self.store[op.ref.data]).reshape(-1)[0])


@dataclass(frozen=True)
class CanonicalizeNNPass(ModulePass):
    """Simplify `nn` IR without changing what it computes."""

    name = "canonicalize-nn"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(
            GreedyRewritePatternApplier([
                RemoveIdentityReshape(), MergeReshapes(), RemoveIdentityTranspose(),
                MergeTransposes(), RemoveUnboundedClip(), FuseSilu(), FuseGelu(scalars := StoreScalars(op)),
                FuseGeluTanh(scalars), *(() if in_training(op) else (RemoveDropout(),)),
            ]),
        ).rewrite_module(op)
