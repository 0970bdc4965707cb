"""Split, Slice and the channel shuffle of ShuffleNet-v2 blocks, in the exporters' forms.

PyTorch's `x.chunk(2, dim=1)` exports as Split on channels: `split` as an input (opset 13-17),
`num_outputs` (opset 18), or the `split` attribute (opset <= 12, upgraded to 13 at import);
`channel_shuffle` as Reshape [N, g, C/g, H, W] -> Transpose [0, 2, 1, 3, 4] -> Reshape back.
Each output of Split and each Slice is one `nn.slice`: an alias of its input when it is one
contiguous run of it (a channel range with batch 1), else a DMA copy of a strided box. Every
model is compiled and run with --check against onnxruntime on every target, in-process.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nncc.compiler.codegen.lower import lower_module
from nncc.compiler.onnx_import import import_model
from nncc.runtime.target import load_target
from nncc.support.errors import NnccError
from tests.compiler.imported_ops import op_names

TARGETS = ("reference", "vector", "fusion", "edge")
RNG = np.random.default_rng(7)


def ints(values, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def weight(shape, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * 0.5).astype(np.float32), name)


def make_model(nodes, x_shape, outputs, initializers=(), opset: int = 13) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "split_slice", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in outputs],
        list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    onnx.checker.check_model(model, full_check=True)
    return model


def split_node(form: str, inputs: str, outputs: list[str], sizes: list[int], axis: int = 1):
    """Split in one exporter's form: "input" (opset 13+), "num_outputs" (18), "attr" (<= 12)."""
    if form == "input":
        return helper.make_node("Split", [inputs, "split_sizes"], outputs, name="split", axis=axis), \
            [ints(sizes, "split_sizes")]
    if form == "num_outputs":
        return helper.make_node("Split", [inputs], outputs, name="split", axis=axis,
                                num_outputs=len(outputs)), []
    return helper.make_node("Split", [inputs], outputs, name="split", axis=axis, split=sizes), []


def shufflenet_unit(form: str, opset: int, c: int = 8, hw: int = 6) -> onnx.ModelProto:
    """torchvision's InvertedResidual (stride 1): conv, x.chunk(2) -> branch2 on the second half
    (1x1 conv, ReLU, 3x3 depthwise, 1x1 conv, ReLU) -> cat -> channel_shuffle(groups=2)."""
    half = c // 2
    split, inits = split_node(form, "stem", ["left", "right"], [half, half])
    inits += [weight((c, 3, 3, 3), "stem.w"), weight((half, half, 1, 1), "b1.w"), weight((half, 1, 3, 3), "dw.w"),
              weight((half, half, 1, 1), "b2.w"), ints([1, 2, half, hw, hw], "grouped"),
              ints([1, c, hw, hw], "flat")]
    nodes = [helper.make_node("Conv", ["x", "stem.w"], ["stem"], name="stem", pads=[1, 1, 1, 1]),
             split,
             helper.make_node("Conv", ["right", "b1.w"], ["b1"], name="b1"),
             helper.make_node("Relu", ["b1"], ["b1r"], name="b1_relu"),
             helper.make_node("Conv", ["b1r", "dw.w"], ["dw"], name="dw", pads=[1, 1, 1, 1], group=half),
             helper.make_node("Conv", ["dw", "b2.w"], ["b2"], name="b2"),
             helper.make_node("Relu", ["b2"], ["b2r"], name="b2_relu"),
             helper.make_node("Concat", ["left", "b2r"], ["cat"], name="cat", axis=1),
             helper.make_node("Reshape", ["cat", "grouped"], ["g"], name="shuffle_reshape"),
             helper.make_node("Transpose", ["g"], ["t"], name="shuffle_transpose", perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t", "flat"], ["y"], name="shuffle_flatten")]
    return make_model(nodes, [1, 3, hw, hw], [("y", [1, c, hw, hw])], inits, opset)


def slice_model(x_shape, starts, ends, axes=None, steps=None, out_shape=None) -> onnx.ModelProto:
    """Relu -> Slice (constant starts/ends/axes/steps as initializers) -> Relu."""
    names, inits = ["r", "starts", "ends"], [ints(starts, "starts"), ints(ends, "ends")]
    for name, values in (("axes", axes), ("steps", steps)):
        if values is not None:
            names.append(name)
            inits.append(ints(values, name))
        elif name == "axes" and steps is not None:
            names.append("")
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Slice", names, ["s"], name="slice"),
             helper.make_node("Sigmoid", ["s"], ["y"], name="sigmoid")]
    return make_model(nodes, x_shape, [("y", out_shape)], inits)


def uneven_split_18() -> onnx.ModelProto:
    """Opset 18 num_outputs=3 over 7 rows (3, 3, 1): spatial boxes, copied."""
    split, _ = split_node("num_outputs", "r", ["a", "b", "c"], [], axis=2)
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), split,
             helper.make_node("Sigmoid", ["b"], ["sb"], name="sig")]
    return make_model(nodes, [1, 3, 7, 5], [("a", [1, 3, 3, 5]), ("sb", [1, 3, 3, 5]), ("c", [1, 3, 1, 5])],
                      opset=18)


