"""Shared by the import tests: the nn ops an ONNX model imports into."""

import onnx

from nncc.compiler.onnx_import import import_model


def op_names(model: onnx.ModelProto) -> list[str]:
    """Names of the `nn` ops of the imported model, in order, weights left out."""
    module, _ = import_model(model)
    return [op.name for op in module.walk() if op.name.startswith("nn.") and op.name != "nn.weight"]
