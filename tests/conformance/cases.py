"""Helpers of the ONNX backend node-test conformance suite (shared with tests/codegen).

test_onnx_node_tests.py (the importer and reference interpreter) and
tests/codegen/test_node_targets.py (the same cases compiled for every target) both
use this selection, input freezing and comparison; see test_onnx_node_tests.py for
the rules. Load it by path under the module name `nncc_conformance_cases` (tests are
not a package), so that every user shares one module and its cached case list.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from nncc.compiler.nn_interpreter import run_reference
from nncc.compiler.onnx_import import import_model
from nncc.support.errors import NnccError, one_line

SUPPORTED_OPS = frozenset({
    "Conv", "BatchNormalization", "Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid",
    "HardSwish", "Add", "Sub", "Mul", "Div", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "Gemm", "MatMul", "Flatten", "Reshape", "Concat", "Softmax", "Identity",
    "Dropout", "Constant", "ConstantOfShape", "Sum", "Squeeze", "Unsqueeze", "Transpose", "LRN",
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceSumSquare",
    "Split", "Slice",
    "LayerNormalization", "Sqrt",
    "Erf", "Tanh", "Gelu",
    "Gather", "GatherND", "Where",
    "Pow", "Exp", "Log", "Neg", "Reciprocal", "Cast", "CastLike", "Size", "Shape",
})

CONSTANT_OPERANDS = {
    "Clip": (1, 2),            # min, max
    "Reshape": (1,),           # shape
    "Squeeze": (1,),           # axes
    "Unsqueeze": (1,),         # axes
    "ConstantOfShape": (0,),   # shape
    "Dropout": (2,),           # training_mode
    "Split": (1,),             # split
    "Slice": (1, 2, 3, 4),     # starts, ends, axes, steps
    "Gather": (1,),            # indices
    "GatherND": (1,),          # indices
    "Where": (0,),             # condition
    **{op: (1,) for op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceSumSquare")},  # axes
}
"""Node input slots nncc needs as compile-time constants (graph inputs there get frozen)."""

SKIP_CATEGORIES = {
    "non-float32 element type": r"element type \w+; nncc compiles float32|"
                                r"of type \w+; nncc computes float32|is \w+; nncc computes float32",
    "3-D or higher windows (nncc has 1-D and 2-D conv/pooling)": r"only 1-D and 2-D",
    "training mode (BatchNormalization/Dropout)": r"training_mode=(1|true) is not supported",
    "dynamic shape": r"dynamic dimension|has no shape; nncc needs static shapes",
    "empty tensor (a zero-size dimension)": r"zero-size dimension",
    "non-tensor value (sequence, optional)": r"is not a tensor",
}
"""What nncc deliberately does not handle: skip reason -> pattern of the importer's NnccError."""

RELATIVE_TOLERANCE = 1e-4
"""max |actual - expected| <= RELATIVE_TOLERANCE * max |expected| (see `compare`)."""


# --------------------------------------------------------------------------- selection


def op_types(graph: onnx.GraphProto) -> set[str]:
    """Op types of every node, subgraphs (If/Loop bodies) included."""
    found = set()
    for node in graph.node:
        found.add(node.op_type)
        for attribute in node.attribute:
            for subgraph in [attribute.g, *attribute.graphs] if attribute.type in (
                    onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) else []:
                found |= op_types(subgraph)
    return found


def op_key(model: onnx.ModelProto) -> str:
    """The op under test: the model's op types, joined when there are several."""
    return "+".join(sorted(op_types(model.graph)))


@cache
def all_node_cases() -> tuple:
    """Every node test case of the installed onnx, built in memory."""
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the case generators warn about their own numpy casts
        return tuple(load_model_tests(kind="node"))


def node_cases() -> list:
    """The node test cases whose every op is supported, sorted by name."""
    return sorted((c for c in all_node_cases() if op_types(c.model.graph) <= SUPPORTED_OPS),
                  key=lambda c: c.name)


# --------------------------------------------------------------------------- running one case


@dataclass
class Outcome:
    status: str  # "pass", "skip" or "fail"
    detail: str = ""  # the failure, the skip's NnccError message, or a note on a pass
    category: str = ""  # the skip category

    @property
    def reason(self) -> str:
        return f"{self.category}: {self.detail}" if self.category else self.detail


def skip_category(error: NnccError) -> str | None:
    for category, pattern in SKIP_CATEGORIES.items():
        if re.search(pattern, str(error)):
            return category
    return None


def frozen_inputs(model: onnx.ModelProto) -> set[str]:
    """Graph inputs used only in `CONSTANT_OPERANDS` slots."""
    constant_uses, other_uses = set(), set()
    for node in model.graph.node:
        slots = CONSTANT_OPERANDS.get(node.op_type, ())
        for i, name in enumerate(node.input):
            (constant_uses if i in slots else other_uses).add(name)
    return {i.name for i in model.graph.input} & (constant_uses - other_uses)


def bind_inputs(model: onnx.ModelProto, arrays) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Freeze compile-time inputs into initializers; return the model and the run-time feeds."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    feeds_by_name = dict(zip((i.name for i in model.graph.input), arrays))
    frozen = frozen_inputs(model)
    kept = [i for i in model.graph.input if i.name not in frozen]
    for name in frozen:
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(feeds_by_name[name]), name))
    del model.graph.input[:]
    model.graph.input.extend(kept)
    return model, {i.name: feeds_by_name[i.name] for i in kept}


