"""Data movement layers: concat and transpose, through the chip.

Both are elementwise copies (`vact copy`) whose DRAM side is strided:

- **concat**: an input whose slice of the output is one contiguous block (every axis before
  the concat axis has size 1, e.g. a channel concat with N = 1) and that nothing else reads
  is written there in place by its producer (`plan_in_place_concats`, before any op is
  lowered): no copy at all. The other inputs are copied into their slices (the inputs' jobs
  in one phase); a slice is a strided view of the output, axes that stay contiguous merged.
- **transpose**: the output is walked row-major and the input is read with the permuted
  strides (`Source.strides[i] = input stride of axis perm[i]`): the load DMA gathers, the
  copy runs on lanes along the output's innermost axis, the store is contiguous. Axes beyond
  the DMA's three dimensions become separate jobs.
- **slice** (ONNX Slice, each output of Split): a box that is one contiguous run of the input
  (`SliceOp.contiguous_offset`: a channel range of an NCHW tensor with batch 1) is an alias of
  the input (no layer, like a reshape; `context.is_alias`). Any other box is copied: the input is
  read with strides `step x input stride` from the box's first element (negative steps read
  backwards), the copy runs along the output's innermost axis, the store is contiguous.
"""

from __future__ import annotations

import numpy as np
from xdsl.ir import Operation

from nncc.compiler.codegen import eltwise
from nncc.compiler.codegen.context import F32, Lowering, is_alias, row_major_strides, source_address
from nncc.dialects import nn


def in_place_slots(lowering: Lowering, op: Operation) -> dict:
    """The inputs of concat `op` its producers can write straight into the output: value ->
    byte address of its slice. Needs the slice contiguous, the value computed by an op other
    than a reshape, read only by this concat (once), not yet placed and not a graph output."""
    axis = op.axis.value.data
    out_shape = nn.shape_of(op.result)
    if any(size != 1 for size in out_shape[:axis]):
        return {}
    step = F32 * row_major_strides(out_shape)[axis]
    slots, offset = {}, 0
    for value in op.inputs:
        owner = value.owner
        if isinstance(owner, Operation) and not isinstance(owner, nn.WeightOp) and not is_alias(owner) and \
                value.has_one_use() and value not in lowering.addresses and \
                sum(v is value for v in op.inputs) == 1:
            slots[value] = offset
        offset += nn.shape_of(value)[axis]
    if not slots:
        return {}
    y = lowering.address(op.result)
    return {value: y + step * start for value, start in slots.items()}


def plan_in_place_concats(lowering: Lowering, block) -> None:
    """Before the ops of `block` are lowered: place concat inputs in their output slices (last
    concat first, so that a concat feeding another one is itself placed in its slice)."""
    for op in reversed(list(block.ops)):
        if isinstance(op, nn.ConcatOp):
            lowering.addresses.update(in_place_slots(lowering, op))


def lower_concat(lowering: Lowering, op: Operation):
    axis = op.axis.value.data
    out_shape = nn.shape_of(op.result)
    out_strides = row_major_strides(out_shape)
    y = lowering.address(op.result)
    phases, offset = [], 0
    for value in op.inputs:
        shape = nn.shape_of(value)
        if lowering.addresses.get(value) == y + F32 * offset * out_strides[axis]:
            offset += shape[axis]
            continue  # its producer wrote it in place
        if shape[axis]:
            layer = eltwise.ElementwiseLayer(
                lowering, shape, [eltwise.Source(source_address(lowering, value), row_major_strides(shape))],
                eltwise.Source(y + F32 * offset * out_strides[axis], out_strides),
                eltwise.activation("copy", lowering.vector_unit))
            phases += layer.layers()
        offset += shape[axis]
    return eltwise.merge_phases(phases)


def lower_transpose(lowering: Lowering, op: Operation):
    perm = nn.ints(op.perm)
    in_strides = row_major_strides(nn.shape_of(op.input))
    out_shape = nn.shape_of(op.result)
    source = eltwise.Source(source_address(lowering, op.input), tuple(in_strides[p] for p in perm))
    layer = eltwise.ElementwiseLayer(lowering, out_shape, [source],
                                     eltwise.Source(lowering.address(op.result), row_major_strides(out_shape)),
                                     eltwise.activation("copy", lowering.vector_unit))
    return layer.layers()


def lower_slice(lowering: Lowering, op: Operation):
    """A strided copy. DMA strides are non-negative, so each index of an axis read backwards
    (negative step, size > 1) is a piece of its own (the pieces are one phase)."""
    in_strides = row_major_strides(nn.shape_of(op.input))
    starts, steps = nn.ints(op.starts), nn.ints(op.steps)
    out_shape = nn.shape_of(op.result)
    out_strides = row_major_strides(out_shape)
    base = source_address(lowering, op.input) + F32 * sum(s * st for s, st in zip(starts, in_strides))
    y = lowering.address(op.result)
    backwards = [a for a, (step, size) in enumerate(zip(steps, out_shape)) if step < 0 and size > 1]
    piece_shape = tuple(1 if a in backwards else size for a, size in enumerate(out_shape))
    strides = tuple(step * stride for step, stride in zip(steps, in_strides))
    phases = []
    for index in np.ndindex(*(out_shape[a] for a in backwards)):
        source = base + F32 * sum(i * strides[a] for i, a in zip(index, backwards))
        target = y + F32 * sum(i * out_strides[a] for i, a in zip(index, backwards))
        layer = eltwise.ElementwiseLayer(lowering, piece_shape,
                                         [eltwise.Source(source, tuple(abs(s) for s in strides))],
                                         eltwise.Source(target, out_strides),
                                         eltwise.activation("copy", lowering.vector_unit))
        phases += layer.layers()
    return eltwise.merge_phases(phases)
