"""dram-layout: feature maps stored channels-last (NHWC) in DRAM where the target moves DRAM in bursts.

On a target whose DRAM is timed in bursts per contiguous run (`dram.burst_timing`: `vector`),
a channel-mapped tile of an NCHW tensor is one short run per channel and row (7 floats of a
7x7 map cost a whole 64-byte burst); stored NHWC, the same tile is runs of its channels
(whole pixels or rows when the tile spans all channels). This pass decides, tensor by tensor,
after `tile-layers`: an intermediate 4-D tensor between nests is stored NHWC when its producer
only stores into it and every consumer only loads from it (`tile.load` / `tile.store`: conv,
depthwise, pooling and fused-group nests). The decision is written into the nests themselves:
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

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import BlockArgument, SSAValue
from xdsl.passes import ModulePass

from nncc.compiler.modules import main_function
from nncc.dialects import tile
from nncc.passes.decisions import module_target


def nhwc_strides(shape) -> tuple[int, ...]:
    """Element strides of an [N, C, H, W] tensor stored as [N][H][W][C]."""
    _, c, h, w = shape
    return (h * w * c, 1, w * c, c)


def only_used_by(arg: BlockArgument, kind: type) -> bool:
    """`arg` is used, and only as the DRAM tensor of `kind` ops (loads or stores)."""
    uses = list(arg.uses)
    return bool(uses) and all(isinstance(use.operation, kind) and use.operation.operands[use.index] is arg
                              and use.index == 0 for use in uses)


def block_args_of(nest: tile.NestOp, value: SSAValue) -> list[BlockArgument]:
    """The block arguments of `nest` bound to `value` (an input, or a result of the nest)."""
    bound = [*nest.inputs, *nest.outputs]
    return [arg for arg, outer in zip(nest.block.args, bound) if outer is value]


def channels_last(value: SSAValue) -> bool:
    """Store `value` NHWC: a 4-D result of a nest that only stores into it, read only by nests
    that only load from it (so every DMA of it goes through the view this pass adds)."""
    shape = value.type.get_shape()  # type: ignore[attr-defined]
    if len(shape) != 4 or shape[1] == 1 or shape[2] * shape[3] == 1:
        return False
    producer = value.owner
    if not isinstance(producer, tile.NestOp) or not all(only_used_by(a, tile.StoreOp)
                                                        for a in block_args_of(producer, value)):
        return False
    users = {id(use.operation): use.operation for use in value.uses}.values()
    return bool(users) and all(
        isinstance(user, tile.NestOp) and all(only_used_by(a, tile.LoadOp) for a in block_args_of(user, value))
        for user in users)


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
        if not module_target(op, self.name, self.target, self.target_set).dram.burst_timing:
            return
        nests = [nest for nest in main_function(op).body.walk() if isinstance(nest, tile.NestOp)]
        chosen = [value for nest in nests for value in nest.outputs if channels_last(value)]
        for value in chosen:  # decided on the unchanged IR, then written
            for nest in [value.owner, *{id(u.operation): u.operation for u in value.uses}.values()]:
                for arg in block_args_of(nest, value):
                    view_channels_last(arg)
