"""lower-to-isa: the `fused`/`nn` model becomes a straight-line program of `isa` ops.

Every layer is tiled (conv/gemm by their `tile` attribute when tile-layers set one),
mapped onto lanes, dealt to `tile.cores` cores (one without partition-cores), given
`tile.buffers` slots per buffer (one without double-buffer), and emitted as instructions
with addresses allocated (see compiler/codegen), for the target, tile order and tile objective
the module records (`tile.target`, `tile.order`, `tile.objective`: see `passes/decisions.py`).
The module's @main is replaced by `@program`; the resolved target becomes `isa.target`; the
DRAM image (weights in kernel layout) goes to the weight store.

    nncc --target=edge m.onnx --emit=tile -o m.tile.mlir
    nncc-opt m.tile.mlir -p 'double-buffer,lower-to-isa' -o m.isa.mlir

The isa ops themselves (one per instruction, ~250 us each to build) are built only when the IR
is printed or written, or a later pass runs (`isa_module.defer_program`): `nncc --target=T`
takes the `Program` as the pass made it.

Options: `target` (a preset name or TOML path) and `target-set` (overrides "key=value", comma
separated), `tile-order` (naive or scan), `tile-objective` (cycles or dram: for layers without a
`tile` attribute), each needed only when the module records none, and refused when it records
another value; `compare-orders` (the cost model also predicts each Scan conv/gemm layer's DRAM
bytes in naive order: `isa.predictions`, the report's `predicted_dram_bytes_naive_order`);
`skip-unsupported` (an op without a code generator gets DRAM room for its result but no code:
benchmarks timing conv/FC layers only).
"""

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from nncc.compiler.codegen.isa_module import defer_program
from nncc.compiler.codegen.lower import lower_module, pipeline_decisions
from nncc.compiler.weights import store_of
from nncc.passes.decisions import (
    OBJECTIVE_ATTR, OBJECTIVES, ORDER_ATTR, ORDERS, TARGET_ATTR, decide, module_target, walk_order,
)


@dataclass(frozen=True)
class LowerToIsaPass(ModulePass):
    """Lower the whole model to the accelerator ISA."""

    name = "lower-to-isa"

    target: str = ""  # default: the module's tile.target, else vector
    target_set: tuple[str, ...] = ()
    tile_order: str = ""  # default: the module's tile.order, else scan
    tile_objective: str = ""  # for layers without a tile attribute; default: tile.objective, else cycles
    compare_orders: bool = False
    skip_unsupported: bool = False

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        target = module_target(op, self.name, self.target, self.target_set)
        tile_order = decide(op, self.name, ORDER_ATTR, "tile-order", self.tile_order, "scan", ORDERS)
        objective = decide(op, self.name, OBJECTIVE_ATTR, "tile-objective", self.tile_objective, "cycles",
                           OBJECTIVES)
        store = store_of(op, self.name)
        program = lower_module(op, store, target, walk_order(tile_order), skip_unsupported=self.skip_unsupported,
                               compare_orders=self.compare_orders, objective=objective, **pipeline_decisions(op))
        del op.attributes[TARGET_ATTR]  # isa.target holds it from now on
        defer_program(op, program, store)
