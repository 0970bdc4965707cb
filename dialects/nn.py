"""The `nn` dialect: tensor-level neural-network ops with value semantics.

This is the level the ONNX importer produces and the graph passes rewrite.
Conventions every op follows:

- Every value is a statically shaped `tensor<...xf32>`; activations are NCHW,
  convolution weights OIHW, `gemm` weights as ONNX lays them out.
- Weights are never inlined: `nn.weight "conv1.weight"` names an entry of the
  numpy-backed weight store (see `nncc.compiler.weights`), like MLIR's
  `dense_resource`.
- The ONNX nodes an op came from are kept in the discardable attribute
  `onnx_nodes`, so reports can name them after fusion.
- Result types are explicit and checked by each op's verifier against the
  shape rules below (the importer uses the same rules to infer them).

Example:

    %w = nn.weight "conv1.weight" : tensor<64x3x7x7xf32>
    %c = nn.conv2d %x, %w strides [2, 2] pads [3, 3, 3, 3] dilations [1, 1] group 1
           {onnx_nodes = ["conv1"]}
           : (tensor<1x3x224x224xf32>, tensor<64x3x7x7xf32>) -> tensor<1x64x112x112xf32>
    %r = nn.relu %c : tensor<1x64x112x112xf32>

The training ops (backward of conv, gemm, batch norm, activations and pooling,
the losses and their gradients, the SGD update; section "training" at the end)
are what the `autodiff` pass emits (docs/training.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

from xdsl.dialects.builtin import (
    I64,
    ArrayAttr,
    BoolAttr,
    DenseArrayBase,
    Float32Type,
    Float64Type,
    FloatAttr,
    IntegerAttr,
    StringAttr,
    TensorType,
    i64,
)
from xdsl.ir import Attribute, Dialect, Operation, SSAValue
from xdsl.irdl.declarative_assembly_format import (
    AttributeVariable,
    CustomDirective,
    ParsingState,
    PrintingState,
    irdl_custom_directive,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.irdl import (
    IRDLOperation,
    VarConstraint,
    base,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_result_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

ONNX_NODES = "onnx_nodes"
"""Discardable attribute: the ONNX node names an op implements."""
PHASE = "nn.phase"
"""Discardable attribute the `autodiff` pass sets on what it emits: forward, backward or update."""
RATIO_INPUT = "nn.ratio_input"
"""Discardable attribute of an `nn.dropout` whose ratio is a graph input (known at run time
only): the identity in inference, refused in training."""
MODE = "nn.mode"
"""Module attribute: "training" when the module is (or becomes, `nncc --train`) a training step."""

Shape = tuple[int, ...]

# --------------------------------------------------------------------------- shape rules


def broadcast_shapes(lhs: Shape, rhs: Shape) -> Shape:
    """Numpy (multidirectional) broadcasting, as ONNX Add/Mul/... use it."""
    rank = max(len(lhs), len(rhs))
    lhs = (1,) * (rank - len(lhs)) + tuple(lhs)
    rhs = (1,) * (rank - len(rhs)) + tuple(rhs)
    out = []
    for a, b in zip(lhs, rhs):
        if a != b and a != 1 and b != 1:
            raise ValueError(f"shapes {lhs} and {rhs} do not broadcast")
        out.append(b if a == 1 else a)
    return tuple(out)


def window_output_size(
    size: int, kernel: int, stride: int, pad_begin: int, pad_end: int,
    dilation: int = 1, ceil_mode: bool = False,
) -> int:
    """Output length of a sliding window (conv or pooling) along one axis."""
    span = dilation * (kernel - 1) + 1
    room = size + pad_begin + pad_end - span
    # ceil_mode: a window may hang off the end, even when it is longer than the padded input
    # (as onnxruntime: ceil(room / stride) + 1 windows)
    out = (-(-room // stride) if ceil_mode else room // stride) + 1
    # ONNX/PyTorch: the last window must start inside the input or the begin padding.
    if ceil_mode and (out - 1) * stride >= size + pad_begin:
        out -= 1
    if room < 0 and out < 1:
        raise ValueError(
            f"window {span} is larger than the padded input {size + pad_begin + pad_end}"
        )
    return out


def conv2d_output_shape(
    input_shape: Shape, weight_shape: Shape, strides: Sequence[int],
    pads: Sequence[int], dilations: Sequence[int], group: int,
) -> Shape:
    """NCHW input, OIHW weight, pads as [top, left, bottom, right]."""
    n, c, h, w = input_shape
    o, cg, kh, kw = weight_shape
    if group < 1 or c % group or o % group:
        raise ValueError(f"group {group} must divide input channels {c} and output channels {o}")
    if cg * group != c:
        raise ValueError(f"weight expects {cg * group} input channels, input has {c}")
    oh = window_output_size(h, kh, strides[0], pads[0], pads[2], dilations[0])
    ow = window_output_size(w, kw, strides[1], pads[1], pads[3], dilations[1])
    return (n, o, oh, ow)


def pool2d_output_shape(
    input_shape: Shape, kernel: Sequence[int], strides: Sequence[int],
    pads: Sequence[int], dilations: Sequence[int], ceil_mode: bool,
) -> Shape:
    n, c, h, w = input_shape
    oh = window_output_size(h, kernel[0], strides[0], pads[0], pads[2], dilations[0], ceil_mode)
    ow = window_output_size(w, kernel[1], strides[1], pads[1], pads[3], dilations[1], ceil_mode)
    return (n, c, oh, ow)


def gemm_output_shape(a: Shape, b: Shape, trans_a: bool, trans_b: bool) -> Shape:
    if len(a) != 2 or len(b) != 2:
        raise ValueError(f"gemm takes 2-D operands, got {a} and {b}")
    m, k = (a[1], a[0]) if trans_a else a
    kb, n = (b[1], b[0]) if trans_b else b
    if k != kb:
        raise ValueError(f"inner dimensions differ: {k} and {kb}")
    return (m, n)


def matmul_output_shape(a: Shape, b: Shape) -> Shape:
    """numpy.matmul's rule, 1-D operands included."""
    if not a or not b:
        raise ValueError("matmul operands must have rank >= 1")
    a2 = (1,) + tuple(a) if len(a) == 1 else tuple(a)
    b2 = tuple(b) + (1,) if len(b) == 1 else tuple(b)
    if a2[-1] != b2[-2]:
        raise ValueError(f"inner dimensions differ: {a2[-1]} and {b2[-2]}")
    batch = broadcast_shapes(a2[:-2], b2[:-2])
    out = batch + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


def normalize_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


# --------------------------------------------------------------------------- helpers


def shape_of(value: SSAValue | Attribute) -> Shape:
    type_ = value.type if isinstance(value, SSAValue) else value
    assert isinstance(type_, TensorType)
    return tuple(type_.get_shape())


def tensor_type(shape: Sequence[int]) -> TensorType:
    return TensorType(Float32Type(), tuple(int(d) for d in shape))


def i64_array(values: Sequence[int]) -> DenseArrayBase:
    return DenseArrayBase.from_list(i64, [int(v) for v in values])


def f64_attr(value: float) -> FloatAttr:
    return FloatAttr(float(value), Float64Type())


def i64_attr(value: int) -> IntegerAttr:
    return IntegerAttr(int(value), i64)


def onnx_nodes_attr(names: Sequence[str]) -> ArrayAttr:
    return ArrayAttr([StringAttr(n) for n in names])


def onnx_nodes_of(op: Operation) -> list[str]:
    """The ONNX node names an op came from (empty when it has none)."""
    attr = op.attributes.get(ONNX_NODES)
    if not isinstance(attr, ArrayAttr):
        return []
    return [a.data for a in attr.data if isinstance(a, StringAttr)]


def phase_of(op: Operation) -> str:
    """forward, backward or update (ops without the attribute: forward)."""
    attr = op.attributes.get(PHASE)
    return attr.data if isinstance(attr, StringAttr) else "forward"


def check_shape(op: Operation, expected: Shape, what: str = "result") -> None:
    actual = shape_of(op.results[0])
    if tuple(actual) != tuple(expected):
        raise VerifyException(
            f"{op.name}: {what} shape {list(actual)} does not match the expected {list(expected)}"
        )


def check_static_f32(op: Operation) -> None:
    for value in (*op.operands, *op.results):
        type_ = value.type
        if not isinstance(type_, TensorType):
            raise VerifyException(f"{op.name}: expected a tensor, got {type_}")
        if not isinstance(type_.element_type, Float32Type):
            raise VerifyException(f"{op.name}: element type must be f32, got {type_.element_type}")
        if any(d < 0 for d in type_.get_shape()):
            raise VerifyException(f"{op.name}: dynamic shape {type_} is not supported")


