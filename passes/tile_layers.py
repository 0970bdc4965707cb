"""tile-layers: choose every conv and gemm layer's tile sizes with the cost model.

Each conv (not depthwise) and gemm op gets a `tile` attribute: output channels, input
channels, output rows and columns per tile, how the cores split the tiles (spatial:
different output tiles sharing the weight block by multicast; channel: different output
channels of one tile sharing the input block), and for a conv on a vector unit the lane
mapping (channels: output channels on the lanes, the input broadcast; width: output columns
on the lanes, the weights broadcast). The sizes are the cost model's best under
the capacity of the memories that hold the tiles, halved for double buffering (`buffers=2`,
the default; nncc passes `buffers=1` when `double-buffer` is disabled, and the module then
records `tile.sized_for = 1`), for the core count `partition-cores` set (one without it).
`tile-objective=dram` (`--tile-objective=dram`) ranks tilings by DRAM bytes first instead
of cycles. `lower-to-isa` follows the attribute, so tile sizes can be edited by hand in the IR
and re-lowered with nncc-opt. Pooling and depthwise
convs get `tile = {c, oh, ow, layout}` (channels, output rows and columns per tile; layout hwc:
channels on the lanes, chw: output columns on the lanes), chosen and followed the same way.
Streaming layers (elementwise, global pooling, softmax, LRN, copies) size their tiles when they
are lowered, from the memory budget alone.

    %y = fused.conv2d %x, %w, %b ... act relu {onnx_nodes = ["conv1"],
           tile = {oc = 64 : i64, ic = 3 : i64, oh = 8 : i64, ow = 112 : i64, split = "spatial",
                   mapping = "channels"}}
"""

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import IntegerAttr, ModuleOp, i64
from xdsl.ir import Operation
from xdsl.passes import ModulePass

from nncc.compiler.codegen.context import TILE_ATTR, Lowering, layer_name
from nncc.compiler.codegen.conv import choose_tiles
from nncc.compiler.codegen.conv_width import choose_mapping
from nncc.compiler.codegen.layers import conv_problem, tile_attribute, window_problem
from nncc.compiler.codegen.lower import layers_of
from nncc.compiler.codegen.pool import window_tile_attribute
from nncc.compiler.nn_interpreter import main_function
from nncc.compiler.weights import store_of
from nncc.passes.partition_cores import CORES_ATTR
from nncc.runtime.program import Program
from nncc.runtime.target import load_target
from nncc.support import progress
from nncc.support.errors import NnccError

OBJECTIVES = ("cycles", "dram")


def check_tile_options(pass_name: str, tile_order: str, tile_objective: str) -> None:
    """The tile options tile-layers and lower-to-isa share, checked with a one-line error."""
    if tile_order not in ("naive", "scan"):
        raise NnccError(f"{pass_name}: tile-order must be naive or scan, not {tile_order!r}")
    if tile_objective not in OBJECTIVES:
        raise NnccError(f"{pass_name}: tile-objective must be cycles or dram, not {tile_objective!r}")

SIZED_FOR_ATTR = "tile.sized_for"  # set to 1 when the tiles fill whole memories (no double buffering)


@dataclass(frozen=True)
class TileLayersPass(ModulePass):
    """Attach the cost model's tile sizes to every conv and gemm."""

    name = "tile-layers"

    target: str = "vector"
    target_set: tuple[str, ...] = ()
    tile_order: str = "scan"
    buffers: int = 2  # slots per buffer kind the tiles are sized for
    tile_objective: str = "cycles"  # what the tiles minimise first: cycles, or dram (bytes moved)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        check_tile_options(self.name, self.tile_order, self.tile_objective)
        if self.buffers not in (1, 2):
            raise NnccError(f"tile-layers: buffers must be 1 or 2, not {self.buffers}")
        target = load_target(self.target, self.target_set)
        cores = op.attributes.get(CORES_ATTR)
        lowering = Lowering(target, Program(target, []), store_of(op, self.name), tile_order=self.tile_order,
                            layer_cores=cores.value.data if isinstance(cores, IntegerAttr) else 1,
                            buffers=self.buffers, objective=self.tile_objective)
        if self.buffers == 1:
            op.attributes[SIZED_FOR_ATTR] = IntegerAttr(1, i64)
        layers = layers_of(main_function(op))
        with progress.stage("tiling", total=len(layers), unit="layers") as task:
            for layer in layers:
                task.update(detail=layer_name(layer))
                tile_layer(lowering, layer)
                task.advance()


def tile_layer(lowering: Lowering, layer: Operation) -> None:
    """Set `layer`'s tile attribute when it is a conv, gemm, pooling or depthwise conv."""
    window = window_problem(lowering, layer)
    if window is not None:  # pooling and depthwise conv: channels, rows and columns per tile
        layer.attributes[TILE_ATTR] = window_tile_attribute(window.tiles())
    problem = conv_problem(layer)
    if problem is None:
        return
    if layer.name.endswith("conv2d"):  # convs also choose between the two lane mappings
        mapping, tiles = choose_mapping(lowering, problem, layer_name(layer), layer.bias is not None)
    else:
        mapping, tiles = "channels", choose_tiles(lowering, problem, layer_name(layer))
    layer.attributes[TILE_ATTR] = tile_attribute(tiles, mapping)
