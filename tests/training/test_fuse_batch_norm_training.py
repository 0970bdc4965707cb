"""`fuse-batch-norm-training` (BatchNorm statistics as post-processing of the producing conv, the
apply and ReLU as pre-processing of the consuming convs): the training step still agrees with
PyTorch autograd, fused or not (`--disable-pass`), on `fusion` (pre/post units) and `vector`."""

import json
import re

import pytest

from nncc.compiler.cli import main

pytest.importorskip("torch")


def block_model(g, path, shape=(4, 3, 8, 8)):
    """conv(pad 1) -> BN -> ReLU -> conv 3x3 stride 2 (pad 1) -> BN -> ReLU -> conv 1x1 -> BN, plus
    a downsampling conv -> BN shortcut, add, ReLU, global pooling, FC: every case of the pass
    (statistics from a conv and from a pre-processing conv, the apply as pre-processing with and
    without padding, BatchNorms without a ReLU, a ReLU read by pooling)."""
    def bn(h, name, channels):
        inits = [g.init(f"{name}.s", (channels,), 0.2, 1.0), g.init(f"{name}.b", (channels,)),
                 g.init(f"{name}.m", (channels,), 0.1), g.init(f"{name}.v", (channels,), 0.1, 1.0)]
        return g.node("BatchNormalization", [h, *inits], name)
    h = g.node("Conv", ["x", g.init("w1", (8, 3, 3, 3))], "conv1", pads=[1, 1, 1, 1])
    h = g.node("Relu", [bn(h, "bn1", 8)], "relu1")
    a = g.node("Conv", [h, g.init("w2", (8, 8, 3, 3), 0.3)], "conv2", pads=[1, 1, 1, 1], strides=[2, 2])
    a = g.node("Relu", [bn(a, "bn2", 8)], "relu2")
    a = bn(g.node("Conv", [a, g.init("w3", (16, 8, 1, 1), 0.3)], "conv3"), "bn3", 16)
    d = bn(g.node("Conv", [h, g.init("wd", (16, 8, 1, 1), 0.3)], "down", strides=[2, 2]), "bnd", 16)
    h = g.node("Relu", [g.node("Add", [a, d], "add")], "relu3")
    h = g.node("Flatten", [g.node("GlobalAveragePool", [h], "gap")], "flat")
    h = g.node("Gemm", [h, g.init("fc", (10, 16), 0.3)], "fc", transB=1)
    return g.save(path, list(shape), h)


@pytest.fixture
def model(tmp_path):
    from tests.training.conftest import Graph

    return block_model(Graph(3), tmp_path / "block.onnx")


def train(model, tmp_path, capsys, target, *flags):
    report = tmp_path / f"r{len(flags)}.json"
    code = main([str(model), "--train", f"--target={target}", "--check", "--report", str(report), *flags])
    out, err = capsys.readouterr()
    data = json.loads(report.read_text())
    failures = {k: v for k, v in data["check"]["tensors"].items() if not v["passed"]}
    assert code == 0 and not failures, (out, err, failures)
    return data


@pytest.mark.parametrize("target", ["fusion", "vector"])
def test_fused_and_unfused_steps_agree_with_pytorch(target, model, tmp_path, capsys):
    fused = train(model, tmp_path, capsys, target)
    unfused = train(model, tmp_path, capsys, target, "--disable-pass=fuse-batch-norm-training")
    ops = {row["op"] for row in fused["layers"]}
    into_convs = {"fused.conv2d_stats", "fused.conv2d_pre"}
    # on fusion the statistics and the apply go into the convs (pre/post units); on vector, whose
    # vector units also run the MACs, only the per-channel numbers, the apply and the backward
    assert into_convs <= ops if target == "fusion" else not ops & into_convs
    assert {"fused.batch_norm_factors", "fused.batch_norm_apply", "fused.batch_norm_backward_sums"} <= ops
    assert not {row["op"] for row in unfused["layers"]} & (into_convs | {"fused.batch_norm_factors"})
    assert fused["losses"] == pytest.approx(unfused["losses"], rel=1e-5)