def check_rank(op: Operation, value: SSAValue, rank: int, what: str) -> None:
    if len(shape_of(value)) != rank:
        raise VerifyException(f"{op.name}: {what} must have rank {rank}, got {shape_of(value)}")


def check_lengths(op: Operation, **arrays: tuple[DenseArrayBase, int]) -> None:
    for name, (attr, length) in arrays.items():
        if len(attr.get_values()) != length:
            raise VerifyException(f"{op.name}: {name} needs {length} values, got {attr.get_values()}")


def ints(attr: DenseArrayBase) -> tuple[int, ...]:
    return tuple(int(v) for v in attr.get_values())


def rule(op: Operation, compute) -> Shape:
    """Evaluate a shape rule, turning its ValueError into a VerifyException."""
    try:
        return compute()
    except ValueError as error:
        raise VerifyException(f"{op.name}: {error}") from None


@irdl_custom_directive
class F64(CustomDirective):
    """An f64 property as a bare float: `alpha 1.0e-02`, `max 6.0`.

    xDSL prints inf, nan and some large values as their IEEE bit pattern
    (`0x7ff0000000000000`) but its typed-float parser rejects that form; this
    directive prints the same text and also parses the bit pattern back.
    """

    value: AttributeVariable

    def parse(self, parser: Parser, state: ParsingState) -> None:
        # xDSL's own attribute parser tells the forms apart the same way (xdsl pinned).
        is_bit_pattern = parser._current_token.text[:2] in ("0x", "0X")
        number = parser.parse_number()
        if is_bit_pattern:
            if number >= 2**64:
                parser.raise_error(f"{number:#x} is not a 64-bit float bit pattern")
            number = Float64Type().unpack(number.to_bytes(8, "little"), 1)[0]
        self.value.set(state, f64_attr(number))

    def print(self, printer: Printer, state: PrintingState, op: IRDLOperation) -> None:
        state.print_whitespace(printer)
        attr = self.value.get(op)
        assert isinstance(attr, FloatAttr)
        printer.print_float(attr.value.data, Float64Type())


class NNOperation(IRDLOperation):
    """Base of every `nn` op: static f32 tensors everywhere."""

    def verify_(self) -> None:
        check_static_f32(self)
        self.verify_shapes()

    def verify_shapes(self) -> None:
        """Check the result type against the op's shape rule."""


# --------------------------------------------------------------------------- weights


@irdl_op_definition
class WeightOp(NNOperation):
    """A tensor from the weight store, referenced by name (never inlined).

        %w = nn.weight "layer1.0.conv1.weight" : tensor<64x64x3x3xf32>
    """

    name = "nn.weight"
    ref = prop_def(StringAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$ref attr-dict `:` type($result)"

    def __init__(self, ref: str, shape: Sequence[int]):
        super().__init__(properties={"ref": StringAttr(ref)}, result_types=[tensor_type(shape)])


# --------------------------------------------------------------------------- compute


@irdl_op_definition
class Conv2dOp(NNOperation):
    """2-D convolution, NCHW input, OIHW weight, optional per-channel bias.

    Pads are [top, left, bottom, right]; `group` = channels gives a depthwise conv.

        %y = nn.conv2d %x, %w, %b strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1
               : (tensor<1x64x56x56xf32>, tensor<64x64x3x3xf32>, tensor<64xf32>) -> tensor<1x64x56x56xf32>
    """

    name = "nn.conv2d"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    strides = prop_def(DenseArrayBase[I64])
    pads = prop_def(DenseArrayBase[I64])
    dilations = prop_def(DenseArrayBase[I64])
    group = prop_def(IntegerAttr[I64])
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = (
        "$input `,` $weight (`,` $bias^)? `strides` $strides `pads` $pads "
        "`dilations` $dilations `group` $group attr-dict `:` functional-type(operands, results)"
    )

    def __init__(self, input: SSAValue, weight: SSAValue, bias: SSAValue | None,
                 strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int],
                 group: int):
        shape = conv2d_output_shape(shape_of(input), shape_of(weight), strides, pads, dilations, group)
        super().__init__(
            operands=[input, weight, [bias] if bias is not None else []],
            properties={"strides": i64_array(strides), "pads": i64_array(pads),
                        "dilations": i64_array(dilations), "group": i64_attr(group)},
            result_types=[tensor_type(shape)],
        )

    def verify_shapes(self) -> None:
        check_rank(self, self.input, 4, "input")
        check_rank(self, self.weight, 4, "weight")
        check_lengths(self, strides=(self.strides, 2), pads=(self.pads, 4), dilations=(self.dilations, 2))
        if self.bias is not None and shape_of(self.bias) != (shape_of(self.weight)[0],):
            raise VerifyException(f"{self.name}: bias must have shape [{shape_of(self.weight)[0]}]")
        if min(ints(self.strides) + ints(self.dilations)) < 1 or min(ints(self.pads)) < 0:
            raise VerifyException(f"{self.name}: strides and dilations must be >= 1, pads >= 0")
        check_shape(self, rule(self, lambda: conv2d_output_shape(
            shape_of(self.input), shape_of(self.weight), ints(self.strides), ints(self.pads),
            ints(self.dilations), self.group.value.data)))

    @property
    def macs(self) -> int:
        o, cg, kh, kw = shape_of(self.weight)
        return math.prod(shape_of(self.result)) * cg * kh * kw


@irdl_op_definition
class GemmOp(NNOperation):
    """Y = alpha * op(A) @ op(B) + beta * C, op = transpose when trans_a/trans_b.

        %y = nn.gemm %a, %b, %c trans_a false trans_b true alpha 1.0 beta 1.0
               : (tensor<1x512xf32>, tensor<1000x512xf32>, tensor<1000xf32>) -> tensor<1x1000xf32>
    """

    name = "nn.gemm"
    a = operand_def(TensorType)
    b = operand_def(TensorType)
    c = opt_operand_def(TensorType)
    trans_a = prop_def(BoolAttr)
    trans_b = prop_def(BoolAttr)
    alpha = prop_def(FloatAttr[Float64Type])
    beta = prop_def(FloatAttr[Float64Type])
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = (
        "$a `,` $b (`,` $c^)? `trans_a` $trans_a `trans_b` $trans_b `alpha` custom<F64>($alpha) `beta` custom<F64>($beta) "
        "attr-dict `:` functional-type(operands, results)"
    )
    custom_directives = (F64,)

    def __init__(self, a: SSAValue, b: SSAValue, c: SSAValue | None, trans_a: bool,
                 trans_b: bool, alpha: float, beta: float):
        shape = gemm_output_shape(shape_of(a), shape_of(b), trans_a, trans_b)
        super().__init__(
            operands=[a, b, [c] if c is not None else []],
            properties={"trans_a": BoolAttr.from_bool(trans_a), "trans_b": BoolAttr.from_bool(trans_b),
                        "alpha": f64_attr(alpha), "beta": f64_attr(beta)},
            result_types=[tensor_type(shape)],
        )

    def verify_shapes(self) -> None:
        expected = rule(self, lambda: gemm_output_shape(
            shape_of(self.a), shape_of(self.b), self.trans_a.value, self.trans_b.value))
        check_shape(self, expected)
        if self.c is not None:
            rule(self, lambda: self.check_c_broadcasts(expected))

    def check_c_broadcasts(self, expected: Shape) -> None:
        if broadcast_shapes(shape_of(self.c), expected) != expected:
            raise ValueError(f"C of shape {shape_of(self.c)} does not broadcast to {expected}")

    @property
    def macs(self) -> int:
        a = shape_of(self.a)
        k = a[0] if self.trans_a.value else a[1]
        return math.prod(shape_of(self.result)) * k


@irdl_op_definition
class MatMulOp(NNOperation):
    """numpy.matmul semantics (batched, broadcasting).

        %y = nn.matmul %a, %b : (tensor<2x3x4xf32>, tensor<4x5xf32>) -> tensor<2x3x5xf32>
    """

    name = "nn.matmul"
    a = operand_def(TensorType)
    b = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$a `,` $b attr-dict `:` functional-type(operands, results)"

    def __init__(self, a: SSAValue, b: SSAValue):
        shape = matmul_output_shape(shape_of(a), shape_of(b))
        super().__init__(operands=[a, b], result_types=[tensor_type(shape)])

    def verify_shapes(self) -> None:
        check_shape(self, rule(self, lambda: matmul_output_shape(shape_of(self.a), shape_of(self.b))))

    @property
    def macs(self) -> int:
        return math.prod(shape_of(self.result)) * shape_of(self.a)[-1]


