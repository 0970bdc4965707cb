"""Conformance with the ONNX backend node tests shipped inside the `onnx` wheel.

Every node test case whose graph uses only ops nncc supports (`SUPPORTED_OPS`,
matched on the model's node op types, never on case names) is imported with
`import_model`, verified, printed and parsed back, executed by the numpy
reference interpreter on each data set, and every output is compared with the
expected one (`compare`). `test_onnxruntime_case` does the same for the
single-op models of onnxruntime_cases.py (features the node tests lack), with
onnxruntime's outputs as the expected ones.

A case is SKIPPED only when the importer refuses it with an `NnccError` whose
message falls in one of the `SKIP_CATEGORIES` below (the one place listing what
nncc deliberately does not handle). Any other import error, any exception and
any numerical mismatch is a FAILURE.

nncc compiles for static shapes, so graph inputs that ONNX allows at run time
but nncc needs at compile time (a Reshape's shape, Squeeze/Unsqueeze axes, Clip
bounds, ...; `CONSTANT_OPERANDS`) are bound to the data set's values as
initializers before import, as a deployment flow freezes them.

`tests/conformance/report.py` runs the same cases and prints docs/conformance.md.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def _load_cases():
    """cases.py (the helpers), loaded by path once per process: tests are not a package."""
    name = "nncc_conformance_cases"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("cases.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


_cases = _load_cases()
(Outcome, SUPPORTED_OPS, CONSTANT_OPERANDS, SKIP_CATEGORIES, RELATIVE_TOLERANCE, op_types, op_key,
 all_node_cases, node_cases, skip_category, frozen_inputs, bind_inputs, compare, reparse_problem, run_model,
 run_data_set, crash_as_failure, run_case, ort_cases, random_feeds, run_ort_case, case_outcomes) = (
    getattr(_cases, name) for name in (
        "Outcome", "SUPPORTED_OPS", "CONSTANT_OPERANDS", "SKIP_CATEGORIES", "RELATIVE_TOLERANCE", "op_types",
        "op_key", "all_node_cases", "node_cases", "skip_category", "frozen_inputs", "bind_inputs", "compare",
        "reparse_problem", "run_model", "run_data_set", "crash_as_failure", "run_case", "ort_cases",
        "random_feeds", "run_ort_case", "case_outcomes"))


# --------------------------------------------------------------------------- the test


@pytest.mark.parametrize("case", node_cases(), ids=lambda c: c.name)
def test_node_case(case) -> None:
    outcome = run_case(case)
    if outcome.status == "skip":
        pytest.skip(outcome.reason)
    assert outcome.status == "pass", outcome.detail


@pytest.mark.parametrize("case", ort_cases(), ids=lambda c: c.name)
def test_onnxruntime_case(case) -> None:
    outcome = run_ort_case(case)
    if outcome.status == "skip":
        pytest.skip(outcome.reason)
    assert outcome.status == "pass", outcome.detail
