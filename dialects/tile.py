"""The `tile` dialect: a layer (or a fused group of layers) as a loop nest over on-chip buffers.

A `tile.nest` replaces a layer op of @main. Its operands are the DRAM tensors it reads, its
results the DRAM tensors it writes; inside, block arguments stand for all of them (inputs, then
outputs). The body declares on-chip buffers (`tile.buffer`: a `memref` in one of the target's
named memories, with its slot count), walks the tiles with `tile.for` loops (symbolic: one op
per loop, not per tile step; fragmented edge tiles are the loop's extent block argument), moves
slices of DRAM tensors with `tile.load` / `tile.store` (halos and zero padding are slice bounds
outside the tensor) and computes on buffers (`tile.conv`, `tile.depthwise`, `tile.fill`). A
tensor that is produced and consumed inside one nest lives in a buffer and never has a load or
a store: that is a fused group. Index arithmetic is affine in the loops' block arguments and
is written inline (`%oh * 2 - 3`); each op keeps it as `affine_map` properties over its
`indices` operands.

    %y = tile.nest "conv1" (%x, %w, %b) -> tensor<1x64x112x112xf32> attributes {op = "fused.conv2d"} {
    ^bb0(%X : tensor<1x3x224x224xf32>, %W : tensor<64x3x7x7xf32>, %B : tensor<64xf32>, %Y : tensor<1x64x112x112xf32>):
      %Wp = tile.relayout %W shape [1, 64, 3, 7, 7] permutation [0, 3, 4, 2, 1] : tensor<64x3x7x7xf32> -> tensor<1x7x7x3x64xf32>
      %in = tile.buffer "input" slots 2 : memref<21x229x3xf32, "L1">
      %wt = tile.buffer "weight" slots 2 shared : memref<9472xf32, "L1">
      %out = tile.buffer "output" slots 2 : memref<8x112x64xf32, "L1">
      tile.for %oc[%toc] = 0 to 64 step 64 order serpentine {
        tile.for %oh[%toh] = 0 to 112 step 8 cores 4 order serpentine {
          tile.for %ic[%tic] = 0 to 3 step 3 order serpentine {
            tile.load %X[0, %ic, %oh * 2 - 3, -3] [1, %tic, %toh * 2 + 5, 229] -> %in[0] dims [2, 3, 1]
            tile.load %Wp[0, 0, 0, %ic, %oc] [1, 7, 7, %tic, %toc] -> %wt[0] dims [1, 2, 3, 4]
            tile.load %B[%oc] [%toc] -> %wt[%tic * %toc * 49] dims [0]
            tile.conv %in[0], %wt[0] -> %out[0] sizes [%toh, 112, %tic, %toc] kernel [7, 7] strides [2, 2]
              dilations [1, 1] reduce %ic bias %wt[%tic * %toc * 49] act relu
          }
          tile.store %out[0] -> %Y[0, %oc, %oh, 0] [1, %toc, %toh, 112] dims [2, 3, 1]
        }
      }
    } : (tensor<1x3x224x224xf32>, tensor<64x3x7x7xf32>, tensor<64xf32>) -> tensor<1x64x112x112xf32>

Buffer views (`%in[e]`) are an element offset into the current slot; the tile is laid out
densely by the sizes of what is moved into it (row-major in buffer dimension order), or by
explicit `strides [...]`. `dims [2, 3, 1]` says which tensor dimension each buffer dimension is
(here HWC on chip from NCHW in DRAM); tensor dimensions not named have size 1. The unrolling
into instructions is `compiler/codegen/nest.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Sequence

from xdsl.dialects.builtin import (
    AffineMapAttr,
    ArrayAttr,
    DenseArrayBase,
    FloatAttr,
    IndexType,
    IntegerAttr,
    MemRefType,
    StringAttr,
    TensorType,
    UnitAttr,
    f64,
    i64,
)
from xdsl.ir import Attribute, Block, Dialect, Region, SSAValue
from xdsl.ir.affine import AffineBinaryOpExpr, AffineBinaryOpKind, AffineConstantExpr, AffineDimExpr, AffineExpr, AffineMap
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    irdl_op_definition,
    operand_def,
    opt_prop_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import NoTerminator
from xdsl.utils.exceptions import VerifyException

from nncc.runtime.isa import ACTIVATIONS

INDEX = IndexType()
ORDERS = ("naive", "serpentine", "path")
ROLES = ("input", "weight", "output", "intermediate")


# --------------------------------------------------------------------------- inline affine expressions


class ExprParser:
    """Parses inline affine expressions over SSA index values (`%oh * 2 - 3`); the values met
    become the op's `indices` operands, in order of first use, and `d<i>` of its maps."""

    def __init__(self, parser: Parser):
        self.parser = parser
        self.values: list[SSAValue] = []

    def dim(self, value: SSAValue) -> AffineExpr:
        for position, known in enumerate(self.values):
            if known is value:
                return AffineExpr.dimension(position)
        self.values.append(value)
        return AffineExpr.dimension(len(self.values) - 1)

    def expr(self) -> AffineExpr:
        result = self.term()
        while True:
            if self.parser.parse_optional_punctuation("+"):
                result = result + self.term()
            elif self.parser.parse_optional_punctuation("-"):
                result = result - self.term()
            else:
                return result

    def term(self) -> AffineExpr:
        result = self.factor()
        while self.parser.parse_optional_punctuation("*"):
            result = result * self.factor()
        return result

    def factor(self) -> AffineExpr:
        parser = self.parser
        if parser.parse_optional_punctuation("-"):
            return -self.factor()
        if parser.parse_optional_punctuation("("):
            inner = self.expr()
            parser.parse_punctuation(")")
            return inner
        number = parser.parse_optional_integer(allow_negative=False)
        if number is not None:
            return AffineExpr.constant(number)
        return self.dim(parser.parse_operand(INDEX))

    def exprs(self) -> list[AffineExpr]:
        """`[e, e, ...]`"""
        return self.parser.parse_comma_separated_list(Parser.Delimiter.SQUARE, self.expr)

    def view(self) -> tuple[SSAValue, AffineExpr]:
        """`%buf[e]`: a buffer operand and its element offset."""
        buffer = untyped_operand(self.parser)
        (offset,) = self.exprs()
        return buffer, offset

    def map(self, exprs: Sequence[AffineExpr]) -> AffineMapAttr:
        return AffineMapAttr(AffineMap(len(self.values), 0, tuple(exprs)))


def expr_text(expr: AffineExpr, names: Sequence[str]) -> str:
    """`expr` with d<i> written as the i-th index operand's name."""
    if isinstance(expr, AffineConstantExpr):
        return str(expr.value)
    if isinstance(expr, AffineDimExpr):
        return names[expr.position]
    assert isinstance(expr, AffineBinaryOpExpr)
    if expr.kind == AffineBinaryOpKind.Add:
        rhs = expr.rhs
        if isinstance(rhs, AffineConstantExpr) and rhs.value < 0:
            return f"{expr_text(expr.lhs, names)} - {-rhs.value}"
        if isinstance(rhs, AffineBinaryOpExpr) and rhs.kind == AffineBinaryOpKind.Mul and \
                isinstance(rhs.rhs, AffineConstantExpr) and rhs.rhs.value < 0:
            factor = "" if rhs.rhs.value == -1 else f" * {-rhs.rhs.value}"
            return f"{expr_text(expr.lhs, names)} - {wrapped(rhs.lhs, names)}{factor}"
        return f"{expr_text(expr.lhs, names)} + {expr_text(rhs, names)}"
    if expr.kind == AffineBinaryOpKind.Mul:
        return f"{wrapped(expr.lhs, names)} * {wrapped(expr.rhs, names)}"
    raise VerifyException(f"tile: unsupported index expression {expr}")


def wrapped(expr: AffineExpr, names: Sequence[str]) -> str:
    text = expr_text(expr, names)
    if isinstance(expr, AffineBinaryOpExpr) and expr.kind == AffineBinaryOpKind.Add:
        return f"({text})"
    if isinstance(expr, AffineConstantExpr) and expr.value < 0:
        return f"({text})"
    return text


def print_exprs(printer: Printer, exprs: Sequence[AffineExpr], indices: Sequence[SSAValue]) -> None:
    names = [printer_name(printer, value) for value in indices]
    printer.print_string("[" + ", ".join(expr_text(e, names) for e in exprs) + "]")


def printer_name(printer: Printer, value: SSAValue) -> str:
    """The name `printer` gave `value` (`%oh`, `%3`) when it printed its definition."""
    name = printer._ssa_values.get(value)  # noqa: SLF001  (xDSL has no public lookup)
    if name is None:
        raise VerifyException("tile: an index value is used before its definition")
    return f"%{name}"


def map_exprs(attr: AffineMapAttr | None) -> tuple[AffineExpr, ...]:
    return () if attr is None else attr.data.results


def untyped_operand(parser: Parser) -> SSAValue:
    """An operand defined earlier in the nest (tensors and buffers: their types are known)."""
    unresolved = parser.parse_unresolved_operand()
    values = parser.ssa_values.get(unresolved.operand_name)
    if values is None or unresolved.index >= len(values):
        parser.raise_error(f"%{unresolved.operand_name} is not defined before its use", unresolved.span)
    return values[unresolved.index]


def ints_attr(values: Sequence[int]) -> DenseArrayBase:
    return DenseArrayBase.from_list(i64, list(values))


