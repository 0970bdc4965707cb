"""The `fused` dialect: a compute op and the epilogue applied to its output tile.

`fuse-epilogues` produces it from `nn`. Each op is the `nn` compute op of the
same name (same operands, same properties, same shape rule) plus an epilogue
that the accelerator applies while the output tile is still on chip:

    y = act(op(x) + bias + residual)

- `residual` (optional operand) is a tensor of exactly the result's shape,
  added after the bias: the shortcut of a residual block;
- `act` is one activation, with its parameters as optional properties:

  | act            | parameters                    | y =                                  |
  | -------------- | ----------------------------- | ------------------------------------ |
  | `none`         |                               | z                                    |
  | `relu`         |                               | max(z, 0)                            |
  | `clip`         | `min` and/or `max`            | min(max(z, min), max)                |
  | `leaky_relu`   | `alpha`                       | z if z >= 0 else alpha * z           |
  | `hard_swish`   |                               | z * max(0, min(1, z / 6 + 1 / 2))    |
  | `hard_sigmoid` | `alpha`, `beta`               | max(0, min(1, alpha * z + beta))     |
  | `sigmoid`      |                               | 1 / (1 + exp(-z))                    |
  | `tanh`         |                               | tanh(z)                              |
  | `erf`          |                               | erf(z)                               |
  | `gelu`         |                               | z / 2 * (1 + erf(z / sqrt(2)))       |
  | `gelu_tanh`    |                               | z / 2 * (1 + tanh(sqrt(2 / pi) * (z + 0.044715 * z^3))) |
  | `silu`         |                               | z * sigmoid(z)                       |

  The parameters are the properties `act_min`, `act_max`, `act_alpha` and
  `act_beta` (`fused.gemm` already has properties `alpha` and `beta`), printed
  with the keywords `min`, `max`, `alpha` and `beta` after the activation. A
  clip side without a bound has no property (never an infinite value: xDSL
  prints an infinite f64 as a bit pattern that its own float parser rejects),
  so every fused op prints and parses back unchanged.

Example (ResNet's conv + folded BN + shortcut add + ReLU, MobileNetV2's
conv + folded BN + ReLU6):

    %y = fused.conv2d %x, %w, %b residual %shortcut strides [1, 1] pads [1, 1, 1, 1]
           dilations [1, 1] group 1 act relu {onnx_nodes = ["conv2", "bn2", "add", "relu2"]}
           : (tensor<1x64x8x8xf32>, tensor<64x64x3x3xf32>, tensor<64xf32>) -> tensor<1x64x8x8xf32>
    %z = fused.conv2d %x, %w2, %b2 strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1
           act clip min 0.000000e+00 max 6.000000e+00
           : (tensor<1x64x8x8xf32>, tensor<96x64x1x1xf32>, tensor<96xf32>) -> tensor<1x96x8x8xf32>

The types after `:` are the compute operands' (input, weight, optional bias);
the residual's type is the result type (one type constraint holds them equal),
so it is not repeated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from xdsl.dialects.builtin import (
    I64,
    BoolAttr,
    DenseArrayBase,
    Float64Type,
    FloatAttr,
    IntegerAttr,
    TensorType,
    UnitAttr,
)
from xdsl.dialects.utils import EnumAttribute
from xdsl.ir import Attribute, Dialect, SpacedOpaqueSyntaxAttribute, SSAValue
from xdsl.irdl import (
    AttrSizedOperandSegments,
    AttrSizedResultSegments,
    IRDLOperation,
    VarConstraint,
    base,
    irdl_attr_definition,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException
from xdsl.utils.str_enum import StrEnum

from nncc.dialects import nn

# --------------------------------------------------------------------------- epilogue


class Activation(StrEnum):
    """The activation an epilogue ends with."""

    NONE = "none"
    RELU = "relu"
    CLIP = "clip"
    LEAKY_RELU = "leaky_relu"
    HARD_SWISH = "hard_swish"
    HARD_SIGMOID = "hard_sigmoid"
    SIGMOID = "sigmoid"
    TANH = "tanh"
    ERF = "erf"
    GELU = "gelu"
    GELU_TANH = "gelu_tanh"
    SILU = "silu"


@irdl_attr_definition
class ActivationAttr(EnumAttribute[Activation], SpacedOpaqueSyntaxAttribute):
    """An `Activation`; as an op property it prints as a bare keyword (`act relu`)."""

    name = "fused.act"


PARAMETERS: dict[Activation, tuple[frozenset[str], frozenset[str]]] = {
    # activation: (required parameters, optional parameters)
    Activation.NONE: (frozenset(), frozenset()),
    Activation.RELU: (frozenset(), frozenset()),
    Activation.CLIP: (frozenset(), frozenset({"act_min", "act_max"})),
    Activation.LEAKY_RELU: (frozenset({"act_alpha"}), frozenset()),
    Activation.HARD_SWISH: (frozenset(), frozenset()),
    Activation.HARD_SIGMOID: (frozenset({"act_alpha", "act_beta"}), frozenset()),
    Activation.SIGMOID: (frozenset(), frozenset()),
    Activation.TANH: (frozenset(), frozenset()),
    Activation.ERF: (frozenset(), frozenset()),
    Activation.GELU: (frozenset(), frozenset()),
    Activation.GELU_TANH: (frozenset(), frozenset()),
    Activation.SILU: (frozenset(), frozenset()),
}
"""Which parameter properties each activation takes."""

PARAMETER_NAMES = ("act_min", "act_max", "act_alpha", "act_beta")


@dataclass(frozen=True)
class Epilogue:
    """What a fused op does to its output tile: add `residual` (if any), then `act`.

    `min`/`max` are clip's bounds (None: unbounded side), `alpha`/`beta` the
    parameters of leaky_relu (alpha) and hard_sigmoid (alpha, beta).
    """

    act: Activation = Activation.NONE
    min: float | None = None
    max: float | None = None
    alpha: float | None = None
    beta: float | None = None

    def properties(self) -> dict[str, Attribute]:
        props: dict[str, Attribute] = {"act": ActivationAttr(self.act)}
        for name, value in zip(PARAMETER_NAMES, (self.min, self.max, self.alpha, self.beta)):
            if value is not None:
                props[name] = nn.f64_attr(value)
        return props


def keywords(names: Sequence[str]) -> str:
    """`act_min` -> `min` (act_min): how the assembly format spells a parameter."""
    return ", ".join(f"{name.removeprefix('act_')} ({name})" for name in names)


class FusedOperation(IRDLOperation):
    """Base of the fused ops: the epilogue's properties and their checks."""

    act = prop_def(ActivationAttr)
    act_min = opt_prop_def(FloatAttr[Float64Type])
    act_max = opt_prop_def(FloatAttr[Float64Type])
    act_alpha = opt_prop_def(FloatAttr[Float64Type])
    act_beta = opt_prop_def(FloatAttr[Float64Type])
    traits = traits_def(Pure())
    irdl_options = (AttrSizedOperandSegments(as_property=True),)

    @property
    def epilogue(self) -> Epilogue:
        def value(attr: FloatAttr | None) -> float | None:
            return None if attr is None else float(attr.value.data)

        return Epilogue(self.act.data, value(self.act_min), value(self.act_max),
                        value(self.act_alpha), value(self.act_beta))

    def verify_(self) -> None:
        nn.check_static_f32(self)
        self.verify_shapes()
        residual = self.operands_residual()
        if residual is not None and nn.shape_of(residual) != nn.shape_of(self.results[0]):
            raise VerifyException(
                f"{self.name}: residual shape {list(nn.shape_of(residual))} differs from the "
                f"result shape {list(nn.shape_of(self.results[0]))}")
        self.verify_epilogue()

    def verify_shapes(self) -> None:
        """Check operands and result against the compute op's shape rule."""

    def operands_residual(self) -> SSAValue | None:
        """The residual operand (each op defines it as `residual`)."""
        return getattr(self, "residual")

    def verify_epilogue(self) -> None:
        act = self.act.data
        required, optional = PARAMETERS[act]
        present = {name for name in PARAMETER_NAMES if name in self.properties}
        if missing := sorted(required - present):
            raise VerifyException(f"{self.name}: act {act} needs {keywords(missing)}")
        if extra := sorted(present - required - optional):
            raise VerifyException(f"{self.name}: act {act} takes no {keywords(extra)}")
        for name in present:
            value = float(self.properties[name].value.data)
            if not math.isfinite(value):
                raise VerifyException(
                    f"{self.name}: {name} must be finite, got {value} (leave a clip bound out when "
                    f"that side is unbounded)")
        if act == Activation.CLIP and not present:
            raise VerifyException(f"{self.name}: act clip needs min or max (a clip without bounds is act none)")


