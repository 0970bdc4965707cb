"""Which code generator lowers which op: the table behind `lower_module`.

One entry per op name. A generator takes the lowering state and one op and returns the
(buffer kinds, jobs) phases of its layer. An op without an entry has no code generator yet
(`lower_module` says so, naming the layer); reshapes and contiguous slices need none (they
alias their input, `context.is_alias`).
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.ir import Operation

from nncc.compiler.codegen import (
    bn_nest, data, layers, pool_backward_nest, reduce_nest, stream_nest, training_nest, window_nest,
)
from nncc.compiler.codegen.context import Lowering
from nncc.compiler.codegen.stream_nest import lower_stream

LayerLowering = Callable[[Lowering, Operation], list]

STREAM_NESTS = {
    **dict.fromkeys(stream_nest.BINARY, stream_nest.binary_nest),
    **dict.fromkeys(stream_nest.UNARY, stream_nest.unary_nest),
    "nn.batch_norm": stream_nest.batch_norm_nest,
    "nn.concat": stream_nest.concat_nest,
    "nn.transpose": stream_nest.transpose_nest,
    "nn.slice": stream_nest.slice_nest,
    "nn.global_avg_pool": reduce_nest.global_pool_nest,
    "nn.global_max_pool": reduce_nest.global_pool_nest,
    "nn.lrn": reduce_nest.lrn_nest,
    "nn.softmax": reduce_nest.softmax_nest,
    "fused.batch_norm_apply": bn_nest.apply_nest,  # training BatchNorm fused (fuse-batch-norm-training)
    "fused.batch_norm_backward_apply": bn_nest.backward_apply_nest,
    "nn.sgd": training_nest.sgd_nest,
    **dict.fromkeys(pool_backward_nest.POOL_BACKWARD_OPS, pool_backward_nest.pool_backward_nest),  # a small tile search
}
"""Op name -> the builder of its nest `(lowering, op, slots) -> tile.nest`, for the layers
whose nest needs no tile search (tile-layers writes them as they are)."""

GENERATORS: dict[str, LayerLowering] = {
    "nn.conv2d": layers.lower_conv,
    "fused.conv2d": layers.lower_conv,
    "fused.conv2d_stats": bn_nest.lower_bn_conv,  # training BatchNorm fused (fuse-batch-norm-training)
    "fused.conv2d_pre": bn_nest.lower_bn_conv,
    "fused.batch_norm_factors": bn_nest.lower_factors,
    "fused.batch_norm_backward_sums": bn_nest.lower_backward_sums,
    "fused.conv2d_backward_data_sums": bn_nest.lower_backward_data_sums,
    "fused.conv2d_backward_data_pre": bn_nest.lower_backward_data_pre,
    "fused.conv2d_backward_filter_pre": bn_nest.lower_backward_filter_pre,
    "nn.gemm": layers.lower_gemm,
    "fused.gemm": layers.lower_gemm,
    **{name: lower_stream(builder) for name, builder in STREAM_NESTS.items()},
    "nn.sgd": training_nest.lower_sgd,
    "nn.conv2d_backward_data": training_nest.lower_backward_conv,
    "nn.conv2d_backward_filter": training_nest.lower_backward_conv,
    "nn.matmul": layers.lower_gemm,
    "nn.max_pool": window_nest.lower_pool,
    "nn.avg_pool": window_nest.lower_pool,
}
"""Op name -> its code generator."""


def planned(generator: LayerLowering) -> LayerLowering:
    """`generator`, after placing concat inputs in their output slices once per program
    (before the first op with a code generator is lowered; see data.plan_in_place_concats)."""
    def run(lowering: Lowering, op: Operation):
        if not getattr(lowering, "concats_planned", False):
            lowering.concats_planned = True
            data.plan_in_place_concats(lowering, op.parent)
        return generator(lowering, op)
    run.__wrapped__ = generator
    return run


LOWERINGS: dict[str, LayerLowering] = {name: planned(generator) for name, generator in GENERATORS.items()}
"""What `lower_module` calls: every generator of `GENERATORS`, concat planning first."""
