"""Helpers for the graph-pass tests: run a pipeline, run the reference interpreter,
and a cache of zoo models pushed through the `fused` stage (they are shared by
several tests; each model is compiled and run once per test module)."""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime
import pytest
from xdsl.dialects.builtin import ModuleOp
from xdsl.parser import Parser

from nncc.compiler.nn_interpreter import run_reference
from nncc.compiler.onnx_import import import_model
from nncc.compiler.pass_manager import run_passes
from nncc.compiler.pipeline import STAGES
from nncc.compiler.registry import Registry
from nncc.compiler.weights import WeightStore, attach
from nncc.compiler.zoo import build_model

FUSED_STAGE = next(stage for stage in STAGES if stage.name == "fused").passes
RESOLUTION = 32
KEPT_RUNS = 2
USED_ONCE = ("resnet50", "vgg16")  # each of their runs serves one test: not kept


@pytest.fixture(scope="session")
def registry() -> Registry:
    return Registry.default()


@pytest.fixture(scope="session")
def run_pipeline(registry):
    """run_pipeline(module, "pass-a,pass-b"): apply the passes, verifying after each."""

    def run(module: ModuleOp, pipeline: str) -> ModuleOp:
        run_passes(module, registry.pipeline(pipeline), registry.context())
        return module

    return run


@pytest.fixture(scope="session")
def parse_ir(registry):
    """parse_ir(text, weights): a verified module with an in-memory weight store."""

    def parse(text: str, weights: dict[str, np.ndarray] | None = None) -> ModuleOp:
        module = Parser(registry.context(), text).parse_module()
        module.verify()
        attach(module, WeightStore(weights or {}))
        return module

    return parse


def op_counts(module: ModuleOp) -> collections.Counter:
    skip = {"builtin.module", "func.func", "func.return", "nn.weight"}
    return collections.Counter(op.name for op in module.walk() if op.name not in skip)


@dataclass
class ZooRun:
    """A zoo model before and after some passes, run on the same input."""

    model: onnx.ModelProto
    module: ModuleOp
    before: collections.Counter
    after: collections.Counter
    actual: np.ndarray
    expected: np.ndarray
    layers: list[dict]

    @property
    def error(self) -> float:
        return float(np.abs(self.actual - self.expected).max())

    @property
    def scale(self) -> float:
        return float(np.abs(self.expected).max())


@pytest.fixture(scope="module")
def zoo_run(run_pipeline, release_memory):
    """zoo_run(name, pipeline): the model (batch 1, 32x32) imported, passed through
    `pipeline` (default: the fused stage) and run, next to onnxruntime's output. The last
    KEPT_RUNS runs (none of the models in USED_ONCE) are kept for the tests after (each module
    orders its tests so that a run is made once), and freed when the module is done."""
    cache: collections.OrderedDict[tuple[str, str], ZooRun] = collections.OrderedDict()
    expected: dict[str, np.ndarray] = {}

    def run(name: str, pipeline: str = ",".join(FUSED_STAGE)) -> ZooRun:
        if (name, pipeline) not in cache:
            if len(cache) >= KEPT_RUNS:  # the least recently used run goes first
                while len(cache) >= KEPT_RUNS:
                    cache.popitem(last=False)
                release_memory()
            model = build_model(name, batch=1, resolution=RESOLUTION, seed=1)
            x = np.random.default_rng(7).standard_normal((1, 3, RESOLUTION, RESOLUTION)).astype(np.float32)
            if name not in expected:  # first, and the session dropped before the import: less memory at once
                session = onnxruntime.InferenceSession(model.SerializeToString(),
                                                       providers=["CPUExecutionProvider"])
                expected[name] = session.run(None, {"input": x})[0]
                del session
            module, store = import_model(model, f"{name}.onnx")
            del model.graph.initializer[:]  # kept for its nodes; the weights are in the module's store
            before = op_counts(module)
            run_pipeline(module, pipeline)
            outputs, layers = run_reference(module, {"input": x}, store)
            result = ZooRun(model, module, before, op_counts(module), outputs["logits"], expected[name], layers)
            if name in USED_ONCE:
                return result
            cache[name, pipeline] = result
        cache.move_to_end((name, pipeline))
        return cache[name, pipeline]

    yield run
    cache.clear()
    expected.clear()
