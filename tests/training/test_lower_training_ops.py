"""lower-training-ops rewrites every training op into forward nn ops (but those it leaves to the
back end's nests: SGD, stride-1 backward-data, group-1 backward-filter); run by the nn
interpreter, the rewritten training step gives the explicit ops' values: every loss, gradient,
updated weight, running statistic and velocity, for every op family, within 1e-5 of each
tensor's largest |value| (float32 in other summation orders: per-channel sums as row means
times the row length)."""

import numpy as np
import pytest

from nncc.compiler.nn_interpreter import input_signature, run_reference
from nncc.compiler.pass_manager import run_passes
from nncc.compiler.pipeline import Options, compile_model
from nncc.compiler.registry import Registry
from nncc.compiler.training import make_target
from nncc.passes.lower_training_ops import RULES, kept_for_back_end

CASES = [("tiny", "cross-entropy"), ("se", "cross-entropy"), ("cat", "cross-entropy"), ("gemm", "mse"),
         ("matmul", "cross-entropy"), ("feature_map", "mse"), ("split", "cross-entropy"), ("smooth", "cross-entropy"),
         ("pools", "cross-entropy")]


@pytest.mark.parametrize("name, loss", CASES, ids=[c[0] for c in CASES])
def test_rewritten_step_computes_the_same_values(name, loss, model_file):
    registry = Registry.default()
    settings = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3, "loss": loss, "steps": 2}
    compilation = compile_model(model_file(name), registry, Options(training=settings), until="fused")
    module, store = compilation.module, compilation.store
    signature = input_signature(module)
    target_name = list(signature)[-1]
    inputs = {n: np.random.default_rng(1).standard_normal(s).astype(np.float32)
              for n, s in signature.items() if n != target_name}
    inputs[target_name] = make_target(None, loss, signature[target_name], 0)[0]
    explicit, _ = run_reference(module, inputs, store)
    run_passes(module, registry.pipeline("lower-training-ops"), registry.context())
    assert not [op.name for op in module.walk() if type(op) in RULES and not kept_for_back_end(op)]
    with np.errstate(all="ignore"):
        rewritten, _ = run_reference(module, inputs, store)
    assert set(rewritten) == set(explicit)
    largest_grad = max(float(np.abs(v).max()) for k, v in explicit.items() if k.startswith("grad."))
    for key, value in explicit.items():
        scale = float(np.abs(value).max())
        err = float(np.abs(rewritten[key].astype(np.float64) - value).max())
        assert err <= 1e-5 * scale + 1e-6 * largest_grad + 1e-7, (key, err, scale)
