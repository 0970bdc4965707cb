"""Which code generator lowers which op: the table behind `lower_module`.

One entry per op name. A generator takes the lowering state and one op and returns the
(buffer kinds, jobs) phases of its layer. An op without an entry has no code generator yet
(`lower_module` says so, naming the layer); reshapes and contiguous slices need none (they
alias their input, `context.is_alias`).
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.ir import Operation

from nncc.compiler.codegen import data, layers, lrn, matmul, pool, softmax, window_nest
from nncc.compiler.codegen.context import Lowering

LayerLowering = Callable[[Lowering, Operation], list]

GENERATORS: dict[str, LayerLowering] = {
    "nn.conv2d": layers.lower_conv,
    "fused.conv2d": layers.lower_conv,
    "nn.gemm": layers.lower_gemm,
    "fused.gemm": layers.lower_gemm,
    **dict.fromkeys(layers.BINARY, layers.lower_binary),
    **dict.fromkeys(layers.UNARY, layers.lower_unary),
    "nn.clip": layers.lower_clip,
    "nn.batch_norm": layers.lower_batch_norm,
    "nn.matmul": matmul.lower_matmul,
    "nn.max_pool": window_nest.lower_pool,
    "nn.avg_pool": window_nest.lower_pool,
    "nn.global_avg_pool": pool.lower_global_pool,
    "nn.global_max_pool": pool.lower_global_pool,
    "nn.lrn": lrn.lower_lrn,
    "nn.softmax": softmax.lower_softmax,
    "nn.concat": data.lower_concat,
    "nn.transpose": data.lower_transpose,
    "nn.slice": data.lower_slice,
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
