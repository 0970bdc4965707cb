"""Several cores sharing one on-chip memory (`edge`'s BUF, `shared = true`, with cores > 1): each
core's own tiles get their own copy in the one instance, a block the cores share is written
once (no multicast into a memory that has one instance), the outputs agree with onnxruntime and
the cost model predicts the simulated cycles and DRAM bytes of every layer."""

import numpy as np
import pytest
from onnx import helper

from nncc.compiler.codegen.lower import lower_module
from nncc.runtime.interpreter import run
from nncc.runtime.target import load_target
from tests.codegen import helpers as h



def kind(ins) -> str:
    return type(ins).DEF.mnemonic


def block_model():
    """A conv whose output tiles the cores split (one weight block for both), an inverted
    residual block (a fused group on edge), pooling and an FC."""
    rng = np.random.default_rng(1)
    node = helper.make_node
    weights = [("w0", rng.standard_normal((32, 8, 3, 3)) * 0.2), ("b0", rng.standard_normal(32) * 0.1),
               ("w1", rng.standard_normal((96, 32, 1, 1)) * 0.2),
               ("w2", rng.standard_normal((96, 1, 3, 3)) * 0.3),
               ("w3", rng.standard_normal((32, 96, 1, 1)) * 0.1),
               ("wf", rng.standard_normal((10, 32)) * 0.2), ("bf", rng.standard_normal(10) * 0.1)]
    return h.build_model([
        node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]), node("Relu", ["c0"], ["r0"]),
        node("Conv", ["r0", "w1"], ["e"]), node("Relu", ["e"], ["e6"]),
        node("Conv", ["e6", "w2"], ["d"], group=96, pads=[1, 1, 1, 1]),
        node("Relu", ["d"], ["d6"]),
        node("Conv", ["d6", "w3"], ["p"]), node("Add", ["p", "r0"], ["s"]),
        node("MaxPool", ["s"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
        node("GlobalAveragePool", ["m"], ["g"]), node("Flatten", ["g"], ["f"]),
        node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)],
        [("x", [1, 8, 24, 24])], [("y", None)], weights)


@pytest.fixture(scope="module")
def runs():
    model = block_model()
    module, store = h.compile_fused(model)
    out = {}
    for cores in (1, 2):
        program = lower_module(module.clone(), store, load_target("edge", [f"cores={cores}"]))
        out[cores] = program, run(program, h.random_inputs(model, 0))
    return model, out


def test_two_cores_on_one_buffer_match_onnxruntime(runs):
    model, out = runs
    expected = h.ort_outputs(model, h.random_inputs(model, 0))[0]
    for cores, (_, result) in out.items():
        ok, error, scale = h.within_scale(result.outputs["y"], expected)
        assert ok, (cores, error, scale)


def test_no_multicast_into_the_one_instance(runs):
    _, out = runs
    program, _ = out[2]
    loads = [ins for ins in program.instructions if kind(ins) == "dma" and ins.dst[0] == "BUF"]
    assert loads and all(len(ins.cores) == 1 for ins in loads)
    computing = {ins.core for ins in program.instructions if kind(ins) in ("matmul", "vfma", "vpool", "vred")}
    assert computing == {0, 1}


def test_each_core_has_its_own_output_tiles(runs):
    """The output tiles two cores write in one layer lie at different BUF addresses."""
    _, out = runs
    program, _ = out[2]
    written: dict[int, set[int]] = {0: set(), 1: set()}
    for ins in program.instructions:
        if kind(ins) == "dma" and ins.src[0] == "BUF":  # a store: from a core's output tile
            written[ins.src_core].add(ins.src[1])
    assert written[0] and written[1] and not written[0] & written[1]


def test_prediction_equals_simulation(runs):
    _, out = runs
    for cores, (program, result) in out.items():
        assert set(program.predictions) == set(range(len(result.layers)))
        for index, layer in enumerate(result.layers):
            prediction = program.predictions[index]
            assert (prediction["predicted_cycles"], prediction["predicted_dram_read_bytes"],
                    prediction["predicted_dram_write_bytes"]) == \
                (layer.cycles, layer.dram_read_bytes, layer.dram_write_bytes), (cores, layer.name)


def test_two_cores_are_faster(runs):
    _, out = runs
    assert out[2][1].cycles < out[1][1].cycles


def test_small_buffer_counts_one_copy_per_core():
    """With a BUF that fits one core's tiles but is split between two, the tiles shrink and the
    outputs still match."""
    h.check_on_target(block_model(), "edge", ("cores=2", "memory.BUF.size_bytes=16384"))


def test_training_step_on_two_cores_matches_pytorch(tmp_path, capsys):
    """A training step (elementwise gradients, BatchNorm-free backward convs, SGD) on edge with two
    cores: every streaming nest sizes its tiles for one core's share of BUF."""
    import onnx

    from nncc.compiler.cli import main

    model = tmp_path / "block.onnx"
    onnx.save(block_model(), str(model))
    code = main([str(model), "--train", "--batch", "2", "--target=edge", "--target-set", "cores=2",
                 "--target-set", "memory.BUF.size_bytes=65536", "--check", "--program", str(tmp_path / "p")])
    assert code == 0, capsys.readouterr().err
    assert "check passed against PyTorch" in capsys.readouterr().out
