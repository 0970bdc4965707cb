"""Front-end speed: import to `nn` and the numpy reference run (a benchmark, not a test).

    python benchmarks/bench_frontend.py [--model resnet50] [--resolution 224] [--repeat 3]

Measures, on this machine, the wall time of
  1. `nncc MODEL.onnx --emit=nn` as a user runs it (a fresh process: start-up included),
  2. the reference execution of the nn IR (import excluded) and onnxruntime on the same input,
and prints the best of `--repeat` runs. Issue goals: ResNet-50 at 224, batch 1: emit under 3 s,
reference run under 10 s.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from nncc.compiler.nn_interpreter import run_reference
from nncc.compiler.onnx_import import import_model
from nncc.compiler.zoo import build_model


def best_of(repeat: int, action) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    model = build_model(args.model, resolution=args.resolution)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{args.model}.onnx"
        onnx.save(model, path)
        command = [sys.executable, "-m", "nncc.compiler.cli", str(path), "--emit=nn"]
        emit = best_of(args.repeat, lambda: subprocess.run(command, check=True, capture_output=True))
        startup = best_of(args.repeat, lambda: subprocess.run(
            [sys.executable, "-c", "import nncc.compiler.cli"], check=True))

    module, store = import_model(model, f"{args.model}.onnx")
    x = {"input": np.random.default_rng(0).standard_normal((1, 3, args.resolution, args.resolution),
                                                           dtype=np.float32)}
    reference = best_of(args.repeat, lambda: run_reference(module, x, store))
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString())
    ort = best_of(args.repeat, lambda: session.run(None, x))

    print(f"{args.model} at {args.resolution}, batch 1, best of {args.repeat}:")
    print(f"  nncc --emit=nn (fresh process)   {emit:6.2f} s   (python start-up + imports {startup:.2f} s)")
    print(f"  reference run of the nn IR       {reference:6.2f} s   (onnxruntime {ort:.3f} s, "
          f"ratio {reference / ort:.0f}x)")


if __name__ == "__main__":
    main()
