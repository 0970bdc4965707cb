"""fuse-epilogues and the whole `fused` stage: the fused IR computes what the nn IR
computed (checked against onnxruntime on every zoo model), and the ops that should
fuse do."""

import json

import numpy as np
import pytest

from nncc.compiler.cli import main as nncc_main
from nncc.compiler.zoo import MODELS, build_model
from nncc.dialects import fused, nn
from nncc.dialects.fused import Activation

# Every activation and residual form, on convs and gemms; weights come from the store.
EPILOGUES = """
builtin.module {
  func.func @main(%x: tensor<1x4x6x6xf32>, %a: tensor<2x8xf32>) -> (tensor<1x4x6x6xf32>, tensor<1x4x6x6xf32>, tensor<1x4x6x6xf32>, tensor<1x4x6x6xf32>, tensor<1x4x6x6xf32>, tensor<1x4x6x6xf32>, tensor<2x8xf32>, tensor<2x8xf32>) {
    %w = nn.weight "w" : tensor<4x4x3x3xf32>
    %b = nn.weight "b" : tensor<4xf32>
    %fc = nn.weight "fc" : tensor<8x8xf32>
    %fb = nn.weight "fb" : tensor<8xf32>
    %c1 = nn.conv2d %x, %w, %b strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 : (tensor<1x4x6x6xf32>, tensor<4x4x3x3xf32>, tensor<4xf32>) -> tensor<1x4x6x6xf32>
    %s1 = nn.add %x, %c1 : (tensor<1x4x6x6xf32>, tensor<1x4x6x6xf32>) -> tensor<1x4x6x6xf32>
    %y1 = nn.relu %s1 : tensor<1x4x6x6xf32>
    %c2 = nn.conv2d %y1, %w strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 : (tensor<1x4x6x6xf32>, tensor<4x4x3x3xf32>) -> tensor<1x4x6x6xf32>
    %y2 = nn.clip %c2 min 0xFFF0000000000000 max 0.5 : tensor<1x4x6x6xf32>
    %c3 = nn.conv2d %y2, %w, %b strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 : (tensor<1x4x6x6xf32>, tensor<4x4x3x3xf32>, tensor<4xf32>) -> tensor<1x4x6x6xf32>
    %s3 = nn.add %c3, %y1 : (tensor<1x4x6x6xf32>, tensor<1x4x6x6xf32>) -> tensor<1x4x6x6xf32>
    %y3 = nn.leaky_relu %s3 alpha 0.1 : tensor<1x4x6x6xf32>
    %c4 = nn.conv2d %x, %w strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 : (tensor<1x4x6x6xf32>, tensor<4x4x3x3xf32>) -> tensor<1x4x6x6xf32>
    %y4 = nn.hard_swish %c4 : tensor<1x4x6x6xf32>
    %c5 = nn.conv2d %x, %w strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 : (tensor<1x4x6x6xf32>, tensor<4x4x3x3xf32>) -> tensor<1x4x6x6xf32>
    %y5 = nn.sigmoid %c5 : tensor<1x4x6x6xf32>
    %c6 = nn.conv2d %x, %w strides [1, 1] pads [1, 1, 1, 1] dilations [1, 1] group 1 : (tensor<1x4x6x6xf32>, tensor<4x4x3x3xf32>) -> tensor<1x4x6x6xf32>
    %y6 = nn.clip %c6 min -0.5 max 0.5 : tensor<1x4x6x6xf32>
    %g1 = nn.gemm %a, %fc, %fb trans_a false trans_b true alpha 0.5 beta 2.0 : (tensor<2x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<2x8xf32>
    %t1 = nn.add %g1, %a : (tensor<2x8xf32>, tensor<2x8xf32>) -> tensor<2x8xf32>
    %z1 = nn.hard_sigmoid %t1 alpha 0.2 beta 0.5 : tensor<2x8xf32>
    %g2 = nn.gemm %a, %fc trans_a false trans_b false alpha 1.0 beta 1.0 : (tensor<2x8xf32>, tensor<8x8xf32>) -> tensor<2x8xf32>
    %z2 = nn.clip %g2 min 0.0 max 0x7FF0000000000000 : tensor<2x8xf32>
    func.return %y1, %y2, %y3, %y4, %y5, %y6, %z1, %z2 : tensor<1x4x6x6xf32>, tensor<1x4x6x6xf32>, tensor<1x4x6x6xf32>, tensor<1x4x6x6xf32>, tensor<1x4x6x6xf32>, tensor<1x4x6x6xf32>, tensor<2x8xf32>, tensor<2x8xf32>
  }
}
"""


def fused_ops(module):
    return [op for op in module.walk() if isinstance(op, fused.COMPUTE_OPS)]


def test_every_epilogue_computes_what_the_nn_ops_computed(parse_ir, run_pipeline):
    from nncc.compiler.nn_interpreter import run_reference

    rng = np.random.default_rng(0)
    weights = {"w": rng.standard_normal((4, 4, 3, 3)) * 0.3, "b": rng.standard_normal(4),
               "fc": rng.standard_normal((8, 8)) * 0.3, "fb": rng.standard_normal(8)}
    inputs = {"input0": rng.standard_normal((1, 4, 6, 6)).astype(np.float32),
              "input1": rng.standard_normal((2, 8)).astype(np.float32)}
    expected, _ = run_reference(parse_ir(EPILOGUES, weights), inputs)
    module = run_pipeline(parse_ir(EPILOGUES, weights), "fuse-epilogues")
    assert not [op for op in module.walk() if op.name.startswith("nn.") and op.name != "nn.weight"]
    acts = [(op.act.data, op.residual is not None) for op in fused_ops(module)]
    assert acts == [(Activation.RELU, True), (Activation.CLIP, False), (Activation.LEAKY_RELU, True),
                    (Activation.HARD_SWISH, False), (Activation.SIGMOID, False), (Activation.CLIP, False),
                    (Activation.HARD_SIGMOID, True), (Activation.CLIP, False)]
    assert fused_ops(module)[1].act_min is None and fused_ops(module)[7].act_max is None
    actual, layers = run_reference(module, inputs)
    for name in expected:
        # The same kernels in the same order: bit-identical.
        assert np.array_equal(actual[name], expected[name]), name
    assert [row["op"] for row in layers] == ["fused.conv2d"] * 6 + ["fused.gemm"] * 2
    assert all(row["macs"] > 0 for row in layers)


