"""The model zoo: torchvision parameter/MAC counts, structure, numerical health, the CLI."""

from __future__ import annotations

import math
import subprocess
import sys
from functools import cache, lru_cache

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from nncc.compiler import zoo, zoo_cli
from nncc.support.errors import NnccError

# torchvision's published numbers at 224x224
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "mobilenet_v2": 3_504_872,
    "vgg16": 138_357_544,
    "squeezenet1_1": 1_235_496,
    "densenet121": 7_978_856,
}
TORCHVISION_GMACS = {"resnet18": 1.82, "resnet50": 4.09, "mobilenet_v2": 0.30, "vgg16": 15.47, "squeezenet1_1": 0.35,
                     "densenet121": 2.83}
CONV_COUNTS = {"resnet18": 20, "resnet50": 53, "mobilenet_v2": 52, "vgg16": 13, "squeezenet1_1": 26,
               "densenet121": 120}
STRIDED_CONVS = {
    "resnet18": {"conv1", "layer2.0.conv1", "layer2.0.downsample.0", "layer3.0.conv1",
                 "layer3.0.downsample.0", "layer4.0.conv1", "layer4.0.downsample.0"},
    "resnet50": {"conv1", "layer2.0.conv2", "layer2.0.downsample.0", "layer3.0.conv2",
                 "layer3.0.downsample.0", "layer4.0.conv2", "layer4.0.downsample.0"},
    "mobilenet_v2": {"features.0.0", "features.2.conv.1.0", "features.4.conv.1.0",
                     "features.7.conv.1.0", "features.14.conv.1.0"},
    "vgg16": set(),
    "squeezenet1_1": {"features.0"},
    "densenet121": {"features.conv0"},
}  # fmt: skip


@lru_cache(maxsize=len(zoo.MODELS))
def model(name: str, batch: int, resolution: int) -> onnx.ModelProto:
    """The tests take every model at one size, then every model at the next: one size is kept."""
    return zoo.build_model(name, batch=batch, resolution=resolution)


class _Undrawn(np.ndarray):
    """Weights that were never drawn: all zeros, every element aliasing one float (no memory);
    scaling them in place (`weights *= std`) is a no-op."""

    def __imul__(self, other):
        return self


@cache
def weightless(name: str) -> onnx.ModelProto:
    """Zoo model `name` at 224, built by the zoo's own code (graph, shapes, initializer names and
    dims, the 2 GiB guard) but without drawing or storing weight values: the parameter and MAC
    counts depend on the dims only, and VGG-16's 138M weights at 224 would take 550 MB (and twice
    that while the proto is built)."""

    def undrawn(rng, shape):
        zero = np.zeros(1, np.float32)
        return np.lib.stride_tricks.as_strided(zero, shape, (0,) * len(shape), writeable=True).view(_Undrawn)

    def dims_only(graph, name, array):
        tensor = graph.initializer.add(name=name, data_type=onnx.TensorProto.FLOAT)
        tensor.dims.extend(np.shape(array))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(zoo, "standard_normal", undrawn)
        patch.setattr(zoo, "add_initializer", dims_only)
        return zoo.build_model(name, batch=1, resolution=224)


@pytest.fixture(autouse=True, scope="module")
def free_models():
    """Drop the cached models when this module is done."""
    yield
    model.cache_clear()
    weightless.cache_clear()


def nodes(m: onnx.ModelProto, op: str) -> list[onnx.NodeProto]:
    return [n for n in m.graph.node if n.op_type == op]


def attribute(node: onnx.NodeProto, name: str, default=None):
    found = [onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name]
    return found[0] if found else default


def initializers(m: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in m.graph.initializer}


# The module's cache keeps up to five models (VGG-16: 38M weights at 32): the whole module takes
# one turn among the big_memory tests of the other worker.
pytestmark = pytest.mark.big_memory


# ---- counts at 224 -------------------------------------------------------------------


@pytest.mark.parametrize("name", zoo.MODELS)
def test_parameter_count_is_torchvisions(name):
    assert zoo.count_parameters(weightless(name)) == TORCHVISION_PARAMS[name]


def skeleton(m: onnx.ModelProto) -> onnx.ModelProto:
    """The model without weight data and without the zoo's value_info, for ONNX shape inference."""
    bare = onnx.ModelProto()
    bare.ir_version = m.ir_version
    bare.opset_import.extend(m.opset_import)
    graph = bare.graph
    graph.node.extend(m.graph.node)
    graph.input.extend(m.graph.input)
    graph.output.extend(m.graph.output)
    for t in m.graph.initializer:
        graph.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims)
    return bare


