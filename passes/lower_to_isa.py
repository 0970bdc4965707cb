"""lower-to-isa: the `fused`/`nn` model becomes a straight-line program of `isa` ops.

Every layer is tiled (conv/gemm by their `tile` attribute when tile-layers set one),
mapped onto lanes, dealt to `tile.cores` cores (one without partition-cores), given
`tile.buffers` slots per buffer (one without double-buffer), and emitted as instructions
with addresses allocated (see compiler/codegen). The module's @main is replaced by
`@program`; the DRAM image (weights in kernel layout) goes to the weight store.

    nncc-opt model.fused.mlir -p 'partition-cores{target=edge},tile-layers{target=edge},double-buffer,lower-to-isa{target=edge tile-order=naive}' -o model.isa.mlir

Options: `target` (a preset name or TOML path), `target-set` (overrides "key=value",
comma separated), `tile-order` (naive or scan).
"""

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from nncc.compiler.codegen.isa_module import program_to_module
from nncc.compiler.codegen.lower import PREDICTIONS, lower_module, pipeline_decisions, predictions_attribute
from nncc.compiler.weights import attach, store_of
from nncc.passes.tile_layers import check_tile_options
from nncc.runtime.target import load_target


@dataclass(frozen=True)
class LowerToIsaPass(ModulePass):
    """Lower the whole model to the accelerator ISA."""

    name = "lower-to-isa"

    target: str = "vector"
    target_set: tuple[str, ...] = ()
    tile_order: str = "scan"
    tile_objective: str = "cycles"  # for layers without a tile attribute (tile-layers did not run)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        check_tile_options(self.name, self.tile_order, self.tile_objective)
        store = store_of(op, self.name)
        program = lower_module(op, store, load_target(self.target, self.target_set), self.tile_order,
                               objective=self.tile_objective, **pipeline_decisions(op))
        lowered = program_to_module(program, store)
        lowered.attributes[PREDICTIONS] = predictions_attribute(program)  # the cost model's, per layer
        keep = {name: attr for name, attr in op.attributes.items() if name.startswith("nn.")}
        for child in list(op.body.block.ops):
            child.detach()
            child.erase(safe_erase=False)
        for child in list(lowered.body.block.ops):
            child.detach()
            op.body.block.add_op(child)
        op.attributes.update(lowered.attributes)
        op.attributes.update(keep)
        attach(op, store)