EPILOGUE_FORMAT = (
    "`act` $act (`min` $act_min^)? (`max` $act_max^)? (`alpha` $act_alpha^)? (`beta` $act_beta^)?"
)

# --------------------------------------------------------------------------- ops


@irdl_op_definition
class Conv2dOp(FusedOperation):
    """`nn.conv2d` (NCHW input, OIHW weight, optional bias) with an epilogue.

    y = act(conv2d(x, w) + bias + residual). Properties as `nn.conv2d`'s.

        %y = fused.conv2d %x, %w, %b residual %r strides [1, 1] pads [1, 1, 1, 1]
               dilations [1, 1] group 1 act relu
               : (tensor<1x64x56x56xf32>, tensor<64x64x3x3xf32>, tensor<64xf32>) -> tensor<1x64x56x56xf32>
        %z = fused.conv2d %x, %w strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1
               act leaky_relu alpha 1.000000e-01
               : (tensor<1x64x56x56xf32>, tensor<32x64x1x1xf32>) -> tensor<1x32x56x56xf32>
    """

    name = "fused.conv2d"
    T: ClassVar = VarConstraint("T", base(TensorType))
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    residual = opt_operand_def(T)
    strides = prop_def(DenseArrayBase[I64])
    pads = prop_def(DenseArrayBase[I64])
    dilations = prop_def(DenseArrayBase[I64])
    group = prop_def(IntegerAttr[I64])
    result = result_def(T)
    assembly_format = (
        "$input `,` $weight (`,` $bias^)? (`residual` $residual^)? `strides` $strides `pads` $pads "
        "`dilations` $dilations `group` $group " + EPILOGUE_FORMAT + " attr-dict "
        "`:` `(` type($input) `,` type($weight) (`,` type($bias)^)? `)` `->` type($result)"
    )

    def __init__(self, input: SSAValue, weight: SSAValue, bias: SSAValue | None,
                 residual: SSAValue | None, strides: Sequence[int], pads: Sequence[int],
                 dilations: Sequence[int], group: int, epilogue: Epilogue = Epilogue()):
        shape = nn.conv2d_output_shape(nn.shape_of(input), nn.shape_of(weight), strides, pads,
                                       dilations, group)
        super().__init__(
            operands=[input, weight, [bias] if bias is not None else [],
                      [residual] if residual is not None else []],
            properties={"strides": nn.i64_array(strides), "pads": nn.i64_array(pads),
                        "dilations": nn.i64_array(dilations), "group": nn.i64_attr(group),
                        **epilogue.properties()},
            result_types=[nn.tensor_type(shape)],
        )

    @staticmethod
    def from_nn(conv: nn.Conv2dOp, residual: SSAValue | None = None,
                epilogue: Epilogue = Epilogue()) -> Conv2dOp:
        """The fused form of `conv` (its operands and properties) with this epilogue."""
        return Conv2dOp(conv.input, conv.weight, conv.bias, residual, nn.ints(conv.strides),
                        nn.ints(conv.pads), nn.ints(conv.dilations), conv.group.value.data, epilogue)

    def with_epilogue(self, residual: SSAValue | None, epilogue: Epilogue) -> Conv2dOp:
        """The same convolution with another residual and epilogue."""
        return Conv2dOp(self.input, self.weight, self.bias, residual, nn.ints(self.strides),
                        nn.ints(self.pads), nn.ints(self.dilations), self.group.value.data, epilogue)

    def verify_shapes(self) -> None:
        nn.check_rank(self, self.input, 4, "input")
        nn.check_rank(self, self.weight, 4, "weight")
        nn.check_lengths(self, strides=(self.strides, 2), pads=(self.pads, 4),
                         dilations=(self.dilations, 2))
        out_channels = nn.shape_of(self.weight)[0]
        if self.bias is not None and nn.shape_of(self.bias) != (out_channels,):
            raise VerifyException(f"{self.name}: bias must have shape [{out_channels}]")
        if min(nn.ints(self.strides) + nn.ints(self.dilations)) < 1 or min(nn.ints(self.pads)) < 0:
            raise VerifyException(f"{self.name}: strides and dilations must be >= 1, pads >= 0")
        nn.check_shape(self, nn.rule(self, lambda: nn.conv2d_output_shape(
            nn.shape_of(self.input), nn.shape_of(self.weight), nn.ints(self.strides),
            nn.ints(self.pads), nn.ints(self.dilations), self.group.value.data)))

    @property
    def macs(self) -> int:
        o, cg, kh, kw = nn.shape_of(self.weight)
        return math.prod(nn.shape_of(self.result)) * cg * kh * kw