@irdl_op_definition
class BatchNormOp(NNOperation):
    """Inference batch normalisation over axis 1 with running statistics.

        %y = nn.batch_norm %x, %scale, %bias, %mean, %var epsilon 1.0e-05
               : (tensor<1x64x56x56xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
               -> tensor<1x64x56x56xf32>
    """

    name = "nn.batch_norm"
    input = operand_def(TensorType)
    scale = operand_def(TensorType)
    bias = operand_def(TensorType)
    mean = operand_def(TensorType)
    var = operand_def(TensorType)
    epsilon = prop_def(FloatAttr[Float64Type])
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = (
        "$input `,` $scale `,` $bias `,` $mean `,` $var `epsilon` custom<F64>($epsilon) attr-dict "
        "`:` functional-type(operands, results)"
    )
    custom_directives = (F64,)

    def __init__(self, input: SSAValue, scale: SSAValue, bias: SSAValue, mean: SSAValue,
                 var: SSAValue, epsilon: float):
        super().__init__(operands=[input, scale, bias, mean, var],
                         properties={"epsilon": f64_attr(epsilon)},
                         result_types=[input.type])

    def verify_shapes(self) -> None:
        shape = shape_of(self.input)
        if len(shape) < 2:
            raise VerifyException(f"{self.name}: input must have a channel axis, got {shape}")
        for name in ("scale", "bias", "mean", "var"):
            if shape_of(getattr(self, name)) != (shape[1],):
                raise VerifyException(f"{self.name}: {name} must have shape [{shape[1]}]")
        check_shape(self, shape)


@irdl_op_definition
class LRNOp(NNOperation):
    """Local response normalisation across channels (ONNX LRN).

        %y = nn.lrn %x size 5 alpha 1.0e-04 beta 7.5e-01 bias 1.0 : tensor<1x64x56x56xf32>
    """

    name = "nn.lrn"
    T: ClassVar = VarConstraint("T", base(TensorType))
    input = operand_def(T)
    size = prop_def(IntegerAttr[I64])
    alpha = prop_def(FloatAttr[Float64Type])
    beta = prop_def(FloatAttr[Float64Type])
    bias = prop_def(FloatAttr[Float64Type])
    result = result_def(T)
    traits = traits_def(Pure())
    assembly_format = (
        "$input `size` $size `alpha` custom<F64>($alpha) `beta` custom<F64>($beta) `bias` custom<F64>($bias) "
        "attr-dict `:` type($result)"
    )
    custom_directives = (F64,)

    def __init__(self, input: SSAValue, size: int, alpha: float, beta: float, bias: float):
        super().__init__(operands=[input],
                         properties={"size": i64_attr(size), "alpha": f64_attr(alpha),
                                     "beta": f64_attr(beta), "bias": f64_attr(bias)},
                         result_types=[input.type])

    def verify_shapes(self) -> None:
        check_rank(self, self.input, 4, "input")
        if self.size.value.data < 1:
            raise VerifyException(f"{self.name}: size must be >= 1, got {self.size.value.data}")
        check_shape(self, shape_of(self.input))


# --------------------------------------------------------------------------- elementwise


class UnaryOp(NNOperation):
    """Elementwise op of one tensor, same shape in and out.

        %y = nn.relu %x : tensor<1x64x56x56xf32>
    """

    T: ClassVar = VarConstraint("T", base(TensorType))
    input = operand_def(T)
    result = result_def(T)
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($result)"

    def __init__(self, input: SSAValue, **properties: Attribute):
        super().__init__(operands=[input], properties=properties, result_types=[input.type])

    def verify_shapes(self) -> None:
        check_shape(self, shape_of(self.input))


@irdl_op_definition
class ReluOp(UnaryOp):
    """max(x, 0)."""

    name = "nn.relu"


@irdl_op_definition
class SigmoidOp(UnaryOp):
    """1 / (1 + exp(-x))."""

    name = "nn.sigmoid"


@irdl_op_definition
class SqrtOp(UnaryOp):
    """sqrt(x) (NaN for x < 0)."""

    name = "nn.sqrt"


@irdl_op_definition
class HardSwishOp(UnaryOp):
    """x * max(0, min(1, x / 6 + 1 / 2))."""

    name = "nn.hard_swish"


@irdl_op_definition
class TanhOp(UnaryOp):
    """tanh(x)."""

    name = "nn.tanh"


@irdl_op_definition
class ErfOp(UnaryOp):
    """erf(x), the Gauss error function."""

    name = "nn.erf"


@irdl_op_definition
class GeluOp(UnaryOp):
    """x / 2 * (1 + erf(x / sqrt(2))): GELU (ONNX Gelu approximate="none"; PyTorch's export
    of it, Div/Erf/Add/Mul/Mul, becomes this op in canonicalize-nn)."""

    name = "nn.gelu"


@irdl_op_definition
class GeluTanhOp(UnaryOp):
    """x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))): ONNX Gelu approximate="tanh"."""

    name = "nn.gelu_tanh"


@irdl_op_definition
class DropoutOp(UnaryOp):
    """ONNX Dropout: the identity in inference (canonicalize-nn removes it); in training, the
    `autodiff` pass multiplies by a seeded mask of 0 and 1 / (1 - ratio).

        %y = nn.dropout %x ratio 5.0e-01 : tensor<2x4096xf32>
    """

    name = "nn.dropout"
    ratio = prop_def(FloatAttr[Float64Type])
    assembly_format = "$input `ratio` custom<F64>($ratio) attr-dict `:` type($result)"
    custom_directives = (F64,)

    def __init__(self, input: SSAValue, ratio: float):
        super().__init__(input, ratio=f64_attr(ratio))

    def verify_shapes(self) -> None:
        super().verify_shapes()
        if not 0.0 <= self.ratio.value.data < 1.0:
            raise VerifyException(f"{self.name}: ratio {self.ratio.value.data} is not in [0, 1)")


@irdl_op_definition
class SiluOp(UnaryOp):
    """x * sigmoid(x) (SiLU / swish; ONNX has no op: canonicalize-nn recognises Sigmoid + Mul)."""

    name = "nn.silu"


@irdl_op_definition
class LeakyReluOp(UnaryOp):
    """x if x >= 0 else alpha * x.

        %y = nn.leaky_relu %x alpha 1.0e-02 : tensor<1x8xf32>
    """

    name = "nn.leaky_relu"
    alpha = prop_def(FloatAttr[Float64Type])
    assembly_format = "$input `alpha` custom<F64>($alpha) attr-dict `:` type($result)"
    custom_directives = (F64,)

    def __init__(self, input: SSAValue, alpha: float):
        super().__init__(input, alpha=f64_attr(alpha))


@irdl_op_definition
class ClipOp(UnaryOp):
    """min(max(x, min), max); ReLU6 is clip 0, 6. Unbounded sides are +-inf.

        %y = nn.clip %x min 0.0 max 6.0 : tensor<1x32x112x112xf32>
    """

    name = "nn.clip"
    min = prop_def(FloatAttr[Float64Type])
    max = prop_def(FloatAttr[Float64Type])
    assembly_format = "$input `min` custom<F64>($min) `max` custom<F64>($max) attr-dict `:` type($result)"
    custom_directives = (F64,)

    def __init__(self, input: SSAValue, min: float, max: float):
        super().__init__(input, min=f64_attr(min), max=f64_attr(max))


@irdl_op_definition
class HardSigmoidOp(UnaryOp):
    """max(0, min(1, alpha * x + beta)).

        %y = nn.hard_sigmoid %x alpha 2.0e-01 beta 5.0e-01 : tensor<1x8xf32>
    """

    name = "nn.hard_sigmoid"
    alpha = prop_def(FloatAttr[Float64Type])
    beta = prop_def(FloatAttr[Float64Type])
    assembly_format = "$input `alpha` custom<F64>($alpha) `beta` custom<F64>($beta) attr-dict `:` type($result)"
    custom_directives = (F64,)

    def __init__(self, input: SSAValue, alpha: float, beta: float):
        super().__init__(input, alpha=f64_attr(alpha), beta=f64_attr(beta))


class BinaryOp(NNOperation):
    """Elementwise op of two tensors with numpy broadcasting.

        %y = nn.add %a, %b : (tensor<1x64x56x56xf32>, tensor<1x64x56x56xf32>) -> tensor<1x64x56x56xf32>
    """

    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$lhs `,` $rhs attr-dict `:` functional-type(operands, results)"

    def __init__(self, lhs: SSAValue, rhs: SSAValue):
        shape = broadcast_shapes(shape_of(lhs), shape_of(rhs))
        super().__init__(operands=[lhs, rhs], result_types=[tensor_type(shape)])

    def verify_shapes(self) -> None:
        check_shape(self, rule(self, lambda: broadcast_shapes(shape_of(self.lhs), shape_of(self.rhs))))


