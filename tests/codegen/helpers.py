"""Shared by the codegen tests: the fused-stage pipeline on in-memory models, lowering and running
on a target, and the ONNX backend node tests on every target (selection, input freezing and
comparison are the conformance suite's own, imported from tests/conformance/cases.py)."""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path

import numpy as np
import onnx

from nncc.compiler.codegen.lower import lower_module
from nncc.compiler.errors import NnccError
from nncc.compiler.onnx_import import build_module
from nncc.compiler.pass_manager import run_passes, verify
from nncc.compiler.pipeline import IMPORT_PASS, Options, pipeline_passes, stages_until
from nncc.compiler.registry import Registry
from nncc.compiler.target import load_target
from nncc.runtime.interpreter import run

TARGETS = ("vector", "fusion", "edge")


def load_by_path(name: str, path: Path):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def conformance():
    """tests/conformance/cases.py (the node-test helpers), loaded by path: tests are not a package."""
    return load_by_path("nncc_conformance_cases", Path(__file__).parents[1] / "conformance" / "cases.py")


@cache
def target(name: str):
    return load_target(name)


def compile_fused(model: onnx.ModelProto, source: str = "model.onnx"):
    """Import and run the graph passes up to the fused stage, as `nncc` does."""
    module, store = build_module(model, source)
    verify(module, IMPORT_PASS)
    registry, options = Registry.default(), Options()
    ctx = registry.context()
    for stage in stages_until("fused"):
        run_passes(module, pipeline_passes(stage, registry, options), ctx, options.printing)
    return module, store


def run_on_target(module, store, target_name: str, feeds: dict[str, np.ndarray]):
    program = lower_module(module, store, target(target_name))
    return program, run(program, feeds)


def ort_outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def within_scale(actual, expected, tolerance: float = 1e-4) -> tuple[bool, float, float]:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    error = float(np.abs(actual.reshape(expected.shape) - expected).max(initial=0.0))
    scale = float(np.abs(expected).max(initial=0.0))
    return error <= tolerance * max(scale, 1e-30) or error == 0.0, error, scale


# --------------------------------------------------------------------------- node tests on targets


def node_case_on_target(case, target_name: str):
    """The conformance Outcome of `case` compiled for `target_name` and run on the interpreter.

    A case whose reference execution does not pass is skipped (the reference suite reports it);
    otherwise every data set must match its expected outputs on the target.
    """
    c = conformance()
    reference = c.crash_as_failure(lambda: c.run_case(case))
    if reference.status != "pass":
        return c.Outcome("skip", f"reference execution: {reference.status}: {reference.reason}", "reference")
    for inputs, expected_outputs in case.data_sets:
        model, feeds = c.bind_inputs(case.model, inputs)
        try:
            module, store = compile_fused(model, case.name)
            _, result = run_on_target(module, store, target_name, feeds)
        except NnccError as error:
            return c.Outcome("fail", f"{target_name}: {error}")
        names = [o.name for o in model.graph.output]
        checks = [c.compare(n, np.asarray(result.outputs[n]).reshape(np.shape(e)), e, case.rtol, case.atol)
                  for n, e in zip(names, expected_outputs)]
        problems = [problem for problem, _ in checks if problem]
        if problems:
            return c.Outcome("fail", "; ".join(problems))
    return c.Outcome("pass")
