"""`nncc-sweep MODEL... --target=T --vary KEY=V1,V2,... -o DIR`: a design-space sweep.

    nncc-sweep mobilenet_v2.onnx resnet50.onnx --target=edge \\
        --vary memory.BUF.size_bytes=64KiB,128KiB,256KiB --vary cores=1,2,4 \\
        --vary tile-order=naive,scan -o sweep/
    nncc-sweep ... -o sweep/ --scheduler tcp://10.0.0.5:8786      # on a Dask distributed cluster
    nncc-sweep resnet18.onnx --target=fusion --train --vary batch=4,8 \
        --vary disable-pass=none,fuse-batch-norm-training -o train-sweep/   # training steps

Every point of the product of the `--vary` values is compiled and simulated (as `nncc MODEL
--target=T --run --report` would) and gives one row of `DIR/results.csv`: the model, the
configuration, and every figure of the report (cycles, MACs, DRAM and on-chip bytes, energy,
engines' utilisation...). A point that fails (a layer that does not fit a small buffer is a
normal outcome) is a row too, with its one-line reason. Pareto-optimal points over (cycles,
energy, on-chip capacity) are marked per model, and plots are drawn in `DIR/plots/`
(`compiler/plots.py`).

Each finished point is written at once, atomically, to `DIR/points/MODEL-ID.json` (its row
and its full report): an interrupted sweep, run again with the same command, resumes from
them. Points run in a local process pool (`compiler/sweep_exec.py`; `--workers N`) or on a
Dask cluster (`--scheduler tcp://HOST:PORT`); a worker that dies loses only the point it ran,
which is tried again (and left for the next run when it keeps killing workers).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nncc.compiler.cli import add_training_options, cp_rank
from nncc.support.command_line import ArgumentParser, add_common_options, available_cpus, nncc_version
from nncc.support.errors import NnccError, one_line, report_errors
from nncc.support.user_files import UserFiles, write_atomically

COMPILER_KEYS = ("target", "tile-order", "tile-objective", "disable-pass", "cp-rank", "batch")
"""`--vary` keys that are compiler options (`batch` with --train); every other key is a target
parameter (`--target-set`)."""
NO_CP = "none"  # `--vary cp-rank=none,0.5,0.25`: the first point keeps the convs as they are
CHOICES = {"tile-order": ("naive", "scan", "tsp"), "tile-objective": ("cycles", "dram")}  # passes/decisions.py ORDERS, OBJECTIVES (not imported: xDSL stays out of start-up)
NO_PASS = "none"  # `--vary disable-pass=none,fuse-epilogues`: the first point disables nothing
PARETO_METRICS = ("cycles", "energy_pj.total", "onchip_capacity_bytes")
"""Minimised together: a point is Pareto-optimal when no other point of its model is at least as
good in all three and better in one. On-chip capacity (every memory's size x its instances) is
the area the architect pays for; the bytes moved are in the row too."""
POINT_FORMAT = 1  # the point files' layout; a file of another format is run again
EXIT_LOST = 1
SIZE_SUFFIXES = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
FIRST_COLUMNS = ["point", "model", "status", "reason", "pareto"]
CONFIG_COLUMNS = ["target", "target_set", "tile_order", "tile_objective", "disabled_passes", "input_shapes",
                  "cp_rank", "mode", "batch"]
RUN_COLUMNS = ["wall_compile_s", "wall_simulate_s", "cpu_s", "worker", "model_file", "model_sha256",
               "nncc_version"]


# --------------------------------------------------------------------------- the points


@dataclass(frozen=True)
class Point:
    """One configuration of one model: everything `run_point` needs, and nothing of the host's."""

    model: str  # the name rows and plots use (the file's stem)
    model_file: str  # as given on the command line
    model_sha256: str
    target: str
    target_set: tuple[str, ...] = ()  # fixed (--target-set) then varied target parameters
    tile_order: str = "scan"
    tile_objective: str = "cycles"
    disabled: tuple[str, ...] = ()
    input_shapes: tuple[str, ...] = ()  # --input-shape, as given
    varied: tuple[tuple[str, str], ...] = ()  # (--vary key, value as given), in --vary order
    training: tuple[tuple[str, object], ...] = ()  # --train: the autodiff settings (loss, lr, ...); () = inference
    batch: int | None = None  # --train --batch (None: the model's own)
    cp_rank: int | float | None = None  # --cp-rank: the convs CP-decomposed (None: as they are)

    @property
    def id(self) -> str:
        """Names the configuration, not the order of the sweep: the same point in another sweep
        (more values, another --vary order) is found again in DIR/points."""
        identity = {"model": self.model_sha256, "target": self.target, "target_set": sorted(self.target_set),
                    "tile_order": self.tile_order, "tile_objective": self.tile_objective,
                    "disabled": sorted(self.disabled), "input_shapes": list(self.input_shapes)}
        if self.training:
            identity.update(training=dict(self.training), batch=self.batch)
        if self.cp_rank is not None:
            identity.update(cp_rank=self.cp_rank)
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def file_name(self) -> str:
        return f"{self.model}-{self.id}.json"

    def label(self) -> str:
        return f"{self.model} " + " ".join(f"{key}={value}" for key, value in self.varied)


@dataclass(frozen=True)
class Model:
    name: str
    path: Path
    sha256: str


@dataclass
class Sweep:
    models: list[Model]
    target: str
    target_set: tuple[str, ...]
    tile_order: str
    tile_objective: str
    disabled: tuple[str, ...]
    input_shapes: tuple[str, ...]
    vary: list[tuple[str, list[str]]] = field(default_factory=list)
    training: tuple[tuple[str, object], ...] = ()  # --train's settings; () = inference
    batch: int | None = None
    cp_rank: int | float | None = None

    def points(self) -> list[Point]:
        """Model-major, then the product of the --vary values in their order."""
        keys = [key for key, _ in self.vary]
        points = []
        for model in self.models:
            for values in itertools.product(*(values for _, values in self.vary)):
                points.append(self.point(model, list(zip(keys, values))))
        return points

    def point(self, model: Model, varied: list[tuple[str, str]]) -> Point:
        config = {"target": self.target, "tile-order": self.tile_order, "tile-objective": self.tile_objective,
                  "batch": self.batch, "cp-rank": self.cp_rank}
        target_set, disabled = list(self.target_set), list(self.disabled)
        for key, value in varied:
            if key == "disable-pass":
                disabled += [] if value == NO_PASS else value.split("+")
            elif key == "batch":
                config[key] = int(value)
            elif key == "cp-rank":
                config[key] = None if value == NO_CP else parse_cp_rank(value)
            elif key in COMPILER_KEYS:
                config[key] = value
            else:
                target_set.append(f"{key}={target_value(value)}")
        return Point(model.name, str(model.path), model.sha256, config["target"], tuple(target_set),
                     config["tile-order"], config["tile-objective"], tuple(dict.fromkeys(disabled)),
                     self.input_shapes, tuple(varied), self.training, config["batch"], config["cp-rank"])


def target_value(text: str) -> str:
    """A --vary value for a target parameter: sizes may be written 64KiB, 1.5MiB, 2GiB."""
    found = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(KiB|MiB|GiB)\s*", text)
    if not found:
        return text
    number = float(found.group(1)) * SIZE_SUFFIXES[found.group(2)]
    if number != int(number):
        raise NnccError(f"--vary: {text} is not a whole number of bytes")
    return str(int(number))


def parse_cp_rank(text: str) -> int | float:
    """A --vary cp-rank value, as `nncc --cp-rank` reads it."""
    try:
        return cp_rank(text)
    except argparse.ArgumentTypeError as error:
        raise NnccError(f"--vary cp-rank={text}: {error}") from None


def parse_vary(texts: list[str]) -> list[tuple[str, list[str]]]:
    """`--vary KEY=V1,V2,...` (repeatable): the keys in order, each with its values."""
    vary: list[tuple[str, list[str]]] = []
    for text in texts:
        key, sep, values_text = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise NnccError(f"--vary {text!r}: expected KEY=V1,V2,... (e.g. cores=1,2,4)")
        key = {"tile_order": "tile-order", "tile_objective": "tile-objective", "disable_pass": "disable-pass"}.get(
            key, key)
        if key in (k for k, _ in vary):
            raise NnccError(f"--vary {key} is given twice; give all its values in one --vary")
        values = [value.strip() for value in values_text.split(",")]
        if not values or any(not value for value in values):
            raise NnccError(f"--vary {text!r}: an empty value; give V1,V2,... without empty entries")
        if len(set(values)) != len(values):
            raise NnccError(f"--vary {key}: a value is given twice ({values_text})")
        if key in CHOICES:
            for value in values:
                if value not in CHOICES[key]:
                    raise NnccError(f"--vary {key}={value}: choose from {', '.join(CHOICES[key])}")
        if key == "batch" and not all(value.isdigit() and int(value) >= 1 for value in values):
            raise NnccError(f"--vary batch={values_text}: batch sizes are positive integers")
        if key == "cp-rank":
            for value in values:
                if value != NO_CP:
                    parse_cp_rank(value)
        vary.append((key, values))
    return vary


def check_sweep(sweep: Sweep) -> None:
    """Every value on its own must make sense (a misspelt key fails now, not in 60 failed points);
    combinations that cannot compile are failed points, recorded with their reason."""
    from nncc.compiler.registry import Registry
    from nncc.runtime.target import REFERENCE_TARGET, load_target

    targets = dict(sweep.vary).get("target", [sweep.target])
    for target in targets:
        if target == REFERENCE_TARGET:
            raise NnccError("--target reference has no machine to sweep: choose vector, fusion, edge or a TOML file")
        load_target(target, sweep.target_set)
    passes = Registry.default().passes
    if "batch" in dict(sweep.vary) and not sweep.training:
        raise NnccError("--vary batch sizes the training steps: add --train (an inference model's batch is its own, "
                        "or --input-shape's)")
    if sweep.training and (sweep.cp_rank is not None or "cp-rank" in dict(sweep.vary)):
        raise NnccError("--cp-rank decomposes the convs of an inference model; --train trains the model as it is")
    for key, values in sweep.vary:
        for value in values:
            if key == "disable-pass":
                for name in [] if value == NO_PASS else value.split("+"):
                    if name not in passes:
                        raise NnccError(f"--vary disable-pass={value}: unknown pass {name!r} "
                                        f"(write none, or passes joined by +: fuse-epilogues+double-buffer)")
                    if name == "lower-to-isa":
                        raise NnccError("--vary disable-pass: lower-to-isa makes the program; it cannot be left out")
            elif key not in COMPILER_KEYS:
                try:
                    load_target(targets[0], [*sweep.target_set, f"{key}={target_value(value)}"])
                except NnccError as error:
                    raise NnccError(f"--vary {key}={value}: {error}") from None


# --------------------------------------------------------------------------- one point, on a worker

_FUSED = threading.local()
"""Per worker (process, or thread of a Dask worker): the last model compiled to the fused stage
(import and graph passes are the same for every back-end configuration of a model)."""


def run_point(point: Point, model_bytes: bytes | None = None) -> dict:
    """Compile and simulate `point`; never raises for the point's own sake. The outcome is a dict:
    `status` ok (with `report`) or failed (with `reason`, one line), wall and CPU seconds, worker.
    `model_bytes`: the ONNX file's bytes when the worker may not see `point.model_file` (Dask)."""
    import platform

    from nncc.runtime.faults import MachineFault

    wall, cpu = time.perf_counter(), time.process_time()
    outcome: dict = {"status": "failed", "worker": f"{platform.node()}:{os.getpid()}"}
    seconds = {"compile": 0.0, "simulate": 0.0}
    try:
        started = time.perf_counter()
        program, fused = compile_point(point, model_path(point, model_bytes))
        seconds["compile"] = time.perf_counter() - started
        started = time.perf_counter()
        outcome["report"] = simulate(program, point, fused)
        seconds["simulate"] = time.perf_counter() - started
        outcome["status"] = "ok"
    except NnccError as error:
        outcome["reason"] = one_line(str(error))
    except MachineFault as error:
        outcome["reason"] = f"machine fault: {one_line(str(error))}"
    except MemoryError as error:
        outcome["reason"] = f"out of memory {one_line(str(error))}".strip()
    except Exception as error:  # a bug of nncc's: recorded as the point's reason, the sweep goes on
        outcome["reason"] = f"internal error: {type(error).__name__}: {one_line(str(error))[:300]}{raised_at(error)}"
    outcome["wall_seconds"] = {phase: round(s, 3) for phase, s in seconds.items()}
    outcome["wall_s"] = round(time.perf_counter() - wall, 3)
    outcome["cpu_s"] = round(time.process_time() - cpu, 3)
    return outcome


def raised_at(error: BaseException) -> str:
    import traceback

    frames = traceback.extract_tb(error.__traceback__)
    return f" (raised at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""


def model_path(point: Point, model_bytes: bytes | None) -> Path:
    """The model file on this worker: the one given, or its bytes saved once per worker host."""
    if model_bytes is None:
        return Path(point.model_file)
    import tempfile

    folder = Path(tempfile.gettempdir()) / "nncc-sweep-models"
    folder.mkdir(exist_ok=True)
    path = folder / f"{point.model_sha256}.onnx"
    if not path.exists():
        write_atomically(path, lambda file: file.write(model_bytes))
    return path


def compile_point(point: Point, path: Path):
    """The program of `point`, as `nncc MODEL --target=T ...` (with --train: `nncc MODEL --train
    --batch N ...`) compiles it, and the fused stage it was lowered from; the fused stage is
    shared by the points of one model (and the same graph passes and training step) on one worker."""
    import tempfile

    from nncc.compiler.cli import check_dram_size
    from nncc.compiler.codegen.isa_module import module_to_program
    from nncc.compiler.onnx_import import parse_input_shapes
    from nncc.compiler.pipeline import Options, compile_further, compile_model
    from nncc.compiler.registry import Registry
    from nncc.compiler.training import program_of, rebatched
    from nncc.runtime.target import load_target

    load_target(point.target, point.target_set)  # an impossible combination fails before compiling
    registry = Registry.default()
    options = Options(disabled=set(point.disabled), input_shapes=parse_input_shapes(list(point.input_shapes)),
                      target_options={"target": point.target, "target_set": point.target_set,
                                      "tile_order": point.tile_order, "tile_objective": point.tile_objective})
    options.training = dict(point.training) or None
    options.cp_rank = point.cp_rank
    key = (point.model_sha256, str(path), tuple(sorted(point.disabled)), point.input_shapes, point.training,
           point.batch, point.cp_rank)
    if getattr(_FUSED, "key", None) != key:
        _FUSED.key, _FUSED.compilation, _FUSED.cp_entry = None, None, None  # the previous model freed first
        with tempfile.TemporaryDirectory(prefix="nncc-sweep-") as folder:
            _FUSED.compilation = compile_model(rebatched(path, point.batch, Path(folder)), registry, options,
                                               until="fused")
        if point.cp_rank is not None:
            _FUSED.cp_entry = decomposition_cost(path, registry, options, _FUSED.compilation)
        _FUSED.key = key
    fused = _FUSED.compilation
    lowered = compile_further(fused, registry, options, after="fused", until="isa")
    if point.training:
        return program_of(lowered), fused
    program = module_to_program(lowered.module, lowered.store)
    check_dram_size(program, program.target)
    return program, fused


def decomposition_cost(path: Path, registry, options, decomposed) -> dict:
    """`nncc --cp-rank`'s report entry: the decomposed graph's output error against the original
    (reference interpreter, seeded random inputs, seed 0), its weights before and after."""
    from nncc.compiler import cp_error
    from nncc.compiler.nn_interpreter import input_signature
    from nncc.support.check import random_inputs

    entry, _ = cp_error.measure(path, registry, options, decomposed,
                                random_inputs(input_signature(decomposed.module), 0))
    return entry


def simulate(program, point: Point, fused) -> dict:
    """The report `nncc --run --report` (with --train: `nncc --train --run --report`) writes, less
    what names this host's run."""
    from nncc.compiler.cli import merge_predictions
    from nncc.runtime.interpreter import run
    from nncc.runtime.report import build_report
    from nncc.runtime.target import target_to_dict

    if point.training:
        report = simulate_training(program, point, fused)
    else:
        report = build_report(run(program))
    merge_predictions(report, getattr(program, "predictions", {}))
    report["target_description"] = target_to_dict(program.target)
    if getattr(_FUSED, "cp_entry", None) is not None and point.cp_rank is not None:
        report["cp_decompose"] = _FUSED.cp_entry
    return report


def simulate_training(program, point: Point, fused) -> dict:
    """One run of the training program on seeded random inputs and labels (seed 0, as nncc's)."""
    from nncc.compiler.nn_interpreter import input_signature
    from nncc.compiler.training import add_training_figures, phases_of, run_program, split_outputs, training_feeds

    settings = dict(point.training)
    inputs, feeds, _, label_info = training_feeds(input_signature(fused.module), 0, settings["loss"])
    outputs, report = run_program(program, feeds)
    batch = int(next(iter(inputs.values())).shape[0]) if inputs else None
    add_training_figures(report, phases_of(fused.module), {**settings, "batch": batch, **label_info},
                         split_outputs(outputs)[0], program.target.mac_units)
    return report


# --------------------------------------------------------------------------- rows


def flatten_report(report: dict) -> dict:
    """The report's figures as columns (nested keys joined by dots); layers stay in the point file."""
    row: dict = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        elif isinstance(value, (int, float, str, bool)) or value is None:
            row[prefix] = value

    for key, value in report.items():
        if key not in ("layers", "target_description", "check"):
            walk(key, value)
    row["dram_bytes"] = row.get("dram.read_bytes", 0) + row.get("dram.write_bytes", 0)
    row["onchip_bytes"] = sum(v for k, v in row.items() if k.startswith("onchip.") and k.endswith("_bytes"))
    description = report.get("target_description", {})
    cores = description.get("cores", 1)
    row["onchip_capacity_bytes"] = sum(m["size_bytes"] * (1 if m.get("shared") else cores)
                                       for m in description.get("memory", []))
    return row


def make_row(point: Point, outcome: dict) -> dict:
    row = {"point": point.id, "model": point.model, "status": outcome["status"],
           "reason": outcome.get("reason", ""), "pareto": False}
    row.update({key: value for key, value in point.varied})
    row.update({"target": point.target, "target_set": " ".join(point.target_set), "tile_order": point.tile_order,
                "tile_objective": point.tile_objective, "disabled_passes": "+".join(point.disabled),
                "input_shapes": " ".join(point.input_shapes), "cp_rank": point.cp_rank,
                "mode": "training" if point.training else "inference",
                "batch": point.batch})
    if outcome.get("report"):
        row.update(flatten_report(outcome["report"]))
    seconds = outcome.get("wall_seconds", {})
    row.update({"wall_compile_s": seconds.get("compile"), "wall_simulate_s": seconds.get("simulate"),
                "cpu_s": outcome.get("cpu_s"), "worker": outcome.get("worker", ""),
                "model_file": point.model_file, "model_sha256": point.model_sha256,
                "nncc_version": outcome.get("nncc_version", "")})
    return row


def mark_pareto(rows: list[dict], metrics: Iterable[str] = PARETO_METRICS) -> None:
    """`pareto` = True on the rows of each model that no other ok row of that model dominates."""
    metrics = tuple(metrics)
    by_model: dict[str, list[dict]] = {}
    for row in rows:
        row["pareto"] = False
        if row["status"] == "ok" and all(isinstance(row.get(m), (int, float)) for m in metrics):
            by_model.setdefault(row["model"], []).append(row)
    for group in by_model.values():
        values = [tuple(row[m] for m in metrics) for row in group]
        for row, mine in zip(group, values):
            row["pareto"] = not any(all(o <= m for o, m in zip(other, mine)) and other != mine for other in values)


def write_csv(path: Path, rows: list[dict], varied_keys: list[str]) -> None:
    """One row per point; columns: identity, the varied keys, the configuration, the figures
    (sorted), then how it ran. Empty cells for figures a failed point has not."""
    known = FIRST_COLUMNS + [k for k in varied_keys if k not in FIRST_COLUMNS] + CONFIG_COLUMNS
    figures = sorted({key for row in rows for key in row} - set(known) - set(RUN_COLUMNS))
    columns = known + figures + RUN_COLUMNS
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: ("" if value is None else value) for key, value in row.items()})
    write_atomically(path, lambda file: file.write(text.getvalue().encode()))


