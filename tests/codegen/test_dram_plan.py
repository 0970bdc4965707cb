"""DRAM of intermediate tensors by liveness (compiler/codegen/dram_plan.py): the peak against hand
counts, and outputs against onnxruntime, which a wrong liveness breaks."""

from __future__ import annotations

import numpy as np
import pytest
from codegen_helpers import TARGETS, compile_fused, ort_outputs, run_on_target, target, within_scale
from onnx import TensorProto, helper

from nncc.compiler.codegen import lower
from nncc.compiler.codegen.dram_plan import DramPlan
from nncc.compiler.modules import main_function
from nncc.runtime.program import Program

SHAPE = [1, 16, 32, 32]
S = 4 * 16 * 32 * 32  # bytes of one tensor (a multiple of the 64-byte alignment)


def pool(kind: str, x: str, y: str):
    return helper.make_node(kind, [x], [y], kernel_shape=[3, 3], pads=[1, 1, 1, 1])


def model(nodes):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


# x -> a -> b -> c -> y: c takes a's place (a's last reader, layer 1, is done when layer 2 writes c)
CHAIN = model([pool("MaxPool", "x", "a"), pool("MaxPool", "a", "b"), pool("MaxPool", "b", "c"),
               pool("MaxPool", "c", "y")])
# a is read again by the last layer: nothing can take its place before
RESIDUAL = model([pool("MaxPool", "x", "a"), pool("MaxPool", "a", "b"), pool("MaxPool", "b", "c"),
                  helper.make_node("Add", ["a", "c"], ["y"])])


def test_chain_peak_by_hand():
    module, store = compile_fused(CHAIN)
    program = lower.lower_module(module, store, target("vector"))
    # x, y (symbols), a, b live together; c reuses a: 4 tensors at the peak, 5 without reuse
    assert program.dram_bytes == 4 * S
    assert program.dram_plan == {"dram_bytes": 4 * S, "without_reuse_bytes": 5 * S, "intermediate_bytes": 3 * S}


def test_value_read_later_is_kept():
    module, store = compile_fused(RESIDUAL)
    program = lower.lower_module(module, store, target("vector"))
    assert program.dram_bytes == 5 * S  # a, b, c live at layer 2: no hole fits c


@pytest.mark.parametrize("target_name", TARGETS)
@pytest.mark.parametrize("name", ["chain", "residual"])
def test_outputs_match_onnxruntime(name, target_name):
    onnx_model = {"chain": CHAIN, "residual": RESIDUAL}[name]
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    module, store = compile_fused(onnx_model)
    _, result = run_on_target(module, store, target_name, {"x": x})
    ok, error, _ = within_scale(result.outputs["y"], ort_outputs(onnx_model, {"x": x})[0])
    assert ok, error


def test_wrong_liveness_fails_the_check(monkeypatch):
    """Freeing every tensor right after the layer that writes it lets c overwrite a before the
    Add reads it: the outputs no longer match onnxruntime (so the check sees a wrong liveness)."""
    def defined_only(layers, returned):
        last = {result: position for position, op in enumerate(layers) for result in op.results}
        return last | {value: float("inf") for value in returned}

    monkeypatch.setattr(lower, "last_uses", defined_only)
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    module, store = compile_fused(RESIDUAL)
    program, result = run_on_target(module, store, "vector", {"x": x})
    assert program.dram_bytes == 3 * S  # x, y and one intermediate place
    ok, _, _ = within_scale(result.outputs["y"], ort_outputs(RESIDUAL, {"x": x})[0])
    assert not ok


def test_placing_into_a_freed_block_is_refused():
    module, _ = compile_fused(CHAIN)
    value = lower.layers_of(main_function(module))[0].results[0]
    plan = DramPlan(Program(target("vector"), []), {})
    addr = plan.allocate(100)
    plan.release(0)
    with pytest.raises(AssertionError, match="freed block"):
        plan.place(value, addr)
