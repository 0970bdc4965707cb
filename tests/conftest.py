"""Shared helpers: small ONNX models built with onnx.helper; memory handed back after each module."""

import contextlib
import ctypes
import fcntl
import gc
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018  (glibc only)
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _glibc()
if _LIBC is not None:
    # Blocks of 1 MiB and more (weights, serialized models) straight from mmap, returned to the
    # system when freed: glibc's default raises this threshold as large blocks are freed, and the
    # zoo models' freed weights then stay in the heap, counted in the process's memory.
    M_MMAP_THRESHOLD = -3
    _LIBC.mallopt(M_MMAP_THRESHOLD, 1 << 20)


@pytest.fixture(autouse=True, scope="module")
def _release_memory():
    """Before and after each test module (after its own caches' teardown): collect, and hand the
    freed heap back to the system, so one worker does not carry a module's models into the next.
    (Before as well: the previous module's last test holds its fixture values until it is done.)"""
    _trim()
    yield
    _trim()


def _trim():
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


@pytest.fixture(scope="session")
def release_memory():
    """release_memory(): collect, and hand the freed heap back to the system."""
    return _trim


_HOLDING_TURN = False


@contextlib.contextmanager
def _big_memory_turn(request):
    """Tests marked `big_memory` (VGG-16 and ResNet-50 built, compiled and run: up to 1.2 GB at
    once) take turns across the pytest-xdist workers, so two of them never peak together; a
    module marked as a whole (its cache keeps several models) takes one turn for all its tests."""
    global _HOLDING_TURN
    if "PYTEST_XDIST_WORKER" not in os.environ or _HOLDING_TURN:
        yield
        return
    # the workers' temporary folders share the run's folder (pytest-of-USER/pytest-N/popen-gwK)
    shared = request.getfixturevalue("tmp_path_factory").getbasetemp().parent
    with open(shared / "big_memory.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _HOLDING_TURN = True
        try:
            yield
        finally:
            _trim()  # what the test freed goes back before the other worker's turn
            _HOLDING_TURN = False
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(autouse=True, scope="module")
def _big_memory_module(request, _release_memory):
    if request.node.get_closest_marker("big_memory") is None:
        yield
        return
    with _big_memory_turn(request):
        yield


@pytest.fixture(autouse=True)
def _big_memory_test(request):
    if request.node.get_closest_marker("big_memory") is None:
        yield
        return
    with _big_memory_turn(request):
        yield
    _trim()


def build_model(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    """`inputs`/`outputs`: (name, shape) pairs, float32; `initializers`: (name, array) pairs."""
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in initializers],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def conv_bn_relu_fc(rng: np.random.Generator) -> onnx.ModelProto:
    """conv 3x3/2 -> BN -> ReLU -> max pool (ceil) -> PyTorch-style flatten -> gemm."""
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv1", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["bn"], name="bn1"),
        helper.make_node("Relu", ["bn"], ["r"], name="relu1"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1], ceil_mode=1),
        helper.make_node("Shape", ["p"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "zero"], ["n"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["n", "axis0"], ["n1"], name="unsqueeze"),
        helper.make_node("Concat", ["n1", "minus1"], ["flat_shape"], name="concat", axis=0),
        helper.make_node("Reshape", ["p", "flat_shape"], ["f"], name="flatten"),
        helper.make_node("Identity", ["f"], ["f2"], name="identity"),
        helper.make_node("Gemm", ["f2", "FW", "FB"], ["y"], name="fc", transB=1),
    ]
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    initializers = [
        ("W", f32(8, 3, 3, 3)), ("B", f32(8)), ("g", f32(8)), ("b", f32(8)), ("m", f32(8)),
        ("v", rng.uniform(0.5, 2.0, 8).astype(np.float32)),
        ("zero", np.array(0, dtype=np.int64)), ("axis0", np.array([0], dtype=np.int64)),
        ("minus1", np.array([-1], dtype=np.int64)), ("FW", f32(10, 200) * 0.1), ("FB", f32(10)),
    ]
    return build_model(nodes, [("x", [1, 3, 16, 16])], [("y", [1, 10])], initializers)


@pytest.fixture
def small_model_path(tmp_path: Path) -> Path:
    path = tmp_path / "small.onnx"
    onnx.save(conv_bn_relu_fc(np.random.default_rng(0)), path)
    return path


@pytest.fixture
def make_model():
    """The `build_model` helper, for tests that build their own graphs."""
    return build_model


@pytest.fixture
def write_model(tmp_path: Path):
    """Save a model under tmp_path and return its path."""

    def write(model: onnx.ModelProto, name: str = "model.onnx") -> Path:
        path = tmp_path / name
        onnx.save(model, path)
        return path

    return write



@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """`saved_models(models)`: each ONNX model of a {name: model} dict saved once per test module."""

    def save(models: dict) -> dict[str, Path]:
        root = tmp_path_factory.mktemp("models")
        for name, model in models.items():
            onnx.save(model, root / f"{name}.onnx")
        return {name: root / f"{name}.onnx" for name in models}

    return save


@pytest.fixture
def passes_check(capsys, tmp_path):
    """`passes_check(path, target)`: nncc compiles the model for `target`, runs it and holds every
    output to onnxruntime's (`--check`); fails the test with nncc's stderr otherwise."""
    from nncc.compiler.cli import main

    def check(path: Path, target: str) -> None:
        program = [] if target == "reference" else ["--program", str(tmp_path / "prog")]
        code = main([str(path), f"--target={target}", "--check", *program])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert "check passed" in out

    return check

