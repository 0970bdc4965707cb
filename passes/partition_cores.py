"""partition-cores: spread every layer's tiles over the target's cores.

Sets the module attribute `tile.cores`; `lower-to-isa` deals each layer's tiles out to
that many cores (a weight block several cores need is read from DRAM once and multicast).
Without this pass a program uses one core.

    nncc-opt m.fused.mlir -p 'partition-cores{target=vector}'
      builtin.module attributes {..., tile.cores = 4 : i64} { ... }

Option `cores` (0: all of the target's) caps the count.
"""

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64
from xdsl.passes import ModulePass

from nncc.runtime.target import load_target
from nncc.support.errors import NnccError

CORES_ATTR = "tile.cores"


@dataclass(frozen=True)
class PartitionCoresPass(ModulePass):
    """Use the target's cores (or `cores` of them)."""

    name = "partition-cores"

    target: str = "vector"
    target_set: tuple[str, ...] = ()
    cores: int = 0

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        available = load_target(self.target, self.target_set).cores
        if not 0 <= self.cores <= available:
            raise NnccError(f"partition-cores: cores={self.cores}, but target {self.target} has {available}")
        op.attributes[CORES_ATTR] = IntegerAttr(self.cores or available, i64)
