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

from nncc.compiler.codegen.chain_nest import POOL_OPS, ConvChain, best_chain, find_runs, replace_with_chain
from nncc.compiler.codegen.context import Lowering, layer_name, module_cost_cache
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
        layer_cores = cores.value.data if isinstance(cores, IntegerAttr) else 1
        lowering = Lowering(target, Program(target, []), store_of(op, self.name), tile_order=walk_order(order),
                            layer_cores=layer_cores, buffers=self.buffers, objective=objective,
                            cost_cache=module_cost_cache(op, target, walk_order(order), objective, layer_cores,
                                                         self.buffers))
        block = main_function(op).body.block
        chains = find_chains(block)
        with progress.stage("fusing", total=len(chains), unit="groups") as task:
            for chain in chains:
                task.update(detail=chain.name)
                fuse(lowering, chain, self.always)
                task.advance()
        runs = find_runs(block, set())
        with progress.stage("fusing conv chains", total=len(runs), unit="runs") as task:
            for run in runs:
                task.update(detail=layer_name(run[0]))
                fuse_run(lowering, run, self.always)
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
    record(replace_with_group(lowering, chain, tiles), fused, separate)


def record(nest, fused, separate) -> None:
    """The `fusion` attribute: the group's and its layers' predicted cycles and DRAM bytes."""
    nest.attributes["fusion"] = DictionaryAttr({
        "cycles": ArrayAttr([IntegerAttr(int(p.cycles), i64) for p in (fused, separate)]),
        "dram_bytes": ArrayAttr([IntegerAttr(int(p.dram_read_bytes + p.dram_write_bytes), i64)
                                 for p in (fused, separate)])})


MAX_CHAIN = 8  # layers of a conv chain at most (longer ones never fit a buffer of the targets)


def fuse_run(lowering: Lowering, run: list[Operation], always: bool) -> None:
    """Cut a run of convs and pooling layers into the groups (and single layers) whose total
    ranks first by the module's objective (dynamic programming over the cuts; `always`: fewest
    pieces first), and replace each group of two or more by its nest."""
    singles = [Total([cached(lowering, "layer", [op], lambda: layer_prediction(lowering, op))]) for op in run]
    best: list[tuple | None] = [((0, 0, 0), [])] + [None] * len(run)
    for j in range(1, len(run) + 1):
        for i in range(max(0, j - MAX_CHAIN), j):
            if best[i] is None:
                continue
            if j - i == 1:
                piece = (None, singles[i], singles[i])
            else:
                chain = ConvChain(tuple(run[i:j]))
                choice = cached(lowering, "chain", chain.ops, lambda: best_chain(lowering, chain))
                if choice is None:
                    continue
                piece = (choice[0], choice[1], Total(singles[i:j], lowering.target.barrier_cycles))
            key = tuple(a + b for a, b in zip(best[i][0], (int(always), *rank(piece[1], lowering.objective))))
            if best[j] is None or key < best[j][0]:
                best[j] = (key, best[i][1] + [(i, j, piece)])
    for i, j, (tiles, fused, separate) in best[len(run)][1]:
        if tiles is not None:
            record(replace_with_chain(lowering, ConvChain(tuple(run[i:j])), tiles), fused, separate)


def signature(op: Operation) -> tuple:
    """What a layer's cost depends on: its op, operand and result shapes, and properties."""
    from nncc.dialects import nn

    return (op.name, tuple(tuple(nn.shape_of(v)) for v in op.operands), tuple(nn.shape_of(op.results[0])),
            tuple(sorted((name, str(value)) for name, value in op.properties.items())))


def cached(lowering: Lowering, kind: str, ops, compute):
    """`compute()`, once per `kind` and signature of `ops` (ResNet's blocks repeat their shapes)."""
    key = ("fuse-groups", kind, tuple(signature(op) for op in ops))
    if key not in lowering.cost_cache:
        lowering.cost_cache[key] = compute()
    return lowering.cost_cache[key]


class Total:
    """The sum of the layers' predictions (what `rank` reads), with the barrier between each two
    layers (the target's `barrier_cycles`)."""

    def __init__(self, predictions, barrier_cycles: int = 0):
        predictions = list(predictions)
        self.cycles = sum(p.cycles for p in predictions) + max(0, len(predictions) - 1) * barrier_cycles
        self.dram_read_bytes = sum(p.dram_read_bytes for p in predictions)
        self.dram_write_bytes = sum(p.dram_write_bytes for p in predictions)


def layer_by_layer(lowering: Lowering, chain: Chain) -> Total:
    """The cost model's figures for the chain's layers on their own, each the nest tile-layers
    would write (the same tiles, epilogue and residual), as the simulation runs it."""
    return Total([layer_prediction(lowering, op) for op in chain.ops], lowering.target.barrier_cycles)


def layer_prediction(lowering: Lowering, op: Operation):
    from nncc.compiler.codegen.conv_nest import conv_nest, conv_tensors
    from nncc.compiler.codegen.conv_width import choose_mapping
    from nncc.compiler.codegen.depthwise import depthwise_tiles
    from nncc.compiler.codegen.epilogue import fused_epilogue
    from nncc.compiler.codegen.layers import conv2d_shape, conv_problem
    from nncc.compiler.codegen.window_nest import depthwise_nest, pool_nest_of

    probe = scratch(lowering)
    if op.name in POOL_OPS:
        return predict(probe, pool_nest_of(probe, op, lowering.buffers))
    s = conv2d_shape(op)
    if conv_problem(op) is None:  # the depthwise conv
        nest = depthwise_nest(probe, op, s, depthwise_tiles(lowering, op, s), fused_epilogue(op), lowering.buffers)
    else:
        mapping, tiles = choose_mapping(lowering, s, layer_name(op), op.bias is not None)
        nest = conv_nest(probe, op, s, tiles, conv_tensors(op, s, mapping), fused_epilogue(op),
                         lowering.tile_order == "scan", mapping, lowering.buffers)
    return predict(probe, nest)
