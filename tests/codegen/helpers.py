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
from nncc.compiler.nn_interpreter import main_function
from nncc.compiler.onnx_import import build_module, prepare_model
from nncc.compiler.pass_manager import run_passes, verify
from nncc.compiler.pipeline import IMPORT_PASS, Options, no_printing, pipeline_passes, stages_until
from nncc.compiler.registry import Registry
from nncc.dialects import tile
from nncc.runtime.interpreter import run
from nncc.runtime.target import load_target
from nncc.support.errors import NnccError

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
    module, store = build_module(prepare_model(model, source), source)
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


_REFERENCE: dict[str, object] = {}


def reference_outcome(case):
    """The case's outcome on the reference interpreter (once per case)."""
    if case.name not in _REFERENCE:
        c = conformance()
        _REFERENCE[case.name] = c.crash_as_failure(lambda: c.run_case(case))
    return _REFERENCE[case.name]


def node_case_on_target(case, target_name: str):
    """The conformance Outcome of `case` compiled for `target_name` and run on the interpreter.

    A case whose reference execution does not pass is skipped (the reference suite reports it);
    otherwise every data set must match its expected outputs on the target.
    """
    c = conformance()
    reference = reference_outcome(case)
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


# --------------------------------------------------------------------------- single-op models

SMALL_MEMORIES = {
    "vector": ("memory.AM.size_bytes=8192",),
    "fusion": ("memory.IBUF.size_bytes=4096", "memory.WBUF.size_bytes=4096", "memory.OBUF.size_bytes=4096"),
    "edge": ("memory.BUF.size_bytes=8192",),
}
"""Target overrides that force many (and fragmentary) tiles on small tensors."""


def build_model(nodes, inputs, outputs, initializers=(), opset: int = 17) -> onnx.ModelProto:
    """`inputs`/`outputs`: (name, shape) pairs, float32 (output shape None: inferred)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in initializers],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    if any(shape is None for _, shape in outputs):  # give the outputs their inferred shapes
        inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.output}
        for output in model.graph.output:
            output.CopyFrom(inferred[output.name])
    return model


def random_inputs(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    initialized = {i.name for i in model.graph.initializer}
    return {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in model.graph.input if i.name not in initialized}


def check_on_target(model: onnx.ModelProto, target_name: str, overrides=(), seed: int = 0,
                    reference: str = "onnxruntime"):
    """Compile `model` for the target, run it, hold every output to onnxruntime's (or, with
    reference="nn", to nncc's numpy reference interpreter's); the program."""
    from nncc.compiler.nn_interpreter import run_reference

    feeds = random_inputs(model, seed)
    module, store = compile_fused(model)
    if reference == "nn":
        outputs, _ = run_reference(module, feeds, store)
        expected = [outputs[o.name] for o in model.graph.output]
    else:
        expected = ort_outputs(model, feeds)
    program = lower_module(module, store, load_target(target_name, list(overrides)))
    result = run(program, feeds)
    for output, reference in zip(model.graph.output, expected):
        ok, error, scale = within_scale(result.outputs[output.name], reference)
        assert ok, f"{target_name}: {output.name}: max abs error {error:.3g} vs scale {scale:.3g}"
    return program


def mnemonics(program, layer: str | None = None) -> list[str]:
    """Mnemonics of the program's instructions (of one layer's, when named)."""
    out, current = [], None
    for ins in program.instructions:
        mnemonic = type(ins).DEF.mnemonic
        if mnemonic == "layer":
            current = ins.name
            continue
        if layer is None or current == layer:
            out.append(mnemonic)
    return out


def ort_case_on_target(case, target_name: str):
    """An onnxruntime_cases.py model (features the node tests lack) on `target_name`, against
    onnxruntime on the conformance suite's random inputs; skipped when the reference fails."""
    c = conformance()
    if case.name not in _REFERENCE:
        _REFERENCE[case.name] = c.crash_as_failure(lambda: c.run_ort_case(case))
    reference = _REFERENCE[case.name]
    if reference.status != "pass":
        return c.Outcome("skip", f"reference execution: {reference.status}: {reference.reason}", "reference")
    feeds = c.random_feeds(case.model)
    expected = ort_outputs(case.model, feeds)
    module, store = compile_fused(case.model, case.name)
    _, result = run_on_target(module, store, target_name, feeds)
    problems = [c.compare(o.name, np.asarray(result.outputs[o.name]).reshape(np.shape(e)), e, 0.0, 0.0)[0]
                for o, e in zip(case.model.graph.output, expected)]
    problems = [p for p in problems if p]
    return c.Outcome("fail", "; ".join(problems)) if problems else c.Outcome("pass")


def tiled(model: onnx.ModelProto, target_name: str, passes: str):
    """`model` through the fused stage, then partition-cores for `target_name` and `passes`."""
    module, store = compile_fused(model)
    registry = Registry.default()
    run_passes(module, registry.pipeline(f"partition-cores{{target={target_name}}},{passes}"), registry.context(),
               no_printing())
    return module, store


def nests(module) -> list:
    """The `tile.nest`s of @main, in order."""
    return [op for op in main_function(module).body.block.ops if isinstance(op, tile.NestOp)]


def assert_fusion_figures_simulated(model: onnx.ModelProto, target_name: str, x: np.ndarray, layers: int) -> None:
    """The one fused group's `fusion` attribute: its fused cycles and DRAM bytes are the group's
    simulated ones, its layer-by-layer figures those of the `layers` layers compiled without the pass."""
    fused, store = tiled(model, target_name, "fuse-groups{always=true},tile-layers,double-buffer")
    (group,) = nests(fused)
    (cycles, separate_cycles), (nbytes, separate_bytes) = (
        [a.value.data for a in group.attributes["fusion"].data[key]] for key in ("cycles", "dram_bytes"))
    result = run(lower_module(fused, store, target(target_name)), {"x": x})
    assert (cycles, nbytes) == (result.cycles, result.read_bytes["DRAM"] + result.write_bytes["DRAM"])
    separate, store = tiled(model, target_name, "tile-layers,double-buffer")
    assert len(nests(separate)) == layers
    result = run(lower_module(separate, store, target(target_name)), {"x": x})
    assert (separate_cycles, separate_bytes) == (result.cycles, result.read_bytes["DRAM"] + result.write_bytes["DRAM"])