MODELS = {
    "shufflenet_split13_input": shufflenet_unit("input", 13),
    "shufflenet_split18_num_outputs": shufflenet_unit("num_outputs", 18),
    "shufflenet_split11_attribute": shufflenet_unit("attr", 11),
    "shufflenet_16_channels": shufflenet_unit("input", 17, c=16, hw=5),
    # ends past the end and negative ends (clamped), on channels and columns: a copy
    "slice_negative_clamped_ends": slice_model([1, 6, 5, 7], [1, -4], [1000, -1], [1, 3], None, [1, 5, 5, 3]),
    # a contiguous channel range: an alias of the Relu's result
    "slice_channels_alias": slice_model([1, 6, 5, 7], [2], [-1], [1], None, [1, 3, 5, 7]),
    "slice_steps": slice_model([2, 4, 6, 7], [0, 1, 6], [2, 4, -100], [0, 2, 3], [1, 2, -2], [2, 4, 2, 4]),
    "slice_default_axes": slice_model([1, 4, 5, 6], [0, 1, 1], [1, 3, 4], None, None, [1, 2, 3, 6]),
    "split18_uneven_rows": uneven_split_18(),
}


@pytest.fixture(scope="module")
def model_paths(saved_models):
    return saved_models(MODELS)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", MODELS)
def test_checks_on_every_target(passes_check, model_paths, name, target):
    passes_check(model_paths[name], target)


def slice_layers(model: onnx.ModelProto, target: str = "vector") -> list[str]:
    module, store = import_model(model)
    program = lower_module(module, store, load_target(target))
    return [ins.name for ins in program.instructions
            if type(ins).__name__ == "Layer" and ins.op == "nn.slice"]


def test_split_is_one_slice_per_output_and_channel_halves_are_aliases():
    names = op_names(MODELS["shufflenet_split13_input"])
    assert names.count("nn.slice") == 2 and "nn.transpose" in names
    # batch 1, channel halves: contiguous runs of the stem's output, no copy on the chip
    assert slice_layers(MODELS["shufflenet_split13_input"]) == []
    assert slice_layers(MODELS["slice_channels_alias"]) == []
    assert slice_layers(MODELS["slice_negative_clamped_ends"]) == ["s"]
    assert len(slice_layers(MODELS["split18_uneven_rows"])) == 3


def test_whole_tensor_slice_is_no_op():
    model = slice_model([1, 3, 4, 4], [0], [100], [2], None, [1, 3, 4, 4])
    assert op_names(model) == ["nn.relu", "nn.sigmoid"]


@pytest.mark.parametrize("starts, ends, message", [
    ([3], [1], "zero-size dimension"),
    ([0], [2], None),
])
def test_empty_slice_is_refused(starts, ends, message):
    model = slice_model([1, 3, 4, 4], starts, ends, [1], None, [1, None, 4, 4])
    if message is None:
        assert "nn.slice" in op_names(model)
        return
    with pytest.raises(NnccError, match=message):
        import_model(model)


def test_opset13_split_must_be_even():
    split, _ = split_node("num_outputs", "x", ["a", "b"], [])
    split.ClearField("attribute")
    split.attribute.append(helper.make_attribute("axis", 1))
    graph = helper.make_graph([split], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, 2, 2])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, None, 2, 2]) for n in "ab"])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=9)
    with pytest.raises(NnccError, match="does not split into 2 equal parts"):
        import_model(model)
