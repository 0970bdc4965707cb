"""Small ONNX graphs for the training tests (`Graph`), handed to tests by the `graph` fixture."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


class Graph:
    """A float32 ONNX graph with seeded random initializers."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []

    def init(self, name, shape, scale=0.5, offset=0.0):
        array = (self.rng.standard_normal(shape) * scale + offset).astype(np.float32)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op, inputs, name, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [f"{name}_y"], name=name, **attrs))
        return f"{name}_y"

    def save(self, path, input_shape, output, output_rank=2, opset=17):
        graph = helper.make_graph(
            self.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, [None] * output_rank)], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        onnx.save(model, str(path))
        return path


def gemm_model(tmp_path):
    """Gemms with transA, transB, alpha, beta, a broadcast C, a weight as A (MSE: no classes)."""
    g = Graph()
    h = g.node("Gemm", ["x", g.init("w1", (6, 5)), g.init("c1", (1, 5))], "fc1", transA=1, alpha=0.5, beta=2.0)
    h = g.node("Relu", [h], "relu")
    h = g.node("Gemm", [h, g.init("w2", (3, 5)), g.init("c2", (4, 3))], "fc2", transB=1, alpha=1.5)
    h = g.node("Gemm", [g.init("w3", (3, 2)), h], "fc3", transA=1, transB=1)  # weight as A: [2,3] @ h^T [3,4]
    return g.save(tmp_path / "gemm.onnx", [6, 4], h)


def matmul_model(tmp_path):
    """Batched matmuls, 4-D x 2-D and 4-D x 3-D (a weight with its own batch axis)."""
    g = Graph(1)
    h = g.node("MatMul", ["x", g.init("w", (4, 5))], "mm")
    h = g.node("Add", [h, g.init("b", (5,))], "bias")
    h = g.node("MatMul", [h, g.init("w2", (2, 5, 3))], "mm2")  # weight with its own batch axis
    h = g.node("Flatten", [h], "flat")
    h = g.node("Gemm", [h, g.init("fc", (18, 4))], "fc")
    return g.save(tmp_path / "matmul.onnx", [3, 2, 3, 4], h)  # 4-D x 2-D, then 4-D x 3-D


