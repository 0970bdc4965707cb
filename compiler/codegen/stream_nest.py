"""The loop nests of streaming layers: elementwise ops, batch norm, activations and copies
(concat, transpose, strided slice, an output copied at the end).

A piece of work is `out = f(in_0, in_1, ...)` over an output shape, every operand a DRAM tensor
read with its own element strides (0 along broadcast axes, permuted for a transpose, stepped
for a slice, the output's for a concat's slice of it). Axes every operand walks contiguously are
merged and size-1 axes dropped; the last three axes are tiled, more become loop dimensions of
step 1. Each operand is seen through a `tile.view` of that merged shape (a broadcast axis has
size 1 in the view and in the tile), the tiles are dealt to the cores in turn:

    %Xv = tile.view %X offset 0 sizes [1, 64, 3136] strides [0, 3136, 1] : tensor<1x64x56x56xf32> -> ...
    %Sv = tile.view %S offset 0 sizes [1, 64, 1] strides [0, 1, 0] : tensor<1x64x1x1xf32> -> ...
    tile.for %d0[%td0] = 0 to 1 step 1, %d1[%td1] = 0 to 64 step 5, %d2[%td2] = 0 to 3136 step 3136 cores 4 order naive {
      tile.load %Xv[%d0, %d1, %d2] [%td0, %td1, %td2] -> %in0[0] dims [0, 1, 2]
      tile.load %Sv[0, %d1, 0] [1, %td1, 1] -> %in1[0] dims [0, 1, 2]
      tile.load %Hv[0, %d1, 0] [1, %td1, 1] -> %in2[0] dims [0, 1, 2]
      tile.map fma %in0[0], %in1[0] broadcast [0, 2], %in2[0] broadcast [0, 2] -> %out[0] shape [%td0, %td1, %td2]
      tile.store %out[0] -> %Yv[%d0, %d1, %d2] [%td0, %td1, %td2] dims [0, 1, 2]
    }

A layer of several pieces (a concat's inputs, a slice's backward-read elements) has one loop per
piece, or a loop of step 1 around the tile loop (a slice read backwards: DMA strides are not
negative, so each such index is its own piece), all sharing the buffers (sized for the largest).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from xdsl.dialects.builtin import ArrayAttr, DenseArrayBase, IntegerAttr, StringAttr, f64, i64
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.ir.affine import AffineExpr

from nncc.compiler.codegen.context import F32, Lowering, layer_name, row_major_strides
from nncc.compiler.codegen.epilogue import clamp
from nncc.compiler.codegen.nest import lower_detached, lower_nest
from nncc.compiler.codegen.nest_builder import IndexExprs, add_buffers, slice_op
from nncc.dialects import nn, tile

# --------------------------------------------------------------------------- operands and pieces


@dataclass(frozen=True)
class Operand:
    """A DRAM operand of a piece: a tensor of the nest (`name`: its block argument's name), the
    element offset of the piece's first element in it, and its element strides over the piece's
    axes (0: broadcast)."""

    name: str
    offset: int
    strides: tuple[int, ...]


@dataclass
class Piece:
    """out = f(inputs) over `shape`; `lead` are axes walked one index at a time around the tile
    loop (sizes, and every operand's stride, inputs then output, which may be negative)."""

    shape: tuple[int, ...]
    inputs: list[Operand]
    output: Operand
    lead: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)


def broadcast_operand(name: str, shape: Sequence[int], out_shape: Sequence[int], offset: int = 0) -> Operand:
    """A row-major tensor of `shape` broadcast (numpy rules) to `out_shape`."""
    shape = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    strides = row_major_strides(shape)
    return Operand(name, offset, tuple(0 if size == 1 and out != 1 else stride
                                       for size, out, stride in zip(shape, out_shape, strides)))


def row_major_operand(name: str, shape: Sequence[int], offset: int = 0) -> Operand:
    return Operand(name, offset, row_major_strides(shape))


def collapse(shape: Sequence[int], operands: Sequence[Operand]) -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
    """Merge adjacent axes that every operand walks as one (and drop size-1 axes): the merged
    shape and each operand's strides over it."""
    dims = [(size, [o.strides[i] for o in operands]) for i, size in enumerate(shape) if size != 1]
    merged: list[tuple[int, list[int]]] = []
    for size, strides in dims:
        if merged:
            last_size, last_strides = merged[-1]
            if all(ls == st * size for ls, st in zip(last_strides, strides)):
                merged[-1] = (last_size * size, strides)
                continue
        merged.append((size, strides))
    if not merged:
        merged = [(1, [0] * len(operands))]
    return tuple(size for size, _ in merged), [tuple(strides[i] for _, strides in merged) for i in range(len(operands))]


@dataclass
class Plan:
    """A piece's merged shape (at least three axes: the last three are tiled), every operand's
    strides over it, and the tile."""

    piece: Piece
    shape: tuple[int, ...]
    strides: list[tuple[int, ...]]  # inputs then output
    tile: tuple[int, int, int]

    def box(self, index: int) -> tuple[int, int, int]:
        """The on-chip tile of operand `index` (size 1 along its broadcast axes)."""
        return tuple(t if st else 1 for t, st in zip(self.tile, self.strides[index][-3:]))


def plan(lowering: Lowering, piece: Piece) -> Plan:
    operands = [*piece.inputs, piece.output]
    shape, strides = collapse(piece.shape, operands)
    while len(shape) < 3:
        shape, strides = (1,) + shape, [(0,) + s for s in strides]
    budget = lowering.capacity("input") // (4 * F32 * (len(piece.inputs) + 1))
    d0, d1, d2 = shape[-3:]
    t2 = min(d2, max(budget, 1))
    t1 = min(d1, max(budget // t2, 1))
    t0 = min(d0, max(budget // (t1 * t2), 1))
    return Plan(piece, shape, strides, (t0, t1, t2))


# --------------------------------------------------------------------------- the nest


Compute = Callable[[IndexExprs, list[SSAValue], SSAValue, list[int], list[AffineExpr]], list[Operation]]
"""(index expressions, input buffers, output buffer, each input's broadcast mask, the tile's
shape expressions) -> the compute ops of one tile."""


def stream_nest(lowering: Lowering, op: Operation, tensors: list[tuple[str, SSAValue]], pieces: list[Piece],
                compute: Compute, slots: int = 1, attributes: dict | None = None) -> tile.NestOp:
    """The nest of `op` reading `tensors` (name, value) and writing its result ("Y"), one loop per piece."""
    attributes = {"op": StringAttr(op.name), nn.ONNX_NODES: op.attributes.get(nn.ONNX_NODES, ArrayAttr([])),
                  **(attributes or {})}
    return pieces_nest(lowering, layer_name(op), op.results[0], tensors, pieces, compute, slots, attributes)


def pieces_nest(lowering: Lowering, layer: str, result: SSAValue, tensors: list[tuple[str, SSAValue]],
                pieces: list[Piece], compute: Compute, slots: int, attributes: dict) -> tile.NestOp:
    block = Block(arg_types=[value.type for _, value in tensors] + [result.type])
    args = {}
    for name, arg in zip([name for name, _ in tensors] + ["Y"], block.args):
        arg.name_hint = name
        args[name] = arg
    plans = [plan(lowering, piece) for piece in pieces]
    if plans:
        buffers = stream_buffers(lowering, block, plans, slots)
        for index, p in enumerate(plans):
            piece_loops(lowering, block, args, buffers, p, compute, f"{index}" if len(plans) > 1 else "")
    nest = tile.NestOp(layer, [value for _, value in tensors], [result.type], Region(block), attributes)
    nest.results[0].name_hint = result.name_hint
    return nest


def stream_buffers(lowering: Lowering, block: Block, plans: list[Plan], slots: int) -> dict[str, SSAValue]:
    """in0, in1, ... and out: each the tile of its operand, sized for the largest piece."""
    inputs = max((len(p.piece.inputs) for p in plans), default=0)
    specs = []
    for name, role, index in [*((f"in{i}", "input", i) for i in range(inputs)), ("out", "output", -1)]:
        boxes = {p.box(index if index >= 0 else len(p.piece.inputs)) for p in plans if index < len(p.piece.inputs)}
        shape = list(boxes.pop()) if len(boxes) == 1 else [max(math.prod(b) for b in boxes)]
        specs.append((name, role, shape, False))
    return add_buffers(lowering, block, specs, slots)


def piece_loops(lowering: Lowering, block: Block, args: dict[str, SSAValue], buffers: dict[str, SSAValue],
                p: Plan, compute: Compute, suffix: str) -> None:
    piece = p.piece
    operands = [*piece.inputs, piece.output]
    rank = len(p.shape)
    lead = len(piece.lead)
    views = []
    for index, operand in enumerate(operands):
        is_input = index < len(piece.inputs)
        sizes = [n for n, _ in piece.lead] + [1 if is_input and st == 0 else n for n, st in zip(p.shape, p.strides[index])]
        strides = [s[index] for _, s in piece.lead] + list(p.strides[index])
        view = tile.ViewOp(args[operand.name], operand.offset, sizes, strides)
        view.result.name_hint = f"{operand.name}v{suffix}"
        block.add_op(view)
        views.append(view.result)
    body = block
    lead_ivs = []
    if lead:
        outer = tile.ForOp.build([(0, n, 1) for n, _ in piece.lead], "naive", names=[f"p{k}" for k in range(lead)])
        block.add_op(outer)
        body = outer.block
        lead_ivs = [outer.block.args[2 * k] for k in range(lead)]
    bounds = [(0, n, 1) for n in p.shape[:-3]] + [(0, n, t) for n, t in zip(p.shape[-3:], p.tile)]
    loop = tile.ForOp.build(bounds, "naive", lowering.cores, names=[f"d{k}" for k in range(rank)])
    body.add_op(loop)
    loop_args = loop.block.args
    ivs, extents = [loop_args[2 * k] for k in range(rank)], [loop_args[2 * k + 1] for k in range(rank)]
    dims = [lead + rank - 3, lead + rank - 2, lead + rank - 1]
    masks = []
    for index, operand in enumerate(piece.inputs):
        strides = p.strides[index]
        offsets = lead_ivs + [iv if st else 0 for iv, st in zip(ivs, strides)]
        sizes = [1] * lead + [1 if d < rank - 3 or not st else extent
                              for d, (extent, st) in enumerate(zip(extents, strides))]
        loop.block.add_op(slice_op(tile.LoadOp, views[index], buffers[f"in{index}"], offsets, sizes, dims))
        masks.append(sum(1 << d for d, st in enumerate(strides[-3:]) if st == 0))
    e = IndexExprs()
    shape = [e(x) for x in extents[-3:]]
    for compute_op in compute(e, [buffers[f"in{i}"] for i in range(len(piece.inputs))], buffers["out"], masks, shape):
        loop.block.add_op(compute_op)
    out_sizes = [1] * lead + [1 if d < rank - 3 else extent for d, extent in enumerate(extents)]
    loop.block.add_op(slice_op(tile.StoreOp, views[-1], buffers["out"], lead_ivs + ivs, out_sizes, dims))


def map_op(e: IndexExprs, func: str, views: Sequence[tuple[SSAValue, AffineExpr | int, int]], shape,
           params: Sequence[float] = (), first: SSAValue | None = None, last: SSAValue | None = None) -> tile.MapOp:
    """`tile.map func [params] views -> last view shape [...]`; a view is (buffer, offset, broadcast
    mask, or a list of three element strides) and every expression comes from `e` (made before
    this call, or here)."""
    offsets = [o if isinstance(o, AffineExpr) else e(o) for _, o, _ in views]
    layouts = [tile.STRIDED if isinstance(layout, list) else layout for _, _, layout in views]
    strides = [st if isinstance(st, AffineExpr) else e(st) for _, _, layout in views if isinstance(layout, list)
               for st in layout]
    properties = {"func": StringAttr(func), "layouts": tile.ints_attr(layouts)}
    for name, iv in (("first", first), ("last", last)):
        if iv is not None:
            properties[name] = IntegerAttr(e(iv).position, i64)
    properties |= {"views": e.map(offsets), "sizes": e.map(shape)}
    if strides:
        properties["view_strides"] = e.map(strides)
    if params:
        properties["params"] = DenseArrayBase.from_list(f64, list(params))
    return tile.MapOp.build(operands=[[b for b, _, _ in views], list(e.values)], properties=properties)


def mapping(func: str, params: Sequence[float] = ()) -> Compute:
    """One tile.map of every input tile into the output tile."""
    def build(e, ins, out, masks, shape):
        return [map_op(e, func, [(b, 0, m) for b, m in zip(ins, masks)] + [(out, 0, 0)], shape, params)]
    return build


def lower_stream(builder):
    """A lowering-table entry: the nest of `builder(lowering, op, slots)`, made and unrolled now."""
    def lower(lowering: Lowering, op: Operation):
        return lower_detached(lowering, op, builder(lowering, op, lowering.buffers))
    return lower


# --------------------------------------------------------------------------- elementwise layers

BINARY = {"nn.add": "add", "nn.sub": "sub", "nn.mul": "mul", "nn.div": "div"}

UNARY = {
    "nn.relu": lambda op: ("relu", ()),
    "nn.sigmoid": lambda op: ("sigmoid", ()),
    "nn.hard_swish": lambda op: ("hardswish", ()),
    "nn.sqrt": lambda op: ("sqrt", ()),
    "nn.leaky_relu": lambda op: ("leaky", (float(op.alpha.value.data),)),
    "nn.hard_sigmoid": lambda op: ("hardsigmoid", (float(op.alpha.value.data), float(op.beta.value.data))),
    "nn.tanh": lambda op: ("tanh", ()),
    "nn.erf": lambda op: ("erf", ()),
    "nn.gelu": lambda op: ("gelu", ()),
    "nn.gelu_tanh": lambda op: ("gelu_tanh", ()),
    "nn.silu": lambda op: ("silu", ()),
    "nn.step": lambda op: ("step", ()),  # training (lower-training-ops): activation gradients' masks
    "nn.log": lambda op: ("log", ()),
    "nn.exp": lambda op: ("exp", ()),
    "nn.scale": lambda op: ("affine", (float(op.factor.value.data), 0.0)),
    "nn.clip": lambda op: ("clip", (clamp(float(op.min.value.data) if getattr(op, "min", None) is not None else -math.inf),
                                    clamp(float(op.max.value.data) if getattr(op, "max", None) is not None else math.inf))),
}
"""Op name -> (the tile.map function, its parameters) of one-input elementwise layers."""


def binary_nest(lowering: Lowering, op: Operation, slots: int = 1) -> tile.NestOp:
    shape = nn.shape_of(op.result)
    piece = Piece(shape, [broadcast_operand("X", nn.shape_of(op.lhs), shape),
                          broadcast_operand("Z", nn.shape_of(op.rhs), shape)], row_major_operand("Y", shape))
    return stream_nest(lowering, op, [("X", op.lhs), ("Z", op.rhs)], [piece], mapping(BINARY[op.name]), slots)


def unary_nest(lowering: Lowering, op: Operation, slots: int = 1) -> tile.NestOp:
    func, params = UNARY[op.name](op)
    shape = nn.shape_of(op.result)
    piece = Piece(shape, [broadcast_operand("X", nn.shape_of(op.input), shape)], row_major_operand("Y", shape))
    return stream_nest(lowering, op, [("X", op.input)], [piece], mapping(func, params), slots)


def constant_weight(lowering: Lowering, op: Operation, name: str, array: np.ndarray) -> SSAValue:
    """An `nn.weight` of `array` made at compile time (added to the weight store, placed before
    `op` when `op` is in a block)."""
    ref = name if name in lowering.store and np.array_equal(lowering.store[name], array) else \
        lowering.store.add(name, array)
    weight = nn.WeightOp(ref, list(array.shape))
    weight.result.name_hint = name.replace(".", "_")
    if op.parent is not None:
        op.parent.insert_op_before(weight, op)
    return weight.result


def batch_norm_nest(lowering: Lowering, op: Operation, slots: int = 1) -> tile.NestOp:
    """y = x * scale' + shift' (one `tile.map fma`) with the per-channel factors folded at compile
    time; with parameters computed at run time, the factors made on chip per tile:

        out <- x - mean; var <- rsqrt(var + eps); var <- var * scale; out <- out * var + bias

    (x's tile, the largest, is the first the job reads, so its load goes first)."""
    shape = nn.shape_of(op.result)
    per_channel = (1, shape[1]) + (1,) * (len(shape) - 2)
    scale, bias, mean, var = (lowering.constant(v) for v in (op.scale, op.bias, op.mean, op.var))
    name = layer_name(op)
    eps = float(op.epsilon.value.data)
    if all(a is not None for a in (scale, bias, mean, var)):
        factor = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
        shift = bias - mean * factor
        tensors = [("X", op.input),
                   ("S", constant_weight(lowering, op, f"{name}.scale", factor.astype(np.float32).reshape(per_channel))),
                   ("H", constant_weight(lowering, op, f"{name}.shift", shift.astype(np.float32).reshape(per_channel)))]
        compute = mapping("fma")
    else:
        tensors = [("X", op.input), ("S", op.scale), ("B", op.bias), ("M", op.mean), ("V", op.var)]

        def compute(e, ins, out, masks, shape):
            x, scale_, bias_, mean_, var_ = ((b, 0, m) for b, m in zip(ins, masks))
            result = (out, 0, 0)
            return [map_op(e, "sub", [x, mean_, result], shape), map_op(e, "rsqrt", [var_, var_], shape, [eps]),
                    map_op(e, "mul", [var_, scale_, var_], shape), map_op(e, "mul", [result, var_, result], shape),
                    map_op(e, "add", [result, bias_, result], shape)]
    operands = [broadcast_operand("X", nn.shape_of(op.input), shape)] + [
        broadcast_operand(n, per_channel, shape) for n, _ in tensors[1:]]
    return stream_nest(lowering, op, tensors, [Piece(shape, operands, row_major_operand("Y", shape))], compute, slots)


# --------------------------------------------------------------------------- copies


def transpose_nest(lowering: Lowering, op: Operation, slots: int = 1) -> tile.NestOp:
    """The output walked row-major, the input read with the permuted strides (the load DMA gathers)."""
    perm = nn.ints(op.perm)
    in_strides = row_major_strides(nn.shape_of(op.input))
    shape = nn.shape_of(op.result)
    piece = Piece(shape, [Operand("X", 0, tuple(in_strides[p] for p in perm))], row_major_operand("Y", shape))
    return stream_nest(lowering, op, [("X", op.input)], [piece], mapping("copy"), slots)


def slice_nest(lowering: Lowering, op: Operation, slots: int = 1) -> tile.NestOp:
    """A strided copy: the input read with strides `step x input stride` from the box's first
    element. An axis read backwards (negative step, size > 1) is walked one index at a time
    around the tile loop (DMA strides are not negative)."""
    in_strides = row_major_strides(nn.shape_of(op.input))
    starts, steps = nn.ints(op.starts), nn.ints(op.steps)
    shape = nn.shape_of(op.result)
    out_strides = row_major_strides(shape)
    base = sum(s * st for s, st in zip(starts, in_strides))
    strides = tuple(step * stride for step, stride in zip(steps, in_strides))
    backwards = [a for a, (step, size) in enumerate(zip(steps, shape)) if step < 0 and size > 1]
    piece_shape = tuple(1 if a in backwards else size for a, size in enumerate(shape))
    piece = Piece(piece_shape, [Operand("X", base, tuple(abs(s) for s in strides))], Operand("Y", 0, out_strides),
                  [(shape[a], (strides[a], out_strides[a])) for a in backwards])
    return stream_nest(lowering, op, [("X", op.input)], [piece], mapping("copy"), slots)


def concat_nest(lowering: Lowering, op: Operation, slots: int = 1) -> tile.NestOp:
    """Every input not written in place by its producer (data.placed_inputs) copied into its
    slice of the output, one loop each. The nest reads every input (those in place are block
    arguments without a use) and records the axis (`axis`), so lowering places them."""
    from nncc.compiler.codegen.data import placed_inputs

    axis = op.axis.value.data
    out_shape = nn.shape_of(op.result)
    out_strides = row_major_strides(out_shape)
    placed = placed_inputs(lowering, op)
    tensors, pieces, offset = [], [], 0
    for index, value in enumerate(op.inputs):
        name = f"X{index}"
        tensors.append((name, value))
        shape = nn.shape_of(value)
        if shape[axis] and value not in placed:
            pieces.append(Piece(shape, [row_major_operand(name, shape)],
                                Operand("Y", offset * out_strides[axis], out_strides)))
        offset += shape[axis]
    return stream_nest(lowering, op, tensors, pieces, mapping("copy"), slots,
                       {"axis": IntegerAttr(axis, i64)})


def copy_nest(lowering: Lowering, value: SSAValue, name: str, slots: int) -> tile.NestOp:
    """A nest copying `value` to a new tensor of its type: an output that aliases an input, a
    weight, a reshape or another output (`lower.copy_unowned_outputs`)."""
    count = math.prod(nn.shape_of(value))
    piece = Piece((count,), [Operand("X", 0, (1,))], Operand("Y", 0, (1,)))
    return pieces_nest(lowering, name, value, [("X", value)], [piece], mapping("copy"), slots,
                       {"op": StringAttr("copy"), nn.ONNX_NODES: ArrayAttr([])})


def copy_output(lowering: Lowering, value: SSAValue, addr: int, name: str):
    """The jobs of copying `value` to the output at byte address `addr`."""
    nest = copy_nest(lowering, value, name, lowering.buffers)
    lowering.addresses[nest.results[0]] = addr
    return lower_nest(lowering, nest)
