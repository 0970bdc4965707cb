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
as tile-layers does: `passes/decisions.py`). `search-workers=N` (`nncc -j N`; default 1 here,
the CPUs in nncc) first runs every conv/gemm shape's tile search (tile-layers' too), the
chains' and groups' tile choices and their layers' predictions on N forked processes
(`work_ahead`): the same decisions, in less wall time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from xdsl.context import Context
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, IntegerAttr, ModuleOp, i64
from xdsl.ir import Operation
from xdsl.passes import ModulePass

from nncc.compiler.codegen.chain_nest import POOL_OPS, ConvChain, best_chain, find_runs, replace_with_chain
from nncc.compiler.codegen.context import Lowering, layer_name, module_cost_cache
from nncc.compiler.codegen.search_pool import Search, conv_search, distinct_searches, run_ahead, search
from nncc.compiler.codegen.group_nest import (
    Chain, best_group, compulsory_bytes, find_chains, predict, ranked, replace_with_group, scratch,
)
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
    search_workers: int = 1  # processes running the cost model's work ahead (`work_ahead`); nncc: the CPUs

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
        if self.search_workers < 1:
            raise NnccError(f"fuse-groups: search-workers must be at least 1, not {self.search_workers}")
        block = main_function(op).body.block
        chains = find_chains(block)
        work_ahead(lowering, main_function(op), chains, self.search_workers)
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
    choice = group_choice(lowering, chain)
    if choice is None:
        return
    tiles, fused = choice
    separate = layer_by_layer(lowering, chain)
    if not always and ranked([separate, fused], lowering.objective, compulsory_bytes(chain.ops))[0] == 0:
        return  # the layers rank first (or tie)
    record(replace_with_group(lowering, chain, tiles), fused, separate)


def record(nest, fused, separate) -> None:
    """The `fusion` attribute: the group's and its layers' predicted cycles and DRAM bytes."""
    nest.attributes["fusion"] = DictionaryAttr({
        "cycles": ArrayAttr([IntegerAttr(int(p.cycles), i64) for p in (fused, separate)]),
        "dram_bytes": ArrayAttr([IntegerAttr(int(p.dram_read_bytes + p.dram_write_bytes), i64)
                                 for p in (fused, separate)])})


MAX_CHAIN = 8  # layers of a conv chain at most (longer ones never fit a buffer of the targets)


@dataclass(frozen=True)
class Plan:
    """A way to cut the first layers of a run: its pieces (first, end, (tiles or None, fused,
    separate)), how many pieces count (with `always`), and their summed prediction."""

    pieces: tuple = ()
    count: int = 0
    total: Total = field(default_factory=lambda: Total([]))

    def key(self) -> tuple:
        return self.count, self.total.dram_read_bytes + self.total.dram_write_bytes, self.total.cycles

    def then(self, i: int, j: int, piece: tuple, always: bool) -> Plan:
        return Plan(self.pieces + ((i, j, piece),), self.count + int(always), Total([self.total, piece[1]]))


def pareto(plans: list[Plan]) -> list[Plan]:
    """The plans no other beats or equals in every one of pieces, DRAM bytes and cycles."""
    front: list[Plan] = []
    for plan in sorted(plans, key=Plan.key):
        if not any(all(a <= b for a, b in zip(kept.key(), plan.key())) for kept in front):
            front.append(plan)
    return front


