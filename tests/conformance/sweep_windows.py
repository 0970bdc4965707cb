"""Randomised conv/pooling sweep: nncc against onnxruntime and onnx's reference evaluator.

    python tests/conformance/sweep_windows.py [--trials 600] [--seed 1]

Each trial builds one Conv, MaxPool or AveragePool (1-D or 2-D; random sizes,
strides, dilations, explicit pads or auto_pad, ceil_mode, count_include_pad,
groups), runs it with the three and prints every trial where nncc agrees with
neither, then a count per outcome. docs/conformance.md explains the known
disagreements ("Where the references disagree"). Not a test: the references
disagree with each other, so this is a tool for looking, not a gate.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime
from onnx.reference import ReferenceEvaluator

from nncc.compiler.nn_interpreter import run_reference
from nncc.compiler.onnx_import import import_model
from nncc.support.errors import NnccError


def load_cases_module():
    path = Path(__file__).with_name("onnxruntime_cases.py")
    spec = importlib.util.spec_from_file_location("nncc_conformance_onnxruntime_cases", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def random_window_model(cases, rng: np.random.Generator):
    """(description, model, input shape) of one random conv/pooling node."""
    op = str(rng.choice(["MaxPool", "AveragePool", "Conv"]))
    rank = int(rng.choice([1, 2]))
    size = [int(rng.integers(3, 10)) for _ in range(rank)]
    kernel = [int(rng.integers(1, 4)) for _ in range(rank)]
    attrs = {"strides": [int(rng.integers(1, 4)) for _ in range(rank)],
             "dilations": [int(rng.integers(1, 3)) for _ in range(rank)]}
    auto_pad = str(rng.choice(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    if auto_pad == "NOTSET":
        attrs["pads"] = [int(rng.integers(0, k)) for k in kernel + kernel]
    else:
        attrs["auto_pad"] = auto_pad
    shape = [2, 3, *size]
    if op == "Conv":
        group = int(rng.choice([1, 3]))
        out = 3 * int(rng.integers(1, 3))
        constants = {"W": cases.weights(1, out, 3 // group, *kernel), "B": cases.weights(2, out)}
        model = cases.single_op("Conv", {"x": shape}, constants=constants, group=group, **attrs)
    else:
        attrs.update(kernel_shape=kernel, ceil_mode=int(rng.integers(0, 2)))
        if op == "AveragePool":
            attrs["count_include_pad"] = int(rng.integers(0, 2))
        model = cases.single_op(op, {"x": shape}, opset=19, **attrs)
    del model.graph.output[0].type.tensor_type.shape.dim[:]  # onnx's inference misses ceil_mode's rule
    return f"{op} {size} {attrs}", model, shape


def close(actual, expected) -> bool:
    if expected is None or isinstance(actual, str) or actual.shape != expected.shape:
        return False
    scale = np.abs(expected).max(initial=0.0)
    return bool(np.abs(actual - expected).max(initial=0.0) <= 1e-4 * scale)


def run_all(model, x):
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    try:
        ort = onnxruntime.InferenceSession(model.SerializeToString(), options).run(None, {"x": x})[0]
    except Exception:  # noqa: BLE001 -- onnxruntime refuses some configurations
        ort = None
    try:
        ref = ReferenceEvaluator(model).run(None, {"x": x})[0]
    except Exception:  # noqa: BLE001 -- so does the reference evaluator
        ref = None
    try:
        module, store = import_model(model, "sweep")
        nncc = run_reference(module, {"x": x}, store)[0]["y"]
    except NnccError as error:
        nncc = f"NnccError: {error}"
    return nncc, ort, ref


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=600)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    cases = load_cases_module()
    rng = np.random.default_rng(args.seed)
    outcomes = Counter()
    for _ in range(args.trials):
        description, model, shape = random_window_model(cases, rng)
        x = rng.standard_normal(shape).astype(np.float32)
        nncc, ort, ref = run_all(model, x)
        if isinstance(nncc, str):
            outcome = "nncc refuses"
        elif close(nncc, ort) or close(nncc, ref):
            outcome = "agrees with " + " and ".join(
                name for name, other in (("onnxruntime", ort), ("reference", ref)) if close(nncc, other))
        else:
            outcome = "agrees with neither"
        outcomes[outcome] += 1
        if outcome in ("agrees with neither", "nncc refuses"):
            shapes = [getattr(r, "shape", r) for r in (nncc, ort, ref)]
            print(f"{outcome}: {description}: nncc {shapes[0]}, onnxruntime {shapes[1]}, reference {shapes[2]}")
    for outcome, count in outcomes.most_common():
        print(f"{count:5d}  {outcome}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