@pytest.mark.parametrize("target", ["fusion", "vector"])
def test_a_batch_of_one_image(target, tmp_path, capsys):
    """Batch 1: the statistics of a BatchNorm whose input is no conv's (the reduction of its own)
    are per channel, [C], not [1, C] (fused.batch_norm_factors refused them)."""
    from tests.training.conftest import Graph

    model = block_model(Graph(3), tmp_path / "block.onnx", (1, 3, 8, 8))
    data = train(model, tmp_path, capsys, target)
    assert data["training"]["batch"] == 1 and "fused.batch_norm_factors" in {row["op"] for row in data["layers"]}


def test_backward_sums_on_planes_of_a_few_pixels(tmp_path, capsys):
    """The block at 4x4, batch 8: conv3's backward-data with bn2's reductions runs on 2x2 planes,
    where its tiles take all 8 images (`training_nest.with_images`; the post-processing covers
    their interleaved rows); the step matches PyTorch."""
    from tests.training.conftest import Graph

    model = block_model(Graph(3), tmp_path / "block.onnx", (8, 3, 4, 4))
    data = train(model, tmp_path, capsys, "fusion")
    assert "fused.conv2d_backward_data_sums" in {row["op"] for row in data["layers"]}


def test_the_fused_ops_in_the_ir(model, capsys):
    assert main([str(model), "--train", "--target=fusion", "--emit=fused"]) == 0
    ir = capsys.readouterr().out
    assert ir.count("fused.conv2d_stats") == 1  # conv1 (the others' inputs are pre-processed)
    assert ir.count("_squares = fused.conv2d_pre") == 3  # conv2 (padded, strided), down, conv3: with statistics
    assert "nn.batch_norm_train" not in ir and "nn.batch_norm_backward" not in ir
    # bn2's reductions and relu2's mask: post-processing of conv3's backward-data (1x1, stride 1);
    # bn1's gradient is a sum (relu1 feeds conv2 and down), bn3's and bnd's relu3's masked sum
    assert ir.count("= fused.conv2d_backward_data_sums %bn3_y_grad_1, %w3, %conv2_y") == 1
    assert ir.count("= fused.batch_norm_backward_sums") == 3 and ir.count("= fused.batch_norm_backward_apply") == 4
    assert ir.count("= fused.batch_norm_factors") == 4
    # the block's end (bn3, the shortcut's BatchNorm, the add, the ReLU) in one pass; relu1's and
    # relu2's outputs recomputed in the backward for the backward-filters; ReLU backwards fused
    assert ir.count("= fused.batch_norm_apply %conv3_y, %bn3_y.1_1, %bn3_y.1_2 plus %down_y") == 1
    # relu1's output recomputed for the backward-filters (its BatchNorm's reductions are a pass);
    # relu2's made as post-processing by conv3's backward-data, which has bn2's input tiles and
    # scale and shift for relu2's mask anyway, and stored for conv3's backward-filter (the cost
    # model times that faster than the recompute and than conv3's backward-filter pre-processing)
    assert ir.count("_recompute = fused.batch_norm_apply") == 1 and ir.count("= fused.batch_norm_apply") == 2
    assert ", %relu2_y_post = fused.conv2d_backward_data_sums %bn3_y_grad_1, %w3, %conv2_y," in ir
    assert "nn.conv2d_backward_filter %relu2_y_post, %bn3_y_grad_1 " in ir
    assert ir.count('saved = "backward-data post-processing"') == 1
    assert ir.count("= nn.step") == 1  # relu3's mask (its gradient goes to both BatchNorms), lowered



def dense_model(g, path):
    """DenseNet's pattern: BatchNorm -> ReLU -> conv 1x1 -> BatchNorm -> ReLU -> conv 3x3, each
    layer's input the concat of the block's input (max pooling) and every earlier layer's output:
    the statistics of a concat are the concat of its pieces' (each piece's from its conv)."""
    def bn(h, name, channels):
        inits = [g.init(f"{name}.s", (channels,), 0.2, 1.0), g.init(f"{name}.b", (channels,)),
                 g.init(f"{name}.m", (channels,), 0.1), g.init(f"{name}.v", (channels,), 0.1, 1.0)]
        return g.node("BatchNormalization", [h, *inits], name)
    h = g.node("Conv", ["x", g.init("w0", (8, 3, 3, 3))], "conv0", pads=[1, 1, 1, 1])
    h = g.node("MaxPool", [g.node("Relu", [bn(h, "bn0", 8)], "relu0")], "pool", kernel_shape=[2, 2], strides=[2, 2])
    channels = 8
    for i in range(2):
        a = g.node("Relu", [bn(h, f"l{i}.bn1", channels)], f"l{i}.relu1")
        a = g.node("Conv", [a, g.init(f"l{i}.w1", (8, channels, 1, 1), 0.3)], f"l{i}.conv1")
        a = g.node("Relu", [bn(a, f"l{i}.bn2", 8)], f"l{i}.relu2")
        a = g.node("Conv", [a, g.init(f"l{i}.w2", (4, 8, 3, 3), 0.3)], f"l{i}.conv2", pads=[1, 1, 1, 1])
        h = g.node("Concat", [h, a], f"l{i}.cat", axis=1)
        channels += 4
    h = g.node("Relu", [bn(h, "bn5", channels)], "relu5")
    h = g.node("Flatten", [g.node("GlobalAveragePool", [h], "gap")], "flat")
    h = g.node("Gemm", [h, g.init("fc", (10, channels), 0.3)], "fc", transB=1)
    return g.save(path, [4, 3, 8, 8], h)


