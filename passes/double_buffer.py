"""double-buffer: two on-chip slots per buffer, so DMA overlaps compute.

Sets the module attribute `tile.buffers = 2`: `lower-to-isa` then loads tile i+1 into
one slot while tile i is computed from the other, and stores tile i-1 meanwhile.
Without this pass every buffer has one slot and each tile's load, compute and store
run one after the other (`--disable-pass=double-buffer` shows what the overlap is worth).

    nncc-opt m.fused.mlir -p double-buffer
      builtin.module attributes {..., tile.buffers = 2 : i64} { ... }
"""

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64
from xdsl.passes import ModulePass

from nncc.dialects import tile

from nncc.passes.decisions import BUFFERS_ATTR, SIZED_FOR_ATTR
from nncc.support.errors import NnccError


@dataclass(frozen=True)
class DoubleBufferPass(ModulePass):
    """Double-buffer every layer's tiles."""

    name = "double-buffer"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        sized_for = op.attributes.get(SIZED_FOR_ATTR)
        if isinstance(sized_for, IntegerAttr) and sized_for.value.data == 1:
            raise NnccError("double-buffer: the tiles were sized for one slot per buffer "
                            "(tile-layers{buffers=1}); run tile-layers with buffers=2 first")
        op.attributes[BUFFERS_ATTR] = IntegerAttr(2, i64)
        for buffer in op.walk():
            if isinstance(buffer, tile.BufferOp) and buffer.resident is None and buffer.ring is None:
                # a second slot (resident and ring buffers: one)
                buffer.slots = IntegerAttr(2, i64)