@irdl_op_definition
class GemmOp(FusedOperation):
    """`nn.gemm` with an epilogue: y = act(alpha * op(A) @ op(B) + beta * C + residual).

    `alpha` and `beta` are the gemm's own scales (as in `nn.gemm`); the
    activation's parameters follow `act`.

        %y = fused.gemm %a, %b, %c trans_a false trans_b true alpha 1.0 beta 1.0 act relu
               : (tensor<1x512xf32>, tensor<1000x512xf32>, tensor<1000xf32>) -> tensor<1x1000xf32>
        %z = fused.gemm %a, %b residual %r trans_a false trans_b true alpha 1.0 beta 1.0
               act hard_sigmoid alpha 2.0e-01 beta 5.0e-01
               : (tensor<1x512xf32>, tensor<1000x512xf32>) -> tensor<1x1000xf32>
    """

    name = "fused.gemm"
    T: ClassVar = VarConstraint("T", base(TensorType))
    a = operand_def(TensorType)
    b = operand_def(TensorType)
    c = opt_operand_def(TensorType)
    residual = opt_operand_def(T)
    trans_a = prop_def(BoolAttr)
    trans_b = prop_def(BoolAttr)
    alpha = prop_def(FloatAttr[Float64Type])
    beta = prop_def(FloatAttr[Float64Type])
    result = result_def(T)
    assembly_format = (
        "$a `,` $b (`,` $c^)? (`residual` $residual^)? `trans_a` $trans_a `trans_b` $trans_b "
        "`alpha` custom<F64>($alpha) `beta` custom<F64>($beta) " + EPILOGUE_FORMAT + " attr-dict "
        "`:` `(` type($a) `,` type($b) (`,` type($c)^)? `)` `->` type($result)"
    )
    custom_directives = (nn.F64,)

    def __init__(self, a: SSAValue, b: SSAValue, c: SSAValue | None, residual: SSAValue | None,
                 trans_a: bool, trans_b: bool, alpha: float, beta: float,
                 epilogue: Epilogue = Epilogue()):
        shape = nn.gemm_output_shape(nn.shape_of(a), nn.shape_of(b), trans_a, trans_b)
        super().__init__(
            operands=[a, b, [c] if c is not None else [], [residual] if residual is not None else []],
            properties={"trans_a": BoolAttr.from_bool(trans_a), "trans_b": BoolAttr.from_bool(trans_b),
                        "alpha": nn.f64_attr(alpha), "beta": nn.f64_attr(beta),
                        **epilogue.properties()},
            result_types=[nn.tensor_type(shape)],
        )

    @staticmethod
    def from_nn(gemm: nn.GemmOp, residual: SSAValue | None = None,
                epilogue: Epilogue = Epilogue()) -> GemmOp:
        """The fused form of `gemm` (its operands and properties) with this epilogue."""
        return GemmOp(gemm.a, gemm.b, gemm.c, residual, gemm.trans_a.value, gemm.trans_b.value,
                      gemm.alpha.value.data, gemm.beta.value.data, epilogue)

    def with_epilogue(self, residual: SSAValue | None, epilogue: Epilogue) -> GemmOp:
        """The same gemm with another residual and epilogue."""
        return GemmOp(self.a, self.b, self.c, residual, self.trans_a.value, self.trans_b.value,
                      self.alpha.value.data, self.beta.value.data, epilogue)

    def verify_shapes(self) -> None:
        expected = nn.rule(self, lambda: nn.gemm_output_shape(
            nn.shape_of(self.a), nn.shape_of(self.b), self.trans_a.value, self.trans_b.value))
        nn.check_shape(self, expected)
        if self.c is not None:
            shape_c = nn.shape_of(self.c)
            broadcast = nn.rule(self, lambda: nn.broadcast_shapes(shape_c, expected))
            if broadcast != expected:
                raise VerifyException(f"{self.name}: C of shape {list(shape_c)} does not broadcast "
                                      f"to {list(expected)}")

    @property
    def macs(self) -> int:
        a = nn.shape_of(self.a)
        k = a[0] if self.trans_a.value else a[1]
        return math.prod(nn.shape_of(self.result)) * k


# --------------------------------------------------------------------------- BatchNorm in training