def fuse_run(lowering: Lowering, run: list[Operation], always: bool) -> None:
    """Cut a run of convs and pooling layers into the groups (and single layers) whose total
    ranks first by the module's objective (`ranked`, as a group's own tilings; `always`: fewest
    pieces first), and replace each group of two or more by its nest. Dynamic programming over
    the cuts keeps, per prefix of the run, the plans that are best in bytes, cycles or pieces
    (the Pareto front), so the tolerance of the DRAM objective applies to the whole run."""
    singles = [Total([layer_choice(lowering, op)]) for op in run]
    fronts: list[list[Plan]] = [[Plan()]] + [[] for _ in run]
    for j in range(1, len(run) + 1):
        found = []
        for i in range(max(0, j - MAX_CHAIN), j):
            if j - i == 1:
                piece = (None, singles[i], singles[i])
            else:
                choice = chain_choice(lowering, ConvChain(tuple(run[i:j])))
                if choice is None:
                    continue
                piece = (choice[0], choice[1], Total(singles[i:j], lowering.target.barrier_cycles))
            found += [plan.then(i, j, piece, always) for plan in fronts[i]]
        fronts[j] = pareto(found)
    plans = fronts[len(run)]
    plans = [plan for plan in plans if plan.count == min(p.count for p in plans)]
    best = plans[ranked([plan.total for plan in plans], lowering.objective, compulsory_bytes(run))[0]]
    for i, j, (tiles, fused, separate) in best.pieces:
        if tiles is not None:
            record(replace_with_chain(lowering, ConvChain(tuple(run[i:j])), tiles), fused, separate)


def layer_choice(lowering: Lowering, op: Operation):
    """The cost model's prediction of `op` as tile-layers would write it (`layer_prediction`), cached."""
    return cached(lowering, "layer", [op], lambda: layer_prediction(lowering, op))


def chain_choice(lowering: Lowering, chain: ConvChain):
    """`best_chain` of `chain`, cached."""
    return cached(lowering, "chain", chain.ops, lambda: best_chain(lowering, chain))


def group_choice(lowering: Lowering, chain: Chain):
    """`best_group` of a depthwise chain, cached."""
    return cached(lowering, "group", chain.ops, lambda: best_group(lowering, chain))


def sub_runs(run: list[Operation]) -> list[tuple[Operation, ...]]:
    """The pieces of two or more layers `fuse_run` times."""
    return [tuple(run[i:j]) for j in range(1, len(run) + 1) for i in range(max(0, j - MAX_CHAIN), j - 1)]


def work_ahead(lowering: Lowering, main, chains: list[Chain], workers: int) -> None:
    """Run on `workers` forked processes (`search_pool.run_ahead`) what this pass and tile-layers
    will ask the cost model, so that their walks find it in `cost_cache`: every conv/gemm shape's
    tile search, with the predictions of the layers of that shape in depthwise chains and conv
    runs; the depthwise groups' and the conv chains' best tiles; the pooling and depthwise
    layers' predictions. The runs are those left if no depthwise chain is fused (one that is
    not leaves its layers to be timed here)."""
    from nncc.compiler.codegen.lower import layers_of

    if workers < 2:
        return
    in_groups = [op for chain in chains for op in chain.ops]
    runs = find_runs(main.body.block, {id(op) for op in in_groups})
    searches: dict[tuple, tuple[Search, list]] = {}
    for layer in layers_of(main):
        problem = conv_search(layer, lowering)
        if problem is not None:
            searches.setdefault((problem.shape, problem.bias, problem.conv), (problem, []))
    tasks, layers = [], {}
    for piece in {tuple(signature(op) for op in ops): ops for run in runs for ops in sub_runs(run)}.values():
        tasks.append(partial(chain_choice, lowering, ConvChain(piece)))
    tasks += [partial(group_choice, lowering, chain) for chain in chains]
    for op in [*in_groups, *(op for run in runs for op in run)]:
        layers.setdefault(signature(op), op)
    others = []
    for op in layers.values():
        problem = conv_search(op, lowering)
        if problem is None:
            others.append(partial(layer_choice, lowering, op))
        else:
            searches[(problem.shape, problem.bias, problem.conv)][1].append(op)
    for problem in distinct_searches(lowering, [problem for problem, _ in searches.values()]):
        ops = searches[(problem.shape, problem.bias, problem.conv)][1]
        tasks.append(partial(search_and_predict, lowering, problem, ops))
    run_ahead(lowering, tasks + others, workers, "searching tiles", "tasks")


def search_and_predict(lowering: Lowering, problem: Search, ops: list[Operation]) -> None:
    """Search `problem`'s tiles, then predict the layers `ops` of its shape."""
    search(lowering, problem)
    for op in ops:
        layer_choice(lowering, op)


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
    return Total([layer_choice(lowering, op) for op in chain.ops], lowering.target.barrier_cycles)


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
