"""fold-relu-chains: a user's pass, written outside nncc and loaded without editing it.

    relu(relu(x))             -> relu(x)
    relu(clip(x, lo >= 0, hi)) -> clip(x, lo, hi)

Load it with `--pass-plugin examples/plugins/fold_relu_chains.py` (nncc, nncc-opt),
or publish `UNIVERSE` under the `xdsl.universe` entry point of your package.
The walk-through is docs/writing-a-pass.md.
"""

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
from xdsl.universe import Universe

from nncc.dialects import nn


class ReluOfRelu(RewritePattern):
    """The outer ReLU of relu(relu(x)) changes nothing."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: nn.ReluOp, rewriter: PatternRewriter):
        if isinstance(op.input.owner, nn.ReluOp):
            rewriter.replace(op, [], [op.input])


class ReluOfNonNegativeClip(RewritePattern):
    """A clip whose lower bound is >= 0 never produces a negative value."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: nn.ReluOp, rewriter: PatternRewriter):
        clip = op.input.owner
        if isinstance(clip, nn.ClipOp) and clip.min.value.data >= 0:
            rewriter.replace(op, [], [op.input])


@dataclass(frozen=True)
class FoldReluChains(ModulePass):
    """Remove ReLUs whose input can never be negative."""

    name = "fold-relu-chains"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        patterns = GreedyRewritePatternApplier([ReluOfRelu(), ReluOfNonNegativeClip()])
        PatternRewriteWalker(patterns).rewrite_module(op)


UNIVERSE = Universe(all_passes={FoldReluChains.name: lambda: FoldReluChains})