@irdl_op_definition
class AddOp(BinaryOp):
    name = "nn.add"


@irdl_op_definition
class SubOp(BinaryOp):
    name = "nn.sub"


@irdl_op_definition
class MulOp(BinaryOp):
    name = "nn.mul"


@irdl_op_definition
class DivOp(BinaryOp):
    name = "nn.div"


# --------------------------------------------------------------------------- pooling


class Pool2dOp(NNOperation):
    """Sliding-window pooling over H and W of an NCHW tensor."""

    input = operand_def(TensorType)
    kernel = prop_def(DenseArrayBase[I64])
    strides = prop_def(DenseArrayBase[I64])
    pads = prop_def(DenseArrayBase[I64])
    dilations = prop_def(DenseArrayBase[I64])
    ceil_mode = prop_def(BoolAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())

    def __init__(self, input: SSAValue, kernel: Sequence[int], strides: Sequence[int],
                 pads: Sequence[int], dilations: Sequence[int], ceil_mode: bool,
                 **extra: Attribute):
        shape = pool2d_output_shape(shape_of(input), kernel, strides, pads, dilations, ceil_mode)
        super().__init__(
            operands=[input],
            properties={"kernel": i64_array(kernel), "strides": i64_array(strides),
                        "pads": i64_array(pads), "dilations": i64_array(dilations),
                        "ceil_mode": BoolAttr.from_bool(ceil_mode), **extra},
            result_types=[tensor_type(shape)],
        )

    def verify_shapes(self) -> None:
        check_rank(self, self.input, 4, "input")
        check_lengths(self, kernel=(self.kernel, 2), strides=(self.strides, 2), pads=(self.pads, 4),
                      dilations=(self.dilations, 2))
        if min(ints(self.kernel) + ints(self.strides) + ints(self.dilations)) < 1 or min(ints(self.pads)) < 0:
            raise VerifyException(f"{self.name}: kernel, strides and dilations must be >= 1, pads >= 0")
        check_shape(self, rule(self, lambda: pool2d_output_shape(
            shape_of(self.input), ints(self.kernel), ints(self.strides), ints(self.pads),
            ints(self.dilations), self.ceil_mode.value)))


@irdl_op_definition
class MaxPool2dOp(Pool2dOp):
    """Max pooling; padding never wins the max.

        %y = nn.max_pool %x kernel [3, 3] strides [2, 2] pads [1, 1, 1, 1] dilations [1, 1]
               ceil_mode false : (tensor<1x64x112x112xf32>) -> tensor<1x64x56x56xf32>
    """

    name = "nn.max_pool"
    assembly_format = (
        "$input `kernel` $kernel `strides` $strides `pads` $pads `dilations` $dilations "
        "`ceil_mode` $ceil_mode attr-dict `:` functional-type(operands, results)"
    )


@irdl_op_definition
class AvgPool2dOp(Pool2dOp):
    """Average pooling; `count_include_pad` says whether padding counts in the divisor.

        %y = nn.avg_pool %x kernel [2, 2] strides [2, 2] pads [0, 0, 0, 0] dilations [1, 1]
               ceil_mode false count_include_pad false : (tensor<1x8x4x4xf32>) -> tensor<1x8x2x2xf32>
    """

    name = "nn.avg_pool"
    count_include_pad = prop_def(BoolAttr)
    assembly_format = (
        "$input `kernel` $kernel `strides` $strides `pads` $pads `dilations` $dilations "
        "`ceil_mode` $ceil_mode `count_include_pad` $count_include_pad attr-dict "
        "`:` functional-type(operands, results)"
    )

    def __init__(self, input: SSAValue, kernel: Sequence[int], strides: Sequence[int],
                 pads: Sequence[int], dilations: Sequence[int], ceil_mode: bool,
                 count_include_pad: bool):
        super().__init__(input, kernel, strides, pads, dilations, ceil_mode,
                         count_include_pad=BoolAttr.from_bool(count_include_pad))


class GlobalPoolOp(NNOperation):
    """Reduce H and W (every axis after the channel axis) to size 1."""

    input = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` functional-type(operands, results)"

    def __init__(self, input: SSAValue):
        shape = shape_of(input)
        super().__init__(operands=[input], result_types=[tensor_type(shape[:2] + (1,) * (len(shape) - 2))])

    def verify_shapes(self) -> None:
        shape = shape_of(self.input)
        if len(shape) < 3:
            raise VerifyException(f"{self.name}: input must be N x C x spatial..., got {shape}")
        check_shape(self, shape[:2] + (1,) * (len(shape) - 2))


@irdl_op_definition
class GlobalAvgPoolOp(GlobalPoolOp):
    """%y = nn.global_avg_pool %x : (tensor<1x2048x7x7xf32>) -> tensor<1x2048x1x1xf32>"""

    name = "nn.global_avg_pool"


@irdl_op_definition
class GlobalMaxPoolOp(GlobalPoolOp):
    """%y = nn.global_max_pool %x : (tensor<1x2048x7x7xf32>) -> tensor<1x2048x1x1xf32>"""

    name = "nn.global_max_pool"


# --------------------------------------------------------------------------- data movement


@irdl_op_definition
class ReshapeOp(NNOperation):
    """Reinterpret the elements (row-major) with the result's shape; Flatten,
    Squeeze and Unsqueeze import as this op.

        %y = nn.reshape %x : (tensor<1x512x1x1xf32>) -> tensor<1x512xf32>
    """

    name = "nn.reshape"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` functional-type(operands, results)"

    def __init__(self, input: SSAValue, shape: Sequence[int]):
        super().__init__(operands=[input], result_types=[tensor_type(shape)])

    def verify_shapes(self) -> None:
        if math.prod(shape_of(self.input)) != math.prod(shape_of(self.result)):
            raise VerifyException(
                f"{self.name}: cannot reshape {list(shape_of(self.input))} "
                f"into {list(shape_of(self.result))}: element counts differ")


@irdl_op_definition
class TransposeOp(NNOperation):
    """Permute axes: result axis i is input axis perm[i].

        %y = nn.transpose %x perm [0, 2, 3, 1] : (tensor<1x3x4x5xf32>) -> tensor<1x4x5x3xf32>
    """

    name = "nn.transpose"
    input = operand_def(TensorType)
    perm = prop_def(DenseArrayBase[I64])
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$input `perm` $perm attr-dict `:` functional-type(operands, results)"

    def __init__(self, input: SSAValue, perm: Sequence[int]):
        shape = shape_of(input)
        super().__init__(operands=[input], properties={"perm": i64_array(perm)},
                         result_types=[tensor_type([shape[p] for p in perm])])

    def verify_shapes(self) -> None:
        shape, perm = shape_of(self.input), ints(self.perm)
        if sorted(perm) != list(range(len(shape))):
            raise VerifyException(f"{self.name}: perm {list(perm)} is not a permutation of rank {len(shape)}")
        check_shape(self, tuple(shape[p] for p in perm))


@irdl_op_definition
class ConcatOp(NNOperation):
    """Join tensors along one axis.

        %y = nn.concat %a, %b axis 1 : (tensor<1x64x8x8xf32>, tensor<1x64x8x8xf32>) -> tensor<1x128x8x8xf32>
    """

    name = "nn.concat"
    inputs = var_operand_def(TensorType)
    axis = prop_def(IntegerAttr[I64])
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$inputs `axis` $axis attr-dict `:` functional-type(operands, results)"

    def __init__(self, inputs: Sequence[SSAValue], axis: int):
        super().__init__(operands=[list(inputs)], properties={"axis": i64_attr(axis)},
                         result_types=[tensor_type(concat_shape([shape_of(v) for v in inputs], axis))])

    def verify_shapes(self) -> None:
        if not self.inputs:
            raise VerifyException(f"{self.name}: needs at least one input")
        check_shape(self, rule(self, lambda: concat_shape(
            [shape_of(v) for v in self.inputs], self.axis.value.data)))


def concat_shape(shapes: Sequence[Shape], axis: int) -> Shape:
    first = shapes[0]
    if not 0 <= axis < len(first):
        raise ValueError(f"axis {axis} is out of range for rank {len(first)}")
    for shape in shapes[1:]:
        if len(shape) != len(first) or any(
            a != b for i, (a, b) in enumerate(zip(shape, first)) if i != axis
        ):
            raise ValueError(f"shapes {list(first)} and {list(shape)} differ off the concat axis")
    return first[:axis] + (sum(s[axis] for s in shapes),) + first[axis + 1:]


