"""`nncc --train` end to end on small ONNX graphs: the autodiff pass's backward graph for each op
family (gemm and matmul with transposes, alpha, beta and broadcast C; broadcasting Add/Sub/Mul/
Div as in squeeze-excitation; concat, transpose, reshape, fan-out; every activation; pooling with
asymmetric pads), run on the reference target and checked against PyTorch autograd by
`--check` (the report's per-tensor errors); the flags' errors; --save-weights; a falling loss."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nncc.compiler.cli import main

pytest.importorskip("torch")


def run_nncc(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


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

    def save(self, path, input_shape, output, output_rank=2):
        graph = helper.make_graph(
            self.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, [None] * output_rank)], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        onnx.save(model, str(path))
        return path


def train_and_check(capsys, tmp_path, model, *flags):
    report = tmp_path / "r.json"
    code, out, err = run_nncc(capsys, model, "--train", "--check", "--report", report, *flags)
    assert report.exists(), (code, out, err)
    data = json.loads(report.read_text())
    failures = {k: v for k, v in data["check"]["tensors"].items() if not v["passed"]}
    assert code == 0 and not failures, (out, err, failures)
    return data


def test_gemm_transposes_alpha_beta_and_broadcast_c(capsys, tmp_path):
    g = Graph()
    h = g.node("Gemm", ["x", g.init("w1", (6, 5)), g.init("c1", (1, 5))], "fc1", transA=1, alpha=0.5, beta=2.0)
    h = g.node("Relu", [h], "relu")
    h = g.node("Gemm", [h, g.init("w2", (3, 5)), g.init("c2", (4, 3))], "fc2", transB=1, alpha=1.5)
    h = g.node("Gemm", [g.init("w3", (3, 2)), h], "fc3", transA=1, transB=1)  # weight as A: [2,3] @ h^T [3,4]
    model = g.save(tmp_path / "gemm.onnx", [6, 4], h)
    data = train_and_check(capsys, tmp_path, model, "--loss", "mse")
    assert {f"grad.{w}" for w in ("w1", "c1", "w2", "c2", "w3")} <= set(data["check"]["tensors"])


def test_matmul_batched_with_broadcast_weight(capsys, tmp_path):
    g = Graph(1)
    h = g.node("MatMul", ["x", g.init("w", (4, 5))], "mm")
    h = g.node("Add", [h, g.init("b", (5,))], "bias")
    h = g.node("MatMul", [h, g.init("w2", (2, 5, 3))], "mm2")  # weight with its own batch axis
    h = g.node("Flatten", [h], "flat")
    h = g.node("Gemm", [h, g.init("fc", (18, 4))], "fc")
    model = g.save(tmp_path / "matmul.onnx", [3, 2, 3, 4], h)  # 4-D x 2-D, then 4-D x 3-D
    train_and_check(capsys, tmp_path, model)


def squeeze_excitation(g, x, channels, name):
    s = g.node("GlobalAveragePool", [x], f"{name}.gap")
    s = g.node("Conv", [s, g.init(f"{name}.fc1", (channels // 2, channels, 1, 1)), g.init(f"{name}.b1", (channels // 2,))],
               f"{name}.fc1")
    s = g.node("Relu", [s], f"{name}.relu")
    s = g.node("Conv", [s, g.init(f"{name}.fc2", (channels, channels // 2, 1, 1))], f"{name}.fc2")
    s = g.node("HardSigmoid", [s], f"{name}.gate")
    return g.node("Mul", [x, s], f"{name}.scale")  # [N,C,H,W] * [N,C,1,1]


def test_squeeze_excitation_broadcasting_and_activations(capsys, tmp_path):
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
    model = g.save(tmp_path / "se.onnx", [2, 3, 12, 12], h)
    data = train_and_check(capsys, tmp_path, model, "--batch", "3")
    assert data["training"]["batch"] == 3
    assert "updated.bn.m" in data["check"]["tensors"]
    phases = {row["phase"] for row in data["layers"]}
    assert phases == {"forward", "backward", "update"}
    assert all(row["mode"] == "training" for row in data["layers"])


def test_concat_transpose_avgpool_depthwise_and_steps(capsys, tmp_path):
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
    model = g.save(tmp_path / "cat.onnx", [2, 3, 11, 11], h)
    data = train_and_check(capsys, tmp_path, model, "--steps", "3", "--lr", "0.05", "--momentum", "0.9",
                           "--weight-decay", "1e-3")
    assert len(data["losses"]) == 3
    assert "loss[2]" in data["check"]["tensors"]


def shape_const(g):
    g.inits.append(numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "shape"))
    return "shape"


def tiny_classifier(tmp_path, seed=4):
    g = Graph(seed)
    h = g.node("Conv", ["x", g.init("c", (6, 3, 3, 3))], "conv", pads=[1, 1, 1, 1])
    h = g.node("BatchNormalization", [h, g.init("s", (6,), 0.1, 1.0), g.init("t", (6,)), g.init("m", (6,), 0.1),
                                      g.init("v", (6,), 0.1, 1.0)], "bn")
    h = g.node("Relu", [h], "relu")
    h = g.node("GlobalAveragePool", [h], "gap")
    h = g.node("Flatten", [h], "flat")
    h = g.node("Gemm", [h, g.init("fc", (4, 6)), g.init("fc.b", (4,))], "fc", transB=1)
    return g.save(tmp_path / "tiny.onnx", [8, 3, 6, 6], h)


def test_mse_on_a_feature_map(capsys, tmp_path):
    g = Graph(5)
    h = g.node("Conv", ["x", g.init("c", (4, 3, 3, 3)), g.init("b", (4,))], "conv", strides=[2, 2])
    h = g.node("Relu", [h], "relu")
    model = g.save(tmp_path / "fm.onnx", [2, 3, 9, 9], h, output_rank=4)
    train_and_check(capsys, tmp_path, model, "--loss", "mse")


def test_the_loss_falls_and_saved_weights_load_in_onnxruntime(capsys, tmp_path):
    import onnxruntime

    """The task: an image's class is the colour channel that is brighter (class 3: none)."""
    model = tiny_classifier(tmp_path)
    labels, inputs = tmp_path / "labels.npz", tmp_path / "inputs.npz"
    classes = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    x = np.random.default_rng(0).standard_normal((8, 3, 6, 6)).astype(np.float32) * 0.3
    for image, label in enumerate(classes):
        if label < 3:
            x[image, label] += 1.0
    np.savez(labels, labels=classes)
    np.savez(inputs, x=x)
    saved = tmp_path / "trained.onnx"
    data = train_and_check(capsys, tmp_path, model, "--labels", labels, "--inputs", inputs, "--steps", "10",
                           "--lr", "0.5", "--momentum", "0.5", "--save-weights", saved)
    losses = data["losses"]
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.5 * losses[0], losses
    trained = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(saved)).graph.initializer}
    original = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(model)).graph.initializer}
    assert set(trained) == set(original) and not np.array_equal(trained["c"], original["c"])
    assert not np.array_equal(trained["m"], original["m"])  # running mean updated
    session = onnxruntime.InferenceSession(str(saved), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.zeros((8, 3, 6, 6), np.float32)})[0].shape == (8, 4)


