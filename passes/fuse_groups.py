"""fuse-groups: run [1x1 ->] depthwise -> 1x1 chains as one loop nest, the intermediates on chip.

For every chain of a depthwise conv whose only consumer is a 1x1 conv, with the 1x1 conv that
alone feeds it if there is one (MobileNetV2's inverted residual block with its residual add,
MobileNetV1's depthwise-separable pair), the cost model times the group's nest
(`compiler/codegen/group_nest.py`) for every strip height and channel block that fits on chip,
and the layers' own nests as tile-layers would choose them. Where the group ranks first by the
module's objective (`tile.objective`: cycles, or DRAM bytes), its nest replaces the layers; the
nest's `fusion` attribute keeps both predictions, so `--emit=tile` shows why:

    %y = tile.nest "b.expand+b.dw+b.project" (%x, %w1, %b1, %wd, %bd, %w2, %b2, %x) -> tensor<...>
           attributes {op = "fused.group", fusion = {cycles = [fused, layers], dram_bytes = [...]}} { ... }

(`[fused, layer by layer]`). Halo rows are recomputed by the strips on either side, not cached.
Runs before tile-layers, which then tiles the layers left; `--disable-pass=fuse-groups` gives
layer-by-layer. The target, tile order and objective are read from the module (or recorded,
as tile-layers does: `passes/decisions.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, IntegerAttr, ModuleOp, i64
from xdsl.ir import Operation
from xdsl.passes import ModulePass

from nncc.compiler.codegen.context import Lowering, layer_name
from nncc.compiler.codegen.group_nest import Chain, best_group, find_chains, predict, rank, replace_with_group, scratch
from nncc.compiler.modules import main_function
from nncc.compiler.weights import store_of
from nncc.passes.decisions import (
    CORES_ATTR, OBJECTIVE_ATTR, OBJECTIVES, ORDER_ATTR, ORDERS, decide, module_target, walk_order,
)
from nncc.runtime.program import Program
from nncc.support import progress
from nncc.support.errors import NnccError


@dataclass(frozen=True)
class FuseGroupsPass(ModulePass):
    """Replace every depthwise chain that pays by its fused group's nest."""

    name = "fuse-groups"

    target: str = ""  # default: the module's tile.target, else vector
    target_set: tuple[str, ...] = ()
    tile_order: str = ""  # naive or scan; default: the module's tile.order, else scan
    tile_objective: str = ""  # cycles or dram; default: the module's tile.objective, else cycles
    buffers: int = 2  # slots per buffer the tiles are sized for
    always: bool = False  # fuse every chain whose group fits, paying or not (for experiments)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.buffers not in (1, 2):
            raise NnccError(f"fuse-groups: buffers must be 1 or 2, not {self.buffers}")
        target = module_target(op, self.name, self.target, self.target_set)
        order = decide(op, self.name, ORDER_ATTR, "tile-order", self.tile_order, "scan", ORDERS)
        objective = decide(op, self.name, OBJECTIVE_ATTR, "tile-objective", self.tile_objective, "cycles", OBJECTIVES)
        cores = op.attributes.get(CORES_ATTR)
        lowering = Lowering(target, Program(target, []), store_of(op, self.name), tile_order=walk_order(order),
                            layer_cores=cores.value.data if isinstance(cores, IntegerAttr) else 1,
                            buffers=self.buffers, objective=objective)
        chains = find_chains(main_function(op).body.block)
        with progress.stage("fusing", total=len(chains), unit="groups") as task:
            for chain in chains:
                task.update(detail=chain.name)
                fuse(lowering, chain, self.always)
                task.advance()


def fuse(lowering: Lowering, chain: Chain, always: bool) -> None:
    """Replace `chain` by its group's nest when the group fits and ranks before its layers."""
    choice = best_group(lowering, chain)
    if choice is None:
        return
    tiles, fused = choice
    separate = layer_by_layer(lowering, chain)
    if not always and rank(fused, lowering.objective) >= rank(separate, lowering.objective):
        return
    nest = replace_with_group(lowering, chain, tiles)
    nest.attributes["fusion"] = DictionaryAttr({
        "cycles": ArrayAttr([IntegerAttr(int(p.cycles), i64) for p in (fused, separate)]),
        "dram_bytes": ArrayAttr([IntegerAttr(int(p.dram_read_bytes + p.dram_write_bytes), i64)
                                 for p in (fused, separate)])})


class Total:
    """The sum of the layers' predictions (what `rank` reads)."""

    def __init__(self, predictions):
        self.cycles = sum(p.cycles for p in predictions)
        self.dram_read_bytes = sum(p.dram_read_bytes for p in predictions)
        self.dram_write_bytes = sum(p.dram_write_bytes for p in predictions)


def layer_by_layer(lowering: Lowering, chain: Chain) -> Total:
    """The cost model's figures for the chain's layers on their own, each the nest tile-layers
    would write (the same tiles, epilogue and residual), as the simulation runs it."""
    return Total([layer_prediction(lowering, op) for op in chain.ops])


def layer_prediction(lowering: Lowering, op: Operation):
    from nncc.compiler.codegen.conv_nest import conv_nest, conv_tensors
    from nncc.compiler.codegen.conv_width import choose_mapping
    from nncc.compiler.codegen.depthwise import depthwise_tiles
    from nncc.compiler.codegen.epilogue import fused_epilogue
    from nncc.compiler.codegen.layers import conv2d_shape, conv_problem
    from nncc.compiler.codegen.window_nest import depthwise_nest

    s, probe = conv2d_shape(op), scratch(lowering)
    if conv_problem(op) is None:  # the depthwise conv
        nest = depthwise_nest(probe, op, s, depthwise_tiles(lowering, op, s), fused_epilogue(op), lowering.buffers)
    else:
        mapping, tiles = choose_mapping(lowering, s, layer_name(op), op.bias is not None)
        nest = conv_nest(probe, op, s, tiles, conv_tensors(op, s, mapping), fused_epilogue(op),
                         lowering.tile_order == "scan", mapping, lowering.buffers)
    return predict(probe, nest)