class ConvShapeMixin:
    """The shape rule and checks of a conv (NCHW input, OIHW weight) for the training forms."""

    def verify_conv(self, input: SSAValue) -> None:
        nn.check_static_f32(self)
        nn.check_rank(self, input, 4, "input")
        nn.check_rank(self, self.weight, 4, "weight")
        nn.check_lengths(self, strides=(self.strides, 2), pads=(self.pads, 4), dilations=(self.dilations, 2))
        out_channels = nn.shape_of(self.weight)[0]
        if self.bias is not None and nn.shape_of(self.bias) != (out_channels,):
            raise VerifyException(f"{self.name}: bias must have shape [{out_channels}]")
        expected = nn.rule(self, lambda: nn.conv2d_output_shape(
            nn.shape_of(input), nn.shape_of(self.weight), nn.ints(self.strides), nn.ints(self.pads),
            nn.ints(self.dilations), self.group.value.data))
        if nn.shape_of(self.result) != tuple(expected):
            raise VerifyException(f"{self.name}: result shape {list(nn.shape_of(self.result))}, "
                                  f"expected {list(expected)}")

    @property
    def macs(self) -> int:
        o, cg, kh, kw = nn.shape_of(self.weight)
        return math.prod(nn.shape_of(self.result)) * cg * kh * kw


def conv_properties(strides, pads, dilations, group) -> dict[str, Attribute]:
    return {"strides": nn.i64_array(strides), "pads": nn.i64_array(pads), "dilations": nn.i64_array(dilations),
            "group": nn.i64_attr(group)}


@irdl_op_definition
class Conv2dStatsOp(ConvShapeMixin, IRDLOperation):
    """`nn.conv2d` that also gives, per output channel, the sum and the sum of squares of its
    result over the batch and the pixels: BatchNorm's training statistics, accumulated by the
    post-processing unit from the output tiles while they are on chip (`fuse-batch-norm-training`).

        %y, %sum, %squares = fused.conv2d_stats %x, %w strides [1, 1] pads [1, 1, 1, 1]
               dilations [1, 1] group 1
               : (tensor<8x64x8x8xf32>, tensor<64x64x3x3xf32>) -> (tensor<8x64x8x8xf32>, tensor<64xf32>, tensor<64xf32>)
    """

    name = "fused.conv2d_stats"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    strides = prop_def(DenseArrayBase[I64])
    pads = prop_def(DenseArrayBase[I64])
    dilations = prop_def(DenseArrayBase[I64])
    group = prop_def(IntegerAttr[I64])
    result = result_def(TensorType)
    sums = result_def(TensorType)
    squares = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = (
        "$input `,` $weight (`,` $bias^)? `strides` $strides `pads` $pads "
        "`dilations` $dilations `group` $group attr-dict `:` functional-type(operands, results)"
    )

    def __init__(self, input: SSAValue, weight: SSAValue, bias: SSAValue | None, strides: Sequence[int],
                 pads: Sequence[int], dilations: Sequence[int], group: int):
        shape = nn.conv2d_output_shape(nn.shape_of(input), nn.shape_of(weight), strides, pads, dilations, group)
        channels = nn.tensor_type((shape[1],))
        super().__init__(operands=[input, weight, [bias] if bias is not None else []],
                         properties=conv_properties(strides, pads, dilations, group),
                         result_types=[nn.tensor_type(shape), channels, channels])

    def verify_(self) -> None:
        self.verify_conv(self.input)
        channels = (nn.shape_of(self.result)[1],)
        if nn.shape_of(self.sums) != channels or nn.shape_of(self.squares) != channels:
            raise VerifyException(f"{self.name}: sums and squares must have shape [{channels[0]}]")


@irdl_op_definition
class Conv2dPreOp(ConvShapeMixin, IRDLOperation):
    """`nn.conv2d` of `pre(scale * x + shift)` (per input channel; `pre` is relu or none):
    BatchNorm's apply and the ReLU after it run on the pre-processing unit over the input tiles
    as they arrive, so the normalised activations never go to DRAM (`fuse-batch-norm-training`).
    The zero padding is the padding of the normalised activations. With two more results it also
    gives the statistics of its own result, as `fused.conv2d_stats` (a BatchNorm after it).

        %z = fused.conv2d_pre %y, %scale, %shift, %w strides [1, 1] pads [0, 0, 0, 0]
               dilations [1, 1] group 1 pre relu
               : (tensor<8x64x8x8xf32>, tensor<64xf32>, tensor<64xf32>, tensor<256x64x1x1xf32>) -> tensor<8x256x8x8xf32>
    """

    name = "fused.conv2d_pre"
    input = operand_def(TensorType)
    scale = operand_def(TensorType)
    shift = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    strides = prop_def(DenseArrayBase[I64])
    pads = prop_def(DenseArrayBase[I64])
    dilations = prop_def(DenseArrayBase[I64])
    group = prop_def(IntegerAttr[I64])
    pre = prop_def(ActivationAttr)
    result = result_def(TensorType)
    stats = var_result_def(TensorType)  # none, or the sums and the sums of squares of result
    traits = traits_def(Pure())
    assembly_format = (
        "$input `,` $scale `,` $shift `,` $weight (`,` $bias^)? `strides` $strides `pads` $pads "
        "`dilations` $dilations `group` $group `pre` $pre attr-dict `:` functional-type(operands, results)"
    )

    def __init__(self, input: SSAValue, scale: SSAValue, shift: SSAValue, weight: SSAValue, bias: SSAValue | None,
                 strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int], group: int,
                 pre: str = "relu", stats: bool = False):
        shape = nn.conv2d_output_shape(nn.shape_of(input), nn.shape_of(weight), strides, pads, dilations, group)
        channels = nn.tensor_type((shape[1],))
        super().__init__(operands=[input, scale, shift, weight, [bias] if bias is not None else []],
                         properties=conv_properties(strides, pads, dilations, group)
                         | {"pre": ActivationAttr(Activation(pre))},
                         result_types=[nn.tensor_type(shape), [channels, channels] if stats else []])

    def verify_(self) -> None:
        self.verify_conv(self.input)
        if len(self.stats) not in (0, 2) or any(nn.shape_of(v) != (nn.shape_of(self.result)[1],) for v in self.stats):
            raise VerifyException(f"{self.name}: no statistics, or sums and squares of the result's channels")
        channels = (nn.shape_of(self.input)[1],)
        if nn.shape_of(self.scale) != channels or nn.shape_of(self.shift) != channels:
            raise VerifyException(f"{self.name}: scale and shift must have shape [{channels[0]}]")
        if self.pre.data not in (Activation.RELU, Activation.NONE):
            raise VerifyException(f"{self.name}: pre must be relu or none, not {self.pre.data}")