def test_dense_block_statistics_from_the_pieces(tmp_path, capsys):
    from tests.training.conftest import Graph

    model = dense_model(Graph(5), tmp_path / "dense.onnx")
    fused = train(model, tmp_path, capsys, "fusion")
    assert main([str(model), "--train", "--target=fusion", "--emit=fused"]) == 0
    ir = capsys.readouterr().out
    assert ir.count("= fused.batch_norm_factors") == 6
    # conv0 and both conv1s give statistics; the conv2s too (their outputs are concat pieces)
    assert ir.count("= fused.conv2d_stats") == 1 and ir.count("_squares = fused.conv2d_pre") == 4
    # each conv1's backward-filter input recomputed: cheaper than normalising its tiles on every reload
    assert ir.count("_conv1_y_grad_weight = fused.conv2d_backward_filter_pre %") == 0
    assert "nn.batch_norm_train" not in ir and fused["cycles"] > 0


@pytest.mark.parametrize("which", ["block", "residual"])
def test_cost_model_times_the_fused_nests_as_the_simulation_runs_them(which, tmp_path):
    """The pre/post units run beside the matrix unit in the interpreter's timeline; the cost model
    times the same schedule: every fused layer's predicted cycles and DRAM bytes are the simulated
    ones (the residual blocks: backward-data post-processing with a residual and a stored mask)."""
    from tests.training.conftest import Graph

    model = block_model(Graph(3), tmp_path / "m.onnx") if which == "block" else \
        residual_model(Graph(7), tmp_path / "m.onnx")
    from nncc.compiler.bench import target_options
    from nncc.compiler.pipeline import Options, compile_model
    from nncc.compiler.registry import Registry
    from nncc.compiler.training import program_of
    from nncc.runtime.interpreter import run
    from nncc.support import check

    compilation = compile_model(model, Registry.default(), Options(target_options=target_options("fusion"), training={}),
                                until="isa")
    program = program_of(compilation)
    inputs = check.random_inputs({s.name: s.shape for s in program.symbols_of("input")}, seed=0)
    result = run(program, inputs)
    fused_layers = [(layer, program.predictions[i]) for i, layer in enumerate(result.layers)
                    if layer.op.startswith("fused.") and i in program.predictions]
    assert {layer.op for layer, _ in fused_layers} >= {"fused.conv2d_stats", "fused.conv2d_pre",
                                                       "fused.batch_norm_factors", "fused.batch_norm_apply",
                                                       "fused.batch_norm_backward_sums",
                                                       "fused.conv2d_backward_data_sums"}
    for layer, prediction in fused_layers:
        assert prediction["name"] == layer.name
        assert (prediction["predicted_cycles"], prediction["predicted_dram_read_bytes"],
                prediction["predicted_dram_write_bytes"]) == \
            (layer.cycles, layer.dram_read_bytes, layer.dram_write_bytes), layer.name


