"""Single-op models for what the ONNX node tests do not exercise, checked against onnxruntime.

The node suite has no grouped, depthwise or dilated conv, no SAME_LOWER conv,
no Gemm with a 1-D C, no old-opset attribute forms (Clip, Squeeze, reductions' axes)... Each case here is one
small model built with onnx.helper (float32, fixed shapes); the conformance
test feeds it seeded random inputs and compares nncc's reference execution
with onnxruntime's output. Cases are named `ort_<op>_<what>`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 9  # onnx >= 1.23 writes 14 by default, which onnxruntime refuses
OMITTED = "omitted optional input"


@dataclass(frozen=True)
class OrtCase:
    name: str
    model: onnx.ModelProto


def weights(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def single_op(op: str, inputs: dict[str, list[int]], output: str = "y", constants=None,
              opset: int = 17, extra_nodes=(), **attributes) -> onnx.ModelProto:
    """A model computing `op` on `inputs` (name -> shape) and `constants` (name -> array).

    Node inputs are the graph inputs then the constants, in order; a constant
    OMITTED leaves an optional input out, one that is None is computed by
    `extra_nodes`.
    """
    constants = constants or {}
    names = list(inputs) + list(constants)
    node = helper.make_node(op, ["" if constants.get(n) is OMITTED else n for n in names],
                            [output], name=f"{op.lower()}0", **attributes)
    graph = helper.make_graph(
        [*extra_nodes, node], op,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in constants.items()
         if a is not None and a is not OMITTED],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)  # declares the output's shape


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def conv(name, x, w, bias=True, **attributes) -> OrtCase:
    constants = {"W": weights(1, *w), "B": weights(2, w[0]) if bias else OMITTED}
    return OrtCase(f"ort_conv_{name}", single_op("Conv", {"x": x}, constants=constants, **attributes))


def pool(op, name, x, opset=17, **attributes) -> OrtCase:
    return OrtCase(f"ort_{op.lower()}_{name}", single_op(op, {"x": x}, opset=opset, **attributes))


def unary(op, name, x=(2, 3, 4, 5), opset=17, constants=None, **attributes) -> OrtCase:
    return OrtCase(f"ort_{op.lower()}_{name}",
                   single_op(op, {"x": list(x)}, constants=constants, opset=opset, **attributes))


def binary(op, name, a, b, constant_lhs=False) -> OrtCase:
    if constant_lhs:
        model = single_op(op, {"b": b}, constants={"a": weights(3, *a)})
        node = model.graph.node[0]
        node.input[:] = ["a", "b"]
    else:
        model = single_op(op, {"a": a, "b": b})
    return OrtCase(f"ort_{op.lower()}_{name}", model)


def gemm(name, a, b, c=None, **attributes) -> OrtCase:
    constants = {"c": weights(4, *c) if c is not None else OMITTED}
    return OrtCase(f"ort_gemm_{name}", single_op("Gemm", {"a": a, "b": b}, constants=constants, **attributes))


def batch_norm(name, x, **attributes) -> OrtCase:
    channels = x[1]
    constants = {"scale": weights(8, channels), "bias": weights(9, channels), "mean": weights(10, channels),
                 "var": np.abs(weights(11, channels)) + 0.1}
    return OrtCase(f"ort_batchnormalization_{name}",
                   single_op("BatchNormalization", {"x": x}, constants=constants, **attributes))


CONV_CASES = [
    conv("group2", [1, 4, 7, 7], [6, 2, 3, 3], group=2, pads=[1, 1, 1, 1]),
    conv("depthwise", [2, 8, 9, 9], [8, 1, 3, 3], group=8, pads=[1, 1, 1, 1], strides=[2, 2]),
    conv("depthwise_multiplier2", [1, 4, 8, 8], [8, 1, 3, 3], group=4),
    conv("dilations", [1, 3, 11, 11], [4, 3, 3, 3], dilations=[2, 3], pads=[2, 1, 0, 3]),
    conv("strides_asymmetric_pads", [1, 2, 10, 9], [3, 2, 3, 2], strides=[2, 3], pads=[0, 1, 2, 0]),
    conv("same_lower_stride2", [1, 2, 8, 7], [3, 2, 4, 3], auto_pad="SAME_LOWER", strides=[2, 2]),
    conv("same_upper_even_kernel", [1, 2, 6, 6], [3, 2, 2, 4], auto_pad="SAME_UPPER"),
    conv("valid", [1, 2, 6, 6], [3, 2, 3, 3], auto_pad="VALID", strides=[2, 1]),
    conv("no_bias", [1, 3, 5, 5], [2, 3, 3, 3], bias=False, pads=[1, 1, 1, 1]),
    conv("pointwise", [1, 16, 4, 4], [8, 16, 1, 1]),
    conv("kernel_shape_attr", [1, 3, 5, 5], [2, 3, 3, 3], kernel_shape=[3, 3]),
    conv("1d_pads_dilation_group", [2, 4, 20], [6, 2, 3], group=2, pads=[2, 1], dilations=[2],
         strides=[2]),
    conv("1d_same_upper", [1, 3, 10], [2, 3, 4], auto_pad="SAME_UPPER", strides=[3]),
]

POOL_CASES = [
    pool("MaxPool", "dilations_ceil", [1, 2, 9, 9], kernel_shape=[2, 2], dilations=[2, 2], strides=[2, 2],
         ceil_mode=1),
    pool("MaxPool", "ceil_pads", [1, 2, 8, 8], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
         ceil_mode=1),
    pool("MaxPool", "same_lower", [1, 2, 7, 6], kernel_shape=[3, 2], strides=[2, 2], auto_pad="SAME_LOWER"),
    pool("MaxPool", "asymmetric_pads", [1, 1, 6, 7], kernel_shape=[3, 3], pads=[0, 2, 1, 0]),
    pool("MaxPool", "1d_ceil", [1, 2, 11], kernel_shape=[3], strides=[2], pads=[1, 0], ceil_mode=1),
    pool("AveragePool", "ceil_count_include_pad", [1, 2, 8, 8], kernel_shape=[3, 3], strides=[2, 2],
         pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
    pool("AveragePool", "ceil_exclude_pad", [1, 2, 8, 8], kernel_shape=[3, 3], strides=[2, 2],
         pads=[1, 1, 1, 1], ceil_mode=1),
    pool("AveragePool", "dilations_opset19", [1, 2, 9, 9], opset=19, kernel_shape=[2, 3], dilations=[2, 2],
         pads=[1, 1, 1, 1], count_include_pad=1),
    pool("AveragePool", "same_lower_include_pad", [1, 2, 7, 7], kernel_shape=[3, 3], strides=[2, 2],
         auto_pad="SAME_LOWER", count_include_pad=1),
    pool("AveragePool", "same_upper_exclude_pad", [1, 2, 7, 7], kernel_shape=[2, 2], strides=[2, 2],
         auto_pad="SAME_UPPER"),
    pool("AveragePool", "1d_pads", [2, 3, 12], kernel_shape=[4], strides=[3], pads=[2, 1]),
    pool("GlobalAveragePool", "1d", [2, 3, 7]),
    pool("GlobalMaxPool", "3d", [1, 2, 3, 4, 5]),
]

NORMALIZATION_CASES = [
    batch_norm("rank2", [4, 6]),
    batch_norm("rank3_epsilon", [2, 3, 7], epsilon=0.01),
    batch_norm("rank4", [2, 3, 4, 5]),
    batch_norm("opset9_spatial", [2, 3, 4, 5], opset=9),
]

ELEMENTWISE_CASES = [
    unary("LeakyRelu", "default_alpha"),
    unary("LeakyRelu", "alpha", alpha=0.3),
    unary("HardSigmoid", "default"),
    unary("HardSigmoid", "attributes", alpha=0.5, beta=0.6),
    unary("HardSwish", "wide", x=(1, 2, 40), opset=17),
    unary("Clip", "max_only", constants={"min": OMITTED, "max": np.array(0.5, np.float32)}),
    unary("Clip", "min_only", constants={"min": np.array(-0.25, np.float32)}),
    unary("Clip", "no_bounds"),
    unary("Clip", "attributes_opset10", opset=10, min=-0.5, max=0.7),
    unary("Clip", "relu6_opset11", opset=11,
          constants={"min": np.array(0, np.float32), "max": np.array(6, np.float32)}),
    unary("Sigmoid", "large", x=(3, 100)),
    unary("Relu", "rank1", x=(17,)),
    unary("Softmax", "axis0_4d", x=(3, 2, 4, 5), axis=0),
    unary("Softmax", "axis1_4d", x=(2, 3, 4, 5), axis=1),
    unary("Softmax", "axis2_opset11", x=(2, 3, 4, 5), opset=11, axis=2),
    unary("LRN", "size3", size=3, alpha=0.01, beta=0.5, bias=2.0),
    unary("LRN", "size5_odd_channels", x=(1, 7, 3, 3), size=5),
    unary("Dropout", "ratio_opset13", constants={"ratio": np.array(0.3, np.float32)}, opset=13),
    binary("Add", "bcast_vector", [2, 3, 4, 5], [5]),
    binary("Sub", "bcast_both", [1, 3, 1, 5], [2, 1, 4, 1]),
    binary("Mul", "bcast_scalar", [2, 3], []),
    binary("Div", "constant_lhs", [3, 1], [2, 3, 4], constant_lhs=True),
    binary("Add", "constant_lhs_higher_rank", [2, 1, 3, 4], [3, 1], constant_lhs=True),
    OrtCase("ort_sum_three_bcast", single_op("Sum", {"a": [2, 3, 4], "b": [4], "c": [3, 1]})),
    OrtCase("ort_sum_with_constant", single_op("Sum", {"a": [2, 3]}, constants={"k": weights(5, 3)})),
]

MATRIX_CASES = [
    gemm("c_vector", [3, 5], [5, 4], c=[4]),
    gemm("c_scalar", [3, 5], [5, 4], c=[]),
    gemm("c_column", [3, 5], [5, 4], c=[3, 1]),
    gemm("c_row_trans_both", [5, 3], [4, 5], c=[1, 4], transA=1, transB=1),
    gemm("alpha_beta", [3, 5], [4, 5], c=[3, 4], transB=1, alpha=0.5, beta=-2.0),
    gemm("no_c_alpha", [2, 6], [6, 3], alpha=3.0),
    OrtCase("ort_matmul_1d_2d", single_op("MatMul", {"a": [4], "b": [4, 3]})),
    OrtCase("ort_matmul_2d_1d", single_op("MatMul", {"a": [2, 4], "b": [4]})),
    OrtCase("ort_matmul_batch_bcast", single_op("MatMul", {"a": [2, 1, 3, 4], "b": [5, 4, 6]})),
    OrtCase("ort_matmul_constant_b", single_op("MatMul", {"a": [2, 3, 4]}, constants={"b": weights(6, 4, 2)})),
]

SHAPE_CASES = [
    unary("Flatten", "axis0", axis=0),
    unary("Flatten", "axis_rank", axis=4),
    unary("Reshape", "zero_and_minus1", constants={"shape": i64(0, -1, 2)}),
    unary("Reshape", "allowzero_no_zeros", opset=14, constants={"shape": i64(4, 30)}, allowzero=1),
    unary("Squeeze", "no_axes", x=(1, 3, 1, 2)),
    unary("Squeeze", "axes_attr_opset11", x=(1, 3, 1, 2), opset=11, axes=[0, -2]),
    unary("Unsqueeze", "negative_axes", x=(3, 4), constants={"axes": i64(-1, 0)}),
    unary("Unsqueeze", "axes_attr_opset11", x=(3, 4), opset=11, axes=[1, 3]),
    unary("Transpose", "default"),
    unary("Transpose", "perm", perm=[0, 2, 3, 1]),
    OrtCase("ort_concat_constant_negative_axis",
            single_op("Concat", {"a": [2, 3, 4]}, constants={"k": weights(7, 2, 3, 2)}, axis=-1)),
    OrtCase("ort_constantofshape_default_value", single_op(
        "Add", {"x": [2, 3]}, constants={"zeros": None},
        extra_nodes=[helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(i64(2, 3))),
                     helper.make_node("ConstantOfShape", ["shape"], ["zeros"])])),
    OrtCase("ort_constant_value_float", single_op(
        "Mul", {"x": [2, 3]}, constants={"k": None},
        extra_nodes=[helper.make_node("Constant", [], ["k"], value_float=2.5)])),
]

REDUCTION_CASES = [  # the node tests have the axes-input forms only (opset 18; ReduceSum 13)
    unary("ReduceMean", "axes_attr_opset13", opset=13, axes=[2, 3], keepdims=0),
    unary("ReduceMean", "axes_attr_negative_opset17", axes=[-2, -1]),
    unary("ReduceMean", "axes_input_global_opset18", opset=18, constants={"axes": i64(-2, -1)}, keepdims=0),
    unary("ReduceMean", "noop_with_empty_axes_opset18", opset=18, noop_with_empty_axes=1),
    unary("ReduceMax", "axes_attr_opset13", opset=13, axes=[2, 3]),
    unary("ReduceMax", "axes_input_channel_opset18", opset=18, constants={"axes": i64(1)}, keepdims=0),
    unary("ReduceMin", "axes_attr_0_3", axes=[0, 3]),
    unary("ReduceSum", "axes_attr_opset11", opset=11, axes=[2, 3], keepdims=0),
    unary("ReduceSum", "every_axis_rank3", x=(2, 3, 4), opset=13),
    unary("ReduceSumSquare", "axes_attr_channel", axes=[1]),
]

ORT_CASES = (CONV_CASES + POOL_CASES + NORMALIZATION_CASES + ELEMENTWISE_CASES + MATRIX_CASES + SHAPE_CASES
             + REDUCTION_CASES)
