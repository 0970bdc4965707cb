"""fuse-groups: [1x1 ->] depthwise -> 1x1 [+ residual] chains compiled as one nest, the
intermediates on chip, on every target, against onnxruntime; the DRAM traffic is the group's
input, weights and output only; the cost model's prediction is the simulation's; the pass's
recorded layer-by-layer figures are what the layers cost when they are not fused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from codegen_helpers import (TARGETS, assert_fusion_figures_simulated, compile_fused, nests, ort_outputs, target,
                             tiled, within_scale)
from nncc.compiler.codegen.group_nest import find_chains
from nncc.compiler.codegen.lower import lower_module
from nncc.compiler.nn_interpreter import main_function
from nncc.dialects import tile
from nncc.runtime.interpreter import run


def conv(name, x, w, b, y, rng, *, group=1, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), scale=0.3):
    weight = (rng.standard_normal(w) * scale).astype(np.float32)
    bias = (rng.standard_normal(w[0]) * 0.2).astype(np.float32)
    node = helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [y], name=name, group=group, strides=list(strides),
                            pads=list(pads), dilations=list(dilations), kernel_shape=list(w[2:]))
    return node, [numpy_helper.from_array(weight, f"{name}.w"), numpy_helper.from_array(bias, f"{name}.b")]


def relu6(name, x, y):
    return helper.make_node("Clip", [x, "zero", "six"], [y], name=name)


def block_model(n=2, c=8, h=12, w=12, e=48, o=8, *, expand=True, stride=1, pads=(1, 1, 1, 1), dilation=1,
                residual=True, depthwise=None, seed=0) -> onnx.ModelProto:
    """[1x1 c->e, ReLU6 ->] depthwise 3x3, ReLU6 -> 1x1 e->o [+ x]; or with `depthwise` a run of
    depthwise convs ((kh, kw), (sh, sw), pads) without activations (a CP-decomposed conv)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], [numpy_helper.from_array(np.array(0, np.float32), "zero"),
                        numpy_helper.from_array(np.array(6, np.float32), "six")]
    source = "x"
    if expand:
        node, weights = conv("expand", "x", (e, c, 1, 1), None, "e0", rng)
        nodes += [node, relu6("expand_relu", "e0", "e1")]
        inits += weights
        source = "e1"
    else:
        e = c
    runs = depthwise or [((3, 3), (stride, stride), pads)]
    size = [h, w]
    for i, (kernel, strides, dw_pads) in enumerate(runs):
        node, weights = conv(f"dw{i}", source, (e, 1, *kernel), None, f"d{i}", rng, group=e, strides=strides,
                             pads=dw_pads, dilations=(dilation, dilation), scale=0.5)
        nodes.append(node)
        inits += weights
        source = f"d{i}"
        if depthwise is None:
            nodes.append(relu6("dw_relu", source, "d1"))
            source = "d1"
        size = [(size[a] + dw_pads[a] + dw_pads[a + 2] - dilation * (kernel[a] - 1) - 1) // strides[a] + 1
                for a in (0, 1)]
    node, weights = conv("project", source, (o, e, 1, 1), None, "p0" if residual else "y", rng, scale=0.2)
    nodes.append(node)
    inits += weights
    if residual:
        nodes.append(helper.make_node("Add", ["p0", "x"], ["y"], name="add"))
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, h, w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, o, *size])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=9)


BLOCKS = {
    "inverted_residual": {},
    "stride2_odd_size": {"h": 15, "w": 13, "stride": 2, "residual": False, "o": 16},
    "separable_dilated": {"expand": False, "c": 32, "pads": (2, 1, 2, 3), "dilation": 2, "residual": False, "n": 1},
    "cp_chain": {"depthwise": [((3, 1), (1, 1), (1, 0, 1, 0)), ((1, 3), (1, 1), (0, 1, 0, 1))], "e": 32},
    "cp_chain_strided": {"depthwise": [((3, 1), (2, 1), (1, 0, 1, 0)), ((1, 3), (1, 2), (0, 1, 0, 1))],
                         "h": 13, "w": 11, "residual": False},
}


@pytest.mark.parametrize("target_name", TARGETS)
@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_group_runs_as_one_nest(block, target_name):
    model = block_model(**BLOCKS[block])
    module, store = tiled(model, target_name, "fuse-groups{always=true},tile-layers,double-buffer")
    (group,) = nests(module)
    assert group.attributes["op"].data == "fused.group"
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    program = lower_module(module, store, target(target_name))
    result = run(program, {"x": x})
    (expected,) = ort_outputs(model, {"x": x})
    ok, error, scale = within_scale(result.outputs["y"], expected)
    assert ok, f"max error {error} against scale {scale}"
    # only the output is written: the intermediates never leave the chip
    assert result.write_bytes["DRAM"] == 4 * expected.size
    (layer,) = result.layers
    prediction = program.predictions[0]
    assert prediction["predicted_cycles"] == layer.cycles
    assert prediction["predicted_dram_read_bytes"] == result.read_bytes["DRAM"]


@pytest.mark.parametrize("target_name", TARGETS)
def test_recorded_figures_are_the_simulation(target_name):
    """The `fusion` attribute's fused figures are the group's simulated cycles and DRAM bytes; its
    layer-by-layer figures those of the three layers compiled without the pass."""
    model = block_model()
    x = np.random.default_rng(2).standard_normal((2, 8, 12, 12)).astype(np.float32)
    assert_fusion_figures_simulated(model, target_name, x, 3)


def test_disabled_gives_layer_by_layer():
    module, _ = tiled(block_model(), "edge", "tile-layers")
    assert [nest.attributes["op"].data for nest in nests(module)] == ["fused.conv2d"] * 3


def test_the_objective_decides():
    """Where the group is kept its recorded figures rank first by the module's objective."""
    for objective in ("cycles", "dram"):
        module, _ = tiled(block_model(h=24, w=24), "vector", f"fuse-groups{{tile-objective={objective}}}")
        for nest in nests(module):
            figures = nest.attributes["fusion"].data
            cycles, nbytes = ([a.value.data for a in figures[key]] for key in ("cycles", "dram_bytes"))
            ranked = list(zip(nbytes, cycles)) if objective == "dram" else list(zip(cycles, nbytes))
            assert ranked[0] < ranked[1]


def test_shared_intermediate_is_not_fused():
    """A depthwise output that a second op reads must reach DRAM: no group."""
    model = block_model(residual=False)
    model.graph.output.append(helper.make_tensor_value_info("d1", TensorProto.FLOAT, [2, 48, 12, 12]))
    module, _ = compile_fused(model)
    assert find_chains(main_function(module).body.block) == []


def test_a_rank_that_does_not_fill_the_lanes_still_fuses():
    """A CP rank with no block that is a multiple of the lanes (69): every divisor is a block size
    then, so the chain still fits `edge`'s buffer and fuses where DRAM bytes decide."""
    model = block_model(n=1, c=64, h=56, w=56, e=69, o=64, residual=False,
                        depthwise=[((3, 1), (1, 1), (1, 0, 1, 0)), ((1, 3), (1, 1), (0, 1, 0, 1))])
    module, _ = tiled(model, "edge", "fuse-groups{tile-objective=dram}")
    (group,) = [nest for nest in nests(module) if nest.attributes["op"].data == "fused.group"]
    fused, separate = (a.value.data for a in group.attributes["fusion"].data["dram_bytes"])
    assert fused < separate
