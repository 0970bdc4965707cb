"""A strided conv's backward-data as one nest of phases (`training_nest.phases_nest`): each phase
(rows r, r + s, ...; columns likewise) of dx a stride-1 conv of dy with the kernel taps that reach
it, stored in place through a strided view of dx; no transpose, concat or slice of dx. Checked
against PyTorch autograd on every target for strides that drop input rows, asymmetric pads,
dilation, 1x1 stride 2 (phases no tap reaches: zeros) and groups; its cycles and DRAM bytes as
the cost model predicts them."""

import json

import pytest

from nncc.compiler.cli import main

pytest.importorskip("torch")

STRIDED = ["conv1_y_grad_input", "conv2_y_grad_input", "conv3_y_grad_input", "conv4_y_grad_input"]


@pytest.mark.parametrize("target", ["reference", "fusion", "vector", "edge"])
def test_strided_backward_data_matches_torch(target, model_file, tmp_path, capsys):
    report = tmp_path / "r.json"
    code = main([str(model_file("strided")), "--train", f"--target={target}", "--check", "--report", str(report)])
    out, err = capsys.readouterr()
    data = json.loads(report.read_text())
    failures = {k: v for k, v in data["check"]["tensors"].items() if not v["passed"]}
    assert code == 0 and not failures, (out, err, failures)
    if target != "reference":  # each strided backward-data is one nest, with no moves of its own
        rows = [row for row in data["layers"] if row["name"] in STRIDED]
        assert sorted((row["name"], row["op"]) for row in rows) == \
            [(name, "nn.conv2d_backward_data") for name in STRIDED]


def test_phase_nests_are_predicted(model_file):
    """The cost model times the phases' nest: its cycles and DRAM bytes are the simulated ones."""
    from nncc.compiler.bench import target_options
    from nncc.compiler.pipeline import Options, compile_model
    from nncc.compiler.registry import Registry
    from nncc.compiler.training import program_of
    from nncc.runtime.interpreter import run
    from nncc.support import check

    compilation = compile_model(model_file("strided"), Registry.default(),
                                Options(target_options=target_options("fusion"), training={}), until="isa")
    program = program_of(compilation)
    result = run(program, check.random_inputs({s.name: s.shape for s in program.symbols_of("input")}, seed=0))
    rows = [(layer, program.predictions[i]) for i, layer in enumerate(result.layers) if layer.name in STRIDED]
    assert len(rows) == 4
    for layer, prediction in rows:
        assert (prediction["predicted_cycles"], prediction["predicted_dram_read_bytes"],
                prediction["predicted_dram_write_bytes"]) == \
            (layer.cycles, layer.dram_read_bytes, layer.dram_write_bytes), layer.name


def small_plane_model(graph, tmp_path):
    """A 3x3 conv (pad 1) on 2x2 maps, batch 8: ResNet-50's last stage at 64x64."""
    g = graph(7)
    x = g.node("Conv", ["x", g.init("pre", (32, 2, 1, 1))], "pre")
    y = g.node("Conv", [x, g.init("w", (32, 32, 3, 3))], "conv", pads=[1, 1, 1, 1])
    y = g.node("Conv", [y, g.init("post", (1, 32, 1, 1))], "post")
    return g.save(tmp_path / "small.onnx", [8, 2, 2, 2], y, output_rank=4)


@pytest.mark.parametrize("target", ["fusion", "edge"])
def test_small_planes_take_several_images_per_tile(target, graph, tmp_path, capsys):
    """A backward-data tile that is a whole 2x2 plane takes the batch's 8 images (their rows
    interleaved on chip: the conv reads them with its row dilation times 8, one matmul per kernel
    row for all of them; the rows above and below the images are padding boxes), as the cost model
    chooses; the step matches PyTorch."""
    model = small_plane_model(graph, tmp_path)
    assert main([str(model), "--train", f"--target={target}", "--loss", "mse", "--emit=tile"]) == 0
    ir = capsys.readouterr().out
    nest = ir[ir.index('tile.nest "conv_y_grad_input"'):]
    assert "= 0 to 8 step 8, %oh" in nest.split("tile.store")[0]
    assert "[8, %tic" in nest and "dims [2, 0, 3, 1]" in nest and "dilations [8, 1]" in nest
    report = tmp_path / "r.json"
    code = main([str(model), "--train", f"--target={target}", "--loss", "mse", "--check", "--report", str(report)])
    out, err = capsys.readouterr()
    data = json.loads(report.read_text())
    assert code == 0 and all(v["passed"] for v in data["check"]["tensors"].values()), (out, err)


@pytest.mark.parametrize("interleave", [False, True], ids=["strided-views", "interleaved"])
@pytest.mark.parametrize("target", ["fusion", "vector", "edge"])
def test_both_phase_forms_match_torch(target, interleave, model_file, tmp_path, capsys, monkeypatch):
    """Each form of the phases nest, forced (the cost model picks one per shape): the phases
    stored through strided views of dx, or interleaved on chip and stored in whole rows."""
    from nncc.compiler.codegen import training_nest

    build = training_nest.build_phases_nest
    forms = []
    monkeypatch.setattr(training_nest, "build_phases_nest",
                        lambda *args, **kwargs: forms.append(interleave) or build(*args[:5], interleave))
    report = tmp_path / "r.json"
    code = main([str(model_file("strided")), "--train", f"--target={target}", "--check", "--report", str(report)])
    out, err = capsys.readouterr()
    data = json.loads(report.read_text())
    failures = {k: v for k, v in data["check"]["tensors"].items() if not v["passed"]}
    assert code == 0 and not failures and forms, (out, err, failures)


def test_stride_2_shortcut_on_vector_is_interleaved(graph, tmp_path):
    """ResNet-50's layer2 shortcut (1x1, stride 2, 256 -> 512 at 56x56, batch 2) on `vector`: dx
    is NCHW, so a phase stored through its strided view is a DRAM burst per float; the cost model
    keeps the interleaved form (whole rows of dx: 3.16 M -> 1.13 M cycles) and times it exactly;
    its only DRAM writes are dx, once."""
    import onnx

    from nncc.compiler.bench import single_conv_model, target_options
    from nncc.compiler.pipeline import Options, compile_model
    from nncc.compiler.registry import Registry
    from nncc.compiler.training import program_of
    from nncc.dialects import tile
    from nncc.runtime.interpreter import run
    from nncc.support import check

    path = tmp_path / "shortcut.onnx"
    onnx.save(single_conv_model(2, 256, 512, 56, 1, 2), str(path))
    options = Options(target_options=target_options("vector"), training={"loss": "mse"})
    module = compile_model(path, Registry.default(), options, until="tile").module
    nest = next(op for op in module.walk() if isinstance(op, tile.NestOp) and op.layer.data == "y_grad_input")
    stores = [op for op in nest.walk() if isinstance(op, tile.StoreOp)]
    assert len(stores) == 1 and stores[0].tensor is nest.block.args[-1]  # dx itself, not a phase's view
    program = program_of(compile_model(path, Registry.default(), options, until="isa"))
    result = run(program, check.random_inputs({s.name: s.shape for s in program.symbols_of("input")}, seed=0))
    index, layer = next((i, la) for i, la in enumerate(result.layers) if la.name == "y_grad_input")
    assert program.predictions[index]["predicted_cycles"] == layer.cycles
    assert layer.dram_write_bytes == 4 * 2 * 256 * 56 * 56
    assert layer.macs / (layer.cycles * 4 * 16 * 3) >= 0.9, layer.cycles
