"""Write the reduction models of the import FileCheck tests: `make_reduce_model.py PREFIX` writes
PREFIX.FORM.onnx for every FORM (input x: 1 x 4 x 3 x 3):

- keep: opset 18, ReduceMean(x, axes=[-2, -1]) keepdims=1, then Flatten (PyTorch's dynamo
  exporter's global average pooling);
- drop: opset 18, ReduceMean(x, axes=[2, 3]) keepdims=0;
- legacy: opset 13, ReduceMean with the axes attribute [2, 3], keepdims=0 (the legacy exporter's
  x.mean([2, 3]));
- channel: opset 18, ReduceMax(x, axes=[1]) keepdims=1 (a transpose before the pooling).
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def axes(values):
    return numpy_helper.from_array(np.array(values, np.int64), "axes")


def model(nodes, y_shape, inits=(), opset=18):
    graph = helper.make_graph(nodes, "reduce", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


MODELS = {
    "keep": model([helper.make_node("ReduceMean", ["x", "axes"], ["mean"], name="mean", keepdims=1),
                   helper.make_node("Flatten", ["mean"], ["y"], name="flatten")], [1, 4], [axes([-2, -1])]),
    "drop": model([helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="mean", keepdims=0)], [1, 4],
                  [axes([2, 3])]),
    "legacy": model([helper.make_node("ReduceMean", ["x"], ["y"], name="mean", axes=[2, 3], keepdims=0)], [1, 4],
                    opset=13),
    "channel": model([helper.make_node("ReduceMax", ["x", "axes"], ["y"], name="max")], [1, 1, 3, 3], [axes([1])]),
}

for form, proto in MODELS.items():
    onnx.save(proto, f"{sys.argv[1]}.{form}.onnx")