@irdl_op_definition
class BatchNormFactorsOp(IRDLOperation):
    """A training BatchNorm's per-channel numbers from the sums and sums of squares of its input
    over `count` values per channel: the mean, 1/sqrt(var + eps) (var = E[x^2] - mean^2, biased),
    the apply's scale (gamma / std) and shift (beta - mean scale), and the new running mean and
    running variance (`momentum` m: m running + (1 - m) batch, the variance unbiased). One small
    nest on the vector unit (`fuse-batch-norm-training`).

        %mean, %invstd, %scale, %shift, %rm2, %rv2 = fused.batch_norm_factors %sum, %squares, %gamma,
               %beta, %rm, %rv count 512 epsilon 1.0e-05 momentum 9.0e-01
               : (tensor<64xf32>, ..., tensor<64xf32>) -> (tensor<64xf32>, ..., tensor<64xf32>)
    """

    name = "fused.batch_norm_factors"
    sums = operand_def(TensorType)
    squares = operand_def(TensorType)
    scale = operand_def(TensorType)
    bias = operand_def(TensorType)
    running_mean = operand_def(TensorType)
    running_var = operand_def(TensorType)
    count = prop_def(IntegerAttr[I64])
    epsilon = prop_def(FloatAttr[Float64Type])
    momentum = prop_def(FloatAttr[Float64Type])
    mean = result_def(TensorType)
    invstd = result_def(TensorType)
    apply_scale = result_def(TensorType)
    apply_shift = result_def(TensorType)
    new_running_mean = result_def(TensorType)
    new_running_var = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = (
        "$sums `,` $squares `,` $scale `,` $bias `,` $running_mean `,` $running_var `count` $count "
        "`epsilon` custom<F64>($epsilon) `momentum` custom<F64>($momentum) attr-dict "
        "`:` functional-type(operands, results)"
    )
    custom_directives = (nn.F64,)
    ROWS: ClassVar = ("mean", "invstd", "scale", "shift", "running_mean", "running_var")

    def __init__(self, sums: SSAValue, squares: SSAValue, scale: SSAValue, bias: SSAValue, running_mean: SSAValue,
                 running_var: SSAValue, count: int, epsilon: float, momentum: float):
        channels = nn.shape_of(sums)[0]
        super().__init__(operands=[sums, squares, scale, bias, running_mean, running_var],
                         properties={"count": nn.i64_attr(count), "epsilon": nn.f64_attr(epsilon),
                                     "momentum": nn.f64_attr(momentum)},
                         result_types=[nn.tensor_type((channels,))] * len(self.ROWS))

    def verify_(self) -> None:
        channels = nn.shape_of(self.sums)
        if any(nn.shape_of(v) != channels or len(channels) != 1 for v in self.operands):
            raise VerifyException(f"{self.name}: every operand must have shape [C]")
        if any(nn.shape_of(v) != channels for v in self.results) or self.count.value.data < 2:
            raise VerifyException(f"{self.name}: results of shape [C] and count >= 2 expected")


