"""tile-layers: write every layer of @main as a `tile.nest` loop nest, tiles chosen by the cost model.

A conv (not depthwise), gemm or matmul gets its conv nest with the cost model's tiles: output
channels, input channels, output rows and columns per tile (the loop steps), how the cores
split the tiles (spatial: different output tiles sharing the weight block by multicast;
channel: different output channels of one tile sharing the input block), and for a conv on a
vector unit the lane mapping (channels: output channels on the lanes, the input broadcast;
width: output columns on the lanes, the weights broadcast). The sizes are the cost model's best
under the capacity of the memories that hold the tiles, halved for double buffering
(`buffers=2`, the default; nncc passes `buffers=1` when `double-buffer` is disabled, and the
module then records `tile.sized_for = 1`), for the core count `partition-cores` set (one
without it). `tile-objective=dram` (`--tile-objective=dram`) ranks tilings by DRAM bytes first
instead of cycles. Pooling and depthwise convs get their window nests (channels, output rows
and columns per tile; channels or output columns on the lanes), chosen the same way. Every
other layer (elementwise ops, batch norm, activations, copies: concat, transpose, strided
slice; global pooling, softmax, LRN) gets its nest too, its tiles sized from the memory budget
alone (`stream_nest.py`, `reduce_nest.py`). `lower-to-isa` unrolls what the nests say, so tile
sizes and orders can be edited by hand in the IR and lowered with nncc-opt.

The module records what the tiles were chosen for (`passes/decisions.py`): `tile.order` and
`tile.objective` from the options (default scan and cycles), and `tile.target` unless
partition-cores recorded it already; `lower-to-isa` reads them, and a pass given another value
as an option refuses. Options `target`/`target-set` are needed only when no target is recorded.
`tile-order=tsp` walks each conv/gemm nest's output tiles as a travelling-salesman path
(`order path [...]`, `compiler/codegen/tile_order.py`): Scan's tiles, its outer loops merged
into one, the path networkx finds kept when the cost model's walk moves fewer DRAM bytes than
Scan's (otherwise Scan's path, written as a path).
`search-workers=N` (`nncc -j N`; default 1 here, the CPUs in nncc) runs the distinct conv/gemm
shapes' tile searches ahead on N forked processes (`compiler/codegen/search_pool.py`), those
fuse-groups did not run ahead already: the same tiles, in less wall time.
Without tile-layers, lowering makes the same nests (a conv or pooling op's hand-written `tile`
attribute, `layers.tiles_for`, fixes its tiles there).
"""

from dataclasses import dataclass, replace

from xdsl.context import Context
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64
from xdsl.ir import Operation
from xdsl.passes import ModulePass

from nncc.compiler.codegen.context import Lowering, layer_name, module_cost_cache
from nncc.compiler.codegen.cost_model import predict_jobs
from nncc.compiler.codegen.nest import NestLowering
from nncc.compiler.codegen.tile_order import tsp_order
from nncc.compiler.codegen.conv import choose_tiles
from nncc.compiler.codegen.conv_nest import replace_with_nest
from nncc.compiler.codegen.conv_width import choose_mapping
from nncc.compiler.codegen.layers import conv2d_shape, conv_problem, has_bias, window_problem
from nncc.compiler.codegen.window_nest import replace_with_depthwise_nest, replace_with_pool_nest
from nncc.compiler.codegen.lower import layers_of
from nncc.compiler.codegen.lowering_table import STREAM_NESTS
from nncc.compiler.codegen.nest_builder import replace_op
from nncc.compiler.codegen.search_pool import conv_search, search_ahead
from nncc.compiler.codegen.training_nest import BACKWARD_CONVS, backward_nests
from nncc.compiler.modules import main_function
from nncc.compiler.weights import store_of
from nncc.passes.decisions import (
    CORES_ATTR, OBJECTIVE_ATTR, OBJECTIVES, ORDER_ATTR, ORDERS, SIZED_FOR_ATTR, decide, module_target, walk_order,
)
from nncc.dialects import nn, tile
from nncc.runtime.program import Program
from nncc.support import progress
from nncc.support.errors import NnccError


