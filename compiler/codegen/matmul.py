"""MatMul (numpy semantics: batched, broadcasting, 1-D operands) on the conv/gemm machinery.

Every 2-D product Y[M,N] = A[M,K] B[K,N] is a 1x1 convolution over a 1 x M "image" of K
channels with an N x K filter bank, exactly as `nn.gemm` is (conv.py): on a vector unit
N is on the lanes, on a matrix unit K is on the rows and N on the columns. A 1-D A is
M = 1, a 1-D B is N = 1 (one lane or column busy: a matrix-vector product wastes the rest).

Batches: when B has no batch of its own (2-D, or broadcast over every batch axis) and A's
batch is contiguous, the batch folds into M (one layer, B loaded once and multicast); otherwise
each output batch index is its own set of jobs (one phase, `merge_phases`), with A and B
offset by their broadcast strides.
"""

from __future__ import annotations

import itertools
import math

from xdsl.ir import Operation

from nncc.compiler.codegen.eltwise import merge_phases
from nncc.compiler.codegen.context import F32, Lowering, layer_name, row_major_strides, source_address
from nncc.compiler.codegen.conv import ConvLowering, ConvShape, Operand, choose_tiles
from nncc.compiler.codegen.epilogue import Epilogue
from nncc.dialects import nn


def batch_strides(batch: tuple[int, ...], out_batch: tuple[int, ...], matrix: int) -> tuple[int, ...]:
    """Element strides of an operand's batch axes over the output's (0 where broadcast)."""
    batch = (1,) * (len(out_batch) - len(batch)) + batch
    strides = row_major_strides(batch) if batch else ()
    return tuple(0 if size == 1 and out != 1 else stride * matrix
                 for size, out, stride in zip(batch, out_batch, strides))


def product(lowering: Lowering, name: str, m: int, k: int, n: int, a: int, b: int, y: int, batch: int = 1,
            cache: dict | None = None):
    """Y[M,N] = A[M,K] B[K,N] (row-major at a, b, y) as a 1x1 conv; `batch` stacked A/Y rows."""
    rows = m * batch
    s = ConvShape(1, k, 1, rows, n, 1, 1, 1, rows, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    cache = {} if cache is None else cache
    if s not in cache:
        cache[s] = choose_tiles(lowering, s, name)
    conv = ConvLowering(lowering, s, cache[s], Operand(a, (0, 1, 0, k)),
                        Operand(b, (0, 0, 0, n, 1)), None, Operand(y, (0, 1, 0, n)), Epilogue(), None,
                        scan=lowering.tile_order == "scan")
    return [(conv.kinds(), conv.jobs())]


def lower_matmul(lowering: Lowering, op: Operation):
    a_shape, b_shape = nn.shape_of(op.a), nn.shape_of(op.b)
    a2 = (1,) + a_shape if len(a_shape) == 1 else a_shape
    b2 = b_shape + (1,) if len(b_shape) == 1 else b_shape
    m, k = a2[-2:]
    n = b2[-1]
    a_batch, b_batch = a2[:-2], b2[:-2]
    width = max(len(a_batch), len(b_batch))
    pad = lambda shape: (1,) * (width - len(shape)) + shape  # noqa: E731
    out_batch = tuple(max(x, y) for x, y in zip(pad(a_batch), pad(b_batch)))
    a_strides = batch_strides(a_batch, out_batch, m * k)
    b_strides = batch_strides(b_batch, out_batch, k * n)
    a, b, y = source_address(lowering, op.a), source_address(lowering, op.b), lowering.address(op.result)
    name = layer_name(op)
    count = math.prod(out_batch)
    if all(st == 0 for st in b_strides) and a_strides == batch_strides(out_batch, out_batch, m * k):
        return product(lowering, name, m, k, n, a, b, y, batch=count)
    phases, cache = [], {}
    for index in itertools.product(*(range(size) for size in out_batch)):
        a_off = sum(i * st for i, st in zip(index, a_strides))
        b_off = sum(i * st for i, st in zip(index, b_strides))
        y_off = sum(i * st for i, st in zip(index, batch_strides(out_batch, out_batch, m * n)))
        phases += product(lowering, name, m, k, n, a + F32 * a_off, b + F32 * b_off, y + F32 * y_off,
                          cache=cache)
    return merge_phases(phases)