def ints(attr: DenseArrayBase | None) -> tuple[int, ...]:
    return () if attr is None else tuple(attr.get_values())


def parse_ints(parser: Parser) -> list[int]:
    return parser.parse_comma_separated_list(Parser.Delimiter.SQUARE, parser.parse_integer)


def print_ints(printer: Printer, values: Sequence[int]) -> None:
    printer.print_string("[" + ", ".join(str(v) for v in values) + "]")


# --------------------------------------------------------------------------- buffer views


class View:
    """`%buf[offset]` or `%buf[offset] strides [s, s, s]`: a place in a buffer's current slot."""

    @staticmethod
    def parse(parser: Parser, exprs: ExprParser) -> tuple[SSAValue, list[AffineExpr], list[AffineExpr]]:
        buffer, offset = exprs.view()
        strides = exprs.exprs() if parser.parse_optional_keyword("strides") else []
        return buffer, [offset], strides

    @staticmethod
    def print(printer: Printer, buffer: SSAValue, offset: AffineExpr, strides: Sequence[AffineExpr],
              indices: Sequence[SSAValue]) -> None:
        printer.print_ssa_value(buffer)
        print_exprs(printer, [offset], indices)
        if strides:
            printer.print_string(" strides ")
            print_exprs(printer, strides, indices)


# --------------------------------------------------------------------------- structure


@irdl_op_definition
class NestOp(IRDLOperation):
    """A layer or fused group: its DRAM inputs (operands) and outputs (results), and a body whose
    block arguments are the inputs then the outputs."""

    name = "tile.nest"

    inputs = var_operand_def()
    outputs = var_result_def()
    layer = prop_def(StringAttr, prop_name="layer")
    body = region_def("single_block")
    traits = traits_def(NoTerminator())

    def __init__(self, layer: str, inputs: Sequence[SSAValue], output_types: Sequence[Attribute],
                 body: Region, attributes: dict[str, Attribute] | None = None):
        super().__init__(operands=[inputs], result_types=[output_types], regions=[body],
                         properties={"layer": StringAttr(layer)}, attributes=attributes or {})

    @property
    def block(self) -> Block:
        return self.body.block

    def verify_(self) -> None:
        self.verify_signature()
        self.verify_halo()
        memories = target_memories(self)
        if memories is not None:
            verify_fit(self, memories)

    def verify_halo(self) -> None:
        """`halo = "cache"` (halo rows kept on chip between strips) exactly when the nest has a
        `ring` buffer; `halo = "recompute"` (or none) otherwise."""
        halo = self.attributes.get("halo")
        rings = any(isinstance(op, BufferOp) and op.ring is not None for op in self.block.walk())
        value = halo.data if isinstance(halo, StringAttr) else None
        if halo is not None and value not in ("cache", "recompute"):
            raise VerifyException(f"tile.nest {self.layer.data}: halo must be \"cache\" or \"recompute\"")
        if rings != (value == "cache"):
            raise VerifyException(f"tile.nest {self.layer.data}: halo = \"cache\" goes with a ring buffer "
                                  f"(the cached halo rows), and only with one")

    def verify_signature(self) -> None:
        args = self.block.args
        if len(args) != len(self.inputs) + len(self.outputs):
            raise VerifyException(f"tile.nest {self.layer.data}: {len(args)} block arguments for "
                                  f"{len(self.inputs)} inputs and {len(self.outputs)} outputs")
        for arg, value in zip(args, [*self.inputs, *self.outputs]):
            if arg.type != value.type:
                raise VerifyException(f"tile.nest {self.layer.data}: block argument type {arg.type} "
                                      f"differs from {value.type}")

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_string_literal(self.layer.data)
        printer.print_string(" (")
        printer.print_list(self.inputs, printer.print_ssa_value)
        printer.print_string(") -> ")
        printer.print_list(self.result_types, printer.print_attribute)
        if self.attributes:
            printer.print_op_attributes(self.attributes, print_keyword=True)
        printer.print_string(" ")
        printer.print_region(self.body, print_entry_block_args=True, print_empty_block=True)
        printer.print_string(" : (")
        printer.print_list(self.inputs.types, printer.print_attribute)
        printer.print_string(") -> ")
        printer.print_list(self.result_types, printer.print_attribute)

    @classmethod
    def parse(cls, parser: Parser) -> NestOp:
        layer = parser.parse_str_literal("the layer name")
        unresolved = parser.parse_comma_separated_list(Parser.Delimiter.PAREN, parser.parse_unresolved_operand)
        parser.parse_punctuation("->")
        parser.parse_comma_separated_list(Parser.Delimiter.NONE, parser.parse_type)
        attributes = parser.parse_optional_attr_dict_with_keyword()
        body = parser.parse_region()
        parser.parse_punctuation(":")
        input_types = parser.parse_comma_separated_list(Parser.Delimiter.PAREN, parser.parse_type)
        parser.parse_punctuation("->")
        output_types = parser.parse_comma_separated_list(Parser.Delimiter.NONE, parser.parse_type)
        inputs = parser.resolve_operands(unresolved, input_types, parser.pos)
        return cls(layer, inputs, output_types, body, attributes.data if attributes else None)


SLOT_ALIGNMENT = 64  # bytes: every slot of a buffer starts at a multiple of it