# --------------------------------------------------------------------------- the output folder


class Folder:
    """DIR: `points/` (one JSON per finished point, written atomically), `results.csv`, `plots/`."""

    def __init__(self, path: Path):
        self.path = path
        self.points = path / "points"

    def prepare(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise NnccError(f"-o {self.path}: is a file; give a folder (it is created if missing)")
        if not self.path.parent.is_dir():
            raise NnccError(f"-o {self.path}: folder {self.path.parent} does not exist")
        try:
            self.points.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise NnccError(f"-o {self.path}: cannot create it: {error.strerror}") from None
        if not os.access(self.points, os.W_OK | os.X_OK):
            raise NnccError(f"-o {self.path}: folder {self.points} is not writable")

    def finished(self, point: Point) -> dict | None:
        """The outcome of `point` saved by an earlier run, or None (missing, unreadable, another point)."""
        try:
            saved = json.loads((self.points / point.file_name).read_text())
        except (OSError, ValueError):
            return None
        if (not isinstance(saved, dict) or saved.get("format") != POINT_FORMAT
                or saved.get("point", {}).get("model_sha256") != point.model_sha256
                or saved.get("outcome", {}).get("status") not in ("ok", "failed")):
            return None
        return saved["outcome"]

    def save(self, point: Point, outcome: dict) -> None:
        document = {"format": POINT_FORMAT, "id": point.id, "point": asdict(point), "outcome": outcome}
        text = json.dumps(document, indent=None, separators=(",", ":")) + "\n"
        write_atomically(self.points / point.file_name, lambda file: file.write(text.encode()))


# --------------------------------------------------------------------------- the command


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="nncc-sweep", description="Compile and simulate the product of configurations: "
                            "one CSV row per point, Pareto fronts and plots.")
    parser.add_argument("models", nargs="+", type=Path, metavar="MODEL", help="ONNX models")
    parser.add_argument("--target", default="vector", help="a preset (vector, fusion, edge) or a target TOML file")
    parser.add_argument("--target-set", action="append", default=[], metavar="KEY=VALUE",
                        help="fix one target parameter for every point (repeatable)")
    parser.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="values of a target parameter (memory.BUF.size_bytes=64KiB,128KiB, cores=1,2,4) or "
                             "of a compiler option (target, tile-order, tile-objective, disable-pass=none,"
                             "fuse-epilogues) (repeatable: the product is swept)")
    parser.add_argument("--tile-order", choices=CHOICES["tile-order"], default="scan")
    parser.add_argument("--tile-objective", choices=CHOICES["tile-objective"], default="cycles")
    parser.add_argument("--disable-pass", action="append", default=[], metavar="PASS",
                        help="leave this pass out at every point (repeatable)")
    parser.add_argument("--input-shape", action="append", default=[], metavar="[NAME=]D0xD1x...",
                        help="static shape of a dynamic input, as for nncc (repeatable)")
    parser.add_argument("--cp-rank", type=cp_rank, metavar="R",
                        help="CP-decompose the KxK convs at every point, as nncc --cp-rank (vary it with --vary cp-rank=...)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                        help="the sweep's folder (created if missing; a sweep run again resumes from it)")
    parser.add_argument("--workers", type=positive, default=None,
                        help="local processes (default: the CPUs this process may use)")
    parser.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                        help="run the points on this Dask distributed scheduler instead of local processes")
    parser.add_argument("--scheduler-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="how long to try to reach the scheduler (default 30)")
    parser.add_argument("--plot-point", metavar="ID",
                        help="the point whose per-layer roofline is drawn (default: each model's fastest)")
    parser.add_argument("--no-plots", action="store_true", help="write results.csv only")
    add_training_options(parser, one_run=False)
    add_common_options(parser)
    return parser


def training_of(args: argparse.Namespace) -> tuple[tuple[tuple[str, object], ...], int | None]:
    """--train's settings as a point holds them, and --batch; training flags without --train are refused."""
    from nncc.compiler.cli import TRAINING_DEFAULTS

    given = [f"--{flag.replace('_', '-')}" for flag in ("batch", *TRAINING_DEFAULTS) if getattr(args, flag) is not None]
    if not args.train:
        if given:
            raise NnccError(f"{given[0]} is a training option: add --train")
        return (), None
    for flag, default in TRAINING_DEFAULTS.items():
        if getattr(args, flag) is None:
            setattr(args, flag, default)
    from nncc.compiler.training import settings_from

    return tuple(settings_from(args).items()), args.batch


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def read_models(paths: list[Path], files: UserFiles) -> list[Model]:
    from nncc.runtime.report import file_sha256

    models, names = [], {}
    for path in paths:
        if not path.is_file():
            raise NnccError(f"{path}: no such model file")
        if path.suffix != ".onnx":
            raise NnccError(f"{path}: nncc-sweep takes ONNX models (.onnx)")
        files.reads("a model", path)
        name = path.stem
        if name in names:
            raise NnccError(f"{path} and {names[name]}: two models named {name}; rows and plots name models by "
                            "their file name, so give them distinct names")
        names[name] = path
        models.append(Model(name, path, file_sha256(path)))
    return models


@report_errors("nncc-sweep")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.scheduler is not None and args.workers is not None:
        raise NnccError("--workers sizes the local pool; with --scheduler the cluster's workers run the points")
    if args.scheduler is not None and not re.fullmatch(r"(tcp|tls|inproc|ucx|ws|wss)://\S+", args.scheduler):
        raise NnccError(f"--scheduler {args.scheduler!r}: expected an address such as tcp://HOST:8786")
    files = UserFiles()
    models = read_models(args.models, files)
    training, batch = training_of(args)
    sweep = Sweep(models, args.target, tuple(args.target_set), args.tile_order, args.tile_objective,
                  tuple(args.disable_pass), tuple(args.input_shape), parse_vary(args.vary), training, batch,
                  args.cp_rank)
    if Path(sweep.target).is_file():
        files.reads("--target", sweep.target)
        sweep.target = str(Path(sweep.target).resolve())  # workers may run elsewhere in the file system
    check_sweep(sweep)
    folder = Folder(args.output)
    folder.prepare()
    points = sweep.points()
    ids = [point.id for point in points]
    if args.plot_point is not None and args.plot_point not in ids:
        raise NnccError(f"--plot-point {args.plot_point}: no point of this sweep has that id (the point column "
                        "of results.csv)")
    return run_sweep(args, sweep, folder, points)


def run_sweep(args: argparse.Namespace, sweep: Sweep, folder: Folder, points: list[Point]) -> int:
    from nncc.compiler import sweep_exec

    started = time.perf_counter()
    outcomes: dict[str, dict] = {}
    for point in points:
        saved = folder.finished(point)
        if saved is not None:
            outcomes[point.id] = saved
    resumed = len(outcomes)
    todo = [point for point in points if point.id not in outcomes]
    lost: dict[str, str] = {}
    version = nncc_version()
    bar = sweep_exec.Bar(len(points), resumed, sum(o["status"] == "failed" for o in outcomes.values()),
                         enabled=sweep_exec.bar_wanted(args.quiet))

    def finished(point: Point, outcome: dict) -> None:
        outcome["nncc_version"] = version
        folder.save(point, outcome)
        outcomes[point.id] = outcome
        bar.advance(failed=outcome["status"] == "failed")
        if outcome["status"] == "failed":
            bar.print(f"nncc-sweep: {point.label()}: {outcome['reason']}")

    def gave_up(point: Point, reason: str) -> None:
        lost[point.id] = reason
        bar.advance(failed=True)
        bar.print(f"nncc-sweep: {point.label()}: lost: {reason}")

    interrupted = False
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, interrupt) if main_thread else None  # a batch system's stop
    try:
        with bar:
            if todo and args.scheduler:
                sweep_exec.run_on_dask(todo, args.scheduler, run_point, finished, gave_up,
                                       timeout=args.scheduler_timeout)
            elif todo:
                sweep_exec.run_on_pool(todo, args.workers or available_cpus(), run_point, finished, gave_up)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    wall = time.perf_counter() - started
    rows = []
    for point in points:
        if point.id in outcomes:
            rows.append(make_row(point, outcomes[point.id]))
        elif point.id in lost or interrupted:
            rows.append(make_row(point, {"status": "lost" if point.id in lost else "not run",
                                         "reason": lost.get(point.id, "the sweep was interrupted")}))
    mark_pareto(rows)
    varied_keys = [key for key, _ in sweep.vary]
    write_csv(folder.path / "results.csv", rows, varied_keys)
    if interrupted:
        print(f"nncc-sweep: interrupted: {len(outcomes)} of {len(points)} points are in {folder.path}; "
              "run the same command again to resume", file=sys.stderr)
        return 130
    plots = [] if args.no_plots else draw_plots(folder, rows, varied_keys, args.plot_point)
    ok = sum(row["status"] == "ok" for row in rows)
    failed = sum(row["status"] == "failed" for row in rows)
    print(f"nncc-sweep: {len(points)} points ({ok} ok, {failed} failed, {len(lost)} lost; "
          f"{resumed} from an earlier run) in {wall:.1f} s -> {folder.path / 'results.csv'}"
          + (f" and {len(plots)} plots in {folder.path / 'plots'}" if plots else ""))
    if lost:
        print(f"nncc-sweep: {len(lost)} points lost (their workers died); run the same command again to retry them",
              file=sys.stderr)
        return EXIT_LOST
    return 0


def interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def draw_plots(folder: Folder, rows: list[dict], varied_keys: list[str], plot_point: str | None) -> list[Path]:
    from nncc.compiler import plots

    out = folder.path / "plots"
    out.mkdir(exist_ok=True)
    written = plots.sweep_plots(rows, varied_keys, out)
    ok = [row for row in rows if row["status"] == "ok"]
    chosen = [row for row in ok if row["point"] == plot_point] if plot_point else [
        min((row for row in ok if row["model"] == model), key=lambda row: row["cycles"])
        for model in dict.fromkeys(row["model"] for row in ok)]
    for row in chosen:
        saved = json.loads((folder.points / f"{row['model']}-{row['point']}.json").read_text())
        report = saved["outcome"]["report"]
        stem = f"roofline-{row['model']}-{row['point']}"
        title = f"{row['model']}, point {row['point']}: " + ", ".join(f"{k}={row[k]}" for k in varied_keys)
        for suffix in (".png", ".svg"):
            plots.layer_figure(report, out / f"{stem}{suffix}", title=title)
            written.append(out / f"{stem}{suffix}")
    return written


if __name__ == "__main__":
    sys.exit(main())