@irdl_op_definition
class SliceOp(NNOperation):
    """A static strided box of the input: result[i0, i1, ...] = x[starts[0] + i0 * steps[0], ...],
    the result's shape giving the box's sizes. ONNX Slice (constant starts/ends/axes/steps, ends
    clamped, negative steps) and each output of Split import as this op (one per Split output).

        %y = nn.slice %x starts [0, 2, 0, 0] steps [1, 1, 1, 1] : (tensor<1x4x8x8xf32>) -> tensor<1x2x8x8xf32>
    """

    name = "nn.slice"
    input = operand_def(TensorType)
    starts = prop_def(DenseArrayBase[I64])
    steps = prop_def(DenseArrayBase[I64])
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$input `starts` $starts `steps` $steps attr-dict `:` functional-type(operands, results)"

    def __init__(self, input: SSAValue, starts: Sequence[int], steps: Sequence[int], shape: Sequence[int]):
        super().__init__(operands=[input], properties={"starts": i64_array(starts), "steps": i64_array(steps)},
                         result_types=[tensor_type(shape)])

    def verify_shapes(self) -> None:
        shape, out = shape_of(self.input), shape_of(self.result)
        starts, steps = ints(self.starts), ints(self.steps)
        if not len(starts) == len(steps) == len(out) == len(shape):
            raise VerifyException(f"{self.name}: starts {list(starts)}, steps {list(steps)} and the result "
                                  f"{list(out)} must have the input's rank {len(shape)}")
        for axis, (dim, start, step, size) in enumerate(zip(shape, starts, steps, out)):
            last = start + (size - 1) * step
            if step == 0 or size < 1 or not (0 <= start < dim and 0 <= last < dim):
                raise VerifyException(f"{self.name}: axis {axis}: {size} elements from {start} by step {step} "
                                      f"do not fit in size {dim}")

    def contiguous_offset(self) -> int | None:
        """The element offset of the result in the row-major input when the box is one contiguous
        run of it (e.g. a channel range of an NCHW tensor with batch 1): the result is then an alias
        of the input's memory. Else None."""
        shape, out = shape_of(self.input), shape_of(self.result)
        starts, steps = ints(self.starts), ints(self.steps)
        strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
        # the axes after the first one of size > 1 must be whole (and that one, step 1)
        kept = [i for i, size in enumerate(out) if size != 1]
        if kept:
            first = kept[0]
            if steps[first] != 1 or any(out[i] != shape[i] for i in range(first + 1, len(shape))):
                return None
        return sum(start * stride for start, stride in zip(starts, strides))


@irdl_op_definition
class SoftmaxOp(NNOperation):
    """exp(x) / sum(exp(x)) along one axis (opset >= 13 semantics).

        %y = nn.softmax %x axis 1 : tensor<1x1000xf32>
    """

    name = "nn.softmax"
    T: ClassVar = VarConstraint("T", base(TensorType))
    input = operand_def(T)
    axis = prop_def(IntegerAttr[I64])
    result = result_def(T)
    traits = traits_def(Pure())
    assembly_format = "$input `axis` $axis attr-dict `:` type($result)"

    def __init__(self, input: SSAValue, axis: int):
        super().__init__(operands=[input], properties={"axis": i64_attr(axis)}, result_types=[input.type])

    def verify_shapes(self) -> None:
        if not 0 <= self.axis.value.data < len(shape_of(self.input)):
            raise VerifyException(f"{self.name}: axis {self.axis.value.data} is out of range")
        check_shape(self, shape_of(self.input))


# --------------------------------------------------------------------------- training
#
# What the `autodiff` pass emits (docs/training.md). Gradients have the shape of what they are
# the gradient of; backward ops whose result shape is not implied by their operands (the input
# of a conv or a pooling) take it from their result type, which the verifier checks against the
# forward shape rule. Every op here also has a numpy reference (`nn_kernels`).

LOSS_SHAPE: Shape = (1,)
"""Losses are one-element tensors (the mean over the batch)."""


class ConvBackwardOp(NNOperation):
    """Common attributes of the two conv backward ops: those of the forward `nn.conv2d`."""

    strides = prop_def(DenseArrayBase[I64])
    pads = prop_def(DenseArrayBase[I64])
    dilations = prop_def(DenseArrayBase[I64])
    group = prop_def(IntegerAttr[I64])
    result = result_def(TensorType)
    traits = traits_def(Pure())

    def conv_properties(self) -> tuple:
        return ints(self.strides), ints(self.pads), ints(self.dilations), self.group.value.data

    def check_conv(self, input_shape: Shape, weight_shape: Shape, grad_shape: Shape) -> None:
        check_lengths(self, strides=(self.strides, 2), pads=(self.pads, 4), dilations=(self.dilations, 2))
        if min(ints(self.strides) + ints(self.dilations)) < 1 or min(ints(self.pads)) < 0:
            raise VerifyException(f"{self.name}: strides and dilations must be >= 1, pads >= 0")
        for what, shape in (("input", input_shape), ("weight", weight_shape), ("gradient", grad_shape)):
            if len(shape) != 4:
                raise VerifyException(f"{self.name}: {what} must have rank 4, got {list(shape)}")
        expected = rule(self, lambda: conv2d_output_shape(input_shape, weight_shape, *self.conv_properties()))
        if tuple(grad_shape) != expected:
            raise VerifyException(f"{self.name}: output gradient shape {list(grad_shape)} does not match "
                                  f"the forward conv's output {list(expected)}")

    @property
    def macs(self) -> int:
        return math.prod(self.grad_shape()) * math.prod(self.weight_shape()[1:])


def conv_properties(strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int], group: int) -> dict:
    return {"strides": i64_array(strides), "pads": i64_array(pads), "dilations": i64_array(dilations),
            "group": i64_attr(group)}


@irdl_op_definition
class Conv2dBackwardDataOp(ConvBackwardOp):
    """Gradient of `nn.conv2d` with respect to its input: the output gradient `dy` correlated
    with the weights (a transposed convolution). The result type is the forward input's shape
    (with stride > 1 the forward conv may have dropped the last input rows: their gradient is 0).

        %dx = nn.conv2d_backward_data %dy, %w strides [2, 2] pads [1, 1, 1, 1] dilations [1, 1] group 1
                : (tensor<2x16x4x4xf32>, tensor<16x8x3x3xf32>) -> tensor<2x8x8x8xf32>
    """

    name = "nn.conv2d_backward_data"
    grad = operand_def(TensorType)
    weight = operand_def(TensorType)
    assembly_format = (
        "$grad `,` $weight `strides` $strides `pads` $pads `dilations` $dilations `group` $group "
        "attr-dict `:` functional-type(operands, results)"
    )

    def __init__(self, grad: SSAValue, weight: SSAValue, input_shape: Sequence[int], strides: Sequence[int],
                 pads: Sequence[int], dilations: Sequence[int], group: int):
        super().__init__(operands=[grad, weight], properties=conv_properties(strides, pads, dilations, group),
                         result_types=[tensor_type(input_shape)])

    def grad_shape(self) -> Shape:
        return shape_of(self.grad)

    def weight_shape(self) -> Shape:
        return shape_of(self.weight)

    def verify_shapes(self) -> None:
        self.check_conv(shape_of(self.result), shape_of(self.weight), shape_of(self.grad))


@irdl_op_definition
class Conv2dBackwardFilterOp(ConvBackwardOp):
    """Gradient of `nn.conv2d` with respect to its weights: for each weight, the sum over the
    batch and the output pixels of output gradient x the input pixel it multiplied.

        %dw = nn.conv2d_backward_filter %x, %dy strides [2, 2] pads [1, 1, 1, 1] dilations [1, 1] group 1
                : (tensor<2x8x8x8xf32>, tensor<2x16x4x4xf32>) -> tensor<16x8x3x3xf32>
    """

    name = "nn.conv2d_backward_filter"
    input = operand_def(TensorType)
    grad = operand_def(TensorType)
    assembly_format = (
        "$input `,` $grad `strides` $strides `pads` $pads `dilations` $dilations `group` $group "
        "attr-dict `:` functional-type(operands, results)"
    )

    def __init__(self, input: SSAValue, grad: SSAValue, weight_shape: Sequence[int], strides: Sequence[int],
                 pads: Sequence[int], dilations: Sequence[int], group: int):
        super().__init__(operands=[input, grad], properties=conv_properties(strides, pads, dilations, group),
                         result_types=[tensor_type(weight_shape)])

    def grad_shape(self) -> Shape:
        return shape_of(self.grad)

    def weight_shape(self) -> Shape:
        return shape_of(self.result)

    def verify_shapes(self) -> None:
        self.check_conv(shape_of(self.input), shape_of(self.result), shape_of(self.grad))


