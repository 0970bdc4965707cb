"""Data movement layers: concat and transpose, through the chip.

Both are elementwise copies (`vact copy`) whose DRAM side is strided:

- **concat**: every input is copied into its slice of the output (the inputs' jobs in one
  phase). The
  output slice is a strided view of the output tensor; axes that stay contiguous are merged,
  so a channel concat of NCHW tensors with N = 1 is one long contiguous copy per input.
- **transpose**: the output is walked row-major and the input is read with the permuted
  strides (`Source.strides[i] = input stride of axis perm[i]`): the load DMA gathers, the
  copy runs on lanes along the output's innermost axis, the store is contiguous. Axes beyond
  the DMA's three dimensions become separate jobs.
"""

from __future__ import annotations

from xdsl.ir import Operation

from nncc.compiler.codegen import eltwise
from nncc.compiler.codegen.context import F32, Lowering, row_major_strides
from nncc.compiler.codegen.lower import lowers, source_address
from nncc.dialects import nn


@lowers("nn.concat")
def lower_concat(lowering: Lowering, op: Operation):
    axis = op.axis.value.data
    out_shape = nn.shape_of(op.result)
    out_strides = row_major_strides(out_shape)
    y = lowering.address(op.result)
    phases, offset = [], 0
    for value in op.inputs:
        shape = nn.shape_of(value)
        if shape[axis]:
            layer = eltwise.ElementwiseLayer(
                lowering, shape, [eltwise.Source(source_address(lowering, value), row_major_strides(shape))],
                eltwise.Source(y + F32 * offset * out_strides[axis], out_strides),
                eltwise.activation("copy", lowering.vector_unit))
            phases += layer.layers()
        offset += shape[axis]
    return eltwise.merge_phases(phases)


@lowers("nn.transpose")
def lower_transpose(lowering: Lowering, op: Operation):
    perm = nn.ints(op.perm)
    in_strides = row_major_strides(nn.shape_of(op.input))
    out_shape = nn.shape_of(op.result)
    source = eltwise.Source(source_address(lowering, op.input), tuple(in_strides[p] for p in perm))
    layer = eltwise.ElementwiseLayer(lowering, out_shape, [source],
                                     eltwise.Source(lowering.address(op.result), row_major_strides(out_shape)),
                                     eltwise.activation("copy", lowering.vector_unit))
    return layer.layers()