def shapes_by_onnx(m: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    inferred = onnx.shape_inference.infer_shapes(skeleton(m), strict_mode=True).graph
    shapes = {t.name: tuple(t.dims) for t in inferred.initializer}
    for info in (*inferred.input, *inferred.value_info, *inferred.output):
        shapes[info.name] = tuple(d.dim_value for d in info.type.tensor_type.shape.dim)
    return shapes


def macs_by_onnx(m: onnx.ModelProto) -> int:
    """MACs recomputed from ONNX's own shape inference (independent of zoo.count_macs)."""
    shapes, macs = shapes_by_onnx(m), 0
    for node in m.graph.node:
        if node.op_type == "Conv":
            cin = shapes[node.input[0]][1]
            kh, kw = shapes[node.input[1]][2:]
            macs += math.prod(shapes[node.output[0]]) * cin // attribute(node, "group", 1) * kh * kw
        elif node.op_type == "Gemm":
            m_rows, k = shapes[node.input[0]]
            macs += m_rows * shapes[node.output[0]][1] * k
    return macs


@pytest.mark.parametrize("name", zoo.MODELS)
def test_mac_count_is_torchvisions(name):
    macs = macs_by_onnx(weightless(name))
    assert macs == pytest.approx(TORCHVISION_GMACS[name] * 1e9, rel=0.02)
    assert zoo.count_macs(weightless(name)) == macs


# ---- structure -----------------------------------------------------------------------


@pytest.mark.parametrize("name", zoo.MODELS)
def test_names_are_unique_and_meaningful(name):
    m = model(name, 1, 32)
    node_names = [n.name for n in m.graph.node]
    assert all(node_names) and len(set(node_names)) == len(node_names)
    weight_names = [t.name for t in m.graph.initializer]
    assert len(set(weight_names)) == len(weight_names)
    for conv in nodes(m, "Conv"):
        assert conv.input[1] == f"{conv.name}.weight"


@pytest.mark.parametrize("name", zoo.MODELS)
def test_conv_count_and_strides(name):
    convs = nodes(model(name, 1, 32), "Conv")
    assert len(convs) == CONV_COUNTS[name]
    strided = {c.name for c in convs if attribute(c, "strides") != [1, 1]}
    assert strided == STRIDED_CONVS[name]


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2"])
def test_batchnorm_is_unfolded_with_nontrivial_statistics(name):
    m = model(name, 1, 32)
    consumers = {n.input[0]: n for n in m.graph.node}
    weights = initializers(m)
    for conv in nodes(m, "Conv"):
        assert len(conv.input) == 2, f"{conv.name} has a bias"
        assert consumers[conv.output[0]].op_type == "BatchNormalization"
    for bn in nodes(m, "BatchNormalization"):
        gamma, beta, mean, var = (numpy_helper.to_array(weights[i]) for i in bn.input[1:])
        assert (var > 0).all()
        assert min(gamma.std(), beta.std(), mean.std(), var.std()) > 1e-3, bn.name


def test_resnet_stem_and_head():
    m = model("resnet50", 1, 32)
    stem, pool = nodes(m, "Conv")[0], nodes(m, "MaxPool")[0]
    assert (attribute(stem, "kernel_shape"), attribute(stem, "pads")) == ([7, 7], [3, 3, 3, 3])
    assert (attribute(pool, "kernel_shape"), attribute(pool, "strides"), attribute(pool, "pads")) == (
        [3, 3], [2, 2], [1, 1, 1, 1])  # fmt: skip
    assert [n.op_type for n in m.graph.node[-3:]] == ["GlobalAveragePool", "Flatten", "Gemm"]
    assert len(nodes(m, "Add")) == 16


def test_mobilenet_v2_relu6_and_depthwise():
    m = model("mobilenet_v2", 1, 32)
    clips = nodes(m, "Clip")
    assert len(clips) == 35 and all(len(c.input) == 3 for c in clips)
    weights = initializers(m)
    bounds = {float(numpy_helper.to_array(weights[c.input[i]])) for c in clips for i in (1, 2)}
    assert bounds == {0.0, 6.0}
    depthwise = [c for c in nodes(m, "Conv") if attribute(c, "group", 1) > 1]
    assert len(depthwise) == 17
    assert all(weights[c.input[1]].dims[1] == 1 for c in depthwise)
    assert len(nodes(m, "Add")) == 10
    assert weights["features.18.0.weight"].dims[0] == 1280


def test_vgg16_layers():
    m = model("vgg16", 1, 32)
    assert len(nodes(m, "MaxPool")) == 5
    assert all(len(c.input) == 3 for c in nodes(m, "Conv"))  # conv + bias, no BN
    assert not nodes(m, "BatchNormalization")
    assert [g.name for g in nodes(m, "Gemm")] == ["classifier.0", "classifier.3", "classifier.6"]
    assert len(nodes(m, "Dropout")) == 2


def test_squeezenet1_1_layers():
    m = model("squeezenet1_1", 1, 32)
    pools = nodes(m, "MaxPool")
    assert len(pools) == 3 and all(attribute(p, "ceil_mode") == 1 for p in pools)
    assert len(nodes(m, "Concat")) == 8
    assert [n.op_type for n in m.graph.node[-4:]] == ["Conv", "Relu", "GlobalAveragePool", "Flatten"]


# ---- numerics ------------------------------------------------------------------------


SIZES = [(1, 32), (2, 64)]


@pytest.mark.parametrize(("batch", "resolution", "name"), [(b, r, n) for b, r in SIZES for n in zoo.MODELS],
                         ids=[f"{b}-{r}-{n}" for b, r in SIZES for n in zoo.MODELS])
def test_runs_in_onnxruntime_with_sane_logits(name, batch, resolution):
    ort = pytest.importorskip("onnxruntime")
    m = model(name, batch, resolution)
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((batch, 3, resolution, resolution), dtype=np.float32)
    (logits,) = session.run(None, {"input": x})
    assert logits.shape == (batch, 1000)
    assert np.isfinite(logits).all()
    assert 1e-2 < logits.std() < 1e3
    if batch > 1:
        assert not np.allclose(logits[0], logits[1])


# ---- batch 2 at 64x64 (after the tests at 32: the cache holds one size at a time) -----------------


@pytest.mark.parametrize("name", zoo.MODELS)
def test_value_info_matches_onnx_shape_inference(name):
    m = model(name, 2, 64)
    by_onnx = shapes_by_onnx(m)
    by_zoo = zoo.tensor_shapes(m)
    assert {k: by_onnx[k] for k in by_zoo} == by_zoo


def test_vgg16_classifier_input_follows_resolution():
    m = model("vgg16", 2, 64)  # the batch does not change the weights: the model the tests above built
    fc1 = initializers(m)["classifier.0.weight"]
    assert list(fc1.dims) == [4096, 512 * (64 // 32) ** 2]
    assert zoo.count_parameters(m) == TORCHVISION_PARAMS["vgg16"] - 4096 * 512 * (49 - 4)


@pytest.mark.parametrize("name", zoo.MODELS)
def test_model_is_valid_opset17_ir9(name):
    m = model(name, 2, 64)
    onnx.checker.check_model(m, full_check=True)
    assert m.ir_version == 9
    assert [(o.domain, o.version) for o in m.opset_import] == [("", 17)]
    (graph_input,) = m.graph.input
    (graph_output,) = m.graph.output
    assert (graph_input.name, graph_output.name) == ("input", "logits")
    assert zoo.tensor_shapes(m)["input"] == (2, 3, 64, 64)
    assert zoo.tensor_shapes(m)["logits"] == (2, 1000)


# ---- weights -------------------------------------------------------------------------


def test_weights_follow_the_seed():
    first = initializers(zoo.build_model("squeezenet1_1", resolution=32, seed=3))
    again = initializers(zoo.build_model("squeezenet1_1", resolution=32, seed=3))
    other = initializers(zoo.build_model("squeezenet1_1", resolution=32, seed=4))
    assert first["features.0.weight"].raw_data == again["features.0.weight"].raw_data
    assert first["features.0.weight"].raw_data != other["features.0.weight"].raw_data


# ---- errors and the CLI --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(name="alexnet"), "unknown model 'alexnet'"),
        (dict(name="resnet18", resolution=16), "multiple of 32"),
        (dict(name="resnet18", resolution=48), "multiple of 32"),
        (dict(name="resnet18", batch=0), "batch"),
        (dict(name="vgg16", resolution=512), "2 GiB"),
    ],
)
def test_bad_requests_raise_one_line_errors(kwargs, message):
    with pytest.raises(NnccError, match=message) as error:
        zoo.build_model(**kwargs)
    assert "\n" not in str(error.value)


def test_cli_writes_a_loadable_model(tmp_path, capsys):
    path = tmp_path / "sq.onnx"
    assert zoo_cli.main(["squeezenet1_1", "--resolution", "64", "--batch", "2", "-o", str(path)]) == 0
    loaded = onnx.load(str(path))
    assert zoo.tensor_shapes(loaded)["input"] == (2, 3, 64, 64)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "1,235,496 params" in out and str(path) in out


def test_cli_unknown_model_exits_2_with_one_line(tmp_path, capsys):
    assert zoo_cli.main(["alexnet", "-o", str(tmp_path / "a.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nncc-zoo: error: unknown model 'alexnet'")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "a.onnx").exists()


def test_cli_as_a_process_reports_bad_resolution_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "nncc.compiler.zoo_cli", "vgg16", "--resolution", "100", "-o", str(tmp_path / "v.onnx")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr == "nncc-zoo: error: resolution must be a multiple of 32 and at least 32, got 100\n"


def test_cli_lists_models(capsys):
    assert zoo_cli.main(["--list"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == list(zoo.MODELS)