def residual_model(g, path):
    """A stem and two bottleneck blocks with identity shortcuts (ResNet's): the first block's
    output gradient is the second block's conv1 backward-data plus its shortcut's gradient,
    masked by the first block's output ReLU and shared by its bn3 and the stem's shortcut."""
    def bn(h, name, channels):
        inits = [g.init(f"{name}.s", (channels,), 0.2, 1.0), g.init(f"{name}.b", (channels,)),
                 g.init(f"{name}.m", (channels,), 0.1), g.init(f"{name}.v", (channels,), 0.1, 1.0)]
        return g.node("BatchNormalization", [h, *inits], name)
    h = g.node("Relu", [bn(g.node("Conv", ["x", g.init("w0", (16, 3, 3, 3))], "conv0", pads=[1, 1, 1, 1]), "bn0", 16)],
               "relu0")
    for i in range(2):
        a = g.node("Relu", [bn(g.node("Conv", [h, g.init(f"b{i}.w1", (8, 16, 1, 1), 0.3)], f"b{i}.conv1"), f"b{i}.bn1", 8)],
                   f"b{i}.relu1")
        a = g.node("Relu", [bn(g.node("Conv", [a, g.init(f"b{i}.w2", (8, 8, 3, 3), 0.3)], f"b{i}.conv2",
                                      pads=[1, 1, 1, 1]), f"b{i}.bn2", 8)], f"b{i}.relu2")
        a = bn(g.node("Conv", [a, g.init(f"b{i}.w3", (16, 8, 1, 1), 0.3)], f"b{i}.conv3"), f"b{i}.bn3", 16)
        h = g.node("Relu", [g.node("Add", [a, h], f"b{i}.add")], f"b{i}.relu3")
    h = g.node("Flatten", [g.node("GlobalAveragePool", [h], "gap")], "flat")
    h = g.node("Gemm", [h, g.init("fc", (10, 16), 0.3)], "fc", transB=1)
    return g.save(path, [4, 3, 8, 8], h)


@pytest.mark.parametrize("target", ["fusion", "vector"])
def test_backward_reductions_as_post_processing_of_backward_data(target, tmp_path, capsys):
    """BatchNorm backward's reductions (and the ReLU masks) in the backward-data convs' output
    tiles, with residual fan-out: the step agrees with PyTorch fused or not, and on `fusion` the
    IR shows which convs post-process which BatchNorm's backward."""
    from tests.training.conftest import Graph

    model = residual_model(Graph(7), tmp_path / "residual.onnx")
    fused = train(model, tmp_path, capsys, target)
    unfused = train(model, tmp_path, capsys, target, "--disable-pass=fuse-batch-norm-training")
    assert fused["losses"] == pytest.approx(unfused["losses"], rel=1e-5)
    assert main([str(model), "--train", f"--target={target}", "--emit=fused"]) == 0
    ir = capsys.readouterr().out
    if target == "vector":
        assert "fused.conv2d_backward_data_sums" not in ir
        return
    # bn2 after conv3's, bn1 after conv2's backward-data (their own ReLUs), per block
    lines = [line for line in ir.splitlines() if "= fused.conv2d_backward_data_sums" in line]
    for i in range(2):
        for conv, y in (("w3", "conv2_y"), ("w2", "conv1_y")):
            assert sum(f", %b{i}_{conv}, %b{i}_{y}, " in line and " relu " in line for line in lines) == 1
    # block 0's end: block 1's conv1 backward-data plus block 1's shortcut gradient (its masked
    # sum), masked by block 0's stored output: bn3 of block 0's reductions
    (end,) = [line for line in ir.splitlines() if "fused.conv2d_backward_data_sums %b1_bn1_y_grad, %b1_w1" in line]
    assert "%b0_conv3_y" in end and " plus %b1_relu3_y_grad_1 " in end and " mask %b0_add_y " in end
    # the stem's output: block 0's conv1 backward-data plus block 0's shortcut gradient, relu0's
    # mask from bn0's own input (relu), bn0's reductions
    (stem,) = [line for line in ir.splitlines() if "fused.conv2d_backward_data_sums %b0_bn1_y_grad, %b0_w1" in line]
    assert "%conv0_y" in stem and " plus %b1_conv1_y_grad_input " in stem and " relu " in stem
    assert len(lines) == 6
    # left as passes of their own: block 1's bn3 (its gradient is the loss's) and its output mask
    assert ir.count("= fused.batch_norm_backward_sums") == 1 and ir.count("= nn.step") == 1
    # each BatchNorm backward's elementwise part: a pass, or pre-processing of the gradient tiles of
    # the backward-data that reads it (which then stores it for the backward-filter), as the cost
    # model chose and `fused.bn` records
    pre = sum(" pre %" in line for line in lines)
    assert ir.count("= fused.batch_norm_backward_apply") + pre == 7 and "nn.relu_backward" not in ir
    assert ir.count('backward = "pre-processing"') == pre and ir.count('backward = "pass"') == 7 - pre
    # relu1's and relu2's outputs (the backward-filters' inputs) made by the backward-data that
    # post-processes bn1's and bn2's backward with their ReLU masks (conv2's, conv3's), stored:
    # the cost model times that faster than recomputing them in a pass of their own
    for i in range(2):
        for relu, conv in (("relu1", "conv2"), ("relu2", "conv3")):
            (line,) = [line for line in lines if f", %b{i}_{relu}_y_post = " in line]
            assert f"_sums %b{i}_bn{relu[-1]}_y_grad" in line or f", %b{i}_w{conv[-1]}, " in line
            assert f"nn.conv2d_backward_filter %b{i}_{relu}_y_post, " in ir
    assert "_recompute = fused.batch_norm_apply" not in ir
    assert ir.count('saved = "backward-data post-processing"') == 4