def reduce_sum_shape(shape: Shape, axes: Sequence[int]) -> Shape:
    if len(set(axes)) != len(axes) or any(not 0 <= a < len(shape) for a in axes):
        raise ValueError(f"axes {list(axes)} must be distinct axes of rank {len(shape)}")
    return tuple(d for i, d in enumerate(shape) if i not in axes)


@irdl_op_definition
class ReduceSumOp(NNOperation):
    """Sum over `axes`, which disappear from the shape: the gradient of a broadcast (bias,
    Add/Mul with broadcasting) is the output gradient summed over the broadcast axes.

        %db = nn.reduce_sum %dy axes [0, 2, 3] : (tensor<2x16x4x4xf32>) -> tensor<16xf32>
    """

    name = "nn.reduce_sum"
    input = operand_def(TensorType)
    axes = prop_def(DenseArrayBase[I64])
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$input `axes` $axes attr-dict `:` functional-type(operands, results)"

    def __init__(self, input: SSAValue, axes: Sequence[int]):
        shape = reduce_sum_shape(shape_of(input), tuple(axes))
        super().__init__(operands=[input], properties={"axes": i64_array(axes)},
                         result_types=[tensor_type(shape)])

    def verify_shapes(self) -> None:
        check_shape(self, rule(self, lambda: reduce_sum_shape(shape_of(self.input), ints(self.axes))))


@irdl_op_definition
class ScaleOp(UnaryOp):
    """x * factor (a gemm's alpha or beta in its backward, a subtraction's negated gradient).

        %y = nn.scale %x factor -1.0 : tensor<2x16xf32>
    """

    name = "nn.scale"
    factor = prop_def(FloatAttr[Float64Type])
    assembly_format = "$input `factor` custom<F64>($factor) attr-dict `:` type($result)"
    custom_directives = (F64,)

    def __init__(self, input: SSAValue, factor: float):
        super().__init__(input, factor=f64_attr(factor))


@irdl_op_definition
class StepOp(UnaryOp):
    """1 where x > 0, else 0: the mask of ReLU's gradient (lower-training-ops).

        %m = nn.step %x : tensor<2x8xf32>
    """

    name = "nn.step"


@irdl_op_definition
class ExpOp(UnaryOp):
    """e^x (lower-training-ops: GELU's gradient).

        %y = nn.exp %x : tensor<2x8xf32>
    """

    name = "nn.exp"


@irdl_op_definition
class LogOp(UnaryOp):
    """The natural logarithm (lower-training-ops: the cross-entropy loss).

        %y = nn.log %x : tensor<2x1xf32>
    """

    name = "nn.log"


def check_channels(op: Operation, shape: Shape, **vectors: SSAValue) -> None:
    if len(shape) < 2:
        raise VerifyException(f"{op.name}: input must have a channel axis, got {list(shape)}")
    for name, value in vectors.items():
        if shape_of(value) != (shape[1],):
            raise VerifyException(f"{op.name}: {name} must have shape [{shape[1]}], got {list(shape_of(value))}")


@irdl_op_definition
class BatchNormTrainOp(NNOperation):
    """Batch normalisation in training mode: normalised with the batch's own statistics (mean
    and biased variance over every axis but 1); also returns the batch mean and 1/sqrt(var + eps)
    (saved for the backward) and the running statistics updated as ONNX/PyTorch do:
    running = momentum * running + (1 - momentum) * batch, the variance unbiased (n / (n - 1)).
    `momentum` follows ONNX (0.9 is PyTorch's momentum=0.1).

        %y, %mean, %invstd, %rmean, %rvar = nn.batch_norm_train %x, %scale, %bias, %rm, %rv
               epsilon 1.0e-05 momentum 9.0e-01
               : (tensor<2x8x4x4xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>)
               -> (tensor<2x8x4x4xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>)
    """

    name = "nn.batch_norm_train"
    input = operand_def(TensorType)
    scale = operand_def(TensorType)
    bias = operand_def(TensorType)
    running_mean = operand_def(TensorType)
    running_var = operand_def(TensorType)
    epsilon = prop_def(FloatAttr[Float64Type])
    momentum = prop_def(FloatAttr[Float64Type])
    result = result_def(TensorType)
    saved_mean = result_def(TensorType)
    saved_invstd = result_def(TensorType)
    new_running_mean = result_def(TensorType)
    new_running_var = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = (
        "$input `,` $scale `,` $bias `,` $running_mean `,` $running_var `epsilon` custom<F64>($epsilon) "
        "`momentum` custom<F64>($momentum) attr-dict `:` functional-type(operands, results)"
    )
    custom_directives = (F64,)

    def __init__(self, input: SSAValue, scale: SSAValue, bias: SSAValue, running_mean: SSAValue,
                 running_var: SSAValue, epsilon: float, momentum: float):
        channels = scale.type
        super().__init__(operands=[input, scale, bias, running_mean, running_var],
                         properties={"epsilon": f64_attr(epsilon), "momentum": f64_attr(momentum)},
                         result_types=[input.type, channels, channels, channels, channels])

    def verify_shapes(self) -> None:
        shape = shape_of(self.input)
        check_channels(self, shape, scale=self.scale, bias=self.bias, running_mean=self.running_mean,
                       running_var=self.running_var, saved_mean=self.saved_mean,
                       saved_invstd=self.saved_invstd, new_running_mean=self.new_running_mean,
                       new_running_var=self.new_running_var)
        if math.prod(shape) // shape[1] < 2:
            raise VerifyException(f"{self.name}: batch statistics need more than one value per channel, "
                                  f"input {list(shape)} has one")
        check_shape(self, shape)


@irdl_op_definition
class BatchNormBackwardOp(NNOperation):
    """Gradients of `nn.batch_norm_train` (batch statistics) with respect to its input, scale
    and bias, from the input and the saved mean and 1/sqrt(var + eps):
    x^ = (x - mean) * invstd, dbias = sum(dy), dscale = sum(dy * x^),
    dx = scale * invstd * (dy - dbias / m - x^ * dscale / m), sums over every axis but 1, m values each.

        %dx, %dscale, %dbias = nn.batch_norm_backward %dy, %x, %scale, %mean, %invstd
               : (tensor<2x8x4x4xf32>, tensor<2x8x4x4xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>)
               -> (tensor<2x8x4x4xf32>, tensor<8xf32>, tensor<8xf32>)
    """

    name = "nn.batch_norm_backward"
    grad = operand_def(TensorType)
    input = operand_def(TensorType)
    scale = operand_def(TensorType)
    saved_mean = operand_def(TensorType)
    saved_invstd = operand_def(TensorType)
    result = result_def(TensorType)
    grad_scale = result_def(TensorType)
    grad_bias = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = (
        "$grad `,` $input `,` $scale `,` $saved_mean `,` $saved_invstd attr-dict "
        "`:` functional-type(operands, results)"
    )

    def __init__(self, grad: SSAValue, input: SSAValue, scale: SSAValue, saved_mean: SSAValue,
                 saved_invstd: SSAValue):
        super().__init__(operands=[grad, input, scale, saved_mean, saved_invstd],
                         result_types=[input.type, scale.type, scale.type])

    def verify_shapes(self) -> None:
        shape = shape_of(self.input)
        if shape_of(self.grad) != shape:
            raise VerifyException(f"{self.name}: gradient shape {list(shape_of(self.grad))} differs from "
                                  f"the input's {list(shape)}")
        check_channels(self, shape, scale=self.scale, saved_mean=self.saved_mean,
                       saved_invstd=self.saved_invstd, grad_scale=self.grad_scale, grad_bias=self.grad_bias)
        check_shape(self, shape)


class UnaryBackwardOp(NNOperation):
    """Gradient of an elementwise op: dx = dy * f'(x), from the output gradient and the forward
    input, all of one shape.

        %dx = nn.relu_backward %dy, %x : tensor<2x8x4x4xf32>
    """

    T: ClassVar = VarConstraint("T", base(TensorType))
    grad = operand_def(T)
    input = operand_def(T)
    result = result_def(T)
    traits = traits_def(Pure())
    assembly_format = "$grad `,` $input attr-dict `:` type($result)"

    def __init__(self, grad: SSAValue, input: SSAValue, **properties: Attribute):
        super().__init__(operands=[grad, input], properties=properties, result_types=[input.type])


@irdl_op_definition
class ReluBackwardOp(UnaryBackwardOp):
    """dy where x > 0, else 0 (PyTorch's choice at x = 0)."""

    name = "nn.relu_backward"


