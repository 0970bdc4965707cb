"""Pow, Exp, Log, Neg, Reciprocal, Cast/CastLike, Size and GELU's tanh form spelt out as nodes.

The legacy exporter writes F.gelu(x, approximate="tanh") as x * x * x, Mul 0.044715, Add x,
Mul sqrt(2/pi), Tanh, Add 1, Mul x, Mul 0.5; the ONNX function body of Gelu (the node tests'
`test_gelu_tanh_*_expanded`) and hand-written code (HF's NewGELU) use Pow(x, 3) and CastLike of
the constants. canonicalize-nn makes both one `nn.gelu_tanh`, which fuse-epilogues makes a
gemm's activation. Pow with a constant (half-)integer exponent is exact products (and a square
root, a reciprocal); other exponents are exp(y * log(x)). Every model is compiled and run with
--check against onnxruntime on every target, in-process.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nncc.compiler.cli import main as nncc_main
from nncc.compiler.onnx_import import import_model
from nncc.support.errors import NnccError
from tests.compiler.imported_ops import op_names

TARGETS = ("reference", "vector", "fusion", "edge")
RNG = np.random.default_rng(5)


def tensor(name: str, shape, scale: float = 1.0) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def scalar(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=np.float32), name)


def make_model(nodes, x_shape, y_shape, initializers=(), opset: int = 17, inputs=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "math", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape),
                                              *inputs],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    return model


def gemm(out: str = "f") -> tuple[list, list]:
    return ([helper.make_node("Gemm", ["x", "fc.w", "fc.b"], [out], name="fc", transB=1)],
            [tensor("fc.w", (24, 16), 0.4), tensor("fc.b", (24,), 0.2)])


def gelu_tanh_legacy() -> onnx.ModelProto:
    """Gemm -> torch.onnx.export(dynamo=False)'s F.gelu(approximate="tanh"), node for node."""
    nodes, inits = gemm()
    nodes += [helper.make_node("Mul", ["f", "f"], ["sq"], name="/Mul"),
              helper.make_node("Mul", ["f", "sq"], ["cube"], name="/Mul_1"),
              helper.make_node("Mul", ["c0", "cube"], ["c0cube"], name="/Mul_2"),
              helper.make_node("Add", ["f", "c0cube"], ["inner"], name="/Add"),
              helper.make_node("Mul", ["k", "inner"], ["arg"], name="/Mul_3"),
              helper.make_node("Tanh", ["arg"], ["t"], name="/Tanh"),
              helper.make_node("Add", ["one", "t"], ["phi"], name="/Add_1"),
              helper.make_node("Mul", ["f", "phi"], ["xphi"], name="/Mul_4"),
              helper.make_node("Mul", ["half", "xphi"], ["y"], name="/Mul_5")]
    inits += [scalar("c0", 0.044715), scalar("k", 0.7978846), scalar("one", 1.0), scalar("half", 0.5)]
    return make_model(nodes, (2, 16), (2, 24), inits)


def gelu_tanh_function_body() -> onnx.ModelProto:
    """Gemm -> the ONNX function body of Gelu(approximate="tanh"): CastLike'd constants, Pow 3, Sum."""
    nodes, inits = gemm()
    for name, value in (("half", 0.5), ("one", 1.0), ("two_over_pi", 2 / math.pi), ("c0", 0.044715), ("three", 3.0)):
        inits.append(scalar(name, value))
        nodes.append(helper.make_node("CastLike", [name, "f"], [f"{name}_cast"]))
    nodes += [helper.make_node("Sqrt", ["two_over_pi_cast"], ["k"]),
              helper.make_node("Pow", ["f", "three_cast"], ["cube"]),
              helper.make_node("Mul", ["c0_cast", "cube"], ["c0cube"]),
              helper.make_node("Sum", ["f", "c0cube"], ["inner"]),
              helper.make_node("Mul", ["k", "inner"], ["arg"]),
              helper.make_node("Tanh", ["arg"], ["t"]),
              helper.make_node("Sum", ["one_cast", "t"], ["phi"]),
              helper.make_node("Mul", ["half_cast", "f"], ["halfx"]),
              helper.make_node("Mul", ["halfx", "phi"], ["y"])]
    return make_model(nodes, (2, 16), (2, 24), inits, opset=18)


def pow_model(exponent: float, positive: bool = False, shape=(1, 4, 5, 6)) -> onnx.ModelProto:
    """[Sigmoid ->] Pow(constant exponent) -> Add 0.25 (a constant result stays usable)."""
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"], name="sigmoid")] if positive else []
    nodes += [helper.make_node("Pow", ["s" if positive else "x", "e"], ["p"], name="pow"),
              helper.make_node("Add", ["p", "quarter"], ["y"], name="add")]
    return make_model(nodes, shape, shape, [scalar("e", exponent), scalar("quarter", 0.25)])