def slot_bytes(buffer: BufferOp) -> int:
    return -(-4 * buffer.elements // SLOT_ALIGNMENT) * SLOT_ALIGNMENT


@dataclass(frozen=True)
class MemoryBudget:
    """The bytes of each named memory of a module's target, which of them have one instance for
    all cores, and how many cores the module uses (`tile.cores`, else 1)."""

    sizes: dict[str, int]
    one_instance: frozenset[str]
    cores: int

    def copies(self, buffer: BufferOp) -> int:
        """Copies of `buffer`: one per core when each core has its own but the memory one instance."""
        return self.cores if buffer.shared is None and buffer.memory in self.one_instance else 1


def target_memories(op: IRDLOperation) -> MemoryBudget | None:
    """The memories of the target the enclosing module records (`tile.target`), or None when it
    records none."""
    from xdsl.dialects.builtin import DictionaryAttr, ModuleOp

    module = op.parent_op()
    while module is not None and not isinstance(module, ModuleOp):
        module = module.parent_op()
    target = module.attributes.get("tile.target") if module is not None else None
    if not isinstance(target, DictionaryAttr) or not isinstance(target.data.get("memory"), ArrayAttr):
        return None
    sizes, one_instance = {}, set()
    for memory in target.data["memory"].data:
        if isinstance(memory, DictionaryAttr) and isinstance(memory.data.get("size_bytes"), IntegerAttr):
            name = memory.data["name"].data  # type: ignore[attr-defined]
            sizes[name] = memory.data["size_bytes"].value.data  # type: ignore[attr-defined]
            shared = memory.data.get("shared")
            if isinstance(shared, IntegerAttr) and shared.value.data:
                one_instance.add(name)
    cores = module.attributes.get("tile.cores")
    return MemoryBudget(sizes, frozenset(one_instance), cores.value.data if isinstance(cores, IntegerAttr) else 1)


def verify_fit(nest: NestOp, memories: MemoryBudget) -> None:
    """Every buffer's slots (one copy per core when each core has its own in a memory of one
    instance) fit, with the other buffers of the nest, in its memory."""
    used: dict[str, int] = {}
    sizes = memories.sizes
    for op in nest.block.walk():
        if isinstance(op, BufferOp):
            name = op.result.name_hint or "a buffer"
            if op.memory not in sizes:
                raise VerifyException(f"tile.nest {nest.layer.data}: buffer %{name} is in memory {op.memory}, "
                                      f"which the target does not have ({', '.join(sizes)})")
            copies = memories.copies(op)
            used[op.memory] = used.get(op.memory, 0) + copies * op.slots.value.data * slot_bytes(op)
            if used[op.memory] > sizes[op.memory]:
                each = f"{copies} cores x " if copies > 1 else ""
                raise VerifyException(
                    f"tile.nest {nest.layer.data}: buffer %{name} ({each}{op.slots.value.data} x {slot_bytes(op)} "
                    f"bytes) does not fit in memory {op.memory}: the nest's buffers there need "
                    f"{used[op.memory]} bytes, it has {sizes[op.memory]}")


@irdl_op_definition
class RelayoutOp(IRDLOperation):
    """A DRAM tensor seen in another layout: reshaped to `shape`, then transposed by
    `permutation`. A constant is placed in the DRAM image in that layout (its tiles are then
    dense boxes); a tensor computed at run time is read through permuted strides.

        %Wp = tile.relayout %W shape [1, 64, 3, 7, 7] permutation [0, 3, 4, 2, 1]
                : tensor<64x3x7x7xf32> -> tensor<1x7x7x3x64xf32>
    """

    name = "tile.relayout"

    input = operand_def(TensorType)
    result = result_def(TensorType)
    shape = prop_def(DenseArrayBase)
    permutation = prop_def(DenseArrayBase)


    def __init__(self, input: SSAValue, shape: Sequence[int], permutation: Sequence[int]):
        out = [shape[p] for p in permutation]
        element = input.type.element_type  # type: ignore[attr-defined]
        super().__init__(operands=[input], result_types=[TensorType(element, out)],
                         properties={"shape": ints_attr(shape), "permutation": ints_attr(permutation)})

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_ssa_value(self.input)
        printer.print_string(" shape ")
        print_ints(printer, ints(self.shape))
        printer.print_string(" permutation ")
        print_ints(printer, ints(self.permutation))
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        printer.print_attribute(self.input.type)
        printer.print_string(" -> ")
        printer.print_attribute(self.result.type)

    @classmethod
    def parse(cls, parser: Parser) -> RelayoutOp:
        unresolved = parser.parse_unresolved_operand()
        parser.parse_keyword("shape")
        shape = parse_ints(parser)
        parser.parse_keyword("permutation")
        permutation = parse_ints(parser)
        attributes = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        input_type = parser.parse_type()
        parser.parse_punctuation("->")
        parser.parse_type()
        op = cls(parser.resolve_operand(unresolved, input_type), shape, permutation)
        op.attributes |= attributes
        return op

    def verify_(self) -> None:
        shape, perm = ints(self.shape), ints(self.permutation)
        source = tuple(self.input.type.get_shape())  # type: ignore[attr-defined]
        if sorted(perm) != list(range(len(shape))):
            raise VerifyException(f"tile.relayout: permutation {list(perm)} of {len(shape)} dimensions")
        if _product(shape) != _product(source):
            raise VerifyException(f"tile.relayout: shape {list(shape)} does not hold {list(source)}")
        if tuple(self.result.type.get_shape()) != tuple(shape[p] for p in perm):  # type: ignore[attr-defined]
            raise VerifyException("tile.relayout: result shape is not the permuted shape")


@irdl_op_definition
class ViewOp(IRDLOperation):
    """A strided view of a DRAM tensor (a nest's block argument): element (i, j, ...) of the
    result is element `offset + i * s0 + j * s1 + ...` of the tensor's row-major storage.
    Stride 0 broadcasts (a per-channel batch-norm parameter read once per tile); the view can
    transpose, merge axes, step (a strided slice; a negative step reads backwards, one element
    per load) or pick a concat's slice of its output. Loads and stores of the view move what it
    selects; DMA boxes keep the view's strides.

        %Sv = tile.view %S offset 0 sizes [2, 64, 3136] strides [0, 1, 0] : tensor<1x64x1x1xf32> -> tensor<2x64x3136xf32>
    """

    name = "tile.view"

    input = operand_def(TensorType)
    result = result_def(TensorType)
    offset = prop_def(IntegerAttr)
    view_strides = prop_def(DenseArrayBase, prop_name="view_strides")

    def __init__(self, input: SSAValue, offset: int, sizes: Sequence[int], strides: Sequence[int]):
        element = input.type.element_type  # type: ignore[attr-defined]
        super().__init__(operands=[input], result_types=[TensorType(element, list(sizes))],
                         properties={"offset": IntegerAttr(offset, i64), "view_strides": ints_attr(strides)})

    @property
    def strides(self) -> tuple[int, ...]:
        return ints(self.view_strides)

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_ssa_value(self.input)
        printer.print_string(f" offset {self.offset.value.data} sizes ")
        print_ints(printer, tuple(self.result.type.get_shape()))  # type: ignore[attr-defined]
        printer.print_string(" strides ")
        print_ints(printer, self.strides)
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        printer.print_attribute(self.input.type)
        printer.print_string(" -> ")
        printer.print_attribute(self.result.type)

    @classmethod
    def parse(cls, parser: Parser) -> ViewOp:
        unresolved = parser.parse_unresolved_operand()
        parser.parse_keyword("offset")
        offset = parser.parse_integer()
        parser.parse_keyword("sizes")
        sizes = parse_ints(parser)
        parser.parse_keyword("strides")
        strides = parse_ints(parser)
        attributes = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        input_type = parser.parse_type()
        parser.parse_punctuation("->")
        parser.parse_type()
        op = cls(parser.resolve_operand(unresolved, input_type), offset, sizes, strides)
        op.attributes |= attributes
        return op

    def verify_(self) -> None:
        sizes, strides = tuple(self.result.type.get_shape()), self.strides  # type: ignore[attr-defined]
        if len(sizes) != len(strides) or not sizes:
            raise VerifyException(f"tile.view: {len(sizes)} sizes and {len(strides)} strides")
        if any(size < 1 for size in sizes):
            raise VerifyException(f"tile.view: empty view {list(sizes)}")
        low = self.offset.value.data + sum((n - 1) * s for n, s in zip(sizes, strides) if s < 0)
        high = self.offset.value.data + sum((n - 1) * s for n, s in zip(sizes, strides) if s > 0)
        elements = _product(self.input.type.get_shape())  # type: ignore[attr-defined]
        if low < 0 or high >= elements:
            raise VerifyException(f"tile.view: elements {low} to {high} of a tensor of {elements}")


def _product(values) -> int:
    total = 1
    for value in values:
        total *= value
    return total


@irdl_op_definition
class BufferOp(IRDLOperation):
    """An on-chip buffer: a `memref` in one of the target's named memories (its memory space),
    with `slots` copies (2: double buffering) and, when `shared`, one slot state for all cores
    (its loads are multicast to the cores that use it). Its `role` decides which memory the
    target gives it (input, weight, output; intermediate: a tensor of a fused group). A
    `resident` buffer has one slot whatever `double-buffer` says: every job reads the same data
    (a fused chain's whole weights, loaded once). A `ring` buffer (an input window whose halo is
    cached: a line buffer) has one slot too, which survives from one load to the next: a load into
    it keeps the rows (or columns) its window shares with the window loaded before (copied on chip
    to where this window wants them) and reads only the others from DRAM. A fused chain's
    intermediate window may be a ring too (a line buffer): `tile.copy` moves the rows it keeps,
    its producer writes only the new ones.

        %in = tile.buffer "input" slots 2 : memref<21x229x3xf32, "L1">
        %w1 = tile.buffer "weight" slots 1 shared resident : memref<1792xf32, "BUF">
        %in = tile.buffer "input" slots 1 ring : memref<4x58x64xf32, "BUF">
    """

    name = "tile.buffer"

    result = result_def(MemRefType)
    role = prop_def(StringAttr)
    slots = prop_def(IntegerAttr)
    shared = opt_prop_def(UnitAttr)
    resident = opt_prop_def(UnitAttr)
    ring = opt_prop_def(UnitAttr)

    def __init__(self, role: str, shape: Sequence[int], memory: str, slots: int, shared: bool = False,
                 element=None, resident: bool = False, ring: bool = False):
        from xdsl.dialects.builtin import f32

        properties: dict[str, Attribute] = {"role": StringAttr(role),
                                            "slots": IntegerAttr(1 if resident or ring else slots, i64)}
        if shared:
            properties["shared"] = UnitAttr()
        if resident:
            properties["resident"] = UnitAttr()
        if ring:
            properties["ring"] = UnitAttr()
        super().__init__(result_types=[MemRefType(element or f32, list(shape), memory_space=StringAttr(memory))],
                         properties=properties)

    @property
    def memory(self) -> str:
        return self.result.type.memory_space.data  # type: ignore[attr-defined]

    @property
    def elements(self) -> int:
        return _product(self.result.type.get_shape())  # type: ignore[attr-defined]

    def verify_(self) -> None:
        if self.role.data not in ROLES:
            raise VerifyException(f"tile.buffer: role must be one of {', '.join(ROLES)}, not {self.role.data!r}")
        if not isinstance(self.result.type.memory_space, StringAttr):  # type: ignore[attr-defined]
            raise VerifyException("tile.buffer: the memref needs a memory name as its memory space")
        if not 1 <= self.slots.value.data <= 8:
            raise VerifyException(f"tile.buffer: slots must be 1 to 8, not {self.slots.value.data}")
        if self.resident is not None and self.slots.value.data != 1:
            raise VerifyException("tile.buffer: a resident buffer has 1 slot")
        if self.ring is not None and (self.slots.value.data != 1 or self.resident is not None
                                      or self.role.data not in ("input", "intermediate")):
            raise VerifyException("tile.buffer: a ring buffer is an input or intermediate buffer of 1 slot, "
                                  "not resident")

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_string_literal(self.role.data)
        printer.print_string(f" slots {self.slots.value.data}")
        if self.shared is not None:
            printer.print_string(" shared")
        if self.resident is not None:
            printer.print_string(" resident")
        if self.ring is not None:
            printer.print_string(" ring")
        printer.print_op_attributes(self.attributes)
        printer.print_string(" : ")
        printer.print_attribute(self.result.type)

    @classmethod
    def parse(cls, parser: Parser) -> BufferOp:
        role = parser.parse_str_literal("the buffer role")
        parser.parse_keyword("slots")
        slots = parser.parse_integer()
        shared = parser.parse_optional_keyword("shared") is not None
        resident = parser.parse_optional_keyword("resident") is not None
        ring = parser.parse_optional_keyword("ring") is not None
        attributes = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        memref = parser.parse_type()
        if not isinstance(memref, MemRefType) or not isinstance(memref.memory_space, StringAttr):
            parser.raise_error("tile.buffer: expected a memref type with a memory name as memory space")
        op = cls(role, memref.get_shape(), memref.memory_space.data, slots, shared, memref.element_type)
        if resident:
            op.resident = UnitAttr()
        if ring:
            op.ring = UnitAttr()
        op.attributes |= attributes
        return op


@irdl_op_definition
class ForOp(IRDLOperation):
    """A loop over tiles: one or more dimensions, each `%iv[%extent] = lb to ub step s`, walked
    row-major. `%extent` is min(step, ub - iv): the size of this (possibly fragmented) tile.
    `cores N` deals the iterations out to N cores in waves of N consecutive iterations, the
    waves' inner loops interleaved step by step; `order serpentine` reverses the walk (of the
    waves, for `cores`) every other time the loop starts, so that the blocks on chip at the end
    of one walk are the first ones the next walk needs (the Scan order); `order path [...]`
    walks the points in the order listed (each point by its row-major index; a permutation of
    all of them), the same every time the loop starts (a travelling-salesman path over the tile
    grid: `compiler/codegen/tile_order.py`); with `cores`, the waves are consecutive points of
    the path.

        tile.for %oh[%toh] = 0 to 112 step 8, %ow[%tow] = 0 to 112 step 112 cores 4 order serpentine {
          ...
        }
        tile.for %oc[%toc] = 0 to 64 step 32, %oh[%toh] = 0 to 16 step 8 order path [0, 1, 3, 2] {
          ...
        }
    """

    name = "tile.for"

    lower = prop_def(DenseArrayBase)
    upper = prop_def(DenseArrayBase)
    step = prop_def(DenseArrayBase)
    cores = opt_prop_def(IntegerAttr)
    order = prop_def(StringAttr)
    path = opt_prop_def(DenseArrayBase)  # with order path: the points' row-major indices, in walking order
    body = region_def("single_block")
    traits = traits_def(NoTerminator())

    def __init__(self, bounds: Sequence[tuple[int, int, int]], body: Region, order: str = "naive",
                 cores: int | None = None, path: Sequence[int] | None = None):
        properties: dict[str, Attribute] = {
            "lower": ints_attr([b[0] for b in bounds]), "upper": ints_attr([b[1] for b in bounds]),
            "step": ints_attr([b[2] for b in bounds]), "order": StringAttr(order)}
        if cores is not None:
            properties["cores"] = IntegerAttr(cores, i64)
        if path is not None:
            properties["path"] = ints_attr(path)
        super().__init__(regions=[body], properties=properties)

    @staticmethod
    def build(bounds: Sequence[tuple[int, int, int]], order: str = "naive", cores: int | None = None,
              names: Sequence[str] = ()) -> ForOp:
        """An empty loop; its block arguments are (iv, extent) per dimension, named after `names`."""
        block = Block(arg_types=[INDEX] * (2 * len(bounds)))
        for i, name in enumerate(names):
            block.args[2 * i].name_hint = name
            block.args[2 * i + 1].name_hint = f"t{name}"
        return ForOp(bounds, Region(block), order, cores)

    @property
    def bounds(self) -> list[tuple[int, int, int]]:
        return list(zip(ints(self.lower), ints(self.upper), ints(self.step)))

    @property
    def block(self) -> Block:
        return self.body.block

    @property
    def points(self) -> int:
        """How many iterations the loop has (the product of its dimensions' tile counts)."""
        return math.prod(-(-(high - low) // step) for low, high, step in self.bounds)

    def set_path(self, path: Sequence[int]) -> None:
        """Walk the points in `path`'s order from now on (`order path`)."""
        self.order = StringAttr("path")
        self.path = ints_attr(path)

    def verify_(self) -> None:
        bounds = self.bounds
        if not bounds or len(self.block.args) != 2 * len(bounds):
            raise VerifyException("tile.for: one (iv, extent) block argument pair per dimension")
        for low, high, step in bounds:
            if step < 1 or high <= low:
                raise VerifyException(f"tile.for: empty or ill-formed range {low} to {high} step {step}")
        if self.order.data not in ORDERS:
            raise VerifyException(f"tile.for: order must be one of {', '.join(ORDERS)}, not {self.order.data!r}")
        if (self.order.data == "path") != (self.path is not None):
            raise VerifyException("tile.for: a list of points goes with order path, and only with it")
        if self.path is not None and sorted(ints(self.path)) != list(range(self.points)):
            raise VerifyException(f"tile.for: order path must list each of the loop's {self.points} points "
                                  f"(row-major indices 0 to {self.points - 1}) once")
        if self.cores is not None and self.cores.value.data < 1:
            raise VerifyException("tile.for: cores must be at least 1")

    def print(self, printer: Printer) -> None:
        args = self.block.args
        for i, (low, high, step) in enumerate(self.bounds):
            printer.print_string(", " if i else " ")
            printer.print_ssa_value(args[2 * i])
            printer.print_string("[")
            printer.print_ssa_value(args[2 * i + 1])
            printer.print_string(f"] = {low} to {high} step {step}")
        if self.cores is not None:
            printer.print_string(f" cores {self.cores.value.data}")
        printer.print_string(f" order {self.order.data}")
        if self.path is not None:
            printer.print_string(f" [{', '.join(map(str, ints(self.path)))}]")
        printer.print_op_attributes(self.attributes, print_keyword=True)
        printer.print_string(" ")
        printer.print_region(self.body, print_entry_block_args=False, print_empty_block=True)

    @classmethod
    def parse(cls, parser: Parser) -> ForOp:
        arguments, bounds = [], []

        def dimension():
            iv = parser.parse_argument(expect_type=False)
            parser.parse_punctuation("[")
            extent = parser.parse_argument(expect_type=False)
            parser.parse_punctuation("]")
            parser.parse_punctuation("=")
            low = parser.parse_integer()
            parser.parse_keyword("to")
            high = parser.parse_integer()
            parser.parse_keyword("step")
            step = parser.parse_integer()
            arguments.extend([iv.resolve(INDEX), extent.resolve(INDEX)])
            bounds.append((low, high, step))

        parser.parse_comma_separated_list(Parser.Delimiter.NONE, dimension)
        cores = parser.parse_integer() if parser.parse_optional_keyword("cores") else None
        parser.parse_keyword("order")
        order = parser.parse_identifier()
        path = parse_ints(parser) if order == "path" else None
        attributes = parser.parse_optional_attr_dict_with_keyword()
        body = parser.parse_region(arguments)
        op = cls(bounds, body, order, cores, path)
        op.attributes |= attributes.data if attributes else {}
        return op


class BoundOp(IRDLOperation):
    """Base of tile.max and tile.min: an index value, the largest (smallest) of affine
    expressions (MLIR's affine.max / affine.min): where a tile meets a tensor's border.

        %top = tile.max [%oh - 1, 0]
    """

    result = result_def(IndexType)
    indices = var_operand_def(IndexType)
    exprs = prop_def(AffineMapAttr)

    def verify_(self) -> None:
        if self.exprs.data.num_dims != len(self.indices) or not self.exprs.data.results:
            raise VerifyException(f"{self.name}: one or more expressions over its {len(self.indices)} index values")

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        print_exprs(printer, map_exprs(self.exprs), self.indices)
        printer.print_op_attributes(self.attributes)

    @classmethod
    def parse(cls, parser: Parser):
        exprs = ExprParser(parser)
        values = exprs.exprs()
        op = cls.build(operands=[list(exprs.values)], result_types=[INDEX], properties={"exprs": exprs.map(values)})
        op.attributes |= parser.parse_optional_attr_dict()
        return op


@irdl_op_definition
class MaxOp(BoundOp):
    """The largest of its expressions (see BoundOp)."""

    name = "tile.max"


@irdl_op_definition
class MinOp(BoundOp):
    """The smallest of its expressions (see BoundOp)."""

    name = "tile.min"


# --------------------------------------------------------------------------- data movement


class SliceOp(IRDLOperation):
    """Base of tile.load and tile.store: a slice of a DRAM tensor (`offsets`, `sizes`, per
    tensor dimension; outside the tensor is padding) and a buffer view (`at`, `strides`); `dims`
    lists the tensor dimension of each buffer dimension."""

    tensor = operand_def(TensorType)
    buffer = operand_def(MemRefType)
    indices = var_operand_def(IndexType)
    offsets = prop_def(AffineMapAttr)
    sizes = prop_def(AffineMapAttr)
    at = prop_def(AffineMapAttr)
    strides = opt_prop_def(AffineMapAttr)
    dims = prop_def(DenseArrayBase)

    def verify_(self) -> None:
        rank = len(self.tensor.type.get_shape())  # type: ignore[attr-defined]
        dims = ints(self.dims)
        if len(self.offsets.data.results) != rank or len(self.sizes.data.results) != rank:
            raise VerifyException(f"{self.name}: {rank} offsets and sizes expected for a rank-{rank} tensor")
        if len(set(dims)) != len(dims) or any(not 0 <= d < rank for d in dims) or not dims:
            raise VerifyException(f"{self.name}: dims {list(dims)} must be distinct dimensions of the tensor")
        if self.strides is not None and len(self.strides.data.results) != len(dims):
            raise VerifyException(f"{self.name}: one stride per buffer dimension")
        for maps in (self.offsets, self.sizes, self.at, self.strides):
            if maps is not None and maps.data.num_dims != len(self.indices):
                raise VerifyException(f"{self.name}: index expressions over {maps.data.num_dims} values, "
                                      f"{len(self.indices)} given")

    def print_slice(self, printer: Printer) -> None:
        printer.print_ssa_value(self.tensor)
        print_exprs(printer, map_exprs(self.offsets), self.indices)
        printer.print_string(" ")
        print_exprs(printer, map_exprs(self.sizes), self.indices)

    def print_view(self, printer: Printer) -> None:
        View.print(printer, self.buffer, map_exprs(self.at)[0], map_exprs(self.strides), self.indices)

    def print_transfer(self, printer: Printer, view_first: bool) -> None:
        """`SLICE -> VIEW dims [...]` (a load) or `VIEW -> SLICE dims [...]` (a store)."""
        printer.print_string(" ")
        first, second = (self.print_view, self.print_slice) if view_first else (self.print_slice, self.print_view)
        first(printer)
        printer.print_string(" -> ")
        second(printer)
        printer.print_string(" dims ")
        print_ints(printer, ints(self.dims))

    @classmethod
    def parse_transfer(cls, parser: Parser, view_first: bool):
        exprs = ExprParser(parser)
        if view_first:
            buffer, at, strides = View.parse(parser, exprs)
            parser.parse_punctuation("->")
            tensor, offsets, sizes = cls.parse_slice(parser, exprs)
        else:
            tensor, offsets, sizes = cls.parse_slice(parser, exprs)
            parser.parse_punctuation("->")
            buffer, at, strides = View.parse(parser, exprs)
        parser.parse_keyword("dims")
        return cls.make(tensor, buffer, exprs, offsets, sizes, at, strides, parse_ints(parser))

    @staticmethod
    def parse_slice(parser: Parser, exprs: ExprParser):
        tensor = untyped_operand(parser)
        offsets = exprs.exprs()
        sizes = exprs.exprs()
        return tensor, offsets, sizes

    @classmethod
    def make(cls, tensor: SSAValue, buffer: SSAValue, exprs: ExprParser, offsets, sizes, at, strides,
             dims: Sequence[int]):
        properties = {"offsets": exprs.map(offsets), "sizes": exprs.map(sizes), "at": exprs.map(at),
                      "dims": ints_attr(dims)}
        if strides:
            properties["strides"] = exprs.map(strides)
        return cls.build(operands=[tensor, buffer, list(exprs.values)], properties=properties)


@irdl_op_definition
class LoadOp(SliceOp):
    """DMA a slice of a DRAM tensor into a buffer; the parts of the slice outside the tensor are
    `pad` (zero unless given).

        tile.load %X[0, %ic, %oh * 2 - 3, -3] [1, %tic, %toh * 2 + 5, 229] -> %in[0] dims [2, 3, 1]
    """

    name = "tile.load"

    pad = opt_prop_def(FloatAttr)

    def print(self, printer: Printer) -> None:
        self.print_transfer(printer, view_first=False)
        if self.pad is not None:
            printer.print_string(f" pad {self.pad.value.data!r}")  # inf and -inf as words
        printer.print_op_attributes(self.attributes)

    @classmethod
    def parse(cls, parser: Parser) -> LoadOp:
        op = cls.parse_transfer(parser, view_first=False)
        if parser.parse_optional_keyword("pad"):
            op.pad = FloatAttr(parse_pad(parser), f64)
        op.attributes |= parser.parse_optional_attr_dict()
        return op


def parse_pad(parser: Parser) -> float:
    """A float, or `inf` / `-inf` (max pooling pads with -inf)."""
    negative = parser.parse_optional_punctuation("-") is not None
    if parser.parse_optional_keyword("inf"):
        return -math.inf if negative else math.inf
    value = parser.parse_float()
    return -value if negative else value


@irdl_op_definition
class StoreOp(SliceOp):
    """DMA a buffer's tile to a slice of a DRAM tensor (the slice lies inside the tensor).

        tile.store %out[0] -> %Y[0, %oc, %oh, 0] [1, %toc, %toh, 112] dims [2, 3, 1]
    """

    name = "tile.store"

    def print(self, printer: Printer) -> None:
        self.print_transfer(printer, view_first=True)
        printer.print_op_attributes(self.attributes)

    @classmethod
    def parse(cls, parser: Parser) -> StoreOp:
        op = cls.parse_transfer(parser, view_first=True)
        op.attributes |= parser.parse_optional_attr_dict()
        return op


@irdl_op_definition
class CopyOp(IRDLOperation):
    """An on-chip copy inside one `ring` buffer: `sizes [n]` consecutive elements from one offset
    of its slot to another (an executed DMA from the chip to the chip). A fused chain's line
    buffer moves the rows the next strip shares up to the top of the window before its producer
    writes the new rows below them; a copy of no elements emits nothing.

        tile.copy %m1[4 * 1808] -> %m1[0] sizes [%kept1 * 1808]
    """

    name = "tile.copy"

    buffer = operand_def(MemRefType)
    indices = var_operand_def(IndexType)
    views = prop_def(AffineMapAttr)  # [source offset, destination offset], elements
    sizes = prop_def(AffineMapAttr)  # [elements]

    def verify_(self) -> None:
        if len(self.views.data.results) != 2 or len(self.sizes.data.results) != 1:
            raise VerifyException("tile.copy: a source and a destination offset and one size expected")
        for maps in (self.views, self.sizes):
            if maps.data.num_dims != len(self.indices):
                raise VerifyException(f"tile.copy: index expressions over {maps.data.num_dims} values, "
                                      f"{len(self.indices)} given")
        owner = self.buffer.owner
        if not isinstance(owner, BufferOp) or owner.ring is None:
            raise VerifyException("tile.copy: copies inside a ring buffer only (a line buffer's kept rows)")

    def print(self, printer: Printer) -> None:
        names = [printer_name(printer, v) for v in self.indices]
        buffer = printer_name(printer, self.buffer)
        source, target = (expr_text(e, names) for e in self.views.data.results)
        printer.print_string(f" {buffer}[{source}] -> {buffer}[{target}]"
                             f" sizes [{expr_text(self.sizes.data.results[0], names)}]")
        printer.print_op_attributes(self.attributes)

    @classmethod
    def parse(cls, parser: Parser) -> CopyOp:
        exprs = ExprParser(parser)
        buffer, source = exprs.view()
        parser.parse_punctuation("->")
        other, target = exprs.view()
        if other is not buffer:
            parser.raise_error("tile.copy: the source and the destination are the same ring buffer")
        parser.parse_keyword("sizes")
        sizes = exprs.exprs()
        op = cls.build(operands=[buffer, list(exprs.values)],
                       properties={"views": exprs.map([source, target]), "sizes": exprs.map(sizes)})
        op.attributes |= parser.parse_optional_attr_dict()
        return op


# --------------------------------------------------------------------------- compute on buffers


class ComputeOp(IRDLOperation):
    """Base of the compute ops: buffer operands (`buffers`), each with a view (`views`: one
    offset per buffer; `view_strides` optional), index operands and integer `sizes`."""

    buffers = var_operand_def(MemRefType)
    indices = var_operand_def(IndexType)
    views = prop_def(AffineMapAttr)
    sizes = prop_def(AffineMapAttr)
    irdl_options = (AttrSizedOperandSegments(as_property=True),)

    def view(self, index: int) -> tuple[SSAValue, AffineExpr]:
        return self.buffers[index], self.views.data.results[index]

    def verify_(self) -> None:
        if len(self.views.data.results) != len(self.buffers):
            raise VerifyException(f"{self.name}: one view offset per buffer operand")
        for maps in (self.views, self.sizes):
            if maps.data.num_dims != len(self.indices):
                raise VerifyException(f"{self.name}: index expressions over {maps.data.num_dims} values, "
                                      f"{len(self.indices)} given")


@irdl_op_definition
class ConvOp(ComputeOp):
    """out[oh][ow][oc] (+)= sum over kernel rows and columns and input channels of
    in[oh*s + i*d][ow*s + j*d][ic] * w[i][j][ic][oc], on HWC tiles (`mapping width`: on
    [rows][channels][columns] tiles with weights [i][j][oc][ic]); `sizes` are
    [rows, columns, input channels, output channels] of this tile. It starts from zero (or from
    what a residual load put in `out`) on the first executed iteration of its `reduce` loop and
    accumulates on the others; on the last, the bias (`bias` view, [oc]) is added and `act`
    applied (the epilogue, while the tile is on chip). `pitch [row, column]` (channels mapping):
    the output's element strides of a row and a column (default: dense, tow x toc and toc). `last %iv`: only on the last iteration of
    that loop. Compute ops carry an optional attribute `unit` ("pre", "post": the core's unit
    that runs them when the target has it; else the vector unit, or main for tile.conv).

        tile.conv %in[0], %wt[0] -> %out[0] sizes [%toh, 112, %tic, %toc] kernel [7, 7]
          strides [2, 2] dilations [1, 1] reduce %ic bias %wt[%tic * %toc * 49] act relu
        tile.conv %ones[0], %out[0] -> %sums[%oc] sizes [1, 1, %toh * %tow, %toc] kernel [1, 1]
          strides [1, 1] dilations [1, 1] reduce %n last %ic {unit = "post"}   (per-channel sums)
    """

    name = "tile.conv"

    kernel = prop_def(DenseArrayBase)
    conv_strides = prop_def(DenseArrayBase, prop_name="conv_strides")
    dilations = prop_def(DenseArrayBase)
    reduce = prop_def(IntegerAttr)  # the index operand that is the reduction loop's iv (-1: none)
    accumulate_init = opt_prop_def(UnitAttr, prop_name="accumulate_init")  # out holds a residual
    act = opt_prop_def(StringAttr)
    act_params = opt_prop_def(DenseArrayBase, prop_name="act_params")
    mapping = opt_prop_def(StringAttr)  # "width": [rows][channels][columns] tiles, weights [kh][kw][oc][ic]
    last = opt_prop_def(IntegerAttr)  # run only on the last iteration of that index operand's loop

    @property
    def has_bias(self) -> bool:
        return len(self.buffers) == 4

    def verify_(self) -> None:
        super().verify_()
        if len(self.buffers) not in (3, 4) or len(self.sizes.data.results) not in (4, 5, 6):
            raise VerifyException("tile.conv: in, w, out (and bias) views, 4 sizes (and an output row pitch, and "
                                  "column pitch) expected")
        if self.mapping is not None and self.mapping.data not in ("channels", "width"):
            raise VerifyException(f"tile.conv: mapping must be channels or width, not {self.mapping.data!r}")
        if len(ints(self.kernel)) != 2 or len(ints(self.conv_strides)) != 2 or len(ints(self.dilations)) != 2:
            raise VerifyException("tile.conv: kernel, strides and dilations have 2 entries each")
        verify_condition(self, "last")

    def print(self, printer: Printer) -> None:
        reduce = self.reduce.value.data
        extra = f" reduce {printer_name(printer, self.indices[reduce])}" if reduce >= 0 else ""
        print_window_op(printer, self, extra + mapping_text(self) + condition_text(printer, self, "last"))

    @classmethod
    def parse(cls, parser: Parser) -> ConvOp:
        def extra(exprs: ExprParser) -> dict[str, Attribute]:
            properties: dict[str, Attribute] = {"reduce": IntegerAttr(-1, i64)}
            if parser.parse_optional_keyword("reduce"):
                properties["reduce"] = IntegerAttr(exprs.dim(parser.parse_operand(INDEX)).position, i64)
            return properties | parse_mapping(parser) | parse_condition(parser, exprs, "last")

        return parse_window_op(parser, cls, extra)


@irdl_op_definition
class FillOp(ComputeOp):
    """Set a [rows][columns][channels] tile of a buffer (`sizes`, dense, or with `pitch`: the
    element stride of a row) to `value`.

        tile.fill %m1[0] sizes [%toh + 2, 58, %tcb] value 0.0
    """

    name = "tile.fill"

    value = prop_def(FloatAttr)

    def verify_(self) -> None:
        super().verify_()
        if len(self.buffers) != 1 or len(self.sizes.data.results) not in (3, 4):
            raise VerifyException("tile.fill: one view and 3 sizes (and a row pitch) expected")

    def print(self, printer: Printer) -> None:
        names = [printer_name(printer, v) for v in self.indices]
        sizes = self.sizes.data.results
        printer.print_string(f" {printer_name(printer, self.buffers[0])}[{expr_text(self.views.data.results[0], names)}]"
                             f" sizes [{', '.join(expr_text(e, names) for e in sizes[:3])}]")
        if len(sizes) == 4:
            printer.print_string(f" pitch {expr_text(sizes[3], names)}")
        printer.print_string(f" value {self.value.value.data!r}")  # inf and -inf as words
        printer.print_op_attributes(self.attributes)

    @classmethod
    def parse(cls, parser: Parser) -> FillOp:
        exprs = ExprParser(parser)
        buffer, offset = exprs.view()
        parser.parse_keyword("sizes")
        sizes = exprs.exprs()
        if parser.parse_optional_keyword("pitch"):
            sizes.append(exprs.expr())
        parser.parse_keyword("value")
        value = parse_pad(parser)
        op = cls.build(operands=[[buffer], list(exprs.values)],
                       properties={"views": exprs.map([offset]), "sizes": exprs.map(sizes), "value": FloatAttr(value, f64)})
        op.attributes |= parser.parse_optional_attr_dict()
        return op


@irdl_op_definition
class DepthwiseOp(ComputeOp):
    """out[oh][ow][c] = bias[c] + sum over kernel taps (i, j) of in[oh*s + i*d][ow*s + j*d][c] *
    w[i*kw + j][c], on HWC tiles (channels on the lanes); `sizes` are [rows, columns, channels]
    of the output tile, then optionally the input tile's row pitch and column pitch in
    elements (default: dense by the input window) and the output tile's row pitch (default:
    dense; a fused group writes into the next depthwise's zero-bordered input); then `act`.

        tile.depthwise %m1[0], %wd[0] -> %m2[0] sizes [%toh, 56, %tcb] kernel [3, 3] strides [1, 1]
          dilations [1, 1] bias %wd[9 * 48] act clip [0.0, 6.0]
    """

    name = "tile.depthwise"

    kernel = prop_def(DenseArrayBase)
    conv_strides = prop_def(DenseArrayBase, prop_name="conv_strides")
    dilations = prop_def(DenseArrayBase)
    accumulate_init = opt_prop_def(UnitAttr, prop_name="accumulate_init")  # out holds a residual
    act = opt_prop_def(StringAttr)
    act_params = opt_prop_def(DenseArrayBase, prop_name="act_params")
    mapping = opt_prop_def(StringAttr)  # "width": [channels][rows][columns] tiles, columns on the lanes

    @property
    def has_bias(self) -> bool:
        return len(self.buffers) == 4

    def verify_(self) -> None:
        super().verify_()
        if len(self.buffers) not in (3, 4) or len(self.sizes.data.results) not in (3, 5, 6):
            raise VerifyException("tile.depthwise: in, w, out (and bias) views and 3 sizes (and 2 input pitches, "
                                  "and an output row pitch) expected")
        if len(self.sizes.data.results) == 6 and self.mapping is not None:
            raise VerifyException("tile.depthwise: an output row pitch needs the channels mapping")

    def print(self, printer: Printer) -> None:
        print_window_op(printer, self, mapping_text(self))

    @classmethod
    def parse(cls, parser: Parser) -> DepthwiseOp:
        return parse_window_op(parser, cls, lambda exprs: parse_mapping(parser))


@irdl_op_definition
class PoolOp(ComputeOp):
    """out[oh][ow][c] = max / average / sum over the window at (oh*s, ow*s) (taps d apart) of
    in, on HWC tiles (`mapping width`: [channels][rows][columns], columns on the lanes); `sizes`
    are [rows, columns, channels] of the output tile. A second input view (`divide_by`, [rows][columns])
    multiplies the sums by per-position reciprocals (average pooling that excludes padding).

        tile.pool max %in[0] -> %out[0] sizes [%toh, %tow, %tc] kernel [3, 3] strides [2, 2] dilations [1, 1]
    """

    name = "tile.pool"

    func = prop_def(StringAttr)
    kernel = prop_def(DenseArrayBase)
    conv_strides = prop_def(DenseArrayBase, prop_name="conv_strides")
    dilations = prop_def(DenseArrayBase)
    mapping = opt_prop_def(StringAttr)

    def verify_(self) -> None:
        super().verify_()
        if self.func.data not in ("max", "avg", "sum"):
            raise VerifyException(f"tile.pool: func must be max, avg or sum, not {self.func.data!r}")
        if len(self.buffers) not in (2, 3) or len(self.sizes.data.results) != 3:
            raise VerifyException("tile.pool: in, out (and divide_by) views and 3 sizes expected")

    def print(self, printer: Printer) -> None:
        names = [printer_name(printer, v) for v in self.indices]
        offsets = self.views.data.results
        view = lambda i: f"{printer_name(printer, self.buffers[i])}[{expr_text(offsets[i], names)}]"  # noqa: E731
        printer.print_string(f" {self.func.data} {view(0)} -> {view(1)} sizes "
                             f"[{', '.join(expr_text(e, names) for e in self.sizes.data.results)}] kernel ")
        print_ints(printer, ints(self.kernel))
        printer.print_string(" strides ")
        print_ints(printer, ints(self.conv_strides))
        printer.print_string(" dilations ")
        print_ints(printer, ints(self.dilations))
        if self.mapping is not None:
            printer.print_string(f" mapping {self.mapping.data}")
        if len(self.buffers) == 3:
            printer.print_string(f" divide_by {view(2)}")
        printer.print_op_attributes(self.attributes)

    @classmethod
    def parse(cls, parser: Parser) -> PoolOp:
        exprs = ExprParser(parser)
        func = parser.parse_identifier()
        views = []

        def view():
            views.append(exprs.view())

        view()
        parser.parse_punctuation("->")
        view()
        parser.parse_keyword("sizes")
        sizes = exprs.exprs()
        parser.parse_keyword("kernel")
        kernel = parse_ints(parser)
        parser.parse_keyword("strides")
        strides = parse_ints(parser)
        parser.parse_keyword("dilations")
        dilations = parse_ints(parser)
        properties: dict[str, Attribute] = {"func": StringAttr(func), "kernel": ints_attr(kernel),
                                            "conv_strides": ints_attr(strides), "dilations": ints_attr(dilations)}
        if parser.parse_optional_keyword("mapping"):
            properties["mapping"] = StringAttr(parser.parse_identifier())
        if parser.parse_optional_keyword("divide_by"):
            view()
        properties |= {"views": exprs.map([o for _, o in views]), "sizes": exprs.map(sizes)}
        op = cls.build(operands=[[b for b, _ in views], list(exprs.values)], properties=properties)
        op.attributes |= parser.parse_optional_attr_dict()
        return op


# --------------------------------------------------------------------------- streaming compute


MAP_BINARY = {"add": "vadd", "sub": "vsub", "mul": "vmul", "div": "vdiv", "max": "vmax", "min": "vmin",
              "cmpeq": "vcmpeq", "cmpgt": "vcmpgt"}
"""tile.map functions of two inputs and their instructions (cmpeq, cmpgt: 1.0 where x == y, x > y, else 0.0)."""
MAP_FUNCS = (*MAP_BINARY, "fma", *ACTIVATIONS)
"""Every tile.map function: binary, fma (x * y + w), and the vact functions of one input."""
STRIDED = -1  # a view's layout code: explicit strides (else a bit mask of broadcast dimensions)


def map_arity(func: str) -> int:
    """Inputs of a tile.map function."""
    return 2 if func in MAP_BINARY else 3 if func == "fma" else 1


class StreamViews:
    """The views of tile.map and tile.reduce: `%b[e]` is dense row-major by the op's 3-D
    `shape`; `%b[e] broadcast [d, ...]` holds the shape with size 1 along dimensions d, read with
    stride 0 there (a per-channel parameter, a per-row statistic); `%b[e] strides [e, e, e]`
    explicit element strides. The
    layouts are a property (`layouts`: one code per view, a bit mask of broadcast dimensions, or
    -1 for explicit strides, which are then the `view_strides` map's results in order)."""

    def __init__(self, exprs: ExprParser):
        self.exprs = exprs
        self.buffers: list[SSAValue] = []
        self.offsets: list[AffineExpr] = []
        self.layouts: list[int] = []
        self.strides: list[AffineExpr] = []

    def parse(self, parser: Parser) -> None:
        buffer, offset = self.exprs.view()
        layout = 0
        if parser.parse_optional_keyword("broadcast"):
            for dim in parse_ints(parser):
                if not 0 <= dim < 3:
                    parser.raise_error(f"broadcast dimension {dim} of a 3-D view")
                layout |= 1 << dim
        elif parser.parse_optional_keyword("strides"):
            self.strides += self.exprs.exprs()
            layout = STRIDED
        self.buffers.append(buffer)
        self.offsets.append(offset)
        self.layouts.append(layout)

    def properties(self) -> dict[str, Attribute]:
        properties: dict[str, Attribute] = {"views": self.exprs.map(self.offsets), "layouts": ints_attr(self.layouts)}
        if self.strides:
            properties["view_strides"] = self.exprs.map(self.strides)
        return properties

    @staticmethod
    def text(printer: Printer, op, index: int, names: Sequence[str]) -> str:
        layouts = ints(op.layouts)
        text = f"{printer_name(printer, op.buffers[index])}[{expr_text(op.views.data.results[index], names)}]"
        if layouts[index] == STRIDED:
            start = 3 * sum(1 for layout in layouts[:index] if layout == STRIDED)
            strides = op.view_strides.data.results[start:start + 3]
            return text + f" strides [{', '.join(expr_text(e, names) for e in strides)}]"
        if layouts[index]:
            return text + f" broadcast [{', '.join(str(d) for d in range(3) if layouts[index] >> d & 1)}]"
        return text

    @staticmethod
    def verify(op) -> None:
        layouts = ints(op.layouts)
        if len(layouts) != len(op.buffers):
            raise VerifyException(f"{op.name}: one layout per view")
        if any(not STRIDED <= layout <= 7 for layout in layouts):
            raise VerifyException(f"{op.name}: a view layout is a mask of broadcast dimensions 0-2, or -1 (strides)")
        count = 3 * layouts.count(STRIDED)
        given = len(op.view_strides.data.results) if op.view_strides is not None else 0
        if given != count:
            raise VerifyException(f"{op.name}: {count} view strides expected, {given} given")
        if op.view_strides is not None and op.view_strides.data.num_dims != len(op.indices):
            raise VerifyException(f"{op.name}: view strides over {op.view_strides.data.num_dims} values, "
                                  f"{len(op.indices)} given")


def parse_condition(parser: Parser, exprs: ExprParser, keyword: str) -> dict[str, Attribute]:
    """`KEYWORD %iv` -> {KEYWORD: the position of %iv among the op's index operands}."""
    if parser.parse_optional_keyword(keyword):
        return {keyword: IntegerAttr(exprs.dim(parser.parse_operand(INDEX)).position, i64)}
    return {}


def condition_text(printer: Printer, op, keyword: str) -> str:
    attr = getattr(op, keyword)
    return f" {keyword} {printer_name(printer, op.indices[attr.value.data])}" if attr is not None else ""


def verify_condition(op, keyword: str) -> None:
    attr = getattr(op, keyword)
    if attr is not None and not 0 <= attr.value.data < len(op.indices):
        raise VerifyException(f"{op.name}: {keyword} names index operand {attr.value.data} of {len(op.indices)}")


@irdl_op_definition
class MapOp(ComputeOp):
    """z = func(x[, y[, w]]) elementwise over a 3-D `shape` (lanes on the last dimension): a
    binary op (add, sub, mul, div, max, min), fma (x * y + w: batch norm's per-channel scale and
    shift), or a function of one input with up to two parameters (copy, relu, clip [lo, hi],
    leaky [alpha], affine [scale, shift], exp, log, recip, rsqrt [eps], sigmoid, tanh, ...: the
    `vact` functions). Views are dense by `shape` unless they say otherwise (see StreamViews);
    the output is the last view and may be an input too (in place). `first %iv` / `last %iv`:
    only on the first / last iteration of that loop (a residual scaled before a conv's first
    matmul, a product scaled after its last). It can sit in any nest beside a conv, a
    depthwise or a pooling op, on their buffers.

        tile.map fma %in0[0], %in1[0] broadcast [0, 2], %in2[0] broadcast [0, 2] -> %out[0] shape [%t0, %t1, %t2]
        tile.map clip [0.0, 6.0] %in0[0] -> %out[0] shape [1, %t1, %t2]
        tile.map affine [0.25, 0.0] %out[0] broadcast [0, 1] -> %out[0] broadcast [0, 1] shape [1, 1, %tr] last %s
    """

    name = "tile.map"

    func = prop_def(StringAttr)
    params = opt_prop_def(DenseArrayBase)
    layouts = prop_def(DenseArrayBase)
    view_strides = opt_prop_def(AffineMapAttr, prop_name="view_strides")
    first = opt_prop_def(IntegerAttr)
    last = opt_prop_def(IntegerAttr)

    def verify_(self) -> None:
        super().verify_()
        func = self.func.data
        if func not in MAP_FUNCS:
            raise VerifyException(f"tile.map: unknown function {func!r}")
        if len(self.buffers) != map_arity(func) + 1:
            raise VerifyException(f"tile.map: {func} takes {map_arity(func)} input view(s) and an output view, "
                                  f"{len(self.buffers)} views given")
        params = ints(self.params) if self.params is not None else ()
        if len(params) > 2 or (params and map_arity(func) != 1):
            raise VerifyException(f"tile.map: {func} takes at most {2 if map_arity(func) == 1 else 0} parameters")
        if len(self.sizes.data.results) != 3:
            raise VerifyException("tile.map: a 3-D shape expected")
        StreamViews.verify(self)
        verify_condition(self, "first")
        verify_condition(self, "last")

    def print(self, printer: Printer) -> None:
        names = [printer_name(printer, v) for v in self.indices]
        printer.print_string(f" {self.func.data}")
        if self.params is not None:
            printer.print_string(" [" + ", ".join(repr(float(p)) for p in self.params.get_values()) + "]")
        views = [StreamViews.text(printer, self, i, names) for i in range(len(self.buffers))]
        printer.print_string(f" {', '.join(views[:-1])} -> {views[-1]} shape "
                             f"[{', '.join(expr_text(e, names) for e in self.sizes.data.results)}]")
        printer.print_string(condition_text(printer, self, "first") + condition_text(printer, self, "last"))
        printer.print_op_attributes(self.attributes)

    @classmethod
    def parse(cls, parser: Parser) -> MapOp:
        exprs = ExprParser(parser)
        func = parser.parse_identifier()
        properties: dict[str, Attribute] = {"func": StringAttr(func)}
        if parser.parse_optional_punctuation("["):
            params = [parser.parse_float()]
            while parser.parse_optional_punctuation(","):
                params.append(parser.parse_float())
            parser.parse_punctuation("]")
            properties["params"] = DenseArrayBase.from_list(f64, params)
        views = StreamViews(exprs)
        views.parse(parser)
        while parser.parse_optional_punctuation(","):
            views.parse(parser)
        parser.parse_punctuation("->")
        views.parse(parser)
        parser.parse_keyword("shape")
        shape = exprs.exprs()
        properties |= parse_condition(parser, exprs, "first") | parse_condition(parser, exprs, "last")
        properties |= views.properties() | {"sizes": exprs.map(shape)}
        op = cls.build(operands=[views.buffers, list(exprs.values)], properties=properties)
        op.attributes |= parser.parse_optional_attr_dict()
        return op


REDUCE_FUNCS = ("sum", "max", "mean")
WINDOW_FUNCS = ("sum", "max", "avg")


@irdl_op_definition
class ReduceOp(ComputeOp):
    """A reduction on buffers. Without a window: z[i] = func over j, l of x[i, j, l] (`vred`;
    global pooling, softmax's row max and sum), `reduce %iv` combines with z on all but the first
    iteration of that loop, and `repeat N steps [sx, sz]` does it N times, x and z moved by sx
    and sz elements each time (a statistic per row of a tile whose reduced axis is not
    innermost). With `window [a, b] steps [w0, w1]`: z[i, j, l] = func over the a x b taps of
    x[i, j, l] (taps w0 and w1 elements apart; `vpool`; LRN's sum over neighbouring channels).

        tile.reduce max %in[0] broadcast [1] -> %out[0] shape [%tr, 1, %ts] reduce %s
        tile.reduce sum %out[%tp * 64] broadcast [0] -> %out[0] broadcast [0] shape [1, 64, %tp] window [1, 5] steps [0, %tp]
    """

    name = "tile.reduce"

    func = prop_def(StringAttr)
    layouts = prop_def(DenseArrayBase)
    view_strides = opt_prop_def(AffineMapAttr, prop_name="view_strides")
    window = opt_prop_def(DenseArrayBase)
    repeat = opt_prop_def(UnitAttr)
    reduce = opt_prop_def(IntegerAttr)

    def verify_(self) -> None:
        super().verify_()
        funcs = WINDOW_FUNCS if self.window is not None else REDUCE_FUNCS
        if self.func.data not in funcs:
            raise VerifyException(f"tile.reduce: func must be one of {', '.join(funcs)}"
                                  f"{' with a window' if self.window is not None else ''}, not {self.func.data!r}")
        if len(self.buffers) != 2:
            raise VerifyException("tile.reduce: an input view and an output view expected")
        if self.window is not None and (len(ints(self.window)) != 2 or self.reduce is not None or
                                        self.repeat is not None):
            raise VerifyException("tile.reduce: a window has 2 sizes and takes no reduce or repeat")
        expected = 3 + 2 * (self.window is not None) + 3 * (self.repeat is not None)
        if len(self.sizes.data.results) != expected:
            raise VerifyException(f"tile.reduce: {expected} shape, step and repeat expressions expected")
        StreamViews.verify(self)
        verify_condition(self, "reduce")

    def print(self, printer: Printer) -> None:
        names = [printer_name(printer, v) for v in self.indices]
        text = lambda exprs: ", ".join(expr_text(e, names) for e in exprs)  # noqa: E731
        sizes = self.sizes.data.results
        printer.print_string(f" {self.func.data} {StreamViews.text(printer, self, 0, names)} -> "
                             f"{StreamViews.text(printer, self, 1, names)} shape [{text(sizes[:3])}]")
        rest = sizes[3:]
        if self.window is not None:
            printer.print_string(f" window [{', '.join(map(str, ints(self.window)))}] steps [{text(rest[:2])}]")
            rest = rest[2:]
        if self.repeat is not None:
            printer.print_string(f" repeat {text(rest[:1])} steps [{text(rest[1:])}]")
        printer.print_string(condition_text(printer, self, "reduce"))
        printer.print_op_attributes(self.attributes)

    @classmethod
    def parse(cls, parser: Parser) -> ReduceOp:
        exprs = ExprParser(parser)
        properties: dict[str, Attribute] = {"func": StringAttr(parser.parse_identifier())}
        views = StreamViews(exprs)
        views.parse(parser)
        parser.parse_punctuation("->")
        views.parse(parser)
        parser.parse_keyword("shape")
        sizes = exprs.exprs()
        if parser.parse_optional_keyword("window"):
            properties["window"] = ints_attr(parse_ints(parser))
            parser.parse_keyword("steps")
            sizes += exprs.exprs()
        if parser.parse_optional_keyword("repeat"):
            properties["repeat"] = UnitAttr()
            sizes.append(exprs.expr())
            parser.parse_keyword("steps")
            sizes += exprs.exprs()
        properties |= parse_condition(parser, exprs, "reduce")
        properties |= views.properties() | {"sizes": exprs.map(sizes)}
        op = cls.build(operands=[views.buffers, list(exprs.values)], properties=properties)
        op.attributes |= parser.parse_optional_attr_dict()
        return op


def mapping_text(op) -> str:
    """` mapping width` and ` onto_output` when set (tile.conv, tile.depthwise)."""
    text = f" mapping {op.mapping.data}" if op.mapping is not None else ""
    return text + (" onto_output" if op.accumulate_init is not None else "")


def parse_mapping(parser: Parser) -> dict[str, Attribute]:
    properties: dict[str, Attribute] = {}
    if parser.parse_optional_keyword("mapping"):
        properties["mapping"] = StringAttr(parser.parse_identifier())
    if parser.parse_optional_keyword("onto_output"):
        properties["accumulate_init"] = UnitAttr()
    return properties


def print_window_op(printer: Printer, op, extra: str) -> None:
    """`%in[e], %w[e] -> %out[e] sizes [...] [pitch e, e] kernel [..] strides [..] dilations [..]
    <extra> [bias %b[e]] [act f [p, p]]` (tile.conv, tile.depthwise)."""
    offsets = op.views.data.results
    names = [printer_name(printer, v) for v in op.indices]
    text = lambda e: expr_text(e, names)  # noqa: E731
    buffer = lambda i: f"{printer_name(printer, op.buffers[i])}[{text(offsets[i])}]"  # noqa: E731
    sizes = op.sizes.data.results
    count = 4 if isinstance(op, ConvOp) else 3
    printer.print_string(f" {buffer(0)}, {buffer(1)} -> {buffer(2)} sizes [{', '.join(text(e) for e in sizes[:count])}]")
    if len(sizes) > count:
        printer.print_string(f" pitch [{', '.join(text(e) for e in sizes[count:])}]")
    printer.print_string(" kernel ")
    print_ints(printer, ints(op.kernel))
    printer.print_string(" strides ")
    print_ints(printer, ints(op.conv_strides))
    printer.print_string(" dilations ")
    print_ints(printer, ints(op.dilations))
    printer.print_string(extra)
    if op.has_bias:
        printer.print_string(f" bias {buffer(3)}")
    if op.act is not None:
        printer.print_string(f" act {op.act.data}")
        params = [float(v) for v in op.act_params.get_values()] if op.act_params is not None else []
        if params:
            printer.print_string(" [" + ", ".join(repr(p) for p in params) + "]")
    printer.print_op_attributes(op.attributes)


def parse_window_op(parser: Parser, cls, extra=None):
    exprs = ExprParser(parser)
    views: list[tuple[SSAValue, AffineExpr]] = []

    def view():
        views.append(exprs.view())

    view()
    parser.parse_punctuation(",")
    view()
    parser.parse_punctuation("->")
    view()
    parser.parse_keyword("sizes")
    sizes = exprs.exprs()
    if parser.parse_optional_keyword("pitch"):
        sizes += exprs.exprs()
    parser.parse_keyword("kernel")
    kernel = parse_ints(parser)
    parser.parse_keyword("strides")
    strides = parse_ints(parser)
    parser.parse_keyword("dilations")
    dilations = parse_ints(parser)
    properties: dict[str, Attribute] = extra(exprs) if extra else {}
    if parser.parse_optional_keyword("bias"):
        view()
    if parser.parse_optional_keyword("act"):
        properties["act"] = StringAttr(parser.parse_identifier())
        if parser.parse_optional_punctuation("["):
            params = [parser.parse_float()]
            while parser.parse_optional_punctuation(","):
                params.append(parser.parse_float())
            parser.parse_punctuation("]")
            properties["act_params"] = DenseArrayBase.from_list(f64, params)
    properties |= {"views": exprs.map([o for _, o in views]), "sizes": exprs.map(sizes), "kernel": ints_attr(kernel),
                   "conv_strides": ints_attr(strides), "dilations": ints_attr(dilations)}
    op = cls.build(operands=[[b for b, _ in views], list(exprs.values)], properties=properties)
    op.attributes |= parser.parse_optional_attr_dict()
    return op


def window_op(cls, buffers, offsets, exprs: ExprParser, sizes, kernel, strides, dilations, act: str | None,
              params: Sequence[float], **extra: Attribute):
    """A tile.conv or tile.depthwise over `buffers` at `offsets` (expressions of `exprs`)."""
    properties: dict[str, Attribute] = {
        "views": exprs.map(offsets), "sizes": exprs.map(sizes), "kernel": ints_attr(kernel),
        "conv_strides": ints_attr(strides), "dilations": ints_attr(dilations), **extra}
    if act is not None:
        properties["act"] = StringAttr(act)
        if params:
            properties["act_params"] = DenseArrayBase.from_list(f64, list(params))
    return cls.build(operands=[list(buffers), list(exprs.values)], properties=properties)


def conv_op(buffers, offsets, exprs: ExprParser, sizes, kernel, strides, dilations, reduce: int,
            onto_output: bool, act: str | None, params: Sequence[float]) -> ConvOp:
    extra: dict[str, Attribute] = {"reduce": IntegerAttr(reduce, i64)}
    if onto_output:
        extra["accumulate_init"] = UnitAttr()
    return window_op(ConvOp, buffers, offsets, exprs, sizes, kernel, strides, dilations, act, params, **extra)


TILE = Dialect("tile", [NestOp, RelayoutOp, ViewOp, BufferOp, ForOp, MaxOp, MinOp, LoadOp, StoreOp, CopyOp, ConvOp,
                        DepthwiseOp, PoolOp, FillOp, MapOp, ReduceOp], [])