@irdl_op_definition
class SigmoidBackwardOp(UnaryBackwardOp):
    """dy * s * (1 - s), s = sigmoid(x)."""

    name = "nn.sigmoid_backward"


@irdl_op_definition
class HardSwishBackwardOp(UnaryBackwardOp):
    """dy * (0 for x < -3, 1 for x > 3, else x / 3 + 1 / 2); PyTorch's values at -3 and 3."""

    name = "nn.hard_swish_backward"


@irdl_op_definition
class TanhBackwardOp(UnaryBackwardOp):
    """dy * (1 - tanh(x)^2)."""

    name = "nn.tanh_backward"


@irdl_op_definition
class SiluBackwardOp(UnaryBackwardOp):
    """dy * s * (1 + x * (1 - s)), s = sigmoid(x)."""

    name = "nn.silu_backward"


@irdl_op_definition
class GeluBackwardOp(UnaryBackwardOp):
    """dy * (Phi(x) + x * phi(x)): the standard normal's distribution and density (GELU, erf form)."""

    name = "nn.gelu_backward"


@irdl_op_definition
class LeakyReluBackwardOp(UnaryBackwardOp):
    """dy where x > 0, else alpha * dy.

        %dx = nn.leaky_relu_backward %dy, %x alpha 1.0e-02 : tensor<2x8xf32>
    """

    name = "nn.leaky_relu_backward"
    alpha = prop_def(FloatAttr[Float64Type])
    assembly_format = "$grad `,` $input `alpha` custom<F64>($alpha) attr-dict `:` type($result)"
    custom_directives = (F64,)

    def __init__(self, grad: SSAValue, input: SSAValue, alpha: float):
        super().__init__(grad, input, alpha=f64_attr(alpha))


@irdl_op_definition
class ClipBackwardOp(UnaryBackwardOp):
    """dy where min <= x <= max (the bounds pass the gradient, as in PyTorch), else 0.

        %dx = nn.clip_backward %dy, %x min 0.0 max 6.0 : tensor<2x8xf32>
    """

    name = "nn.clip_backward"
    min = prop_def(FloatAttr[Float64Type])
    max = prop_def(FloatAttr[Float64Type])
    assembly_format = "$grad `,` $input `min` custom<F64>($min) `max` custom<F64>($max) attr-dict `:` type($result)"
    custom_directives = (F64,)

    def __init__(self, grad: SSAValue, input: SSAValue, min: float, max: float):
        super().__init__(grad, input, min=f64_attr(min), max=f64_attr(max))


@irdl_op_definition
class HardSigmoidBackwardOp(UnaryBackwardOp):
    """alpha * dy where 0 < alpha * x + beta < 1, else 0.

        %dx = nn.hard_sigmoid_backward %dy, %x alpha 2.0e-01 beta 5.0e-01 : tensor<2x8xf32>
    """

    name = "nn.hard_sigmoid_backward"
    alpha = prop_def(FloatAttr[Float64Type])
    beta = prop_def(FloatAttr[Float64Type])
    assembly_format = ("$grad `,` $input `alpha` custom<F64>($alpha) `beta` custom<F64>($beta) attr-dict "
                       "`:` type($result)")
    custom_directives = (F64,)

    def __init__(self, grad: SSAValue, input: SSAValue, alpha: float, beta: float):
        super().__init__(grad, input, alpha=f64_attr(alpha), beta=f64_attr(beta))


def pool_properties(kernel, strides, pads, dilations, ceil_mode: bool) -> dict:
    return {"kernel": i64_array(kernel), "strides": i64_array(strides), "pads": i64_array(pads),
            "dilations": i64_array(dilations), "ceil_mode": BoolAttr.from_bool(ceil_mode)}


class Pool2dBackwardOp(NNOperation):
    """Gradient of a pooling op with respect to its input (the result, of the input's shape);
    subclasses declare their operands (`grad` first)."""

    kernel = prop_def(DenseArrayBase[I64])
    strides = prop_def(DenseArrayBase[I64])
    pads = prop_def(DenseArrayBase[I64])
    dilations = prop_def(DenseArrayBase[I64])
    ceil_mode = prop_def(BoolAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())

    def pool_properties(self) -> tuple:
        return ints(self.kernel), ints(self.strides), ints(self.pads), ints(self.dilations), self.ceil_mode.value

    def verify_shapes(self) -> None:
        check_rank(self, self.result, 4, "input gradient")
        check_lengths(self, kernel=(self.kernel, 2), strides=(self.strides, 2), pads=(self.pads, 4),
                      dilations=(self.dilations, 2))
        if min(ints(self.kernel) + ints(self.strides) + ints(self.dilations)) < 1 or min(ints(self.pads)) < 0:
            raise VerifyException(f"{self.name}: kernel, strides and dilations must be >= 1, pads >= 0")
        expected = rule(self, lambda: pool2d_output_shape(shape_of(self.result), *self.pool_properties()))
        if shape_of(self.grad) != expected:
            raise VerifyException(f"{self.name}: output gradient shape {list(shape_of(self.grad))} does not "
                                  f"match the forward pooling's output {list(expected)}")


@irdl_op_definition
class MaxPool2dBackwardOp(Pool2dBackwardOp):
    """Each output gradient goes to the input element that won its window's max (the first
    one in row-major window order on ties, as PyTorch).

        %dx = nn.max_pool_backward %dy, %x kernel [3, 3] strides [2, 2] pads [1, 1, 1, 1]
                dilations [1, 1] ceil_mode false
                : (tensor<2x8x4x4xf32>, tensor<2x8x8x8xf32>) -> tensor<2x8x8x8xf32>
    """

    name = "nn.max_pool_backward"
    grad = operand_def(TensorType)
    input = operand_def(TensorType)
    assembly_format = (
        "$grad `,` $input `kernel` $kernel `strides` $strides `pads` $pads `dilations` $dilations "
        "`ceil_mode` $ceil_mode attr-dict `:` functional-type(operands, results)"
    )

    def __init__(self, grad: SSAValue, input: SSAValue, kernel, strides, pads, dilations, ceil_mode: bool):
        super().__init__(operands=[grad, input],
                         properties=pool_properties(kernel, strides, pads, dilations, ceil_mode),
                         result_types=[input.type])

    def verify_shapes(self) -> None:
        super().verify_shapes()
        check_shape(self, shape_of(self.input))


@irdl_op_definition
class AvgPool2dBackwardOp(Pool2dBackwardOp):
    """Each output gradient spread evenly over its window's input elements (divided by the
    forward divisor: count_include_pad as the forward op).

        %dx = nn.avg_pool_backward %dy kernel [2, 2] strides [2, 2] pads [0, 0, 0, 0] dilations [1, 1]
                ceil_mode false count_include_pad false : (tensor<2x8x2x2xf32>) -> tensor<2x8x4x4xf32>
    """

    name = "nn.avg_pool_backward"
    grad = operand_def(TensorType)
    count_include_pad = prop_def(BoolAttr)
    assembly_format = (
        "$grad `kernel` $kernel `strides` $strides `pads` $pads `dilations` $dilations "
        "`ceil_mode` $ceil_mode `count_include_pad` $count_include_pad attr-dict "
        "`:` functional-type(operands, results)"
    )

    def __init__(self, grad: SSAValue, input_shape: Sequence[int], kernel, strides, pads, dilations,
                 ceil_mode: bool, count_include_pad: bool):
        super().__init__(operands=[grad],
                         properties={**pool_properties(kernel, strides, pads, dilations, ceil_mode),
                                     "count_include_pad": BoolAttr.from_bool(count_include_pad)},
                         result_types=[tensor_type(input_shape)])


@irdl_op_definition
class GlobalAvgPoolBackwardOp(NNOperation):
    """Each output gradient divided by H x W and broadcast over its channel's plane.

        %dx = nn.global_avg_pool_backward %dy : (tensor<2x8x1x1xf32>) -> tensor<2x8x4x4xf32>
    """

    name = "nn.global_avg_pool_backward"
    grad = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$grad attr-dict `:` functional-type(operands, results)"

    def __init__(self, grad: SSAValue, input_shape: Sequence[int]):
        super().__init__(operands=[grad], result_types=[tensor_type(input_shape)])

    def verify_shapes(self) -> None:
        shape = shape_of(self.result)
        if len(shape) < 3 or shape_of(self.grad) != shape[:2] + (1,) * (len(shape) - 2):
            raise VerifyException(f"{self.name}: output gradient {list(shape_of(self.grad))} is not the "
                                  f"global pooling of {list(shape)}")


