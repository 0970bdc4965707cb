"""canonicalize-nn: remove `nn` ops that do nothing, merge chains that do one thing.

- a reshape to the shape it already has, or an identity transpose, disappears;
- reshape(reshape(x)) becomes one reshape, transpose(transpose(x)) one transpose;
- a clip with both bounds infinite disappears;
- ops (and weights) whose results nobody uses are erased.

    %a = nn.reshape %x : (tensor<1x8x1x1xf32>) -> tensor<1x8xf32>
    %b = nn.reshape %a : (tensor<1x8xf32>) -> tensor<8xf32>
  becomes
    %b = nn.reshape %x : (tensor<1x8x1x1xf32>) -> tensor<8xf32>
"""

import math
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from nncc.dialects import nn


def inherit_onnx_nodes(new_op, *old_ops) -> None:
    """`new_op` implements the ONNX nodes of all `old_ops`."""
    names: list[str] = []
    for op in old_ops:
        names += [n for n in nn.onnx_nodes_of(op) if n not in names]
    if names:
        new_op.attributes[nn.ONNX_NODES] = nn.onnx_nodes_attr(names)


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


@dataclass(frozen=True)
class CanonicalizeNNPass(ModulePass):
    """Simplify `nn` IR without changing what it computes."""

    name = "canonicalize-nn"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        PatternRewriteWalker(
            GreedyRewritePatternApplier([
                RemoveIdentityReshape(), MergeReshapes(), RemoveIdentityTranspose(),
                MergeTransposes(), RemoveUnboundedClip(),
            ]),
        ).rewrite_module(op)
