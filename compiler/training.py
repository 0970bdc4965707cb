"""`nncc MODEL.onnx --train ...`: training steps, run and checked against PyTorch.

    nncc m.onnx --train --batch 2 --check --report r.json                  # reference (numpy)
    nncc m.onnx --train --target=vector --steps 3 --check --report r.json  # one program, on the interpreter

The pipeline's nn stage ends with the `autodiff` pass (passes/autodiff.py), so the module's
@main is the training step(s); the reference target runs it with numpy (`nn_interpreter`), an
accelerator target lowers it (`lower-training-ops`, then the back end) into one program. The
batch is a seeded random input (or `--inputs`) and seeded random class labels (or `--labels`);
with `--check` the loss of every step, every weight gradient (of the last step) and every
updated weight and running statistic are compared with PyTorch autograd and torch.optim.SGD on
the same model and data (`training_torch`). Tolerances: `TOLERANCES` below, docs/training.md."""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nncc.support.errors import NnccError

TOLERANCES = {"loss": 1e-4, "grad": 1e-3, "updated": 1e-4, "velocity": 1e-3}
"""Per kind of tensor: the largest error allowed, as a fraction of the tensor's largest |value| in
PyTorch (its scale), plus `ABSOLUTE_FLOOR`. Both sides compute in float32 in different orders:
a gradient is a sum over the batch and the output pixels (thousands to millions of products),
whose rounding error grows like sqrt(terms) x 2^-24 x the sum of |products|, and cancellation
(BatchNorm's mean subtraction, softmax minus one-hot) makes that sum of |products| up to ~100x
the result: 1e-3 of the scale covers it with room. An updated weight is w - lr x (...): its error
is lr x the gradient's, small against the weight itself. The loss is one log-sum-exp, exact to a
few float32 ulps."""
ABSOLUTE_FLOOR = 1e-6
"""Errors below this pass whatever the scale."""
GRADIENT_FLOOR = 1e-6
"""A gradient whose true value is 0 (a conv bias followed by BatchNorm, a BatchNorm bias whose
output feeds a conv followed by BatchNorm: BatchNorm's input gradient has zero mean per channel)
comes out as the rounding noise of sums whose terms are as large as the model's other gradients:
errors up to this fraction of the largest |gradient| of the model pass in every gradient."""


EXACT_MARGIN = 2.0
"""When float32 PyTorch and nncc differ by more than the tolerance, both are compared with PyTorch
in float64 (the exact answer): nncc passes when its error is at most this many times PyTorch's
float32 error (plus the tolerance). Deep models with small batches are ill-conditioned: on the
zoo's ResNet-50 (batch 2) PyTorch's own float32 gradients are up to 26 % off its float64 ones."""


@dataclass
class TensorCheck:
    name: str
    max_abs_err: float
    scale: float
    tolerance: float
    exact_err: float | None = None  # nncc against PyTorch float64
    torch_exact_err: float | None = None  # PyTorch float32 against PyTorch float64

    @property
    def passed(self) -> bool:
        if self.max_abs_err <= self.tolerance:
            return True
        return self.exact_err is not None and self.exact_err <= EXACT_MARGIN * self.torch_exact_err + self.tolerance

    def summary(self) -> str:
        verdict = "ok" if self.passed else "MISMATCH"
        exact = ("" if self.exact_err is None else
                 f"; against float64: {self.exact_err:.3g}, PyTorch float32's {self.torch_exact_err:.3g}")
        return (f"{self.name}: {verdict}: max abs err {self.max_abs_err:.3g} (scale {self.scale:.3g}, "
                f"tolerance {self.tolerance:.3g}{exact})")


def settings_from(args) -> dict:
    """The autodiff pass's options from the command line."""
    if args.batch is not None and args.batch < 1:
        raise NnccError(f"--batch {args.batch}: must be at least 1")
    if args.steps < 1:
        raise NnccError(f"--steps {args.steps}: must be at least 1")
    for flag in ("lr", "momentum", "weight_decay"):
        value = getattr(args, flag)
        if not math.isfinite(value) or value < 0:
            raise NnccError(f"--{flag.replace('_', '-')} {value}: must be a finite number >= 0")
    return {"loss": args.loss, "lr": args.lr, "momentum": args.momentum, "weight_decay": args.weight_decay,
            "steps": args.steps, "dropout": args.dropout, "dropout_seed": getattr(args, "seed", None) or 0}


