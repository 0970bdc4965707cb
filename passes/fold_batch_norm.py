"""fold-batch-norm: fold an inference BatchNorm into the conv (or gemm) before it.

With s = gamma / sqrt(var + eps) per channel, BN(conv(x)) = conv'(x) where

    w' = w * s            (per output channel: axis 0 of an OIHW conv weight,
                           the output-feature axis of a gemm's B)
    b' = (b - mean) * s + beta        (b = 0 when the conv had no bias)

computed in float64 and stored as float32. The new arrays go into the weight
store (new names; the old weights stay for any other user and disappear when
dead), the IR references them with `nn.weight`:

    %c = nn.conv2d %x, %w strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 {onnx_nodes = ["conv"]} : ...
    %y = nn.batch_norm %c, %gamma, %beta, %mean, %var epsilon 1.0e-05 {onnx_nodes = ["bn"]} : ...
  becomes
    %w2 = nn.weight "conv.weight.bn" : tensor<64x64x3x3xf32>
    %b2 = nn.weight "conv.bias.bn" : tensor<64xf32>
    %y = nn.conv2d %x, %w2, %b2 strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 {onnx_nodes = ["conv", "bn"]} : ...

A batch_norm stays when its input is not an nn.conv2d / nn.gemm, when that op's
result has other users (they need the unnormalised values), or when a weight,
BN parameter or conv/gemm bias is computed at run time rather than read from
the weight store.
"""

from __future__ import annotations

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

from nncc.compiler.weights import WeightStore, sanitize, store_of
from nncc.dialects import nn
from nncc.passes.canonicalize_nn import inherit_onnx_nodes


def weight_ref(value: SSAValue | None) -> str | None:
    """The store name behind `value`, when it is an `nn.weight`."""
    if value is not None and isinstance(value.owner, nn.WeightOp):
        return value.owner.ref.data
    return None


def bn_scale_shift(store: WeightStore, bn: nn.BatchNormOp) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(s, mean, beta) in float64, or None when a BN parameter is not a stored weight."""
    refs = [weight_ref(v) for v in (bn.scale, bn.bias, bn.mean, bn.var)]
    if any(r is None for r in refs):
        return None
    gamma, beta, mean, var = (store[r].astype(np.float64) for r in refs)
    scale = gamma / np.sqrt(var + bn.epsilon.value.data)
    return scale, mean, beta


def scaled(w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """w * scale in float64, rounded to float32 as it is written (no float64 copy of `w` or of the
    product: ResNet-50's 25M weights)."""
    return np.multiply(w, scale, out=np.empty(np.broadcast_shapes(w.shape, scale.shape), np.float32),
                       dtype=np.float64, casting="same_kind")


def new_weight(store: WeightStore, name: str, array: np.ndarray) -> nn.WeightOp:
    """Add `array` to the store (under `name`, or a free variant) and reference it."""
    unique = store.add(name, array)
    op = nn.WeightOp(unique, array.shape)
    op.result.name_hint = sanitize(unique)
    return op


def base_name(op: Operation, weight: str) -> str:
    """Name stem for folded weights: the conv's ONNX node, else its weight's name."""
    nodes = nn.onnx_nodes_of(op)
    return nodes[0] if nodes else weight.removesuffix(".weight")


def foldable(store: WeightStore, bn: nn.BatchNormOp, producer_type: type, weight: str, bias: str):
    """(producer, weight name, bias name or None, (scale, mean, beta)) when `bn` reads the only
    use of a `producer_type` op whose weight (and bias, if any) are constants; else None."""
    producer = bn.input.owner
    if not isinstance(producer, producer_type) or not producer.result.has_one_use():
        return None
    w_ref, b_ref = weight_ref(getattr(producer, weight)), weight_ref(getattr(producer, bias))
    if w_ref is None or (getattr(producer, bias) is not None and b_ref is None):
        return None
    params = bn_scale_shift(store, bn)
    return None if params is None else (producer, w_ref, b_ref, params)


class FoldIntoConv(RewritePattern):
    """batch_norm(conv2d(x)) -> conv2d'(x) when the conv feeds only the BN."""

    def __init__(self, store: WeightStore):
        self.store = store

    @op_type_rewrite_pattern
    def match_and_rewrite(self, bn: nn.BatchNormOp, rewriter: PatternRewriter):
        match = foldable(self.store, bn, nn.Conv2dOp, "weight", "bias")
        if match is None:
            return
        conv, w_ref, b_ref, (scale, mean, beta) = match
        w = self.store[w_ref]
        b = self.store[b_ref].astype(np.float64) if b_ref is not None else np.zeros(w.shape[0])
        stem = base_name(conv, w_ref)
        new_w = new_weight(self.store, f"{stem}.weight.bn", scaled(w, scale.reshape(-1, 1, 1, 1)))
        new_b = new_weight(self.store, f"{stem}.bias.bn", (b - mean) * scale + beta)
        folded = nn.Conv2dOp(conv.input, new_w.result, new_b.result, nn.ints(conv.strides),
                             nn.ints(conv.pads), nn.ints(conv.dilations), conv.group.value.data)
        inherit_onnx_nodes(folded, conv, bn)
        folded.result.name_hint = conv.result.name_hint
        rewriter.replace(bn, [new_w, new_b, folded], [folded.result])
        rewriter.erase(conv)


class FoldIntoGemm(RewritePattern):
    """batch_norm(gemm(a, B, C)) -> gemm(a, B', C') when the gemm feeds only the BN.

    The BN's channel axis (1) is the gemm's output-feature axis: a row of B when
    trans_b, a column otherwise. alpha stays; C' = (beta * C - mean) * s + beta_bn
    (broadcast to the features), and the new gemm's beta is 1.
    """

    def __init__(self, store: WeightStore):
        self.store = store

    @op_type_rewrite_pattern
    def match_and_rewrite(self, bn: nn.BatchNormOp, rewriter: PatternRewriter):
        match = foldable(self.store, bn, nn.GemmOp, "b", "c")
        if match is None:
            return
        gemm, b_ref, c_ref, (scale, mean, beta) = match
        b = self.store[b_ref].astype(np.float64)
        new_b = b * (scale.reshape(-1, 1) if gemm.trans_b.value else scale.reshape(1, -1))
        c = (gemm.beta.value.data * self.store[c_ref].astype(np.float64)
             if c_ref is not None else np.zeros(1))
        new_c = (c - mean) * scale + beta  # broadcasts to the features (or to all of C's shape)
        if new_c.ndim > 2:
            return
        stem = base_name(gemm, b_ref)
        b_op = new_weight(self.store, f"{stem}.weight.bn", new_b)
        c_op = new_weight(self.store, f"{stem}.bias.bn", new_c)
        folded = nn.GemmOp(gemm.a, b_op.result, c_op.result, gemm.trans_a.value, gemm.trans_b.value,
                           gemm.alpha.value.data, 1.0)
        inherit_onnx_nodes(folded, gemm, bn)
        folded.result.name_hint = gemm.result.name_hint
        rewriter.replace(bn, [b_op, c_op, folded], [folded.result])
        rewriter.erase(gemm)


@dataclass(frozen=True)
class FoldBatchNormPass(ModulePass):
    """Fold inference batch_norm ops into the conv2d / gemm that feeds them."""

    name = "fold-batch-norm"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if not any(isinstance(o, nn.BatchNormOp) for o in op.walk()):
            return  # no weight store needed
        store = store_of(op, self.name)
        PatternRewriteWalker(
            GreedyRewritePatternApplier([FoldIntoConv(store), FoldIntoGemm(store)]),
        ).rewrite_module(op)
