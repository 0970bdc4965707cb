"""Erf, Tanh, GELU and SiLU (ConvNeXt / EfficientNet activations), on every target.

PyTorch exports GELU as x * 0.5 * (1 + Erf(x / sqrt(2))) (Div/Erf/Add/Mul/Mul; the dynamo
exporter may multiply by 1/sqrt(2) and associate the products the other way) and SiLU as
x * Sigmoid(x); canonicalize-nn turns them into one `nn.gelu` / `nn.silu`, which fuse-epilogues
makes a conv/gemm's activation. Opset 20's Gelu (approximate "none" or "tanh") imports directly.
All of them lower onto vact functions (runtime/isa.py ACTIVATIONS). Each model is compiled and
run with --check against onnxruntime on every target, in-process.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nncc.compiler.cli import main as nncc_main

TARGETS = ("reference", "vector", "fusion", "edge")
RNG = np.random.default_rng(11)


def tensor(name: str, shape, scale: float = 1.0) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def scalar(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=np.float32), name)


def make_model(nodes, x_shape, y_shape, initializers=(), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "activations",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                              list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    return model


def conv(out: str = "c", channels: int = 6) -> tuple[list, list]:
    return ([helper.make_node("Conv", ["x", "conv.w", "conv.b"], [out], name="conv", pads=[1, 1, 1, 1])],
            [tensor("conv.w", (channels, 3, 3, 3), 0.5), tensor("conv.b", (channels,), 0.3)])


GELU_CONSTANTS = [scalar("sqrt2", np.sqrt(2)), scalar("rsqrt2", 1 / np.sqrt(2)), scalar("one", 1.0),
                  scalar("half", 0.5)]


def gelu_legacy(x: str, y: str) -> list:
    """torch.onnx.export's F.gelu: Div, Erf, Add, Mul(x, .), Mul(., 0.5)."""
    return [helper.make_node("Div", [x, "sqrt2"], ["g_div"], name="gelu_div"),
            helper.make_node("Erf", ["g_div"], ["g_erf"], name="gelu_erf"),
            helper.make_node("Add", ["g_erf", "one"], ["g_add"], name="gelu_add"),
            helper.make_node("Mul", [x, "g_add"], ["g_mul"], name="gelu_mul"),
            helper.make_node("Mul", ["g_mul", "half"], [y], name="gelu_mul2")]


def gelu_reassociated(x: str, y: str) -> list:
    """The same function spelt x * (1/sqrt(2)), 1 + erf, (0.5 * x) * (1 + erf)."""
    return [helper.make_node("Mul", [x, "rsqrt2"], ["g_div"]),
            helper.make_node("Erf", ["g_div"], ["g_erf"]),
            helper.make_node("Add", ["one", "g_erf"], ["g_add"]),
            helper.make_node("Mul", ["half", x], ["g_half"]),
            helper.make_node("Mul", ["g_half", "g_add"], [y])]


def conv_gelu() -> onnx.ModelProto:
    nodes, inits = conv()
    return make_model(nodes + gelu_legacy("c", "y"), (1, 3, 8, 8), (1, 6, 8, 8), inits + GELU_CONSTANTS)


def gemm_gelu() -> onnx.ModelProto:
    nodes = [helper.make_node("Gemm", ["x", "fc.w", "fc.b"], ["f"], name="fc", transB=1)]
    return make_model(nodes + gelu_reassociated("f", "y"), (2, 16), (2, 24),
                      [tensor("fc.w", (24, 16), 0.4), tensor("fc.b", (24,), 0.2)] + GELU_CONSTANTS)


def conv_tanh() -> onnx.ModelProto:
    nodes, inits = conv()
    return make_model(nodes + [helper.make_node("Tanh", ["c"], ["y"], name="tanh")], (1, 3, 8, 8), (1, 6, 8, 8),
                      inits)


def tanh() -> onnx.ModelProto:
    return make_model([helper.make_node("Tanh", ["x"], ["y"])], (2, 3, 20), (2, 3, 20))


def erf() -> onnx.ModelProto:
    return make_model([helper.make_node("Erf", ["x"], ["y"])], (1, 5, 4, 7), (1, 5, 4, 7))


