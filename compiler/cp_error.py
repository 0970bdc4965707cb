"""What `nncc --cp-rank` costs: the CP-decomposed model's outputs against the original model's.

Both graphs run on the reference interpreter (numpy, `nn_interpreter`) with the run's inputs: the
original is the model through the `fused` stage without cp-decompose, the decomposed one is the
compilation itself at that stage. The error is the relative L2 error over all outputs together,
||decomposed - original||_2 / ||original||_2 (`passes/cp_decompose.relative_l2_error`).

    entry, outputs = measure(model_path, registry, options, decomposed, inputs)
    report["cp_decompose"] = entry        # outputs: the decomposed graph's reference outputs
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from nncc.compiler.nn_interpreter import run_reference
from nncc.compiler.pipeline import Compilation, Options, compile_model, no_printing
from nncc.compiler.registry import Registry
from nncc.passes.cp_decompose import records_of, relative_l2_error


def original_options(options: Options) -> Options:
    """The same options without the decomposition (and without IR dumps: the original graph is
    compiled a second time only to be measured against)."""
    return dataclasses.replace(options, cp_rank=None, printing=no_printing(), emit=None)


def measure(model_path: Path, registry: Registry, options: Options, decomposed: Compilation,
            inputs: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
    """(the report's `cp_decompose` entry, the decomposed graph's reference outputs)."""
    original = compile_model(model_path, registry, original_options(options), until="fused")
    want, _ = run_reference(original.module, inputs, original.store)
    got, _ = run_reference(decomposed.module, inputs, decomposed.store)
    layers = records_of(decomposed.module)
    entry = {
        "rank": options.cp_rank,
        "convs": len(layers),
        "weights_before": sum(row["weights_before"] for row in layers),
        "weights_after": sum(row["weights_after"] for row in layers),
        "output_rel_l2_error": relative_l2_error(got, want),
        "layers": layers,
    }
    return entry, got


def summary_line(entry: dict) -> str:
    """The line `nncc` prints on stderr."""
    return (f"nncc: cp-decompose{{rank={entry['rank']}}}: {entry['convs']} convs, weights "
            f"{entry['weights_before'] / 1e6:.3f} M -> {entry['weights_after'] / 1e6:.3f} M; output error "
            f"{entry['output_rel_l2_error']:.3g} (relative L2, original vs decomposed graph on the reference "
            f"interpreter, this run's inputs)")
