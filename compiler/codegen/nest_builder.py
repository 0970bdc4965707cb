"""Helpers the nest builders share (conv_nest, window_nest): index expressions from Python,
slices, the nest's block and buffers, and putting a nest in an op's place.

    e = IndexExprs(); e(oh) * 2 - 3                        # %oh * 2 - 3
    slice_op(tile.LoadOp, X, buffer, [n, ((oh, 2), -3)], [1, ((toh, 2), 5)], [2, 3, 1])
"""

from __future__ import annotations

from xdsl.dialects.builtin import ArrayAttr, StringAttr
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.ir.affine import AffineExpr

from nncc.compiler.codegen.context import Lowering, layer_name
from nncc.compiler.codegen.epilogue import Epilogue
from nncc.dialects import nn, tile


class IndexExprs(tile.ExprParser):
    """Builds index expressions from Python: `e(v)` is the dim of SSA index value v (an int is a
    constant)."""

    def __init__(self):
        self.values = []

    def __call__(self, value) -> AffineExpr:
        if isinstance(value, int):
            return AffineExpr.constant(value)
        return self.dim(value)


def epilogue_parameters(epilogue: Epilogue) -> list[float]:
    """The activation's parameters, for the functions that have any."""
    from nncc.compiler.codegen.epilogue import ACTIVATIONS

    counts = {func: len(params) for func, params in ACTIVATIONS.values()}
    return [epilogue.p0, epilogue.p1][:counts.get(epilogue.act, 0)]


def slice_op(cls, tensor, buffer, offsets, sizes, dims, at=0):
    """A load or store; each offset/size is an int, an SSA index value, or
    ((value, coefficient), ..., constant) terms: `((oh, 2), -3)` is `%oh * 2 - 3`."""
    e = IndexExprs()

    def build(item) -> AffineExpr:
        if isinstance(item, tuple):
            result = AffineExpr.constant(0)
            for term in item:
                if isinstance(term, tuple):
                    value, coefficient = term
                    if isinstance(value, int):
                        result = result + value * coefficient
                    else:
                        result = result + e(value) * coefficient
                else:
                    result = result + term
            return result
        return e(item)

    return cls.make(tensor, buffer, e, [build(v) for v in offsets], [build(v) for v in sizes], [build(at)], [], dims)


def nest_block(named: list[tuple[str, SSAValue | None]], result: SSAValue):
    """The body block of a nest reading the `named` tensors (None: absent) and writing `result`
    (block argument "Y"): the block, its arguments by name, and the tensors it reads."""
    named = [(name, value) for name, value in named if value is not None]
    block = Block(arg_types=[value.type for _, value in named] + [result.type])
    for name, arg in zip([name for name, _ in named] + ["Y"], block.args):
        arg.name_hint = name
    return block, {arg.name_hint: arg for arg in block.args}, [value for _, value in named]


def add_buffers(lowering: Lowering, block: Block, specs, slots: int) -> dict[str, SSAValue]:
    """A `tile.buffer` per (name, role, shape, shared[, ring]) spec, in the memory the target gives the role."""
    buffers = {}
    for name, role, shape, shared, *ring in specs:
        buffer = tile.BufferOp(role, shape, lowering.target.memory_for(role).name, slots, shared, ring=any(ring))
        buffer.result.name_hint = name
        block.add_op(buffer)
        buffers[name] = buffer.result
    return buffers


def finish_nest(op: Operation, block: Block, inputs: list[SSAValue]) -> tile.NestOp:
    """The nest of `block`, reading `inputs`, to stand for `op` (its layer name, op name, ONNX nodes)."""
    nest = tile.NestOp(layer_name(op), inputs, [op.result.type], Region(block),
                       {"op": StringAttr(op.name), nn.ONNX_NODES: op.attributes.get(nn.ONNX_NODES, ArrayAttr([]))})
    nest.results[0].name_hint = op.results[0].name_hint
    return nest


def replace_op(op: Operation, nest: tile.NestOp) -> tile.NestOp:
    """Put `nest` in `op`'s place in @main (with its training phase, `nn.phase`, if it has one)."""
    if nn.PHASE in op.attributes:
        nest.attributes[nn.PHASE] = op.attributes[nn.PHASE]
    op.parent.insert_op_before(nest, op)
    for old, new in zip(op.results, nest.results):
        old.replace_all_uses_with(new)
    op.detach()
    op.erase()
    return nest
