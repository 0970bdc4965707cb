"""`nncc --train` end to end on small ONNX graphs: the autodiff pass's backward graph for each op
family (gemm and matmul with transposes, alpha, beta and broadcast C; broadcasting Add/Sub/Mul/
Div as in squeeze-excitation; concat, transpose, reshape, fan-out; every activation; pooling with
asymmetric pads), run on the reference target and checked against PyTorch autograd by
`--check` (the report's per-tensor errors); the flags' errors; --save-weights; a falling loss."""

import json
import re

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from nncc.compiler import opt
from nncc.compiler.cli import main

pytest.importorskip("torch")


def run_nncc(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def train_and_check(capsys, tmp_path, model, *flags):
    report = tmp_path / "r.json"
    code, out, err = run_nncc(capsys, model, "--train", "--check", "--report", report, *flags)
    assert report.exists(), (code, out, err)
    data = json.loads(report.read_text())
    failures = {k: v for k, v in data["check"]["tensors"].items() if not v["passed"]}
    assert code == 0 and not failures, (out, err, failures)
    return data


def test_gemm_transposes_alpha_beta_and_broadcast_c(capsys, tmp_path, model_file):
    model = model_file("gemm")
    data = train_and_check(capsys, tmp_path, model, "--loss", "mse")
    assert {f"grad.{w}" for w in ("w1", "c1", "w2", "c2", "w3")} <= set(data["check"]["tensors"])


def test_matmul_batched_with_broadcast_weight(capsys, tmp_path, model_file):
    model = model_file("matmul")
    train_and_check(capsys, tmp_path, model)


def test_squeeze_excitation_broadcasting_and_activations(capsys, tmp_path, model_file):
    model = model_file("se")
    data = train_and_check(capsys, tmp_path, model, "--batch", "3")
    assert data["training"]["batch"] == 3
    assert "updated.bn.m" in data["check"]["tensors"]
    phases = {row["phase"] for row in data["layers"]}
    assert phases == {"forward", "backward", "update"}
    assert all(row["mode"] == "training" for row in data["layers"])


def test_concat_transpose_avgpool_depthwise_and_steps(capsys, tmp_path, model_file):
    model = model_file("cat")
    data = train_and_check(capsys, tmp_path, model, "--steps", "3", "--lr", "0.05", "--momentum", "0.9",
                           "--weight-decay", "1e-3")
    assert len(data["losses"]) == 3
    assert "loss[2]" in data["check"]["tensors"]


def test_split_halves_get_their_gradients_back(capsys, tmp_path, model_file):
    data = train_and_check(capsys, tmp_path, model_file("split"))
    assert "grad.c" in data["check"]["tensors"]


def test_tanh_silu_gelu(capsys, tmp_path, model_file):
    train_and_check(capsys, tmp_path, model_file("smooth"))


def test_mse_on_a_feature_map(capsys, tmp_path, model_file):
    model = model_file("feature_map")
    train_and_check(capsys, tmp_path, model, "--loss", "mse")


def test_the_loss_falls_and_saved_weights_load_in_onnxruntime(capsys, tmp_path, model_file):
    import onnxruntime

    """The task: an image's class is the colour channel that is brighter (class 3: none)."""
    model = model_file("tiny")
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


def test_emit_nn_shows_the_backward_ops(capsys, tmp_path, model_file):
    model = model_file("tiny")
    code, out, err = run_nncc(capsys, model, "--train", "--emit=nn", "--momentum", "0.9")
    assert code == 0, err
    for op in ("nn.batch_norm_train", "nn.softmax_cross_entropy", "nn.softmax_cross_entropy_backward",
               "nn.global_avg_pool_backward", "nn.relu_backward", "nn.batch_norm_backward",
               "nn.conv2d_backward_filter", "nn.sgd", 'nn.phase = "update"'):
        assert op in out, op
    assert "nn.conv2d_backward_data" not in out  # the input needs no gradient


@pytest.mark.parametrize("emit", ["fused", "tile"])
@pytest.mark.parametrize("name", ["tiny", "se", "dropout"])
def test_emitted_training_ir_parses_back(capsys, tmp_path, model_file, name, emit):
    """Every SSA name defined once (BatchNorm's factor and backward ops have several results
    whose hints the printer used to number into each other's names), and nncc-opt reads the file
    back and prints it unchanged."""
    written, again = tmp_path / "step.mlir", tmp_path / "again.mlir"
    code, _, err = run_nncc(capsys, model_file(name), "--train", "--target=fusion", f"--emit={emit}", "-o", written)
    assert code == 0, err
    text = written.read_text()
    heads = [line.split(" {")[0] for line in text.splitlines()]  # not an op's attributes ({unit = "pre"})
    defined = [name for line in heads if " = " in line for name in re.findall(r"%[\w$.-]+", line.split(" = ")[0])]
    assert len(defined) == len(set(defined)) > 0
    assert opt.main([str(written), "-o", str(again)]) == 0, capsys.readouterr().err
    assert again.read_text().replace("again.weights", "step.weights") == text  # its weights file named


@pytest.mark.parametrize("argv, message", [
    (["--lr", "0.1"], "--lr is a training option: add --train"),
    (["--train", "--target=vector", "--run", "--trace", "t.json"], "--trace is not available with --train yet"),
    (["--train", "--lr", "-1", "--run"], "--lr -1.0: must be a finite number >= 0"),
    (["--train", "--loss", "cross-entropy", "--emit=nn", "--batch", "2"], "--batch needs a run"),
    (["--dropout", "identity"], "--dropout is a training option: add --train"),
])
def test_flag_errors_are_one_line(capsys, tmp_path, argv, message, model_file):
    code, out, err = run_nncc(capsys, model_file("tiny"), *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_lrn_softmax_inside_strided_slice_gelu_tanh_exp_log_sqrt(capsys, tmp_path, model_file):
    data = train_and_check(capsys, tmp_path, model_file("norms"))
    assert {"grad.c1", "grad.c2", "grad.b2", "grad.fc"} <= set(data["check"]["tensors"])


def test_dropout_seeded_masks_and_identity(capsys, tmp_path, model_file):
    from nncc.compiler.nn_kernels import dropout_mask

    model = model_file("dropout")
    seeded = train_and_check(capsys, tmp_path, model, "--steps", "2", "--seed", "3")
    identity = train_and_check(capsys, tmp_path, model, "--steps", "2", "--seed", "3", "--dropout", "identity")
    assert seeded["training"]["dropout"] == "seeded" and identity["training"]["dropout"] == "identity"
    assert seeded["losses"][0] != identity["losses"][0]
    masks = [dropout_mask(3, "drop1_y", step, (6, 16), 0.3) for step in (0, 1)]
    assert not np.array_equal(*masks)  # a new mask each step
    kept = np.concatenate([mask.ravel() for mask in masks])
    assert set(np.unique(kept)) == {0.0, np.float32(1 / 0.7)} and abs((kept > 0).mean() - 0.7) < 0.1
    code, out, err = run_nncc(capsys, model, "--train", "--emit=nn", "--steps", "2")
    assert code == 0 and out.count('nn.weight "drop1_y.mask') == 2 and out.count('nn.weight "drop2_y.mask') == 2, err
    code, out, err = run_nncc(capsys, model, "--emit=nn")  # inference: imported, then canonicalized away
    assert code == 0 and "nn.dropout %relu1_y ratio 0.3" in out and "nn.dropout %relu2_y ratio 5.0" in out, out
    code, out, err = run_nncc(capsys, model, "--emit=fused")
    assert code == 0 and "nn.dropout" not in out


def test_erf_alone_and_reversed_slice(capsys, tmp_path, model_file):
    """Erf outside GELU's pattern (2 / sqrt(pi) exp(-x^2)) and a Slice with negative steps (the
    gradient reversed back, then placed as the positive-step slice): against PyTorch."""
    data = train_and_check(capsys, tmp_path, model_file("reversed"))
    assert {"grad.c1", "grad.c2", "grad.b2", "grad.fc"} <= set(data["check"]["tensors"])
    code, out, err = run_nncc(capsys, model_file("reversed"), "--train", "--emit=nn")
    assert code == 0, err
    assert "%erf_y_grad_gauss = nn.exp" in out and "steps [1, 1, 1, -1]" in out and "steps [1, -1, 1, 1]" in out


def test_op_without_gradient_is_named(capsys, tmp_path, graph):
    g = graph(6)
    h = g.node("Conv", ["x", g.init("c", (4, 3, 3, 3))], "conv")
    h = g.node("Flatten", [h], "flat")
    h = g.node("MatMul", [h, g.init("v", (16,))], "dot")  # a 1-D operand
    g.inits.append(numpy_helper.from_array(np.array([2, 1], dtype=np.int64), "shape"))
    h = g.node("Reshape", [h, "shape"], "col")
    h = g.node("Gemm", [h, g.init("fc", (1, 3))], "fc")
    model = g.save(tmp_path / "dot.onnx", [2, 3, 4, 4], h)
    code, out, err = run_nncc(capsys, model, "--train", "--run")
    assert code == 2 and "ONNX node 'dot' (nn.matmul): a matmul with a 1-D operand has no gradient" in err, err
    assert len(err.strip().splitlines()) == 1


def test_bad_labels_are_one_line(capsys, tmp_path, model_file):
    labels = tmp_path / "labels.npz"
    np.savez(labels, labels=np.array([0, 9, 0, 0, 0, 0, 0, 0]))
    code, out, err = run_nncc(capsys, model_file("tiny"), "--train", "--run", "--labels", labels)
    assert code == 2 and "labels must be classes 0..3" in err, err


def test_dropout_with_a_run_time_ratio(capsys, tmp_path, graph):
    """A ratio given as a graph input: the identity in inference, refused in training with a seeded mask."""
    g = graph(12)
    h = g.node("Gemm", ["x", g.init("w", (4, 6))], "fc", transB=1)
    g.nodes.append(onnx.helper.make_node("Dropout", [h, "r"], ["d"], name="drop"))
    model = onnx.helper.make_model(onnx.helper.make_graph(
        g.nodes, "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3, 6]),
                       onnx.helper.make_tensor_value_info("r", onnx.TensorProto.FLOAT, [])],
        [onnx.helper.make_tensor_value_info("d", onnx.TensorProto.FLOAT, [3, 4])], g.inits),
        opset_imports=[onnx.helper.make_opsetid("", 13)], ir_version=9)
    path = tmp_path / "runtime_ratio.onnx"
    onnx.save(model, str(path))
    code, out, err = run_nncc(capsys, path, "--emit=fused")
    assert code == 0 and "nn.dropout" not in out, err
    code, out, err = run_nncc(capsys, path, "--train", "--loss", "mse", "--emit=nn")
    assert code == 2 and "ONNX node 'drop' (nn.dropout): its ratio is the graph input 'r'" in err, err
    assert len(err.strip().splitlines()) == 1