def chain_model(g, path, shape=(8, 3, 4, 4)):
    """conv 3x3 -> BN -> ReLU -> conv 3x3 (pad 1) -> BN -> ReLU -> conv 3x3 stride 2 -> BN -> ReLU ->
    pooling: bn1's gradient comes from a strided backward-data (its reductions a pass, its apply
    masked by its ReLU), and its input gradient feeds conv1's padded backward-data, whose output
    tiles carry bn0's reductions: the gradient pre-processing with the ReLU's mask and the border
    mask, on planes of a few pixels (several images per tile)."""
    def bn(h, name, channels):
        inits = [g.init(f"{name}.s", (channels,), 0.2, 1.0), g.init(f"{name}.b", (channels,)),
                 g.init(f"{name}.m", (channels,), 0.1), g.init(f"{name}.v", (channels,), 0.1, 1.0)]
        return g.node("BatchNormalization", [h, *inits], name)
    h = g.node("Relu", [bn(g.node("Conv", ["x", g.init("w0", (16, 3, 3, 3))], "conv0", pads=[1, 1, 1, 1]), "bn0", 16)],
               "relu0")
    h = g.node("Relu", [bn(g.node("Conv", [h, g.init("w1", (16, 16, 3, 3), 0.2)], "conv1", pads=[1, 1, 1, 1]), "bn1", 16)],
               "relu1")
    h = g.node("Relu", [bn(g.node("Conv", [h, g.init("w2", (16, 16, 3, 3), 0.2)], "conv2", pads=[1, 1, 1, 1],
                                  strides=[2, 2]), "bn2", 16)], "relu2")
    h = g.node("Flatten", [g.node("GlobalAveragePool", [h], "gap")], "flat")
    h = g.node("Gemm", [h, g.init("fc", (10, 16), 0.3)], "fc", transB=1)
    return g.save(path, list(shape), h)


def pooled_model(g, path):
    """ResNet's stem and first conv: conv -> BN -> ReLU -> max pooling -> conv 3x3 (pad 1) -> BN ->
    ReLU -> pooling: bn1's input gradient feeds a backward-data whose output is max pooling's
    gradient (no BatchNorm after it: `fused.conv2d_backward_data_pre`)."""
    def bn(h, name, channels):
        inits = [g.init(f"{name}.s", (channels,), 0.2, 1.0), g.init(f"{name}.b", (channels,)),
                 g.init(f"{name}.m", (channels,), 0.1), g.init(f"{name}.v", (channels,), 0.1, 1.0)]
        return g.node("BatchNormalization", [h, *inits], name)
    h = g.node("Relu", [bn(g.node("Conv", ["x", g.init("w0", (16, 3, 3, 3))], "conv0", pads=[1, 1, 1, 1]), "bn0", 16)],
               "relu0")
    h = g.node("MaxPool", [h], "pool", kernel_shape=[2, 2], strides=[2, 2])
    h = g.node("Relu", [bn(g.node("Conv", [h, g.init("w1", (16, 16, 3, 3), 0.2)], "conv1", pads=[1, 1, 1, 1]), "bn1", 16)],
               "relu1")
    h = g.node("Flatten", [g.node("GlobalAveragePool", [h], "gap")], "flat")
    h = g.node("Gemm", [h, g.init("fc", (10, 16), 0.3)], "fc", transB=1)
    return g.save(path, [4, 3, 8, 8], h)