@irdl_op_definition
class BatchNormApplyOp(IRDLOperation):
    """y = act(x * scale + shift [+ residual | + x2 * scale2 + shift2]), scale and shift per
    channel (dimension 1): a training BatchNorm applied with run-time factors, the residual add and
    the ReLU after it, in one pass (`fuse-batch-norm-training`; a residual block's end: its last
    BatchNorm, the shortcut's BatchNorm or the shortcut, the add and the ReLU).

        %z = fused.batch_norm_apply %y3, %s3, %h3 plus %yd, %sd, %hd act relu
               : (tensor<8x256x8x8xf32>, ...) -> tensor<8x256x8x8xf32>
    """

    name = "fused.batch_norm_apply"
    input = operand_def(TensorType)
    scale = operand_def(TensorType)
    shift = operand_def(TensorType)
    others = var_operand_def(TensorType)  # none, a residual, or x2, scale2, shift2
    act = prop_def(ActivationAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = (
        "$input `,` $scale `,` $shift (`plus` $others^)? `act` $act attr-dict `:` functional-type(operands, results)"
    )

    def __init__(self, input: SSAValue, scale: SSAValue, shift: SSAValue, others: Sequence[SSAValue] = (),
                 act: str = "none"):
        super().__init__(operands=[input, scale, shift, list(others)],
                         properties={"act": ActivationAttr(Activation(act))}, result_types=[input.type])

    def verify_(self) -> None:
        shape, channels = nn.shape_of(self.input), (nn.shape_of(self.input)[1],)
        if nn.shape_of(self.scale) != channels or nn.shape_of(self.shift) != channels:
            raise VerifyException(f"{self.name}: scale and shift must have shape [{channels[0]}]")
        others = [nn.shape_of(v) for v in self.others]
        if others not in ([], [shape], [shape, channels, channels]):
            raise VerifyException(f"{self.name}: plus a residual of the input's shape, or an input, scale and shift")
        if self.act.data not in (Activation.RELU, Activation.NONE):
            raise VerifyException(f"{self.name}: act must be relu or none, not {self.act.data}")


@irdl_op_definition
class BatchNormBackwardSumsOp(IRDLOperation):
    """BatchNorm's backward reductions in one pass over the output gradient `grad` and the
    BatchNorm's input `input`: with g = grad (masked by ReLU's step(input * scale + shift) when
    `relu`), dbias = sum g and dscale = sum g xhat per channel (xhat = (input - mean) invstd), and
    the factors of the input gradient's elementwise part, dx = scale g + c2 input + c3:
    c2 = -scale invstd dscale / n, c3 = -scale dbias / n - c2 mean (`fuse-batch-norm-training`).

        %dscale, %dbias, %c2, %c3 = fused.batch_norm_backward_sums %dz, %y, %scale, %shift, %mean, %invstd relu
               : (tensor<8x64x8x8xf32>, tensor<8x64x8x8xf32>, tensor<64xf32>, ...) -> (tensor<64xf32>, ...)
    """

    name = "fused.batch_norm_backward_sums"
    grad = operand_def(TensorType)
    input = operand_def(TensorType)
    scale = operand_def(TensorType)
    shift = operand_def(TensorType)
    mean = operand_def(TensorType)
    invstd = operand_def(TensorType)
    relu = opt_prop_def(UnitAttr)
    grad_scale = result_def(TensorType)
    grad_bias = result_def(TensorType)
    c2 = result_def(TensorType)
    c3 = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = (
        "$grad `,` $input `,` $scale `,` $shift `,` $mean `,` $invstd (`relu` $relu^)? attr-dict "
        "`:` functional-type(operands, results)"
    )

    def __init__(self, grad: SSAValue, input: SSAValue, scale: SSAValue, shift: SSAValue, mean: SSAValue,
                 invstd: SSAValue, relu: bool):
        super().__init__(operands=[grad, input, scale, shift, mean, invstd],
                         properties={"relu": UnitAttr()} if relu else {}, result_types=[scale.type] * 4)

    def verify_(self) -> None:
        shape = nn.shape_of(self.input)
        if nn.shape_of(self.grad) != shape or len(shape) != 4:
            raise VerifyException(f"{self.name}: grad and input must have one NCHW shape")
        if any(nn.shape_of(v) != (shape[1],) for v in [*self.operands[2:], *self.results]):
            raise VerifyException(f"{self.name}: per-channel operands and results of shape [{shape[1]}] expected")


@irdl_op_definition
class BatchNormBackwardApplyOp(IRDLOperation):
    """BatchNorm's input gradient, elementwise: dx = scale g + c2 input + c3 per channel, g = grad
    masked by ReLU's step(input * scale + shift) when `relu` (`fused.batch_norm_backward_sums`
    gives c2 and c3).

        %dx = fused.batch_norm_backward_apply %dz, %y, %scale, %shift, %c2, %c3 relu : (...) -> tensor<8x64x8x8xf32>
    """

    name = "fused.batch_norm_backward_apply"
    grad = operand_def(TensorType)
    input = operand_def(TensorType)
    scale = operand_def(TensorType)
    shift = operand_def(TensorType)
    c2 = operand_def(TensorType)
    c3 = operand_def(TensorType)
    relu = opt_prop_def(UnitAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = (
        "$grad `,` $input `,` $scale `,` $shift `,` $c2 `,` $c3 (`relu` $relu^)? attr-dict "
        "`:` functional-type(operands, results)"
    )

    def __init__(self, grad: SSAValue, input: SSAValue, scale: SSAValue, shift: SSAValue, c2: SSAValue,
                 c3: SSAValue, relu: bool):
        super().__init__(operands=[grad, input, scale, shift, c2, c3],
                         properties={"relu": UnitAttr()} if relu else {}, result_types=[input.type])

    def verify_(self) -> None:
        shape = nn.shape_of(self.input)
        if nn.shape_of(self.grad) != shape or len(shape) != 4:
            raise VerifyException(f"{self.name}: grad and input must have one NCHW shape")
        if any(nn.shape_of(v) != (shape[1],) for v in self.operands[2:]):
            raise VerifyException(f"{self.name}: per-channel operands of shape [{shape[1]}] expected")


@irdl_op_definition
class Conv2dBackwardDataSumsOp(IRDLOperation):
    """`nn.conv2d_backward_data` of `grad` (stride 1) whose output tiles, while on chip, are
    post-processed for the BatchNorm whose backward receives them (`fuse-batch-norm-training`,
    seed paper 1's backward): masked by ReLU's step(input * scale + shift) when `relu` (the
    stored result is that masked gradient g), and the two reductions of BatchNorm's backward
    accumulated per channel on the post unit: dbias = sum g, dscale = sum g xhat (xhat = (input -
    mean) invstd). After the last tile, the input gradient's factors c2, c3 as in
    `fused.batch_norm_backward_sums`; the input gradient is then scale g + c2 input + c3.
    Residual fan-out (a residual block's end): `plus` a gradient added into each output tile
    before the conv accumulates (the shortcut's), and `mask` a stored ReLU output z whose
    step(z) masks the sum (z is the block's output, not this BatchNorm's).
    With `pre` (y2, scale2, shift2, c2', c3' of the BatchNorm after this conv, whose masked
    gradient `grad` then is): the conv reads that BatchNorm's input gradient dy = scale2 g +
    c2' y2 + c3' (g = grad times step(y2 scale2 + shift2) when `pre_relu`), made on the
    pre-processing unit from each grad tile as it arrives, and gives it as its last result (stored
    once, from the first output-channel tile, for the backward-filter). `second` (y', scale',
    mean', invstd' of a second BatchNorm whose gradient is this one's g: a residual block's
    shortcut BatchNorm): its reductions from the same tiles, its dscale', dbias', c2', c3' after
    c3. `normalized` (with `relu`): relu(input scale + shift), made beside the mask and stored.

        %g, %dscale, %dbias, %c2, %c3 = fused.conv2d_backward_data_sums %dz, %w, %y, %scale, %shift, %mean, %invstd
               strides [1, 1] pads [0, 0, 0, 0] dilations [1, 1] group 1 relu
               : tensor<8x256x8x8xf32>, tensor<256x64x1x1xf32>, tensor<8x64x8x8xf32>, tensor<64xf32>, ...
               -> tensor<8x64x8x8xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>
    """

    name = "fused.conv2d_backward_data_sums"
    grad = operand_def(TensorType)
    weight = operand_def(TensorType)
    input = operand_def(TensorType)
    scale = operand_def(TensorType)
    shift = operand_def(TensorType)
    mean = operand_def(TensorType)
    invstd = operand_def(TensorType)
    residual = opt_operand_def(TensorType)
    mask = opt_operand_def(TensorType)
    second = var_operand_def(TensorType)  # none, or y, scale, mean, invstd of a second BatchNorm of this gradient
    pre = var_operand_def(TensorType)  # none, or y2, scale2, shift2, c2', c3' (grad pre-processed)
    strides = prop_def(DenseArrayBase[I64])
    pads = prop_def(DenseArrayBase[I64])
    dilations = prop_def(DenseArrayBase[I64])
    group = prop_def(IntegerAttr[I64])
    relu = opt_prop_def(UnitAttr)
    pre_relu = opt_prop_def(UnitAttr)
    result = result_def(TensorType)
    grad_scale = result_def(TensorType)
    grad_bias = result_def(TensorType)
    c2 = result_def(TensorType)
    c3 = result_def(TensorType)
    second_sums = var_result_def(TensorType)  # with `second`: its dscale, dbias, c2, c3
    dy = var_result_def(TensorType)  # with `pre`: the pre-processed gradient
    normalized = var_result_def(TensorType)  # none, or relu(input scale + shift), stored (`relu` only)
    traits = traits_def(Pure())
    assembly_format = (
        "$grad `,` $weight `,` $input `,` $scale `,` $shift `,` $mean `,` $invstd "
        "(`plus` $residual^ `:` type($residual))? (`mask` $mask^ `:` type($mask))? "
        "(`second` $second^ `:` type($second))? (`pre` $pre^ (`relu` $pre_relu^)? `:` type($pre))? "
        "`strides` $strides `pads` $pads "
        "`dilations` $dilations `group` $group (`relu` $relu^)? attr-dict `:` type($grad) `,` type($weight) `,` "
        "type($input) `,` type($scale) `,` type($shift) `,` type($mean) `,` type($invstd) `->` "
        "type($result) `,` type($grad_scale) `,` type($grad_bias) `,` type($c2) `,` type($c3) "
        "(`second` type($second_sums)^)? (`,` type($dy)^)? "
        "(`normalized` type($normalized)^)?"
    )
    irdl_options = (AttrSizedOperandSegments(as_property=True), AttrSizedResultSegments(as_property=True))

    def __init__(self, grad: SSAValue, weight: SSAValue, input: SSAValue, scale: SSAValue, shift: SSAValue,
                 mean: SSAValue, invstd: SSAValue, strides: Sequence[int], pads: Sequence[int],
                 dilations: Sequence[int], group: int, relu: bool, residual: SSAValue | None = None,
                 mask: SSAValue | None = None, pre: Sequence[SSAValue] = (), pre_relu: bool = False,
                 normalized: bool = False, second: Sequence[SSAValue] = ()):
        super().__init__(operands=[grad, weight, input, scale, shift, mean, invstd,
                                   [residual] if residual is not None else [], [mask] if mask is not None else [],
                                   list(second), list(pre)],
                         properties=conv_properties(strides, pads, dilations, group) | ({"relu": UnitAttr()} if relu else {})
                         | ({"pre_relu": UnitAttr()} if pre_relu else {}),
                         result_types=[input.type] + [scale.type] * 4 + [[scale.type] * 4 if second else []]
                         + [[grad.type] if pre else []] + [[input.type] if normalized else []])

    def verify_(self) -> None:
        shape = nn.shape_of(self.input)
        if nn.shape_of(self.result) != shape or len(shape) != 4 or len(nn.shape_of(self.grad)) != 4:
            raise VerifyException(f"{self.name}: NCHW grad, and a result of the input's shape expected")
        if nn.shape_of(self.weight)[1] * self.group.value.data != shape[1]:
            raise VerifyException(f"{self.name}: the weight's input channels must be the input's")
        if any(nn.shape_of(v) != (shape[1],) for v in [*self.operands[3:7], *self.results[1:5]]):
            raise VerifyException(f"{self.name}: per-channel operands and results of shape [{shape[1]}] expected")
        if any(v is not None and nn.shape_of(v) != shape for v in (self.residual, self.mask)):
            raise VerifyException(f"{self.name}: the residual and the mask must have the input's shape")
        if self.relu is not None and self.mask is not None:
            raise VerifyException(f"{self.name}: relu (this BatchNorm's ReLU) and mask (a stored one) exclude each other")
        channels = (nn.shape_of(self.grad)[1],)
        if [nn.shape_of(v) for v in self.pre] not in ([], [nn.shape_of(self.grad)] + [channels] * 4) or \
                len(self.dy) != (1 if self.pre else 0) or (self.pre_relu is not None and not self.pre):
            raise VerifyException(f"{self.name}: pre is none, or the grad-shaped y2 and its four per-channel "
                                  "factors, with the pre-processed gradient as the last result")
        if [nn.shape_of(v) for v in self.second] not in ([], [shape] + [(shape[1],)] * 3) or \
                len(self.second_sums) != (4 if self.second else 0) or \
                any(nn.shape_of(v) != (shape[1],) for v in self.second_sums) or (self.second and self.relu is not None):
            raise VerifyException(f"{self.name}: second is none, or a second BatchNorm's input and its scale, mean "
                                  "and invstd (on the unmasked gradient), with its four results")
        if self.normalized and (self.relu is None or nn.shape_of(self.normalized[0]) != shape):
            raise VerifyException(f"{self.name}: the normalized input (relu(input scale + shift)) needs relu")

    @property
    def macs(self) -> int:
        o, cg, kh, kw = nn.shape_of(self.weight)
        return math.prod(nn.shape_of(self.grad)) * cg * kh * kw


@irdl_op_definition
class Conv2dBackwardDataPreOp(IRDLOperation):
    """`nn.conv2d_backward_data` (stride 1) of the input gradient of the BatchNorm after the conv,
    dy = scale g + c2 y + c3 per channel (g = grad times step(y scale + shift) when `relu`),
    made on the pre-processing unit from each tile of g as it arrives (`fuse-batch-norm-training`:
    BatchNorm backward's elementwise part is no pass of its own); dy is also a result, stored
    once (from the first output-channel tile) for the backward-filter. The form of
    `fused.conv2d_backward_data_sums ... pre` for a backward-data with no BatchNorm after it.

        %dx, %dy = fused.conv2d_backward_data_pre %g, %w, %y, %scale, %shift, %c2, %c3 strides [1, 1]
               pads [0, 0, 0, 0] dilations [1, 1] group 1
               : (tensor<8x256x8x8xf32>, tensor<256x64x1x1xf32>, tensor<8x256x8x8xf32>, tensor<256xf32>, ...)
               -> (tensor<8x64x8x8xf32>, tensor<8x256x8x8xf32>)
    """

    name = "fused.conv2d_backward_data_pre"
    grad = operand_def(TensorType)
    weight = operand_def(TensorType)
    input = operand_def(TensorType)
    scale = operand_def(TensorType)
    shift = operand_def(TensorType)
    c2 = operand_def(TensorType)
    c3 = operand_def(TensorType)
    strides = prop_def(DenseArrayBase[I64])
    pads = prop_def(DenseArrayBase[I64])
    dilations = prop_def(DenseArrayBase[I64])
    group = prop_def(IntegerAttr[I64])
    relu = opt_prop_def(UnitAttr)
    result = result_def(TensorType)
    dy = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = (
        "$grad `,` $weight `,` $input `,` $scale `,` $shift `,` $c2 `,` $c3 `strides` $strides `pads` $pads "
        "`dilations` $dilations `group` $group (`relu` $relu^)? attr-dict `:` functional-type(operands, results)"
    )

    def __init__(self, grad: SSAValue, weight: SSAValue, input: SSAValue, scale: SSAValue, shift: SSAValue,
                 c2: SSAValue, c3: SSAValue, result_type, strides: Sequence[int], pads: Sequence[int],
                 dilations: Sequence[int], group: int, relu: bool):
        super().__init__(operands=[grad, weight, input, scale, shift, c2, c3],
                         properties=conv_properties(strides, pads, dilations, group) | ({"relu": UnitAttr()} if relu else {}),
                         result_types=[result_type, grad.type])

    def verify_(self) -> None:
        shape = nn.shape_of(self.grad)
        if len(shape) != 4 or nn.shape_of(self.input) != shape or nn.shape_of(self.dy) != shape:
            raise VerifyException(f"{self.name}: NCHW grad, and an input and dy of its shape expected")
        if any(nn.shape_of(v) != (shape[1],) for v in self.operands[3:]):
            raise VerifyException(f"{self.name}: per-channel operands of shape [{shape[1]}] expected")
        if nn.shape_of(self.weight)[0] != shape[1] or len(nn.shape_of(self.result)) != 4:
            raise VerifyException(f"{self.name}: the weight's output channels must be the gradient's")

    @property
    def macs(self) -> int:
        o, cg, kh, kw = nn.shape_of(self.weight)
        return math.prod(nn.shape_of(self.grad)) * cg * kh * kw


@irdl_op_definition
class Conv2dBackwardFilterPreOp(IRDLOperation):
    """`nn.conv2d_backward_filter` of `pre(scale * x + shift)` (per channel of x; `pre` relu or
    none) and `grad`: the normalised activations the weight gradient needs are made on the
    pre-processing unit from x's tiles as they arrive (`fuse-batch-norm-training`), neither
    stored in the forward nor recomputed by a pass of their own. No padding (the padding would
    be the normalised tensor's).

        %dw = fused.conv2d_backward_filter_pre %y, %scale, %shift, %dy strides [1, 1] pads [0, 0, 0, 0]
               dilations [1, 1] group 1 pre relu
               : (tensor<8x64x8x8xf32>, tensor<64xf32>, tensor<64xf32>, tensor<8x256x8x8xf32>) -> tensor<256x64x1x1xf32>
    """

    name = "fused.conv2d_backward_filter_pre"
    input = operand_def(TensorType)
    scale = operand_def(TensorType)
    shift = operand_def(TensorType)
    grad = operand_def(TensorType)
    strides = prop_def(DenseArrayBase[I64])
    pads = prop_def(DenseArrayBase[I64])
    dilations = prop_def(DenseArrayBase[I64])
    group = prop_def(IntegerAttr[I64])
    pre = prop_def(ActivationAttr)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = (
        "$input `,` $scale `,` $shift `,` $grad `strides` $strides `pads` $pads `dilations` $dilations "
        "`group` $group `pre` $pre attr-dict `:` functional-type(operands, results)"
    )

    def __init__(self, input: SSAValue, scale: SSAValue, shift: SSAValue, grad: SSAValue, weight_type,
                 strides: Sequence[int], pads: Sequence[int], dilations: Sequence[int], group: int,
                 pre: str = "relu"):
        super().__init__(operands=[input, scale, shift, grad],
                         properties=conv_properties(strides, pads, dilations, group)
                         | {"pre": ActivationAttr(Activation(pre))}, result_types=[weight_type])

    def verify_(self) -> None:
        shape = nn.shape_of(self.input)
        if len(shape) != 4 or len(nn.shape_of(self.grad)) != 4 or len(nn.shape_of(self.result)) != 4:
            raise VerifyException(f"{self.name}: NCHW input and grad, OIHW result expected")
        if nn.shape_of(self.scale) != (shape[1],) or nn.shape_of(self.shift) != (shape[1],):
            raise VerifyException(f"{self.name}: scale and shift must have shape [{shape[1]}]")
        if any(nn.ints(self.pads)) or self.group.value.data != 1:
            raise VerifyException(f"{self.name}: no padding and group 1 expected")
        if self.pre.data not in (Activation.RELU, Activation.NONE):
            raise VerifyException(f"{self.name}: pre must be relu or none, not {self.pre.data}")

    @property
    def macs(self) -> int:
        return math.prod(nn.shape_of(self.grad)) * math.prod(nn.shape_of(self.result)[1:])


FUSED = Dialect("fused", [Conv2dOp, GemmOp, Conv2dStatsOp, Conv2dPreOp, BatchNormFactorsOp, BatchNormApplyOp,
                          BatchNormBackwardSumsOp, BatchNormBackwardApplyOp, Conv2dBackwardDataSumsOp,
                          Conv2dBackwardDataPreOp, Conv2dBackwardFilterPreOp],
                [ActivationAttr])

COMPUTE_OPS = (Conv2dOp, GemmOp)