def rebatched(model_path: Path, batch: int | None, folder: Path) -> Path:
    """`model_path`, or a copy in `folder` whose inputs have batch size `batch` (dimension 0 of
    every graph input; the outputs' batch left to shape inference)."""
    if batch is None:
        return model_path
    import onnx

    from nncc.compiler.onnx_import import load_onnx

    model = load_onnx(model_path)
    initializers = {init.name for init in model.graph.initializer}
    for value in (*model.graph.input, *model.graph.output):
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if not dims:
            raise NnccError(f"{model_path}: --batch needs inputs and outputs of known rank; '{value.name}' has none")
        dims[0].Clear()
        if value in model.graph.input:
            dims[0].dim_value = batch
        else:
            dims[0].dim_param = "batch"
    del model.graph.value_info[:]
    path = folder / model_path.name
    onnx.save(model, str(path))
    return path


def make_target(labels_path: Path | None, loss: str, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, dict]:
    """The autodiff `target` input: one-hot class labels (cross-entropy) or the wanted output (mse),
    from `--labels` or seeded random. Also what the report says of them."""
    from nncc.support.check import read_npz

    rng = np.random.default_rng([seed, 12])
    if loss == "mse":
        if labels_path is None:
            return rng.standard_normal(shape, dtype=np.float32), {"target": "seeded random N(0, 1)"}
        arrays = read_npz(labels_path, "--labels")
        target = arrays.get("target", next(iter(arrays.values())) if len(arrays) == 1 else None)
        if target is None or tuple(target.shape) != tuple(shape):
            raise NnccError(f"{labels_path}: --loss mse needs an array 'target' of the output's shape {list(shape)}")
        return target.astype(np.float32), {"target": str(labels_path)}
    batch, classes = shape
    if labels_path is None:
        labels = rng.integers(0, classes, batch)
    else:
        arrays = read_npz(labels_path, "--labels")
        labels = arrays.get("labels", next(iter(arrays.values())) if len(arrays) == 1 else None)
        if labels is None or labels.shape != (batch,) or not np.issubdtype(labels.dtype, np.integer):
            raise NnccError(f"{labels_path}: --labels needs an integer array 'labels' of shape [{batch}] "
                            f"(one class per image of the batch)")
        if labels.min() < 0 or labels.max() >= classes:
            raise NnccError(f"{labels_path}: labels must be classes 0..{classes - 1}, got {labels.min()}..{labels.max()}")
    target = np.zeros(shape, dtype=np.float32)
    target[np.arange(batch), labels] = 1.0
    return target, {"labels": [int(label) for label in labels]}


def split_outputs(outputs: dict[str, np.ndarray]) -> tuple[list[float], dict, dict, dict]:
    """losses, gradients, updated tensors and velocities by weight name."""
    kinds: dict[str, dict] = {"grad": {}, "updated": {}, "velocity": {}}
    for name, array in outputs.items():
        kind, _, weight = name.partition(".")
        if kind in kinds:
            kinds[kind][weight] = array
    return [float(v) for v in outputs["loss"].reshape(-1)], kinds["grad"], kinds["updated"], kinds["velocity"]


def compare_with_torch(module_path: Path, outputs: dict, inputs: dict, target: np.ndarray, settings: dict,
                       input_shapes: dict) -> list[TensorCheck]:
    """Every loss, gradient and updated tensor against PyTorch on the model as imported."""
    from nncc.compiler.onnx_import import build_module, fix_input_shapes, load_onnx
    from nncc.compiler.training_torch import torch_training

    model = fix_input_shapes(load_onnx(module_path), input_shapes, str(module_path))
    module, store = build_module(model, module_path.name)
    losses, grads, updated, _ = split_outputs(outputs)
    reference = torch_training(module, store, inputs, target, settings, trainable=list(grads),
                               running=[name for name in updated if name not in grads])
    checks = [check_tensor(f"loss[{step}]", np.float32(ours), np.float32(theirs), "loss")
              for step, (ours, theirs) in enumerate(zip(losses, reference.losses))]
    largest = max((float(np.abs(g).max()) for g in reference.grads.values() if g.size), default=0.0)
    checks += [check_tensor(f"grad.{name}", grads[name], reference.grads[name], "grad", GRADIENT_FLOOR * largest)
               for name in grads]
    checks += [check_tensor(f"updated.{name}", updated[name], reference.updated[name], "updated")
               for name in updated]
    if not all(c.passed for c in checks):
        exact = torch_training(module, store, inputs, target, settings, trainable=list(grads),
                               running=[name for name in updated if name not in grads], dtype="float64")
        ours = {**{f"loss[{i}]": loss for i, loss in enumerate(losses)},
                **{f"grad.{n}": g for n, g in grads.items()}, **{f"updated.{n}": u for n, u in updated.items()}}
        theirs = {**{f"loss[{i}]": loss for i, loss in enumerate(reference.losses)},
                  **{f"grad.{n}": g for n, g in reference.grads.items()},
                  **{f"updated.{n}": u for n, u in reference.updated.items()}}
        truth = {**{f"loss[{i}]": loss for i, loss in enumerate(exact.losses)},
                 **{f"grad.{n}": g for n, g in exact.grads.items()},
                 **{f"updated.{n}": u for n, u in exact.updated.items()}}
        for check in checks:
            if not check.passed:
                check.exact_err = max_error(ours[check.name], truth[check.name])
                check.torch_exact_err = max_error(theirs[check.name], truth[check.name])
    return checks


