"""cp-decompose: CP-decompose KxK convolutions into 1x1 -> depthwise Kx1 -> depthwise 1xK -> 1x1.

A conv weight W of shape [N, C, KH, KW] (groups 1, KH > 1 and KW > 1) is approximated by a rank-R
CP (CANDECOMP/PARAFAC) decomposition, computed by tensorly's `parafac` (alternating least squares):

    W[n, c, h, w] ~= sum_r  A[n, r] * B[c, r] * V[h, r] * H[w, r]

and the conv becomes the chain of Lebedev et al. 2014 ("Speeding-up convolutional neural networks
using fine-tuned CP-decomposition"), the form Wu's thesis (seed paper 3) cites for decomposing
standard convs before fusing them:

    1x1 conv C -> R           weight B^T  [R, C, 1, 1]     no padding, stride 1
    depthwise KH x 1 on R     weight V^T  [R, 1, KH, 1]    pads top/bottom, stride and dilation in height
    depthwise 1 x KW on R     weight H^T  [R, 1, 1, KW]    pads left/right, stride and dilation in width
    1x1 conv R -> N           weight A    [N, R, 1, 1]     the conv's bias, residual and epilogue

Zero padding commutes with the first 1x1 (it has no bias, so a zero input gives a zero output) and
splits into the height and width padding of the two depthwise convs, so the chain computes exactly
conv(x, W~) with W~ the CP reconstruction: its output differs from the original conv's by
conv(x, W - W~).

`rank` is an integer (`rank=16`: R = 16 for every conv) or a fraction in (0, 1] (`rank=0.25`): the
chain then has about that share of the conv's weights, R = max(1, round(f * N*C*KH*KW / (C + KH + KW
+ N))), since the chain holds R * (C + KH + KW + N) weights. Biases are not counted (the last 1x1
keeps the conv's bias). The factors are balanced (column r of each gets the fourth root of component
r's weight) so that no float32 factor is tiny or huge. ALS starts from random factors drawn with
`seed` (so the result is deterministic) and runs at most `iterations` sweeps. The new weights go to the weight store (`<conv>.cp.in`, `.cp.vertical`,
`.cp.horizontal`, `.cp.out`); the module records every decomposed conv, its rank and the relative
Frobenius error of its weight in the attribute `nn.cp_decompose`.

Works on `nn.conv2d` (before fuse-epilogues, where `nncc --cp-rank` runs it) and on `fused.conv2d`
(after it: the chain's first three convs are `act none`, the last takes the epilogue).
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, FloatAttr, IntegerAttr, ModuleOp, StringAttr, f64
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import PassFailedException

from nncc.compiler.weights import WeightStore, store_of
from nncc.dialects import fused, nn
from nncc.passes.fold_batch_norm import new_weight, weight_ref

RECORD_ATTR = "nn.cp_decompose"
"""Module attribute: one entry per decomposed conv (layer, rank, weight_error, params before/after)."""


def check_rank(rank: object) -> None:
    """A one-line error unless `rank` is an integer >= 1 or a fraction in (0, 1]."""
    if isinstance(rank, bool) or not isinstance(rank, int | float):
        raise PassFailedException(f"cp-decompose: rank={rank!r}: expected an integer >= 1 (the CP rank) or a "
                                  "fraction in (0, 1] of each conv's weights")
    if isinstance(rank, int) and rank < 1:
        raise PassFailedException(f"cp-decompose: rank={rank}: an absolute rank must be >= 1")
    if isinstance(rank, float) and not (0.0 < rank <= 1.0):
        raise PassFailedException(f"cp-decompose: rank={rank}: a fractional rank must be in (0, 1] (the share "
                                  "of the conv's weights the chain keeps); give an integer for an absolute rank")


def chain_rank(rank: int | float, shape: tuple[int, int, int, int]) -> int:
    """The CP rank R for a conv weight of `shape` [N, C, KH, KW] (module docstring)."""
    if isinstance(rank, int):
        return rank
    n, c, kh, kw = shape
    return max(1, round(rank * n * c * kh * kw / (c + kh + kw + n)))


def cp_factors(weight: np.ndarray, rank: int, seed: int = 0, iterations: int = 25, tol: float = 1e-6):
    """((A, B, V, H), relative error): balanced CP factors of a [N, C, KH, KW] weight by tensorly's
    parafac, with A [N, R], B [C, R], V [KH, R], H [KW, R]; the error is ||W - W~||_F / ||W||_F."""
    import tensorly as tl
    from tensorly.decomposition import parafac

    tl.set_backend("numpy")
    w = np.asarray(weight, dtype=np.float64)
    with einsum_products(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cp = parafac(w, rank, n_iter_max=iterations, init="random", tol=tol, random_state=seed,
                     normalize_factors=True)
    weights, factors = cp
    scale = np.abs(weights) ** 0.25
    sign = np.sign(weights)
    sign[sign == 0] = 1.0
    a, b, v, h = (f * scale for f in factors)
    a = a * sign
    khatri_rao = np.einsum("cr,hr,wr->chwr", b, v, h).reshape(-1, rank)  # C*KH*KW x R: small
    approx = (a @ khatri_rao.T).reshape(w.shape)
    norm = np.linalg.norm(w)
    error = float(np.linalg.norm(w - approx) / norm) if norm else 0.0
    return (a, b, v, h), error


@contextmanager
def einsum_products():
    """tensorly's `einsum` tensor algebra, its einsums contracted pairwise by BLAS along numpy's
    optimal path (`optimize="optimal"`).

    The default (`core`) products build the Khatri-Rao product of three factors, N*C*KW x R doubles:
    3.6 GB for a 512x512x3x3 conv at rank 573; numpy's einsum without `optimize` loops in C. The
    greedy path (`optimize=True`) contracts the small factors first and the [N, C, KH, KW] weight
    with their N*KH*KW x R (or C*KH*KW x R) product outside BLAS: 2.2 s of one core for each of
    the N and C modes of that conv; the optimal path contracts the weight with one factor by
    BLAS first (`abcd,cf->abdf`), then the rest: 0.15 s. A parafac sweep of that conv takes
    ~1 s (~5 s before); the CP ResNet-50 compile took 11 min of CPU, now under 4."""
    import tensorly as tl
    from tensorly.backend.numpy_backend import NumpyBackend

    NumpyBackend.register_method("einsum", lambda subscripts, *operands: np.einsum(subscripts, *operands,
                                                                                   optimize="optimal"))
    try:
        with tl.tenalg.backend_context("einsum"):
            yield
    finally:
        NumpyBackend.register_method("einsum", np.einsum)


def decomposable(op: Operation) -> bool:
    """A conv with groups 1 and a kernel larger than 1 in both directions, its weight a constant."""
    if not isinstance(op, nn.Conv2dOp | fused.Conv2dOp) or op.group.value.data != 1:
        return False
    _, _, kh, kw = nn.shape_of(op.weight)
    if kh < 2 or kw < 2 or weight_ref(op.weight) is None:
        return False
    return op.bias is None or weight_ref(op.bias) is not None


@dataclass(frozen=True)
class CpDecomposePass(ModulePass):
    """CP-decompose KxK convs into 1x1 -> depthwise Kx1 -> depthwise 1xK -> 1x1 (tensorly's parafac)."""

    name = "cp-decompose"

    rank: int | float = 0.25
    """An integer: the CP rank of every conv; a fraction in (0, 1]: the share of each conv's weights kept."""
    seed: int = 0
    """Seed of the ALS initialisation (the decomposition is deterministic for a given seed)."""
    iterations: int = 25
    """At most this many ALS sweeps per conv (fewer when the error stops improving by 1e-6)."""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        check_rank(self.rank)
        if self.iterations < 1:
            raise PassFailedException(f"cp-decompose: iterations={self.iterations}: must be >= 1")
        convs = [o for o in op.walk() if decomposable(o)]
        if not convs:
            return
        store = store_of(op, self.name)
        records = list(op.attributes[RECORD_ATTR].data) if RECORD_ATTR in op.attributes else []
        for conv in convs:
            records.append(self.decompose(store, conv))
        op.attributes[RECORD_ATTR] = ArrayAttr(records)

    def decompose(self, store: WeightStore, conv: nn.Conv2dOp | fused.Conv2dOp) -> DictionaryAttr:
        w_ref = weight_ref(conv.weight)
        weight = store[w_ref]
        n, c, kh, kw = weight.shape
        rank = chain_rank(self.rank, weight.shape)
        (a, b, v, h), error = cp_factors(weight, rank, self.seed, self.iterations)
        stem = nn.onnx_nodes_of(conv)[0] if nn.onnx_nodes_of(conv) else w_ref.removesuffix(".weight")
        w_in = new_weight(store, f"{stem}.cp.in", b.T.reshape(rank, c, 1, 1))
        w_vertical = new_weight(store, f"{stem}.cp.vertical", v.T.reshape(rank, 1, kh, 1))
        w_horizontal = new_weight(store, f"{stem}.cp.horizontal", h.T.reshape(rank, 1, 1, kw))
        w_out = new_weight(store, f"{stem}.cp.out", a.reshape(n, rank, 1, 1))
        top, left, bottom, right = nn.ints(conv.pads)
        (sh, sw), (dh, dw) = nn.ints(conv.strides), nn.ints(conv.dilations)
        steps = [  # (weight, strides, pads, dilations, group)
            (w_in, (1, 1), (0, 0, 0, 0), (1, 1), 1),
            (w_vertical, (sh, 1), (top, 0, bottom, 0), (dh, 1), rank),
            (w_horizontal, (1, sw), (0, left, 0, right), (1, dw), rank),
        ]
        hint = conv.result.name_hint or stem.replace("/", "_")
        new_ops: list[Operation] = [w_in, w_vertical, w_horizontal, w_out]
        x = conv.input
        for (weight_op, strides, pads, dilations, group), suffix in zip(steps, ("cp_in", "cp_vertical", "cp_horizontal")):
            if isinstance(conv, fused.Conv2dOp):
                step = fused.Conv2dOp(x, weight_op.result, None, None, strides, pads, dilations, group)
            else:
                step = nn.Conv2dOp(x, weight_op.result, None, strides, pads, dilations, group)
            step.result.name_hint = f"{hint}.{suffix}"
            new_ops.append(step)
            x = step.result
        if isinstance(conv, fused.Conv2dOp):
            last = fused.Conv2dOp(x, w_out.result, conv.bias, conv.residual, (1, 1), (0, 0, 0, 0), (1, 1), 1,
                                  conv.epilogue)
        else:
            last = nn.Conv2dOp(x, w_out.result, conv.bias, (1, 1), (0, 0, 0, 0), (1, 1), 1)
        last.result.name_hint = conv.result.name_hint
        new_ops.append(last)
        if nn.ONNX_NODES in conv.attributes:
            for step in new_ops[4:]:
                step.attributes[nn.ONNX_NODES] = conv.attributes[nn.ONNX_NODES]
        layer = conv.result.name_hint or stem
        weight_op = conv.weight.owner
        block = conv.parent_block()
        block.insert_ops_before(new_ops, conv)
        conv.result.replace_all_uses_with(last.result)
        block.erase_op(conv)
        if not weight_op.result.uses:
            block.erase_op(weight_op)  # the store keeps the array: saving the IR drops what no op names
        return DictionaryAttr({
            "layer": StringAttr(layer),
            "rank": IntegerAttr(rank, 64),
            "weight_error": FloatAttr(error, f64),
            "weights_before": IntegerAttr(n * c * kh * kw, 64),
            "weights_after": IntegerAttr(rank * (c + kh + kw + n), 64),
        })


def records_of(module: ModuleOp) -> list[dict]:
    """The decomposed convs a module records (`nn.cp_decompose`), as plain dicts."""
    attr = module.attributes.get(RECORD_ATTR)
    if attr is None:
        return []
    rows = []
    for entry in attr.data:
        values = entry.data
        rows.append({"layer": values["layer"].data, "rank": values["rank"].value.data,
                     "weight_error": float(values["weight_error"].value.data),
                     "weights_before": values["weights_before"].value.data,
                     "weights_after": values["weights_after"].value.data})
    return rows


def relative_l2_error(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> float:
    """||actual - expected||_2 / ||expected||_2 over all outputs together (float64)."""
    diff = sum(float(np.sum((np.asarray(actual[k], np.float64) - np.asarray(v, np.float64)) ** 2))
               for k, v in expected.items())
    norm = sum(float(np.sum(np.asarray(v, np.float64) ** 2)) for v in expected.values())
    return math.sqrt(diff / norm) if norm else math.sqrt(diff)