def test_gradient_pre_processing_without_a_batch_norm_after(tmp_path, capsys, monkeypatch):
    """A backward-data whose output feeds max pooling's gradient pre-processes its gradient tiles
    too (`fused.conv2d_backward_data_pre`, the cost model's choice forced): the step matches
    PyTorch and the nest is timed as simulated."""
    from nncc.passes import fuse_batch_norm_training
    from tests.training.conftest import Graph

    monkeypatch.setattr(fuse_batch_norm_training, "gradient_pre_processing_pays", lambda *args: True)
    model = pooled_model(Graph(11), tmp_path / "m.onnx")
    train(model, tmp_path, capsys, "fusion")
    assert main([str(model), "--train", "--target=fusion", "--emit=fused"]) == 0
    ir = capsys.readouterr().out
    (line,) = [line for line in ir.splitlines() if "= fused.conv2d_backward_data_pre " in line]
    dx, dy = line.split(" = ")[0].split(", ")
    assert dx.strip() == "%conv1_y_grad_input" and " %gap_y_grad, %w1, %conv1_y, " in line and " relu " in line
    assert f"nn.conv2d_backward_filter %pool_y, {dy} " in ir and "= nn.conv2d_backward_data" not in ir
    assert ir.count("= fused.batch_norm_backward_apply") == 1  # bn0's (its conv has no backward-data)
    timed_as_simulated(model, {"fused.conv2d_backward_data_pre"})


def downsample_model(g, path):
    """A stem, a bottleneck block with a BatchNorm'd 1x1 shortcut (ResNet's downsample, stride 1),
    and an identity block: the first block's end gradient (the second block's conv1
    backward-data plus its shortcut's, masked by the first block's output ReLU) is shared by its
    bn3 and its shortcut's BatchNorm."""
    def bn(h, name, channels):
        inits = [g.init(f"{name}.s", (channels,), 0.2, 1.0), g.init(f"{name}.b", (channels,)),
                 g.init(f"{name}.m", (channels,), 0.1), g.init(f"{name}.v", (channels,), 0.1, 1.0)]
        return g.node("BatchNormalization", [h, *inits], name)
    h = g.node("Relu", [bn(g.node("Conv", ["x", g.init("w0", (8, 3, 3, 3))], "conv0", pads=[1, 1, 1, 1]), "bn0", 8)],
               "relu0")
    for i, shortcut in enumerate((True, False)):
        c = 8 if i == 0 else 16
        a = g.node("Relu", [bn(g.node("Conv", [h, g.init(f"b{i}.w1", (8, c, 1, 1), 0.3)], f"b{i}.conv1"), f"b{i}.bn1", 8)],
                   f"b{i}.relu1")
        a = g.node("Relu", [bn(g.node("Conv", [a, g.init(f"b{i}.w2", (8, 8, 3, 3), 0.3)], f"b{i}.conv2",
                                      pads=[1, 1, 1, 1]), f"b{i}.bn2", 8)], f"b{i}.relu2")
        a = bn(g.node("Conv", [a, g.init(f"b{i}.w3", (16, 8, 1, 1), 0.3)], f"b{i}.conv3"), f"b{i}.bn3", 16)
        if shortcut:
            h = bn(g.node("Conv", [h, g.init(f"b{i}.wd", (16, 8, 1, 1), 0.3)], f"b{i}.down"), f"b{i}.bnd", 16)
        h = g.node("Relu", [g.node("Add", [a, h], f"b{i}.add")], f"b{i}.relu3")
    h = g.node("Flatten", [g.node("GlobalAveragePool", [h], "gap")], "flat")
    h = g.node("Gemm", [h, g.init("fc", (10, 16), 0.3)], "fc", transB=1)
    return g.save(path, [4, 3, 8, 8], h)


