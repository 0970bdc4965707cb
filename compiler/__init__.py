"""nncc.compiler: the compiler (ONNX import, pipeline, code generation, the tools).

It sits on top (docs/pipeline.md, "Layering"): it and `nncc.passes` use the dialects, the machine
(`nncc.runtime`) and `nncc.support`; nothing below imports them. The numpy reference of the `nn`
and `fused` dialects (`nn_interpreter`, `fused_interpreter`, `nn_kernels`) is here, with the
weight store (`weights`) it reads.
"""