def gelu_pattern_alone() -> onnx.ModelProto:
    """After a pooling op (nothing to fuse into): a standalone nn.gelu."""
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2])]
    return make_model(nodes + gelu_legacy("p", "y"), (1, 3, 8, 8), (1, 3, 4, 4), GELU_CONSTANTS)


def conv_silu() -> onnx.ModelProto:
    nodes, inits = conv()
    nodes += [helper.make_node("Sigmoid", ["c"], ["s"], name="sigmoid"),
              helper.make_node("Mul", ["c", "s"], ["y"], name="silu_mul")]
    return make_model(nodes, (1, 3, 8, 8), (1, 6, 8, 8), inits)


def conv_gelu20(approximate: str) -> onnx.ModelProto:
    nodes, inits = conv()
    nodes.append(helper.make_node("Gelu", ["c"], ["y"], name="gelu", approximate=approximate))
    return make_model(nodes, (1, 3, 8, 8), (1, 6, 8, 8), inits, opset=20)


def gelu20_alone(approximate: str) -> onnx.ModelProto:
    return make_model([helper.make_node("Gelu", ["x"], ["y"], approximate=approximate)], (3, 33), (3, 33),
                      opset=20)


MODELS = {
    "conv_gelu": conv_gelu(), "gemm_gelu": gemm_gelu(), "conv_tanh": conv_tanh(), "tanh": tanh(), "erf": erf(),
    "gelu_pattern_alone": gelu_pattern_alone(), "conv_silu": conv_silu(),
    "conv_gelu20_none": conv_gelu20("none"), "conv_gelu20_tanh": conv_gelu20("tanh"),
    "gelu20_none": gelu20_alone("none"), "gelu20_tanh": gelu20_alone("tanh"),
}
FUSED_ACT = {"conv_gelu": "gelu", "gemm_gelu": "gelu", "conv_tanh": "tanh", "conv_silu": "silu",
             "conv_gelu20_none": "gelu", "conv_gelu20_tanh": "gelu_tanh"}
"""Models whose activation becomes the conv/gemm's epilogue: act kind in --emit=fused."""


@pytest.fixture(scope="module")
def model_paths(saved_models):
    return saved_models(MODELS)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", MODELS)
def test_activation_checks_on_every_target(passes_check, model_paths, name, target):
    passes_check(model_paths[name], target)


@pytest.mark.parametrize("name", FUSED_ACT)
def test_activation_is_fused_into_the_conv_or_gemm(capsys, model_paths, name):
    assert nncc_main([str(model_paths[name]), "--emit=fused"]) == 0
    out = capsys.readouterr().out
    fused = [line for line in out.splitlines() if "fused.conv2d" in line or "fused.gemm" in line]
    assert len(fused) == 1 and f" act {FUSED_ACT[name]} " in fused[0], out
    # nothing but the fused op computes: the pattern's nodes are all in its onnx_nodes
    assert not [line for line in out.splitlines() if "= nn." in line and "nn.weight" not in line], out


def test_standalone_patterns_become_one_op(capsys, model_paths):
    assert nncc_main([str(model_paths["gelu_pattern_alone"]), "--emit=fused"]) == 0
    out = capsys.readouterr().out
    ops = [line.split("=")[1].split()[0] for line in out.splitlines() if " = nn." in line and "nn.weight" not in line]
    assert ops == ["nn.max_pool", "nn.gelu"], out


@pytest.mark.parametrize("name, func", [("conv_gelu", "gelu"), ("conv_silu", "silu"), ("tanh", "tanh"),
                                        ("erf", "erf"), ("gelu20_tanh", "gelu_tanh")])
def test_lowered_onto_vact(capsys, model_paths, name, func):
    """Not a host fallback: the accelerator program applies the function (a vact, or the
    matmul's act operand on a vector main unit)."""
    for target, operand in (("edge", "isa.vact"), ("vector", None)):
        assert nncc_main([str(model_paths[name]), f"--target={target}", "--emit=isa"]) == 0
        out = capsys.readouterr().out
        lines = [line for line in out.splitlines() if f'func = "{func}"' in line or f'act = "{func}"' in line]
        assert lines, out[-3000:]
        if operand:  # a matrix unit: the epilogue is a vact on the post unit
            assert all(line.strip().startswith(operand) for line in lines)
