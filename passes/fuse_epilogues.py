"""fuse-epilogues: fold what follows a conv/gemm into the op, as its epilogue.

Every `nn.conv2d` / `nn.gemm` becomes a `fused.conv2d` / `fused.gemm` (with
`act none` when nothing follows it), so later stages lower one op per compute
kind. Then, while the output tile would still be on chip:

1. an `nn.add` of the op's result and another tensor of the same shape (in
   either operand order) becomes the op's `residual`, when the op's result has
   no other user and the op has no residual or activation yet;
2. one activation (`nn.relu`, `nn.clip`, `nn.leaky_relu`, `nn.hard_swish`,
   `nn.hard_sigmoid`, `nn.sigmoid`, `nn.tanh`, `nn.erf`, `nn.gelu`,
   `nn.gelu_tanh`, `nn.silu`) becomes the op's `act`, when the previous
   result (the op's, or the fused add's) has no other user and the op has no
   activation yet.

The `onnx_nodes` lists are merged in order. ResNet's conv + (folded) BN + add
+ ReLU:

    %c = nn.conv2d %x, %w, %b strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 {onnx_nodes = ["conv2", "bn2"]} : ...
    %a = nn.add %c, %shortcut {onnx_nodes = ["add"]} : ...
    %y = nn.relu %a {onnx_nodes = ["relu"]} : tensor<1x64x8x8xf32>
  becomes
    %y = fused.conv2d %x, %w, %b residual %shortcut strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1]
           group 1 act relu {onnx_nodes = ["conv2", "bn2", "add", "relu"]} : ...

Left unfused: an add whose operands broadcast, an add after an activation
(act(conv) + r is not act(conv + r)), a second activation, an activation or
add whose input has another user, and activations after anything but a
conv/gemm (pooling, matmul, concat, a batch_norm that could not be folded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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

from nncc.dialects import fused, nn
from nncc.dialects.fused import Activation, Epilogue
from nncc.passes.canonicalize_nn import inherit_onnx_nodes


def replace_with(rewriter: PatternRewriter, old: Operation, producer: Operation,
                 new: fused.Conv2dOp | fused.GemmOp) -> None:
    """`new` (producer + old) takes the place of `old`; the producer goes."""
    inherit_onnx_nodes(new, producer, old)
    new.result.name_hint = producer.results[0].name_hint
    rewriter.replace(old, [new], [new.result])
    rewriter.erase(producer)


class ConvToFused(RewritePattern):
    """nn.conv2d -> fused.conv2d with an empty epilogue."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: nn.Conv2dOp, rewriter: PatternRewriter):
        new = fused.Conv2dOp.from_nn(op)
        inherit_onnx_nodes(new, op)
        rewriter.replace(op, [new], [new.result])


class GemmToFused(RewritePattern):
    """nn.gemm -> fused.gemm with an empty epilogue."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: nn.GemmOp, rewriter: PatternRewriter):
        new = fused.GemmOp.from_nn(op)
        inherit_onnx_nodes(new, op)
        rewriter.replace(op, [new], [new.result])


def open_producer(value: SSAValue, residual_too: bool) -> fused.Conv2dOp | fused.GemmOp | None:
    """The fused op computing `value`, when its epilogue can still grow and `value` has one user."""
    op = value.owner
    if not isinstance(op, fused.COMPUTE_OPS) or not value.has_one_use():
        return None
    if op.act.data != Activation.NONE or (residual_too and op.residual is not None):
        return None
    if residual_too and isinstance(op, fused.GemmOp) and op.c is not None and len(nn.shape_of(op.c)) > 1:
        return None  # C is already a full tensor added to the product: one addend per gemm
    return op


class FuseResidualAdd(RewritePattern):
    """add(op(x), r) or add(r, op(x)), same shapes -> op(x) with residual r."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, add: nn.AddOp, rewriter: PatternRewriter):
        shape = nn.shape_of(add.result)
        if nn.shape_of(add.lhs) != shape or nn.shape_of(add.rhs) != shape:
            return
        candidates = [(producer, other) for value, other in ((add.lhs, add.rhs), (add.rhs, add.lhs))
                      if (producer := open_producer(value, residual_too=True)) is not None]
        if not candidates:
            return
        # Two candidates (both operands computed by convs): fuse the later one; the
        # earlier result is already finished and waits in memory as the residual.
        if len(candidates) == 2 and candidates[1][0].is_before_in_block(candidates[0][0]):
            candidates.reverse()
        producer, residual = candidates[-1]
        replace_with(rewriter, add, producer, producer.with_epilogue(residual, producer.epilogue))


def epilogue_of(op: Operation) -> Epilogue | None:
    """The activation `op` computes, as an epilogue; None when it is not one (or its
    parameters cannot be properties)."""
    if isinstance(op, nn.ReluOp):
        return Epilogue(Activation.RELU)
    if isinstance(op, nn.SigmoidOp):
        return Epilogue(Activation.SIGMOID)
    if isinstance(op, nn.HardSwishOp):
        return Epilogue(Activation.HARD_SWISH)
    for op_type, act in ((nn.TanhOp, Activation.TANH), (nn.ErfOp, Activation.ERF), (nn.GeluOp, Activation.GELU),
                         (nn.GeluTanhOp, Activation.GELU_TANH), (nn.SiluOp, Activation.SILU)):
        if isinstance(op, op_type):
            return Epilogue(act)
    if isinstance(op, nn.LeakyReluOp):
        alpha = op.alpha.value.data
        return Epilogue(Activation.LEAKY_RELU, alpha=alpha) if math.isfinite(alpha) else None
    if isinstance(op, nn.HardSigmoidOp):
        alpha, beta = op.alpha.value.data, op.beta.value.data
        if not (math.isfinite(alpha) and math.isfinite(beta)):
            return None
        return Epilogue(Activation.HARD_SIGMOID, alpha=alpha, beta=beta)
    if isinstance(op, nn.ClipOp):
        low, high = op.min.value.data, op.max.value.data
        if math.isnan(low) or math.isnan(high) or low == math.inf or high == -math.inf:
            return None
        bounds = (None if low == -math.inf else low, None if high == math.inf else high)
        if bounds == (None, None):
            return Epilogue(Activation.NONE)  # clip(-inf, inf) is the identity
        return Epilogue(Activation.CLIP, min=bounds[0], max=bounds[1])
    return None


class FuseActivation(RewritePattern):
    """act(op(x) [+ r]) -> op(x) [residual r] act."""

    def match_and_rewrite(self, op: Operation, rewriter: PatternRewriter):
        if not isinstance(op, nn.UnaryOp) or (epilogue := epilogue_of(op)) is None:
            return
        producer = open_producer(op.input, residual_too=False)
        if producer is None:
            return
        replace_with(rewriter, op, producer, producer.with_epilogue(producer.residual, epilogue))


@dataclass(frozen=True)
class FuseEpiloguesPass(ModulePass):
    """Turn conv2d/gemm into fused ops and fold residual adds and activations into them."""

    name = "fuse-epilogues"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(
            GreedyRewritePatternApplier([
                ConvToFused(), GemmToFused(), FuseResidualAdd(), FuseActivation(),
            ]),
        ).rewrite_module(op)