def test_shortcut_batch_norm_reductions_beside_the_blocks(tmp_path, capsys):
    """A downsampling block's end: its shortcut BatchNorm's reductions come from the same
    backward-data output tiles as bn3's (`second`), no pass of their own; the step matches
    PyTorch, fused or not, and the nest is timed as simulated."""
    from tests.training.conftest import Graph

    model = downsample_model(Graph(13), tmp_path / "m.onnx")
    fused = train(model, tmp_path, capsys, "fusion")
    unfused = train(model, tmp_path, capsys, "fusion", "--disable-pass=fuse-batch-norm-training")
    assert fused["losses"] == pytest.approx(unfused["losses"], rel=1e-5)
    assert main([str(model), "--train", "--target=fusion", "--emit=fused"]) == 0
    ir = capsys.readouterr().out
    # block 1's conv1 backward-data plus its shortcut's gradient, masked by block 0's output: the
    # reductions of one of block 0's two last BatchNorms, and (`second`) of the other
    (end,) = [line for line in ir.splitlines() if " second %b0_" in line]
    assert "= fused.conv2d_backward_data_sums " in end and ", %b1_w1, %b0_" in end and " mask %b0_add_y " in end
    assert {"%b0_down_y,", "%b0_conv3_y,"} <= set(end.split())
    # only block 1's bn3 (its gradient is the pooling's) is a sums pass
    assert ir.count("= fused.batch_norm_backward_sums") == 1
    timed_as_simulated(model, {"fused.conv2d_backward_data_sums"})


@pytest.mark.parametrize("which", ["chain", "chain 2x2", "residual"])
def test_gradient_pre_processing_agrees_with_pytorch(which, tmp_path, capsys, monkeypatch):
    """BatchNorm backward's elementwise part as pre-processing of the next backward-data's
    gradient tiles, wherever it can go (the cost model's choice forced): the step still matches
    PyTorch, the conv gives the pre-processed gradient to the backward-filter, and every such
    nest's predicted cycles and DRAM bytes are the simulated ones."""
    from nncc.passes import fuse_batch_norm_training
    from tests.training.conftest import Graph

    monkeypatch.setattr(fuse_batch_norm_training, "gradient_pre_processing_pays", lambda *args: True)
    # chain 2x2: conv1's backward-data tiles take all 8 images (`training_nest.with_images`)
    model = residual_model(Graph(7), tmp_path / "m.onnx") if which == "residual" else \
        chain_model(Graph(9), tmp_path / "m.onnx", (8, 3, 4, 4) if which == "chain" else (8, 3, 2, 2))
    train(model, tmp_path, capsys, "fusion")
    assert main([str(model), "--train", "--target=fusion", "--emit=fused"]) == 0
    ir = capsys.readouterr().out
    lines = [line for line in ir.splitlines() if "= fused.conv2d_backward_data_sums" in line and " pre %" in line]
    if which != "residual":  # bn1's apply (ReLU mask: its reductions were a pass) into conv1's padded backward-data
        (line,) = lines
        assert ", %w1, %conv0_y, " in line and " pre %conv1_y, " in line and " relu :" in line \
            and "pads [1, 1, 1, 1]" in line
        dy = line.split(" = ")[0].split(", ")[5]
        assert re.search(f"nn.conv2d_backward_filter %relu0_y_[a-z]+, {dy} ", ir)
        assert ir.count("= fused.batch_norm_backward_apply") == 2  # bn0 (no backward-data), bn2 (strided)
    else:  # every BatchNorm whose gradient feeds a stride-1 backward-data with sums: bn1, bn2, bn3 per block
        assert len(lines) == 6 and ir.count("= fused.batch_norm_backward_apply") == 1  # the stem's bn0
    assert ir.count('backward = "pre-processing"') == len(lines)
    timed_as_simulated(model, {"fused.conv2d_backward_data_sums"})


def timed_as_simulated(model, ops: set[str]) -> None:
    from nncc.compiler.bench import target_options
    from nncc.compiler.pipeline import Options, compile_model
    from nncc.compiler.registry import Registry
    from nncc.compiler.training import program_of
    from nncc.runtime.interpreter import run
    from nncc.support import check

    compilation = compile_model(model, Registry.default(), Options(target_options=target_options("fusion"), training={}),
                                until="isa")
    program = program_of(compilation)
    inputs = check.random_inputs({s.name: s.shape for s in program.symbols_of("input")}, seed=0)
    result = run(program, inputs)
    timed = [(layer, program.predictions[i]) for i, layer in enumerate(result.layers)
             if layer.op in ops and i in program.predictions]
    assert timed
    for layer, prediction in timed:
        assert (prediction["predicted_cycles"], prediction["predicted_dram_read_bytes"],
                prediction["predicted_dram_write_bytes"]) == \
            (layer.cycles, layer.dram_read_bytes, layer.dram_write_bytes), layer.name
