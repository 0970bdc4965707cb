"""Concat in place: the placement behind concat nests (stream_nest.concat_nest writes the copies).

An input of a concat whose slice of the output is one contiguous block (every axis before the
concat axis has size 1, e.g. a channel concat with N = 1) and that nothing else reads is written
there in place by its producer (`plan_in_place_concats`, before any op is lowered): no copy at
all. The concat's nest copies only the other inputs into their slices.
"""

from __future__ import annotations

from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Operation

from nncc.compiler.codegen.context import F32, Lowering, is_alias, row_major_strides
from nncc.dialects import nn, tile
from nncc.support.errors import NnccError


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
        elif isinstance(op, tile.NestOp) and op.attributes.get("op") == StringAttr("nn.concat"):
            place_nest_inputs(lowering, op)


def placed_inputs(lowering: Lowering, op: Operation) -> set:
    """The inputs of concat `op` its producers write in place: those lowering placed in their
    slices, or, before lowering (tile-layers), those `in_place_slots` would place."""
    if not getattr(lowering, "concats_planned", False):
        return set(in_place_slots(lowering, op))
    axis = op.axis.value.data
    out_shape = nn.shape_of(op.result)
    step = F32 * row_major_strides(out_shape)[axis]
    y, placed, offset = lowering.address(op.result), set(), 0
    for value in op.inputs:
        if lowering.addresses.get(value) == y + step * offset:
            placed.add(value)
        offset += nn.shape_of(value)[axis]
    return placed


def place_nest_inputs(lowering: Lowering, nest: tile.NestOp) -> None:
    """A concat nest from tile-layers: each input its nest does not read (a block argument
    without a use) is written by its producer into its slice of the output."""
    axis = nest.attributes["axis"].value.data
    out_shape = nn.shape_of(nest.results[0])
    step = F32 * row_major_strides(out_shape)[axis]
    y, offset = lowering.address(nest.results[0]), 0
    for value, arg in zip(nest.inputs, nest.block.args):
        if not arg.uses:
            if value in lowering.addresses and lowering.addresses[value] != y + step * offset:
                raise NnccError(f"layer {nest.layer.data}: input {value.name_hint or '?'} is not copied by the "
                                "concat's nest but cannot be written in place (it has a place of its own)")
            lowering.addresses[value] = y + step * offset
        offset += nn.shape_of(value)[axis]