def max_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max()) if a.size else 0.0


def check_tensor(name: str, ours: np.ndarray, theirs: np.ndarray, kind: str, floor: float = 0.0) -> TensorCheck:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    scale = float(np.abs(theirs).max()) if theirs.size else 0.0
    tolerance = TOLERANCES[kind] * scale + max(ABSOLUTE_FLOOR, floor)
    if ours.shape != theirs.shape or not np.isfinite(ours).all():
        return TensorCheck(name, float("inf"), scale, tolerance)
    return TensorCheck(name, float(np.abs(ours - theirs).max()) if ours.size else 0.0, scale, tolerance)


def check_report(checks: list[TensorCheck]) -> dict:
    worst = max(checks, key=lambda c: c.max_abs_err / c.tolerance, default=None)
    return {
        "passed": all(c.passed for c in checks),
        "reference": "pytorch",
        "max_abs_err": max((c.max_abs_err for c in checks), default=0.0),
        "max_rel_err": max((c.max_abs_err / c.scale if c.scale else 0.0 for c in checks), default=0.0),
        "worst": worst.name if worst else None,
        "tolerances": {**TOLERANCES, "absolute_floor": ABSOLUTE_FLOOR, "gradient_floor": GRADIENT_FLOOR},
        "exact_margin": EXACT_MARGIN,
        "tensors": {c.name: {"max_abs_err": c.max_abs_err, "scale": c.scale, "tolerance": c.tolerance,
                             "passed": c.passed, **({} if c.exact_err is None else {
                                 "float64_err": c.exact_err, "pytorch_float32_float64_err": c.torch_exact_err})}
                    for c in checks},
    }


def save_weights(files, path: Path, model_path: Path, updated: dict[str, np.ndarray]) -> None:
    """The ONNX model with its initializers replaced by the updated weights and statistics."""
    from onnx import numpy_helper

    from nncc.compiler.onnx_import import load_onnx

    model = load_onnx(model_path)
    for index, init in enumerate(model.graph.initializer):
        if init.name in updated:
            array = np.ascontiguousarray(updated[init.name], dtype=np.float32).reshape(tuple(init.dims))
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(array, init.name))
    files.write_bytes(path, model.SerializeToString())


@dataclass
class TrainingResult:
    report: dict
    inputs: dict
    failures: list[TensorCheck]
    line: str


def run_training(args, files, clock, options, registry, program_paths=()) -> TrainingResult | None:
    """`--train`: on the reference target, numpy execution of the training step's nn IR; on an
    accelerator target, the step lowered (lower-training-ops, then the back end) into one
    program, written to `program_paths` and run on the interpreter. None when nothing is to run.
    `options` and `registry` are the command line's (cli.py)."""
    from nncc.compiler.nn_interpreter import input_signature
    from nncc.compiler.pipeline import compile_further, compile_model
    from nncc.support import check

    settings = settings_from(args)
    if args.save_weights is not None:
        files.writes("--save-weights", args.save_weights)
    on_target = args.target != "reference"
    with tempfile.TemporaryDirectory() as folder:
        model_path = rebatched(args.model, args.batch, Path(folder))
        options.training = settings
        with clock("compile"):
            compilation = compile_model(model_path, registry, options, until="fused")
            phases = phases_of(compilation.module)
            signature = input_signature(compilation.module)
            if on_target:
                program = program_of(compile_further(compilation, registry, options, after="fused", until="isa"))
                write_program(program, program_paths)
        inputs, feeds, target, label_info = training_feeds(signature, args.seed, args.loss, args.labels, args.inputs)
        if not (args.run or args.check or args.report or args.outputs or args.save_weights):
            return None
        with clock("simulate"):
            outputs, report = (run_program(program, feeds) if on_target
                               else run_numpy(compilation, feeds))
        checks = None
        if args.check:
            from nncc.support import progress

            with clock("check"), progress.stage("PyTorch check"):
                checks = compare_with_torch(model_path, outputs, inputs, target, settings, options.input_shapes)
    losses, grads, updated, _ = split_outputs(outputs)
    if args.outputs:
        check.save_outputs(args.outputs, outputs)
    if args.save_weights is not None:
        save_weights(files, args.save_weights, args.model, updated)
    batch = int(next(iter(inputs.values())).shape[0]) if inputs else None
    add_training_figures(report, phases, {**settings, "batch": batch, **label_info}, losses,
                         program.target.mac_units if on_target else None)
    if checks is not None:
        report["check"] = check_report(checks)
    line = (f"nncc: {args.model.name} on {report['target']}: training, {settings['steps']} step(s), batch {batch}, "
            f"{len(grads)} weights, loss {' -> '.join(f'{loss:.5g}' for loss in losses)}")
    if on_target:
        line += f"; {report['cycles']} cycles, MAC utilization {report['mac_utilization']:.1%}"
    if checks is not None:
        verdict = "check passed" if report["check"]["passed"] else "CHECK FAILED"
        line += f"; {verdict} against PyTorch ({len(checks)} tensors, worst {report['check']['worst']})"
    return TrainingResult(report, inputs, [c for c in checks or [] if not c.passed], line)