@dataclass(frozen=True)
class TileLayersPass(ModulePass):
    """Write every layer as its loop nest, conv/gemm/matmul tiles chosen by the cost model."""

    name = "tile-layers"

    target: str = ""  # default: the module's tile.target, else vector
    target_set: tuple[str, ...] = ()
    tile_order: str = ""  # naive, scan or tsp; default: the module's tile.order, else scan
    buffers: int = 2  # slots per buffer kind the tiles are sized for
    tile_objective: str = ""  # what the tiles minimise first: cycles (the default), or dram (bytes moved)
    search_workers: int = 1  # processes searching the conv/gemm shapes' tiles (`search_pool`); nncc: the CPUs

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.buffers not in (1, 2):
            raise NnccError(f"tile-layers: buffers must be 1 or 2, not {self.buffers}")
        target = module_target(op, self.name, self.target, self.target_set)
        tile_order = decide(op, self.name, ORDER_ATTR, "tile-order", self.tile_order, "scan", ORDERS)
        objective = decide(op, self.name, OBJECTIVE_ATTR, "tile-objective", self.tile_objective, "cycles", OBJECTIVES)
        cores = op.attributes.get(CORES_ATTR)
        layer_cores = cores.value.data if isinstance(cores, IntegerAttr) else 1
        lowering = Lowering(target, Program(target, []), store_of(op, self.name), tile_order=walk_order(tile_order),
                            layer_cores=layer_cores, buffers=self.buffers, objective=objective,
                            cost_cache=module_cost_cache(op, target, walk_order(tile_order), objective, layer_cores,
                                                         self.buffers))
        if self.buffers == 1:
            op.attributes[SIZED_FOR_ATTR] = IntegerAttr(1, i64)
        layers = layers_of(main_function(op))
        if self.search_workers < 1:
            raise NnccError(f"tile-layers: search-workers must be at least 1, not {self.search_workers}")
        search_ahead(lowering, [s for layer in layers if (s := conv_search(layer, lowering)) is not None],
                     self.search_workers)
        with progress.stage("tiling", total=len(layers), unit="layers") as task:
            for layer in layers:
                task.update(detail=layer_name(layer))
                nest = tile_layer(lowering, layer)
                if tile_order == "tsp" and nest is not None:
                    choose_path(lowering, nest)
                task.advance()


def tile_layer(lowering: Lowering, layer: Operation) -> tile.NestOp | None:
    """Write `layer` as its loop nest (a conv, gemm or matmul with the tiles the cost model
    chose); the nest of a conv, gemm or matmul, else None."""
    stream = STREAM_NESTS.get(layer.name)
    if stream is not None:  # elementwise, batch norm, copies, global pooling, softmax, LRN
        replace_op(layer, stream(lowering, layer))
        return None
    window = window_problem(lowering, layer)
    if window is not None and layer.name.endswith("conv2d"):  # a depthwise conv: written as its nest
        replace_with_depthwise_nest(lowering, layer, conv2d_shape(layer), window.tiles())
        return None
    if window is not None:  # pooling: written as its nest
        replace_with_pool_nest(lowering, layer)
        return None
    if layer.name in BACKWARD_CONVS:  # conv backward-data and backward-filter kept by lower-training-ops
        *partials, last = backward_nests(lowering, layer, lowering.buffers)
        for nest in partials:  # a backward-filter's partial sums (the cores split its reduction)
            if nn.PHASE in layer.attributes:
                nest.attributes[nn.PHASE] = layer.attributes[nn.PHASE]
            layer.parent.insert_op_before(nest, layer)
        return replace_op(layer, last)
    problem = conv_problem(layer)
    if problem is None:
        return None
    if layer.name.endswith("conv2d"):  # convs also choose between the two lane mappings
        mapping, tiles = choose_mapping(lowering, problem, layer_name(layer), has_bias(layer))
    else:
        mapping, tiles = "channels", choose_tiles(lowering, problem, layer_name(layer), has_bias(layer))
    return replace_with_nest(lowering, layer, problem, tiles, mapping)


def choose_path(lowering: Lowering, nest: tile.NestOp) -> None:
    """Walk `nest`'s output tiles as the path `tile_order.tsp_order` finds, if the cost model's
    walk of the nest (on a program of its own) says it moves fewer DRAM bytes than Scan's."""
    probe = replace(lowering, program=Program(lowering.target, []), addresses={}, weight_cache={})

    def bytes_moved() -> int:
        walked = NestLowering(probe, nest)
        prediction = predict_jobs(probe.target, walked.kinds(), walked.jobs(), slots=probe.buffers, barriers=False)
        return prediction.dram_read_bytes + prediction.dram_write_bytes
    tsp_order(nest, lowering.buffers, bytes_moved)
