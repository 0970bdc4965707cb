"""dram-layout: feature maps stored channels-last (NHWC) in DRAM where the target moves DRAM in bursts.

On a target whose DRAM is timed in bursts per contiguous run (`dram.burst_timing`: `vector`),
a channel-mapped tile of an NCHW tensor is one short run per channel and row (7 floats of a
7x7 map cost a whole 64-byte burst); stored NHWC, the same tile is runs of its channels
(whole pixels or rows when the tile spans all channels). This pass decides, tensor by tensor,
after `tile-layers`: an intermediate 4-D tensor between nests is stored NHWC when its producer
only stores into it and every consumer only loads from it (`tile.load` / `tile.store`: conv,
depthwise, pooling and fused-group nests) and their tiles take fewer DRAM bus cycles that way
(`bus_cycles`: the timing model's burst rule on each slice's box; a depthwise conv with output
columns on the lanes and a few channels per tile keeps NCHW). The decision is written into the nests themselves:
the producer and every consumer see the tensor through one `tile.view` with channels-last
strides, which every DMA of the tensor then follows (`nest.NestTensors`), so lowering, the cost
model and the interpreter need no other record of it:

    %Xn = tile.view %X offset 0 sizes [1, 64, 56, 56] strides [200704, 1, 3584, 64]
        : tensor<1x64x56x56xf32> -> tensor<1x64x56x56xf32>
    tile.load %Xn[%n, %ic, %oh - 1, %ow - 1] [1, %tic, %toh + 2, %tow + 2] -> %in[0] dims [2, 3, 1]

Everything else stays NCHW (row-major in its IR shape): the program's inputs and outputs (the
host's layout: nothing converts at the program boundary), tensors an alias (reshape, contiguous
slice) or a streaming nest (`tile.view`, elementwise, concat, global pooling) reads or writes,
and tensors of one channel or one pixel (where both layouts are the same). On other targets
(bytes / bandwidth, no bursts) the pass changes nothing.

    nncc-opt m.tile.mlir -p dram-layout
"""

import math
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import BlockArgument, SSAValue
from xdsl.passes import ModulePass

from nncc.compiler.codegen.context import F32, nhwc_strides, row_major_strides
from nncc.compiler.modules import main_function
from nncc.dialects import tile
from nncc.passes.decisions import module_target
from nncc.runtime import timing
from nncc.runtime.target import Target


def only_used_by(arg: BlockArgument, kind: type) -> bool:
    """`arg` is used, and only as the DRAM tensor of `kind` ops (loads or stores)."""
    uses = list(arg.uses)
    return bool(uses) and all(isinstance(use.operation, kind) and use.operation.operands[use.index] is arg
                              and use.index == 0 for use in uses)


def block_args_of(nest: tile.NestOp, value: SSAValue) -> list[BlockArgument]:
    """The block arguments of `nest` bound to `value` (an input, or a result of the nest)."""
    bound = [*nest.inputs, *nest.outputs]
    return [arg for arg, outer in zip(nest.block.args, bound) if outer is value]


def channels_last(target: Target, value: SSAValue) -> bool:
    """Store `value` NHWC: a 4-D result of a nest that only stores into it, read only by nests
    that only load from it (so every DMA of it goes through the view this pass adds), whose
    tiles the DRAM bus moves faster that way (`bus_cycles`)."""
    shape = tuple(value.type.get_shape())  # type: ignore[attr-defined]
    if len(shape) != 4 or shape[1] == 1 or shape[2] * shape[3] == 1:
        return False
    producer = value.owner
    if not isinstance(producer, tile.NestOp) or not all(only_used_by(a, tile.StoreOp)
                                                        for a in block_args_of(producer, value)):
        return False
    users = list({id(use.operation): use.operation for use in value.uses}.values())
    if not users or not all(isinstance(user, tile.NestOp) and all(only_used_by(a, tile.LoadOp)
                                                                  for a in block_args_of(user, value))
                            for user in users):
        return False
    slices = [use.operation for nest in [producer, *users] for arg in block_args_of(nest, value) for use in arg.uses]
    return bus_cycles(target, shape, slices, nhwc_strides(shape)) < bus_cycles(target, shape, slices,
                                                                                row_major_strides(shape))


def bus_cycles(target: Target, shape, slices: list, strides) -> float:
    """DRAM bus cycles of moving `shape` once in the boxes of `slices` (each its buffer's full
    extent, clipped to the tensor) laid out with `strides`: `timing.dram_bus_cycles` of each
    box's runs, times the boxes it takes to cover the tensor. Depthwise and pooling nests with
    output columns on the lanes, or tiles of a few channels, move a feature map in fewer bursts
    NCHW; a conv's tiles of all (or many) channels, NHWC."""
    total = 0.0
    for op in slices:
        buffer_shape, dims = op.buffer.type.get_shape(), tile.ints(op.dims)
        if len(buffer_shape) != len(dims):
            continue
        box = [1] * len(shape)
        for size, d in zip(buffer_shape, dims):
            box[d] = min(size, shape[d])
        elements = math.prod(box)
        runs = timing.dram_runs(tuple(box[d] for d in dims), tuple(strides[d] for d in dims))
        total += math.prod(shape) / elements * timing.dram_bus_cycles(target, F32 * elements, runs)
    return total


def view_channels_last(arg: BlockArgument) -> None:
    """Make every load or store of `arg` go through a channels-last view of it."""
    shape = arg.type.get_shape()  # type: ignore[attr-defined]
    view = tile.ViewOp(arg, 0, shape, nhwc_strides(shape))
    view.result.name_hint = f"{arg.name_hint or 'T'}n"
    block = arg.block
    block.insert_op_before(view, block.first_op) if block.first_op else block.add_op(view)
    arg.replace_uses_with_if(view.result, lambda use: use.operation is not view)


@dataclass(frozen=True)
class DramLayoutPass(ModulePass):
    """Store the feature maps between load/store nests channels-last (NHWC) on a burst-timed DRAM."""

    name = "dram-layout"

    target: str = ""  # default: the module's tile.target, else vector
    target_set: tuple[str, ...] = ()

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        target = module_target(op, self.name, self.target, self.target_set)
        if not target.dram.burst_timing:
            return
        nests = [nest for nest in main_function(op).body.walk() if isinstance(nest, tile.NestOp)]
        chosen = [value for nest in nests for value in nest.outputs if channels_last(target, value)]
        for value in chosen:  # decided on the unchanged IR, then written
            for nest in [value.owner, *{id(u.operation): u.operation for u in value.uses}.values()]:
                for arg in block_args_of(nest, value):
                    view_channels_last(arg)