def compare(name: str, actual, expected, rtol: float, atol: float) -> tuple[str | None, str]:
    """(None, criterion met) when `actual` matches `expected`, else (why not, "").

    The result must be float32 of the expected shape, and non-finite expected
    values (inf, nan) must be reproduced exactly. Then, on the finite values:
    - an all-zero expected output must be matched exactly;
    - "scale": max |actual - expected| <= RELATIVE_TOLERANCE * max |expected|,
      the project's criterion, relative to the output's scale so that tiny
      outputs (sigmoid tails, softmax probabilities) are held to the same
      relative precision as large ones;
    - failing that, "suite": |actual - expected| <= atol + rtol * |expected|
      elementwise with the case's own tolerances (onnx's runner: rtol 1e-3,
      atol 1e-7). A few expected outputs are written by hand with 4 decimals,
      so no float32 computation meets "scale" on them; cases that pass only
      this way are listed in docs/conformance.md.
    """
    expected, actual = np.asarray(expected), np.asarray(actual)
    if actual.shape != expected.shape:
        return f"{name}: shape {list(actual.shape)}, expected {list(expected.shape)}", ""
    if actual.dtype != np.float32:
        return f"{name}: element type {actual.dtype}, expected float32", ""
    expected, actual = expected.astype(np.float64), actual.astype(np.float64)
    finite = np.isfinite(expected)
    if not np.array_equal(actual[~finite], expected[~finite], equal_nan=True):
        return f"{name}: non-finite values differ", ""
    actual, expected = actual[finite], expected[finite]
    if not np.isfinite(actual).all():
        return f"{name}: non-finite values where finite ones are expected", ""
    error = np.abs(actual - expected).max(initial=0.0)
    scale = np.abs(expected).max(initial=0.0)
    if scale == 0:
        return (None, "exact") if error == 0 else (f"{name}: {error:.3g} where exactly 0 is expected", "")
    if error <= RELATIVE_TOLERANCE * scale:
        return None, "scale"
    if np.all(np.abs(actual - expected) <= atol + rtol * np.abs(expected)):
        return None, "suite"
    return f"{name}: max abs error {error:.3g} > {RELATIVE_TOLERANCE:g} x max |expected| {scale:.3g}", ""


def reparse_problem(module, source: str) -> str | None:
    """None when the module's text parses back (verified) to the same text, else why not."""
    from xdsl.parser import Parser

    from nncc.compiler.registry import Registry

    text = str(module)
    try:
        again = Parser(Registry.default().context(), text, source).parse_module()
        again.verify()
    except Exception as error:  # noqa: BLE001
        return f"the printed IR does not parse back: {one_line(str(error))}"
    return None if str(again) == text else "the printed IR parses back to a different text"


def run_model(model: onnx.ModelProto, source: str, feeds: dict[str, np.ndarray], expected_outputs,
              rtol: float = 0.0, atol: float = 0.0) -> Outcome:
    """Import `model`, run it on `feeds` and compare with `expected_outputs` (graph output order)."""
    try:
        module, store = import_model(model, source)
    except NnccError as error:
        category = skip_category(error)
        if category is None:
            return Outcome("fail", f"import error: {error}")
        return Outcome("skip", str(error), category)
    module.verify()
    if (problem := reparse_problem(module, source)) is not None:
        return Outcome("fail", problem)
    outputs, _ = run_reference(module, feeds, store)
    names = [o.name for o in model.graph.output]
    checks = [compare(n, outputs[n], e, rtol, atol) for n, e in zip(names, expected_outputs)]
    problems = [problem for problem, _ in checks if problem]
    if problems:
        return Outcome("fail", "; ".join(problems))
    if any(criterion == "suite" for _, criterion in checks):
        return Outcome("pass", f"within the suite's own tolerance only (rtol {rtol:g}, atol {atol:g}), "
                               "not within the scale criterion")
    return Outcome("pass")


def run_data_set(case, inputs, expected_outputs) -> Outcome:
    model, feeds = bind_inputs(case.model, inputs)
    return run_model(model, case.name, feeds, expected_outputs, case.rtol, case.atol)


def crash_as_failure(run: Callable[[], Outcome]) -> Outcome:
    """`run()`, an exception turned into a failure (for the report; the tests let it raise)."""
    try:
        return run()
    except Exception as error:  # noqa: BLE001 -- a traceback from a valid model is a bug
        return Outcome("fail", f"crash: {type(error).__name__}: {one_line(str(error))}")


def run_case(case) -> Outcome:
    """Import and run every data set of a node test case; the worst outcome wins."""
    outcomes = [run_data_set(case, inputs, expected) for inputs, expected in case.data_sets]
    for status in ("fail", "skip", "pass"):
        for outcome in sorted(outcomes, key=lambda o: not o.detail):
            if outcome.status == status:
                return outcome
    raise ValueError(f"{case.name} has no data set")


def ort_cases() -> list:
    """The single-op models of onnxruntime_cases.py (loaded by path: tests are not a package)."""
    path = Path(__file__).with_name("onnxruntime_cases.py")
    spec = importlib.util.spec_from_file_location("nncc_conformance_onnxruntime_cases", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.ORT_CASES


def random_feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    return {name: np.asarray(rng.standard_normal(shape) * 2, dtype=np.float32) for name, shape in shapes.items()}


def run_ort_case(case) -> Outcome:
    """Run an onnxruntime_cases.py model on random inputs and compare with onnxruntime."""
    import onnxruntime

    feeds = random_feeds(case.model)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: old-opset cases make it warn
    session = onnxruntime.InferenceSession(case.model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    return run_model(case.model, case.name, feeds, expected)


def case_outcomes() -> Iterator[tuple[str, onnx.ModelProto, Outcome]]:
    """(name, model, outcome) of every node test case and onnxruntime case, crashes included."""
    for case in node_cases():
        yield case.name, case.model, crash_as_failure(lambda: run_case(case))
    for case in ort_cases():
        yield case.name, case.model, crash_as_failure(lambda: run_ort_case(case))
