"""The ONNX backend node tests (the conformance suite's selection and input freezing,
tests/conformance/cases.py) compiled for every target and run on the interpreter; likewise the
conformance suite's onnxruntime single-op models (tests/conformance/onnxruntime_cases.py).

Every case whose reference execution passes (tests/conformance/test_onnx_node_tests.py) must
pass on each target; the others are skipped here with the reference's own outcome as reason
(the importer refuses them: non-float32 types, 3-D windows, training mode, ...)."""

from __future__ import annotations


import pytest


import codegen_helpers as h  # noqa: E402  (tests/codegen/conftest.py)


@pytest.mark.parametrize("target", h.TARGETS)
@pytest.mark.parametrize("case", h.conformance().node_cases(), ids=lambda c: c.name)
def test_node_case_on_target(case, target):
    outcome = h.node_case_on_target(case, target)
    if outcome.status == "skip":
        pytest.skip(outcome.reason)
    assert outcome.status == "pass", outcome.detail


KNOWN_FAILURES: dict[str, str] = {}  # case name -> why it fails on the targets (none today)


@pytest.mark.parametrize("target", h.TARGETS)
@pytest.mark.parametrize("case", h.conformance().ort_cases(), ids=lambda c: c.name)
def test_onnxruntime_case_on_target(case, target, request):
    if case.name in KNOWN_FAILURES:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_FAILURES[case.name], strict=False))
    outcome = h.ort_case_on_target(case, target)
    if outcome.status == "skip":
        pytest.skip(outcome.reason)
    assert outcome.status == "pass", outcome.detail