def squeeze_excitation(g, x, channels, name):
    s = g.node("GlobalAveragePool", [x], f"{name}.gap")
    s = g.node("Conv", [s, g.init(f"{name}.fc1", (channels // 2, channels, 1, 1)), g.init(f"{name}.b1", (channels // 2,))],
               f"{name}.fc1")
    s = g.node("Relu", [s], f"{name}.relu")
    s = g.node("Conv", [s, g.init(f"{name}.fc2", (channels, channels // 2, 1, 1))], f"{name}.fc2")
    s = g.node("HardSigmoid", [s], f"{name}.gate")
    return g.node("Mul", [x, s], f"{name}.scale")  # [N,C,H,W] * [N,C,1,1]


def se_model(tmp_path):
    """Strided conv with asymmetric pads, BatchNorm, HardSwish, squeeze-excitation, Sigmoid, Div, LeakyRelu
    with fan-out, Clip, max pooling with asymmetric pads, global max pooling, a trailing Softmax."""
    g = Graph(2)
    h = g.node("Conv", ["x", g.init("c1", (8, 3, 3, 3)), g.init("c1.b", (8,))], "conv1", pads=[1, 0, 2, 1],
               strides=[2, 2])
    h = g.node("BatchNormalization", [h, g.init("bn.s", (8,), 0.1, 1.0), g.init("bn.b", (8,)),
                                      g.init("bn.m", (8,), 0.1), g.init("bn.v", (8,), 0.1, 1.0)], "bn")
    h = g.node("HardSwish", [h], "hswish")
    h = squeeze_excitation(g, h, 8, "se")
    d = g.node("Add", [g.node("Sigmoid", [h], "sig"), g.init("one", (1,), 0.0, 1.0)], "onep")
    h = g.node("Div", [h, d], "div")  # rhs depends on weights too
    h = g.node("Sub", [h, g.node("LeakyRelu", [h], "leaky", alpha=0.2)], "sub")  # fan-out
    h = g.node("Clip", [h, g.init("lo", (), 0.0, -0.5), g.init("hi", (), 0.0, 0.7)], "clip")
    h = g.node("MaxPool", [h], "pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1])
    h = g.node("GlobalMaxPool", [h], "gmp")
    h = g.node("Flatten", [h], "flat")
    h = g.node("Gemm", [h, g.init("fc", (5, 8)), g.init("fc.b", (5,))], "fc", transB=1)
    h = g.node("Softmax", [h], "softmax", axis=1)
    return g.save(tmp_path / "se.onnx", [2, 3, 12, 12], h)


def shape_const(g):
    g.inits.append(numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "shape"))
    return "shape"


def cat_model(tmp_path):
    """Concat, a dilated strided depthwise conv, ceil-mode average pooling with asymmetric pads, Transpose."""
    g = Graph(3)
    a = g.node("Conv", ["x", g.init("a", (4, 3, 1, 1))], "conv_a")
    b = g.node("Conv", ["x", g.init("b", (4, 3, 3, 3))], "conv_b", pads=[1, 1, 1, 1], dilations=[1, 1])
    h = g.node("Concat", [a, b], "cat", axis=1)
    h = g.node("Conv", [h, g.init("dw", (8, 1, 3, 3))], "dw", group=8, strides=[2, 2], dilations=[2, 2],
               pads=[2, 2, 2, 2])
    h = g.node("AveragePool", [h], "avg", kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1],
               count_include_pad=0, ceil_mode=1)
    h = g.node("Transpose", [h], "nhwc", perm=[0, 2, 3, 1])
    h = g.node("Reshape", [h, shape_const(g)], "flat")
    h = g.node("Gemm", [h, g.init("fc", (72, 6))], "fc")
    return g.save(tmp_path / "cat.onnx", [2, 3, 11, 11], h)


def feature_map_model(tmp_path):
    """A conv's feature map as the output (MSE)."""
    g = Graph(5)
    h = g.node("Conv", ["x", g.init("c", (4, 3, 3, 3)), g.init("b", (4,))], "conv", strides=[2, 2])
    h = g.node("Relu", [h], "relu")
    return g.save(tmp_path / "fm.onnx", [2, 3, 9, 9], h, output_rank=4)


def tiny_classifier(tmp_path, seed=4):
    """Conv, BatchNorm, ReLU, global average pooling, Gemm: 4 classes, batch 8."""
    g = Graph(seed)
    h = g.node("Conv", ["x", g.init("c", (6, 3, 3, 3))], "conv", pads=[1, 1, 1, 1])
    h = g.node("BatchNormalization", [h, g.init("s", (6,), 0.1, 1.0), g.init("t", (6,)), g.init("m", (6,), 0.1),
                                      g.init("v", (6,), 0.1, 1.0)], "bn")
    h = g.node("Relu", [h], "relu")
    h = g.node("GlobalAveragePool", [h], "gap")
    h = g.node("Flatten", [h], "flat")
    h = g.node("Gemm", [h, g.init("fc", (4, 6)), g.init("fc.b", (4,))], "fc", transB=1)
    return g.save(tmp_path / "tiny.onnx", [8, 3, 6, 6], h)


def split_model(tmp_path):
    """Split along the channels (two nn.slice), each half its own activation, concatenated swapped."""
    g = Graph(7)
    h = g.node("Conv", ["x", g.init("c", (8, 3, 3, 3))], "conv", pads=[1, 1, 1, 1])
    g.nodes.append(helper.make_node("Split", [h], ["lo", "hi"], name="split", axis=1))
    a = g.node("Relu", ["lo"], "relu")
    b = g.node("Sigmoid", ["hi"], "sig")
    h = g.node("Concat", [b, a], "cat", axis=1)
    h = g.node("GlobalAveragePool", [h], "gap")
    h = g.node("Flatten", [h], "flat")
    h = g.node("Gemm", [h, g.init("fc", (5, 8))], "fc", transB=1)
    return g.save(tmp_path / "split.onnx", [2, 3, 6, 6], h)


def smooth_model(tmp_path):
    """Tanh, SiLU (Sigmoid * x, recognised by canonicalize-nn) and GELU (opset 20) activations."""
    g = Graph(8)
    h = g.node("Conv", ["x", g.init("c", (6, 3, 3, 3))], "conv", pads=[1, 1, 1, 1])
    h = g.node("Tanh", [h], "tanh")
    h = g.node("Conv", [h, g.init("c2", (6, 6, 1, 1))], "conv2")
    h = g.node("Mul", [h, g.node("Sigmoid", [h], "sig")], "silu")
    h = g.node("Conv", [h, g.init("c3", (6, 6, 1, 1))], "conv3")
    h = g.node("Gelu", [h], "gelu")
    h = g.node("GlobalAveragePool", [h], "gap")
    h = g.node("Flatten", [h], "flat")
    h = g.node("Gemm", [h, g.init("fc", (5, 6))], "fc", transB=1)
    return g.save(tmp_path / "smooth.onnx", [2, 3, 6, 6], h, opset=20)


def pools_model(tmp_path):
    """What the back end's backward nests take: stride-1 convs (group 1, grouped with 2 channels
    per group, dilated with asymmetric pads, 1x1) and 2x2 max pooling that tiles its input (odd
    size: the last row and column in no window)."""
    g = Graph(9)
    h = g.node("Conv", ["x", g.init("c1", (8, 3, 3, 3)), g.init("b1", (8,))], "conv1", pads=[1, 1, 1, 1])
    h = g.node("Relu", [h], "relu1")
    h = g.node("MaxPool", [h], "pool1", kernel_shape=[2, 2], strides=[2, 2])  # 9x9 -> 4x4
    h = g.node("Conv", [h, g.init("c2", (8, 2, 3, 3))], "conv2", pads=[1, 1, 1, 1], group=4)
    h = g.node("Conv", [h, g.init("c3", (6, 8, 3, 3))], "conv3", pads=[2, 1, 1, 2], dilations=[2, 2])  # 4x4 -> 3x3
    h = g.node("Relu", [h], "relu3")
    h = g.node("Conv", [h, g.init("c4", (16, 6, 1, 1)), g.init("b4", (16,))], "conv4")
    h = g.node("MaxPool", [h], "pool2", kernel_shape=[2, 2], strides=[2, 2])  # 3x3 -> 1x1
    h = g.node("Conv", [g.node("Relu", [h], "relu4"), g.init("c5", (5, 16, 1, 1))], "conv5")
    h = g.node("Flatten", [h], "flat")
    h = g.node("Gemm", [h, g.init("fc", (4, 5))], "fc", transB=1)
    return g.save(tmp_path / "pools.onnx", [2, 3, 9, 9], h)


def norms_model(tmp_path):
    """LRN (even and odd windows), a Softmax over the channels inside the model, Sqrt, Log and Exp
    of it, a Slice with steps 2 and 3 and a start (both axes' gaps run past the end), GELU's tanh
    form (opset 20)."""
    g = Graph(10)
    h = g.node("Conv", ["x", g.init("c1", (8, 3, 3, 3))], "conv1", pads=[1, 1, 1, 1])
    h = g.node("LRN", [h], "lrn4", size=4, alpha=0.5, beta=0.75, bias=2.0)
    p = g.node("Softmax", [h], "softmax", axis=1)
    h = g.node("Mul", [g.node("Add", [g.node("Sqrt", [p], "sqrt"), g.node("Log", [p], "log")], "sum"),
                       g.node("Exp", [p], "exp")], "mix")
    for name, values in (("starts", [0, 1]), ("ends", [9, 9]), ("axes", [2, 3]), ("steps", [2, 3])):
        g.inits.append(numpy_helper.from_array(np.array(values, dtype=np.int64), name))
    h = g.node("Slice", [h, "starts", "ends", "axes", "steps"], "strided")  # 9x9 -> rows 0,2,..8, columns 1,4,7
    h = g.node("Conv", [h, g.init("c2", (6, 8, 1, 1)), g.init("b2", (6,))], "conv2")
    h = g.node("Gelu", [h], "gelu", approximate="tanh")
    h = g.node("LRN", [h], "lrn3", size=3, alpha=1e-2, beta=0.5, bias=1.0)
    h = g.node("GlobalAveragePool", [h], "gap")
    h = g.node("Flatten", [h], "flat")
    h = g.node("Gemm", [h, g.init("fc", (5, 6))], "fc", transB=1)
    return g.save(tmp_path / "norms.onnx", [2, 3, 9, 9], h, opset=20)


def dropout_model(tmp_path):
    """Two dropouts (ratio 0.3 as an input, opset 12+; 0.5 by default) between gemms."""
    g = Graph(11)
    g.inits.append(numpy_helper.from_array(np.array(0.3, dtype=np.float32), "ratio"))
    h = g.node("Gemm", ["x", g.init("w1", (16, 12)), g.init("b1", (16,))], "fc1", transB=1)
    h = g.node("Dropout", [g.node("Relu", [h], "relu1"), "ratio"], "drop1")
    h = g.node("Gemm", [h, g.init("w2", (16, 16))], "fc2", transB=1)
    h = g.node("Dropout", [g.node("Relu", [h], "relu2")], "drop2")
    h = g.node("Gemm", [h, g.init("w3", (5, 16))], "fc3", transB=1)
    return g.save(tmp_path / "dropout.onnx", [6, 12], h)

def strided_model(tmp_path):
    """Strided convs whose input gradient is wanted: 3x3 stride 2 with asymmetric pads on 11x11
    (the last row and column dropped), 1x1 stride 2 (phases no tap reaches), 3x3 stride 3 dilation
    2, and a grouped 3x3 stride 2 (2 channels per group): `training_nest.phases_nest`'s cases."""
    g = Graph(5)
    h = g.node("Conv", ["x", g.init("c0", (8, 3, 3, 3)), g.init("c0.b", (8,))], "conv0", pads=[1, 1, 1, 1])
    h = g.node("Relu", [h], "relu0")
    h = g.node("Conv", [h, g.init("c1", (8, 8, 3, 3))], "conv1", strides=[2, 2], pads=[1, 0, 0, 1])  # 11 -> 5x6
    h = g.node("Relu", [h], "relu1")
    s = g.node("Conv", [h, g.init("c2", (12, 8, 1, 1))], "conv2", strides=[2, 2])  # 5x6 -> 3x3
    h = g.node("Conv", [h, g.init("c3", (12, 2, 3, 3))], "conv3", strides=[2, 2], pads=[1, 1, 1, 1], group=4)
    h = g.node("Add", [s, h], "add")
    h = g.node("Relu", [h], "relu3")
    h = g.node("Conv", [h, g.init("c4", (8, 12, 2, 2))], "conv4", strides=[3, 3], dilations=[2, 2], pads=[2, 2, 1, 1])
    h = g.node("GlobalAveragePool", [h], "gap")
    h = g.node("Flatten", [h], "flat")
    h = g.node("Gemm", [h, g.init("fc", (5, 8)), g.init("fc.b", (5,))], "fc", transB=1)
    return g.save(tmp_path / "strided.onnx", [2, 3, 11, 11], h)

def reversed_model(tmp_path):
    """Erf on its own (outside GELU's pattern) and a Slice with negative steps: the channels
    reversed whole, rows 5..0 (one row cut), every second column from the last (6, 4, 2)."""
    g = Graph(12)
    h = g.node("Conv", ["x", g.init("c1", (6, 3, 3, 3))], "conv1", pads=[1, 1, 1, 1])
    h = g.node("Erf", [h], "erf")
    for name, values in (("starts", [-1, 5, -1]), ("ends", [-100, -100, 0]), ("axes", [1, 2, 3]),
                         ("steps", [-1, -1, -2])):
        g.inits.append(numpy_helper.from_array(np.array(values, dtype=np.int64), name))
    h = g.node("Slice", [h, "starts", "ends", "axes", "steps"], "reversed")  # 6x7x7 -> 6x6x3
    h = g.node("Conv", [h, g.init("c2", (5, 6, 1, 1)), g.init("b2", (5,))], "conv2")
    h = g.node("Erf", [h], "erf2")
    h = g.node("GlobalAveragePool", [h], "gap")
    h = g.node("Flatten", [h], "flat")
    h = g.node("Gemm", [h, g.init("fc", (4, 5))], "fc", transB=1)
    return g.save(tmp_path / "reversed.onnx", [2, 3, 7, 7], h)


MODELS = {"strided": strided_model, "reversed": reversed_model, "dropout": dropout_model, "norms": norms_model, "pools": pools_model, "smooth": smooth_model, "split": split_model, "gemm": gemm_model, "matmul": matmul_model, "se": se_model, "cat": cat_model,
          "feature_map": feature_map_model, "tiny": tiny_classifier}
"""Model name -> its builder `(tmp_path) -> path`."""


@pytest.fixture
def model_file(tmp_path):
    """`model_file(name)`: that model of `MODELS`, written in the test's folder."""
    return lambda name: MODELS[name](tmp_path)


@pytest.fixture
def graph():
    """The `Graph` class: `graph(seed)` starts a graph."""
    return Graph


def train_mse(model, target, report):
    """One `nncc --train --loss mse --check` step of `model` on `target`: the report, every tensor
    having passed the check against PyTorch."""
    from nncc.compiler.cli import main

    code = main([str(model), "--train", f"--target={target}", "--loss", "mse", "--check", "--report", str(report),
                 "--quiet"])
    data = json.loads(report.read_text())
    failures = {k: v for k, v in data["check"]["tensors"].items() if not v["passed"]}
    assert code == 0 and not failures, failures
    return data