def training_feeds(signature: dict[str, tuple[int, ...]], seed: int, loss: str, labels_path: Path | None = None,
                   inputs_path: Path | None = None) -> tuple[dict, dict, np.ndarray, dict]:
    """The step's inputs (from `inputs_path` or seeded random), every feed of the program (the
    inputs and the autodiff `target`, the last input), the target, and what the report says of it."""
    from nncc.support import check

    signature = dict(signature)
    target_name = list(signature)[-1]
    target_shape = signature.pop(target_name)
    inputs = check.load_inputs(inputs_path, signature) if inputs_path else check.random_inputs(signature, seed)
    target, label_info = make_target(labels_path, loss, target_shape, seed)
    return inputs, {**inputs, target_name: target}, target, label_info


def add_training_figures(report: dict, phases: dict[str, str], training: dict, losses: list[float],
                         mac_units: int | None) -> None:
    """Each layer row's `phase` and `mode`, and the step's figures (its settings, losses, MACs
    and, on an accelerator, cycles per phase), added to a run's report."""
    copied = {"loss": "forward", "grad": "backward", "updated": "update", "velocity": "update"}
    for row in report["layers"]:
        output = row["name"].removeprefix("copy_").partition(".")[0] if row["name"].startswith("copy_") else None
        row["phase"] = copied.get(output) or phases.get(row["name"], row.get("phase", "forward"))
        row["mode"] = "training"
    report.update({
        "mode": "training",
        "training": training,
        "losses": losses,
        "macs_by_phase": {phase: sum(r["macs"] for r in report["layers"] if r["phase"] == phase)
                          for phase in ("forward", "backward", "update")},
    })
    if mac_units is not None:
        report["phases"] = phase_totals(report["layers"], mac_units)


def phase_totals(rows: list[dict], mac_units: int) -> dict[str, dict]:
    """Cycles, MACs and MAC utilization of each phase's layers (on an accelerator target)."""
    totals = {}
    for phase in ("forward", "backward", "update"):
        cycles = sum(r["cycles"] for r in rows if r["phase"] == phase)
        macs = sum(r["macs"] for r in rows if r["phase"] == phase)
        totals[phase] = {"cycles": cycles, "macs": macs,
                         "mac_utilization": macs / (cycles * mac_units) if cycles else 0.0}
    return totals


def phases_of(module) -> dict[str, str]:
    """Layer name -> phase (forward, backward, update), from the ops' `nn.phase`."""
    from nncc.dialects import nn

    return {op.results[0].name_hint: nn.phase_of(op) for op in module.walk()
            if op.results and op.results[0].name_hint and nn.PHASE in op.attributes}


def program_of(compilation):
    from nncc.compiler.codegen.isa_module import module_to_program

    program = module_to_program(compilation.module, compilation.store)
    program.mode = "training"
    if program.dram_bytes > program.target.dram.size_bytes:
        raise NnccError(f"target {program.target.name}: the training program needs {program.dram_bytes} bytes of "
                        f"DRAM, which has {program.target.dram.size_bytes} (dram.size_bytes)")
    return program


def write_program(program, paths) -> None:
    from nncc.runtime.program_file import save

    for path in paths:
        save(program, path)


def run_numpy(compilation, feeds: dict) -> tuple[dict, dict]:
    from nncc.compiler.nn_interpreter import run_reference
    from nncc.support import progress

    with progress.stage("reference run"):
        outputs, layers = run_reference(compilation.module, feeds, compilation.store)
    return outputs, {"target": "reference", "macs": sum(row["macs"] for row in layers), "layers": layers}


def run_program(program, feeds: dict) -> tuple[dict, dict]:
    from nncc.runtime.interpreter import run
    from nncc.runtime.report import build_report

    result = run(program, feeds)  # a MachineFault is the command line's (exit 3)
    outputs = {s.name: result.outputs[s.name].reshape(s.shape) for s in program.symbols_of("output")}
    return outputs, build_report(result)