def pow_run_time() -> onnx.ModelProto:
    """Sigmoid(x) ** y, y a second graph input (broadcast along the last axis)."""
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"], name="sigmoid"),
             helper.make_node("Pow", ["s", "e"], ["y"], name="pow")]
    return make_model(nodes, (2, 3, 8), (2, 3, 8), inputs=[helper.make_tensor_value_info("e", TensorProto.FLOAT, [8])])


def unary_chain() -> onnx.ModelProto:
    """Neg -> Exp -> Reciprocal(1 + .) -> Log -> Cast(float) -> Div by Cast(Size(x)) (a constant)."""
    nodes = [helper.make_node("Neg", ["x"], ["n"], name="neg"),
             helper.make_node("Exp", ["n"], ["e"], name="exp"),
             helper.make_node("Add", ["e", "one"], ["e1"], name="add"),
             helper.make_node("Reciprocal", ["e1"], ["r"], name="reciprocal"),
             helper.make_node("Log", ["r"], ["l"], name="log"),
             helper.make_node("Cast", ["l"], ["c"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Size", ["x"], ["size"], name="size"),
             helper.make_node("Cast", ["size"], ["size_f"], name="size_cast", to=TensorProto.FLOAT),
             helper.make_node("Div", ["c", "size_f"], ["y"], name="div")]
    return make_model(nodes, (1, 3, 4, 5), (1, 3, 4, 5), [scalar("one", 1.0)])


MODELS = {
    "gelu_tanh_legacy": gelu_tanh_legacy(), "gelu_tanh_function_body": gelu_tanh_function_body(),
    "pow_3": pow_model(3.0), "pow_minus_2": pow_model(-2.0, positive=True), "pow_2_5": pow_model(2.5, positive=True),
    "pow_0": pow_model(0.0), "pow_0_7": pow_model(0.7, positive=True), "pow_run_time": pow_run_time(),
    "unary_chain": unary_chain(),
}


@pytest.fixture(scope="module")
def model_paths(saved_models):
    return saved_models(MODELS)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", MODELS)
def test_checks_on_every_target(passes_check, model_paths, name, target):
    passes_check(model_paths[name], target)


@pytest.mark.parametrize("name", ["gelu_tanh_legacy", "gelu_tanh_function_body"])
def test_gelu_tanh_becomes_the_gemm_activation(capsys, model_paths, name):
    assert nncc_main([str(model_paths[name]), "--emit=fused"]) == 0
    out = capsys.readouterr().out
    fused = [line for line in out.splitlines() if "fused.gemm" in line]
    assert len(fused) == 1 and " act gelu_tanh " in fused[0], out
    assert not [line for line in out.splitlines() if "= nn." in line and "nn.weight" not in line], out


def test_gelu_tanh_lowered_onto_vact(capsys, model_paths):
    assert nncc_main([str(model_paths["gelu_tanh_legacy"]), "--target=edge", "--emit=isa"]) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.strip().startswith("isa.vact") and '"gelu_tanh"' in line], out


@pytest.mark.parametrize("name, ops", [
    ("pow_3", ["nn.mul", "nn.mul", "nn.add"]),                     # x * (x * x)
    ("pow_minus_2", ["nn.sigmoid", "nn.mul", "nn.div", "nn.add"]),  # 1 / (s * s)
    ("pow_2_5", ["nn.sigmoid", "nn.sqrt", "nn.mul", "nn.mul", "nn.add"]),
    ("pow_0", []),                                                  # a constant: everything folds
    ("pow_0_7", ["nn.sigmoid", "nn.log", "nn.scale", "nn.exp", "nn.add"]),
    ("pow_run_time", ["nn.sigmoid", "nn.log", "nn.mul", "nn.exp"]),
    ("unary_chain", ["nn.scale", "nn.exp", "nn.add", "nn.div", "nn.log", "nn.div"]),
])
def test_imported_ops(name, ops):
    assert op_names(MODELS[name]) == ops


def test_cast_to_another_type_is_refused():
    model = make_model([helper.make_node("Cast", ["x"], ["c"], name="to_half", to=TensorProto.FLOAT16),
                        helper.make_node("Cast", ["c"], ["y"], name="back", to=TensorProto.FLOAT)], (2, 3), (2, 3))
    with pytest.raises(NnccError, match="node 'to_half' \\(Cast\\): output 'c' is of type float16; nncc computes "
                                        "float32 tensors"):
        import_model(model)
