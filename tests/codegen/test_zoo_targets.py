"""Every zoo model (batch 1, resolution 32) compiled for every target, run on the interpreter:
outputs within 1e-4 x max |output| of onnxruntime's (the pipeline of `nncc --run --check`)."""

from __future__ import annotations

import pytest

from nncc.compiler import zoo


import codegen_helpers as h  # noqa: E402  (tests/codegen/conftest.py)


_PREPARED: dict[str, tuple] = {}


def prepared(name: str):
    """The model at the fused stage, its inputs and onnxruntime's outputs (built once per model:
    the tests take one model on every target before the next, so only one is kept, and the
    previous one is dropped before the next is built)."""
    if name not in _PREPARED:
        _PREPARED.clear()
        model = zoo.build_model(name, batch=1, resolution=32)
        feeds = h.random_inputs(model)
        expected = h.ort_outputs(model, feeds)  # before the compile: onnxruntime's session is gone by then
        module, store = h.compile_fused(model, f"{name}.onnx")
        _PREPARED[name] = model, module, store, feeds, expected
    return _PREPARED[name]


@pytest.fixture(autouse=True, scope="module")
def free_prepared():
    yield
    _PREPARED.clear()


@pytest.mark.parametrize(("name", "target"), [
    pytest.param(name, target, id=f"{name}-{target}",
                 marks=[pytest.mark.big_memory] if name in ("resnet50", "vgg16") else [])
    for name in zoo.MODELS for target in h.TARGETS])
def test_zoo_model_on_target(name, target):
    model, module, store, feeds, expected = prepared(name)
    program, result = h.run_on_target(module, store, target, feeds)
    if target == h.TARGETS[-1]:  # the model's last target: dropped now, not when the next model comes
        _PREPARED.clear()
    for output, reference in zip(model.graph.output, expected):
        ok, error, scale = h.within_scale(result.outputs[output.name], reference)
        assert ok, f"{name} on {target}: {output.name}: max abs error {error:.3g} vs scale {scale:.3g}"
    assert result.cycles > 0 and len(program.instructions) < 300_000
