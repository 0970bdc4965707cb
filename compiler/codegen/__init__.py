"""Code generation: `nn`/`fused` IR -> tile jobs -> scheduled instructions -> `Program`."""
