"""partition-cores: spread every layer's tiles over the target's cores.

Sets the module attribute `tile.cores`; `lower-to-isa` deals each layer's tiles out to
that many cores (a weight block several cores need is read from DRAM once and multicast).
Without this pass a program uses one core. As the first pass of the back end it also records
the resolved target, `tile.target` (see `passes/decisions.py`), which later passes read.

    nncc-opt m.fused.mlir -p 'partition-cores{target=vector}'
      builtin.module attributes {..., tile.target = {name = "vector", ...}, tile.cores = 4 : i64} { ... }

Options: `target` (a preset name or TOML path) and `target-set` (overrides "key=value", comma
separated), needed only when the module records no target; `cores` (0: all of the target's) caps
the count. An option that differs from what the module records is refused.
"""

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from nncc.passes.decisions import CORES_ATTR, decide, module_target
from nncc.support.errors import NnccError


@dataclass(frozen=True)
class PartitionCoresPass(ModulePass):
    """Use the target's cores (or `cores` of them)."""

    name = "partition-cores"

    target: str = ""  # default: the module's tile.target, else vector
    target_set: tuple[str, ...] = ()
    cores: int = 0

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        target = module_target(op, self.name, self.target, self.target_set)
        if not 0 <= self.cores <= target.cores:
            raise NnccError(f"partition-cores: cores={self.cores}, but target {target.name} has {target.cores}")
        cores = decide(op, self.name, CORES_ATTR, "cores", self.cores, target.cores)
        if not 1 <= cores <= target.cores:  # a hand edit
            raise NnccError(f"partition-cores: {CORES_ATTR} = {cores} recorded in the module, but target "
                            f"{target.name} has {target.cores} cores")