def test_emit_nn_shows_the_backward_ops(capsys, tmp_path):
    model = tiny_classifier(tmp_path)
    code, out, err = run_nncc(capsys, model, "--train", "--emit=nn", "--momentum", "0.9")
    assert code == 0, err
    for op in ("nn.batch_norm_train", "nn.softmax_cross_entropy", "nn.softmax_cross_entropy_backward",
               "nn.global_avg_pool_backward", "nn.relu_backward", "nn.batch_norm_backward",
               "nn.conv2d_backward_filter", "nn.sgd", 'nn.phase = "update"'):
        assert op in out, op
    assert "nn.conv2d_backward_data" not in out  # the input needs no gradient


@pytest.mark.parametrize("argv, message", [
    (["--lr", "0.1"], "--lr is a training option: add --train"),
    (["--train", "--target=vector", "--run"], "training runs on --target=reference for now"),
    (["--train", "--lr", "-1", "--run"], "--lr -1.0: must be a finite number >= 0"),
    (["--train", "--emit=tile"], "training steps stop at the fused stage"),
    (["--train", "--loss", "cross-entropy", "--emit=nn", "--batch", "2"], "--batch needs a run"),
])
def test_flag_errors_are_one_line(capsys, tmp_path, argv, message):
    code, out, err = run_nncc(capsys, tiny_classifier(tmp_path), *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_op_without_gradient_is_named(capsys, tmp_path):
    g = Graph(6)
    h = g.node("Conv", ["x", g.init("c", (4, 3, 3, 3))], "conv")
    h = g.node("LRN", [h], "norm", size=3)
    h = g.node("Flatten", [h], "flat")
    h = g.node("Gemm", [h, g.init("fc", (16, 3))], "fc")
    model = g.save(tmp_path / "lrn.onnx", [2, 3, 4, 4], h)
    code, out, err = run_nncc(capsys, model, "--train", "--run")
    assert code == 2 and "ONNX node 'norm' (nn.lrn) has no gradient in training mode" in err, err
    assert len(err.strip().splitlines()) == 1


def test_bad_labels_are_one_line(capsys, tmp_path):
    labels = tmp_path / "labels.npz"
    np.savez(labels, labels=np.array([0, 9, 0, 0, 0, 0, 0, 0]))
    code, out, err = run_nncc(capsys, tiny_classifier(tmp_path), "--train", "--run", "--labels", labels)
    assert code == 2 and "labels must be classes 0..3" in err, err