# ResNet-18 and MobileNetV2 last: their runs are still cached for the tests below
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.big_memory) if n in ("resnet50", "vgg16") else n
                                  for n in sorted(MODELS, key=lambda n: n in ("resnet18", "mobilenet_v2"))])
def test_zoo_model_after_the_fused_stage_matches_onnxruntime(zoo_run, name):
    run = zoo_run(name)
    assert run.error <= 1e-4 * run.scale, (run.error, run.scale)
    # Only fused compute ops are left, and every ONNX node is still named by some op.
    # a BatchNorm that follows a conv is folded into it; DenseNet's pre-activation ones (after a
    # concat or the stem's pool) stay
    producers = {out: node.op_type for node in run.model.graph.node for out in node.output}
    standalone = sum(node.op_type == "BatchNormalization" and producers.get(node.input[0]) != "Conv"
                     for node in run.model.graph.node)
    assert run.after["nn.conv2d"] == run.after["nn.gemm"] == 0
    assert run.after["nn.batch_norm"] == standalone
    assert run.after["fused.conv2d"] == run.before["nn.conv2d"]
    assert run.after["fused.gemm"] == run.before["nn.gemm"]
    names = [n for op in run.module.walk() for n in nn.onnx_nodes_of(op)]
    assert len(names) == len(set(names))
    assert set(names) == {n.name for n in run.model.graph.node
                          if n.op_type not in ("Dropout", "Identity", "Constant")}
    # Every conv and gemm shows up in a layer row that does MACs.
    computed = {n for row in run.layers if row["macs"] for n in row["onnx_nodes"]}
    assert computed >= {n.name for n in run.model.graph.node if n.op_type in ("Conv", "Gemm")}


def test_resnet18_is_one_fused_conv_per_conv(zoo_run):
    run = zoo_run("resnet18")
    assert run.after["nn.batch_norm"] == run.after["nn.relu"] == run.after["nn.add"] == 0
    assert run.after["fused.conv2d"] == 20
    convs = [op for op in fused_ops(run.module) if isinstance(op, fused.Conv2dOp)]
    # The 8 blocks' second convs take bn + add + relu; the 3 downsample convs have no epilogue.
    residual = [op for op in convs if op.residual is not None]
    assert len(residual) == 8 and all(op.act.data == Activation.RELU for op in residual)
    assert nn.onnx_nodes_of(residual[0]) == ["layer1.0.conv2", "layer1.0.bn2", "layer1.0.add", "layer1.0.relu2"]
    assert sum(op.act.data == Activation.NONE for op in convs) == 3


def test_mobilenet_v2_fuses_relu6_and_residual_adds(zoo_run):
    run = zoo_run("mobilenet_v2")
    assert run.before["nn.clip"] == 35 and run.before["nn.add"] == 10
    assert run.after["nn.clip"] == run.after["nn.add"] == run.after["nn.batch_norm"] == 0
    convs = fused_ops(run.module)
    clips = [op for op in convs if op.act.data == Activation.CLIP]
    assert len(clips) == 35
    assert all(op.act_min.value.data == 0.0 and op.act_max.value.data == 6.0 for op in clips)
    projections = [op for op in convs if op.residual is not None]
    assert len(projections) == 10 and all(op.act.data == Activation.NONE for op in projections)
    assert nn.onnx_nodes_of(projections[0]) == ["features.3.conv.2", "features.3.conv.3", "features.3.add"]


def test_disabling_fuse_epilogues_leaves_nn_ops(zoo_run):
    run = zoo_run("resnet18", "canonicalize-nn,fold-batch-norm")
    assert run.after["nn.conv2d"] == 20 and run.after["nn.relu"] == 17 and run.after["nn.add"] == 8
    assert not fused_ops(run.module)


@pytest.fixture
def small_zoo_model(tmp_path):
    path = tmp_path / "squeezenet.onnx"
    path.write_bytes(build_model("squeezenet1_1", batch=1, resolution=32, seed=1).SerializeToString())
    return path


def test_cli_emit_fused_and_disable_pass(capsys, small_zoo_model):
    assert nncc_main([str(small_zoo_model), "--emit=fused"]) == 0
    out = capsys.readouterr().out
    assert "fused.conv2d" in out and "act relu" in out and "nn.relu" not in out
    assert nncc_main([str(small_zoo_model), "--emit=fused", "--disable-pass=fuse-epilogues"]) == 0
    out = capsys.readouterr().out
    assert "fused." not in out and "nn.conv2d" in out and "nn.relu" in out


def test_cli_reference_run_checks_the_fused_ir(capsys, small_zoo_model, tmp_path):
    report = tmp_path / "r.json"
    code = nncc_main([str(small_zoo_model), "--target=reference", "--run", "--check", "--report", str(report)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    data = json.loads(report.read_text())
    assert data["check"]["passed"]
    assert any(layer["onnx_nodes"] == ["features.0", "features.1"] for layer in data["layers"])
