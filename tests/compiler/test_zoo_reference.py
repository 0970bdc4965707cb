"""Every zoo model, imported and executed by the reference interpreter, agrees with onnxruntime."""

import numpy as np
import onnxruntime
import pytest

from nncc.compiler.nn_interpreter import run_reference
from nncc.compiler.onnx_import import import_model
from nncc.compiler.zoo import MODELS, build_model


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.big_memory) if n in ("resnet50", "vgg16") else n
                                  for n in MODELS])
def test_zoo_model_matches_onnxruntime(name):
    batch, resolution = (2, 32) if name != "vgg16" else (1, 32)
    model = build_model(name, batch=batch, resolution=resolution, seed=1)
    module, store = import_model(model, f"{name}.onnx")
    module.verify()
    x = np.random.default_rng(7).standard_normal((batch, 3, resolution, resolution)).astype(np.float32)
    outputs, layers = run_reference(module, {"input": x}, store)
    expected = onnxruntime.InferenceSession(model.SerializeToString()).run(None, {"input": x})[0]
    actual = outputs["logits"]
    assert actual.shape == expected.shape == (batch, 1000)
    assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max()
    # The logits differ between the two images: the batch axis is really computed.
    assert np.abs(actual[0] - actual[-1]).max() > 0 or batch == 1
    # Every conv and gemm of the model shows up as a layer row with its ONNX node.
    computed = {n for row in layers if row["macs"] for n in row["onnx_nodes"]}
    expected_nodes = {n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm")}
    assert computed == expected_nodes