@irdl_op_definition
class GlobalMaxPoolBackwardOp(NNOperation):
    """Each output gradient goes to the first maximum of its channel's plane.

        %dx = nn.global_max_pool_backward %dy, %x : (tensor<2x8x1x1xf32>, tensor<2x8x4x4xf32>) -> tensor<2x8x4x4xf32>
    """

    name = "nn.global_max_pool_backward"
    grad = operand_def(TensorType)
    input = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$grad `,` $input attr-dict `:` functional-type(operands, results)"

    def __init__(self, grad: SSAValue, input: SSAValue):
        super().__init__(operands=[grad, input], result_types=[input.type])

    def verify_shapes(self) -> None:
        shape = shape_of(self.input)
        if len(shape) < 3 or shape_of(self.grad) != shape[:2] + (1,) * (len(shape) - 2):
            raise VerifyException(f"{self.name}: output gradient {list(shape_of(self.grad))} is not the "
                                  f"global pooling of {list(shape)}")
        check_shape(self, shape)


class LossOp(NNOperation):
    """A loss of a prediction against a target of the same shape: one element, the batch mean."""

    input = operand_def(TensorType)
    target = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$input `,` $target attr-dict `:` functional-type(operands, results)"

    def __init__(self, input: SSAValue, target: SSAValue):
        super().__init__(operands=[input, target], result_types=[tensor_type(LOSS_SHAPE)])

    def verify_shapes(self) -> None:
        if shape_of(self.input) != shape_of(self.target):
            raise VerifyException(f"{self.name}: target shape {list(shape_of(self.target))} differs from "
                                  f"the prediction's {list(shape_of(self.input))}")
        self.check_rank()
        check_shape(self, LOSS_SHAPE)

    def check_rank(self) -> None:
        pass


class LossBackwardOp(NNOperation):
    """Gradient of a loss (of seed 1) with respect to its prediction."""

    input = operand_def(TensorType)
    target = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$input `,` $target attr-dict `:` functional-type(operands, results)"

    def __init__(self, input: SSAValue, target: SSAValue):
        super().__init__(operands=[input, target], result_types=[input.type])

    def verify_shapes(self) -> None:
        if shape_of(self.input) != shape_of(self.target):
            raise VerifyException(f"{self.name}: target shape {list(shape_of(self.target))} differs from "
                                  f"the prediction's {list(shape_of(self.input))}")
        check_shape(self, shape_of(self.input))


@irdl_op_definition
class SoftmaxCrossEntropyOp(LossOp):
    """Cross-entropy of softmax(logits) (over axis 1 of N x C logits) against target
    probabilities (one-hot class labels), averaged over the batch:
    -sum(target * log_softmax(logits)) / N.

        %loss = nn.softmax_cross_entropy %logits, %target : (tensor<2x10xf32>, tensor<2x10xf32>) -> tensor<1xf32>
    """

    name = "nn.softmax_cross_entropy"

    def check_rank(self) -> None:
        check_rank(self, self.input, 2, "logits")


@irdl_op_definition
class SoftmaxCrossEntropyBackwardOp(LossBackwardOp):
    """(softmax(logits) - target) / N, the gradient of `nn.softmax_cross_entropy` (targets
    summing to 1 per row).

        %dl = nn.softmax_cross_entropy_backward %logits, %target : (tensor<2x10xf32>, tensor<2x10xf32>) -> tensor<2x10xf32>
    """

    name = "nn.softmax_cross_entropy_backward"


@irdl_op_definition
class MseLossOp(LossOp):
    """Mean over every element of (prediction - target)^2 (PyTorch's mse_loss, reduction mean).

        %loss = nn.mse_loss %y, %target : (tensor<2x10xf32>, tensor<2x10xf32>) -> tensor<1xf32>
    """

    name = "nn.mse_loss"


@irdl_op_definition
class MseLossBackwardOp(LossBackwardOp):
    """2 * (prediction - target) / number of elements.

        %dy = nn.mse_loss_backward %y, %target : (tensor<2x10xf32>, tensor<2x10xf32>) -> tensor<2x10xf32>
    """

    name = "nn.mse_loss_backward"


@irdl_op_definition
class SgdOp(NNOperation):
    """One step of SGD with momentum and weight decay, as torch.optim.SGD (no dampening, no
    Nesterov): d = grad + weight_decay * w; with a velocity v (momentum != 0): v' = momentum * v + d,
    w' = w - lr * v'; without: w' = w - lr * d. The velocity starts at 0 (PyTorch's first
    step, v = d, is the same).

        %w1, %v1 = nn.sgd %w, %dw, %v lr 1.0e-02 momentum 9.0e-01 weight_decay 1.0e-04
               : (tensor<16x8x3x3xf32>, tensor<16x8x3x3xf32>, tensor<16x8x3x3xf32>)
               -> (tensor<16x8x3x3xf32>, tensor<16x8x3x3xf32>)
        %w2 = nn.sgd %w, %dw lr 1.0e-01 momentum 0.0 weight_decay 0.0
               : (tensor<16xf32>, tensor<16xf32>) -> tensor<16xf32>
    """

    name = "nn.sgd"
    weight = operand_def(TensorType)
    grad = operand_def(TensorType)
    velocity = opt_operand_def(TensorType)
    lr = prop_def(FloatAttr[Float64Type])
    momentum = prop_def(FloatAttr[Float64Type])
    weight_decay = prop_def(FloatAttr[Float64Type])
    result = result_def(TensorType)
    new_velocity = opt_result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = (
        "$weight `,` $grad (`,` $velocity^)? `lr` custom<F64>($lr) `momentum` custom<F64>($momentum) "
        "`weight_decay` custom<F64>($weight_decay) attr-dict `:` functional-type(operands, results)"
    )
    custom_directives = (F64,)

    def __init__(self, weight: SSAValue, grad: SSAValue, velocity: SSAValue | None, lr: float,
                 momentum: float, weight_decay: float):
        has_velocity = velocity is not None
        super().__init__(
            operands=[weight, grad, [velocity] if has_velocity else []],
            properties={"lr": f64_attr(lr), "momentum": f64_attr(momentum), "weight_decay": f64_attr(weight_decay)},
            result_types=[weight.type, [weight.type] if has_velocity else []],
        )

    def verify_shapes(self) -> None:
        shape = shape_of(self.weight)
        others = [("gradient", self.grad), ("velocity", self.velocity), ("new velocity", self.new_velocity)]
        for what, value in others:
            if value is not None and shape_of(value) != shape:
                raise VerifyException(f"{self.name}: {what} shape {list(shape_of(value))} differs from the "
                                      f"weight's {list(shape)}")
        if (self.velocity is None) != (self.new_velocity is None):
            raise VerifyException(f"{self.name}: a velocity operand and a new-velocity result go together")
        if self.velocity is None and self.momentum.value.data != 0:
            raise VerifyException(f"{self.name}: momentum {self.momentum.value.data} needs a velocity operand")
        check_shape(self, shape)


TRAINING_OPS = (
    Conv2dBackwardDataOp, Conv2dBackwardFilterOp, ReduceSumOp, ScaleOp, StepOp, LogOp, ExpOp,
    BatchNormTrainOp, BatchNormBackwardOp,
    ReluBackwardOp, SigmoidBackwardOp, HardSwishBackwardOp, LeakyReluBackwardOp, ClipBackwardOp,
    TanhBackwardOp, SiluBackwardOp, GeluBackwardOp,
    HardSigmoidBackwardOp,
    MaxPool2dBackwardOp, AvgPool2dBackwardOp, GlobalAvgPoolBackwardOp, GlobalMaxPoolBackwardOp,
    SoftmaxCrossEntropyOp, SoftmaxCrossEntropyBackwardOp, MseLossOp, MseLossBackwardOp,
    SgdOp,
)
"""The ops the `autodiff` pass emits besides forward ops."""


NN = Dialect(
    "nn",
    [
        WeightOp,
        Conv2dOp, GemmOp, MatMulOp, BatchNormOp, LRNOp,
        ReluOp, SigmoidOp, HardSwishOp, LeakyReluOp, ClipOp, HardSigmoidOp,
        SqrtOp,
        AddOp, SubOp, MulOp, DivOp,
        TanhOp, ErfOp, GeluOp, GeluTanhOp, SiluOp, DropoutOp,
        MaxPool2dOp, AvgPool2dOp, GlobalAvgPoolOp, GlobalMaxPoolOp,
        ReshapeOp, TransposeOp, ConcatOp, SliceOp, SoftmaxOp,
        *TRAINING_OPS,
    ],
    [],
)

COMPUTE_OPS = (Conv2dOp, GemmOp, MatMulOp)
