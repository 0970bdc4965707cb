"""Issue 10, false refusals of legal models: every case compiles, runs and matches onnxruntime
(`nncc --check`, in process).

- a layer whose scheduler needs more semaphore pairs than the machine has semaphores (a
  standalone BatchNormalization of 1x64x112x112 and a DenseNet block on `vector`): the scheduler
  reuses semaphores (`scheduler.SemaphoreAllocator`), and when none can be reused puts a barrier
  in the layer; a machine with few semaphores shows the barriers, and the cost model still
  predicts the simulated cycles;
- a max/average pool with ceil_mode whose window is longer than the padded input;
- a dilated conv whose weights for one output element do not fit a 32 KiB WBUF: the tiler
  splits the input channels; when nothing fits, the message names the memory that is too small.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nncc.compiler.cli import main
from nncc.compiler.codegen import scheduler
from nncc.runtime import isa
from nncc.runtime.program_file import load

TARGETS = ("vector", "fusion", "edge")


def save(path, nodes, x_shape, y_shape, initializers=(), opset=13):
    graph = helper.make_graph(nodes, path.stem, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def check(model, target: str, *extra: str) -> dict:
    """Compile, run and compare with onnxruntime; the report."""
    report = model.with_name(f"{model.stem}.{target}.json")
    assert main([str(model), f"--target={target}", "--check", "--report", str(report), "-q", *extra]) == 0
    data = json.loads(report.read_text())
    assert data["check"]["passed"]
    return data


def layer_semaphores(program) -> list[tuple[str, int, int]]:
    """(layer, highest semaphore number, barriers inside the layer) of every layer."""
    rows = []
    for ins in program.instructions:
        mnemonic = type(ins).DEF.mnemonic
        if mnemonic == "layer":
            rows.append([ins.name, -1, -1])  # the layer's closing barrier is not inside it
        elif mnemonic == "barrier":
            rows[-1][2] += 1
        else:
            rows[-1][1] = max(rows[-1][1], *ins.wait, *ins.signal, -1)
    return [tuple(row) for row in rows]


def constant(rng, name, shape, low=-1.0, high=1.0):
    return numpy_helper.from_array(rng.uniform(low, high, shape).astype(np.float32), name)


def batch_norm(rng, prefix, x, y, channels):
    names = [f"{prefix}_{p}" for p in ("scale", "bias", "mean", "var")]
    inits = [constant(rng, names[0], channels, 0.5, 1.5), constant(rng, names[1], channels),
             constant(rng, names[2], channels), constant(rng, names[3], channels, 0.5, 1.5)]
    return helper.make_node("BatchNormalization", [x, *names], [y]), inits


# --------------------------------------------------------------------------- semaphores


def test_standalone_batch_norm_1x64x112x112(tmp_path):
    """64 semaphore names (4 cores x 2 slots x x/scale/shift/out, full/free/done) before; reused now."""
    rng = np.random.default_rng(0)
    node, inits = batch_norm(rng, "bn", "x", "y", 64)
    model = save(tmp_path / "bn.onnx", [node], [1, 64, 112, 112], [1, 64, 112, 112], inits)
    check(model, "vector")
    [(_, highest, barriers)] = layer_semaphores(load(tmp_path / "bn.vector.nnbin"))
    assert highest < isa.MAX_SEMAPHORES and barriers == 0  # reuse was enough: no barrier, no time lost


def test_densenet_block(tmp_path):
    """A DenseNet layer at 56x56: BN + ReLU of the block input (not after a conv: not folded),
    1x1 conv, BN, ReLU, 3x3 conv, concat."""
    rng = np.random.default_rng(1)
    nodes, inits = [], []
    for node, params in (batch_norm(rng, "bn1", "x", "b1", 64), batch_norm(rng, "bn2", "c1", "b2", 32)):
        nodes.append(node)
        inits += params
    inits += [constant(rng, "w1", (32, 64, 1, 1), -0.2, 0.2), constant(rng, "w2", (8, 32, 3, 3), -0.1, 0.1)]
    nodes[1:1] = [helper.make_node("Relu", ["b1"], ["r1"]), helper.make_node("Conv", ["r1", "w1"], ["c1"])]
    nodes += [helper.make_node("Relu", ["b2"], ["r2"]),
              helper.make_node("Conv", ["r2", "w2"], ["c2"], pads=[1, 1, 1, 1]),
              helper.make_node("Concat", ["x", "c2"], ["y"], axis=1)]
    model = save(tmp_path / "dense.onnx", nodes, [1, 64, 56, 56], [1, 72, 56, 56], inits)
    check(model, "vector")


@pytest.mark.parametrize("target", ["vector", "edge"])
def test_a_machine_with_few_semaphores(tmp_path, monkeypatch, target):
    """With 6 semaphores, layers need barriers: every program uses only semaphores 0..5, the
    outputs still match, and the cost model predicts the simulated cycles, barriers included."""
    monkeypatch.setattr(scheduler, "SEMAPHORES", 6)
    rng = np.random.default_rng(2)
    node, inits = batch_norm(rng, "bn", "c2", "y", 32)
    inits += [constant(rng, "w1", (32, 8, 3, 3), -0.2, 0.2), constant(rng, "w2", (32, 32, 1, 1), -0.2, 0.2)]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"]), node]
    model = save(tmp_path / "few.onnx", nodes, [1, 8, 48, 48], [1, 32, 48, 48], inits)
    report = check(model, target)
    rows = layer_semaphores(load(tmp_path / f"few.{target}.nnbin"))
    assert all(highest < 6 for _, highest, _ in rows)
    assert sum(barriers for _, _, barriers in rows) > 0
    convs = [row for row in report["layers"] if "predicted_cycles" in row]
    assert convs and all(row["predicted_cycles"] == row["cycles"] for row in convs)


def test_allocator_reuses_only_what_is_known_consumed():
    """Two independent engine pairs (load a -> core a, load b -> core b): with one semaphore, b's
    pair cannot reuse a's (core b does not know core a has waited): a barrier. On one engine
    pair, the semaphore is reused once its wait has run before the next signal."""
    allocator = scheduler.SemaphoreAllocator(engines=4, count=1)
    _, _, clock = allocator.issue(("dma", 0), [])
    token = allocator.signal(clock)
    barrier, pairs, _ = allocator.issue((0, "main"), [token])
    assert not barrier and [p for _, p in pairs] == [0]
    _, _, clock = allocator.issue(("dma", 1), [])
    token = allocator.signal(clock)
    barrier, pairs, _ = allocator.issue((1, "main"), [token])
    assert barrier and pairs == [] and allocator.barriers == 1

    # load -> compute (full), compute -> next load into the slot (free), one slot: two
    # semaphores serve any number of jobs
    allocator = scheduler.SemaphoreAllocator(engines=4, count=2)
    free = None
    for _ in range(5):
        barrier, _, clock = allocator.issue(("dma", 0), [free] if free else [])
        full = allocator.signal(clock)
        assert not barrier
        barrier, _, clock = allocator.issue((0, "main"), [full])
        free = allocator.signal(clock)
        assert not barrier
    assert allocator.barriers == 0 and allocator.fresh == 2


# --------------------------------------------------------------------------- pooling, ceil_mode


@pytest.mark.parametrize("op, count_include_pad", [("MaxPool", None), ("AveragePool", 0), ("AveragePool", 1)])
def test_ceil_mode_window_longer_than_the_input(tmp_path, op, count_include_pad):
    """A 4x2 window (stride 2) over 3x7: ceil_mode gives one row of windows that hang off the
    bottom, as onnxruntime (average over the valid elements only with count_include_pad=0)."""
    attributes = {"kernel_shape": [4, 2], "strides": [2, 2], "ceil_mode": 1}
    if count_include_pad is not None:
        attributes["count_include_pad"] = count_include_pad
    model = save(tmp_path / f"{op}{count_include_pad}.onnx", [helper.make_node(op, ["x"], ["y"], **attributes)],
                 [1, 3, 3, 7], [1, 3, 1, 4])
    for target in ("reference", *TARGETS):
        check(model, target)


def test_ceil_mode_with_padding_and_both_axes(tmp_path):
    """A 5x3 window, stride 3x2, pads (1, 0, 0, 1) over 3x5: longer than the padded input along
    the rows, hanging off the end along the columns."""
    model = save(tmp_path / "avg.onnx", [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[5, 3],
                                                          strides=[3, 2], pads=[1, 0, 0, 1], ceil_mode=1)],
                 [1, 2, 3, 5], [1, 2, 1, 3])
    for target in ("reference", "vector"):
        check(model, target)


def test_no_window_at_all_is_still_refused(tmp_path, capsys):
    """Without ceil_mode a window longer than the padded input gives no output: one line."""
    model = save(tmp_path / "empty.onnx", [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[4, 2])],
                 [1, 3, 3, 7], [1, 3, 0, 6])
    assert main([str(model), "--target=reference"]) != 0
    assert "window 4 is larger than the padded input 3" in capsys.readouterr().err


# --------------------------------------------------------------------------- conv working set


def dilated_conv(tmp_path):
    rng = np.random.default_rng(3)
    node = helper.make_node("Conv", ["x", "w"], ["y"], dilations=[2, 2], pads=[2, 2, 2, 2])
    return save(tmp_path / "dilated.onnx", [node], [1, 256, 8, 8], [1, 64, 8, 8],
                [constant(rng, "w", (64, 256, 3, 3), -0.05, 0.05)])


@pytest.mark.parametrize("memories", [("WBUF",), ("IBUF", "WBUF", "OBUF")])
def test_dilated_conv_splits_the_reduction(tmp_path, memories):
    """3x3 weights of 16 input channels x 32 output channels, two slots, are 37 KiB: with a
    32 KiB WBUF the tiler takes fewer input channels per tile instead of refusing."""
    model = dilated_conv(tmp_path)
    check(model, "fusion", *(f"--target-set=memory.{m}.size_bytes=32768" for m in memories))


def test_nothing_fits_names_the_memory(tmp_path, capsys):
    model = dilated_conv(tmp_path)
    assert main([str(model), "--target=fusion", "--target-set=memory.IBUF.size_bytes=128",
                 "--target-set=memory.WBUF.size_bytes=128"]) != 0
    err = capsys.readouterr().err
    assert "IBUF needs 256 bytes" in err and "128 bytes short" in err and "WBUF" not in err
    assert main([str(model), "--target=edge", "--target-set=memory.BUF.size_bytes=256"]) != 0
    assert "BUF needs 512 bytes (2 x input 128 + weight 64 + output 64) but has 256" in capsys.readouterr().err
