"""`nncc MODEL.onnx ...`: the compiler driver (contract in docs/design.md, "Command line").

    nncc model.onnx --emit=nn                       # print the nn IR
    nncc model.onnx --emit=nn -o model.nn.mlir      # write it, weights beside it
    nncc model.onnx --target=reference --run --check --report r.json

Exit codes: 0 success, 1 outputs differ from onnxruntime, 2 bad input (one line
on stderr), 3 a fault of the simulated machine.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from nncc.compiler.pipeline import STAGE_NAMES
from nncc.support import progress
from nncc.support.command_line import ArgumentParser, add_common_options, available_cpus, nncc_version, output_file, seed
from nncc.support.errors import NnccError, report_errors
from nncc.support.user_files import UserFiles

# Only light modules are imported here: `--help`, `--version` and argument errors answer at once;
# onnx, xDSL and numpy are imported when there is work to do.

REFERENCE_TARGET = "reference"
EXIT_MISMATCH = 1
RUN_FLAGS = ("run", "check", "inputs", "outputs", "report", "trace", "plot")
DEFAULTS = {"seed": 0, "tile_order": "scan", "tile_objective": "cycles"}
"""Options whose default is applied after `check_flag_combinations` has seen whether they were given."""


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="nncc", description="Compile an ONNX model for a deep-learning accelerator.")
    parser.add_argument("model", type=Path, help="the ONNX model")
    parser.add_argument("--target", default=None,
                        help="'reference' (numpy execution of the nn IR), a preset (vector, fusion, edge) "
                             "or a target TOML file (default: vector; for IR saved at a stage, the "
                             "target it records)")
    parser.add_argument("--target-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one target parameter (repeatable)")
    parser.add_argument("--input-shape", action="append", default=[], metavar="[NAME=]D0xD1x...",
                        help="static shape of an input with dynamic dimensions, e.g. input=1x3x224x224 "
                             "(repeatable; the name may be left out for a model with one input)")
    parser.add_argument("--emit", choices=STAGE_NAMES, help="print the IR after this stage and stop")
    parser.add_argument("-o", "--output", type=output_file,
                        help="with --emit: write the IR here (weights beside it); - is stdout")
    parser.add_argument("--run", action="store_true", help="execute the compiled model")
    parser.add_argument("--check", action="store_true", help="compare the outputs with onnxruntime (implies --run)")
    parser.add_argument("--inputs", type=Path, help=".npz of inputs by name (default: seeded random)")
    parser.add_argument("--seed", type=seed, help="seed of the random inputs (default: 0)")
    parser.add_argument("--outputs", type=Path, help="write the outputs to this .npz")
    parser.add_argument("--report", type=Path, help="write the JSON report here (fields: docs/cli.md)")
    parser.add_argument("--trace", type=Path, help="with --run on a target: Chrome trace of the engines")
    parser.add_argument("--plot", type=Path, metavar="FILE.png",
                        help="with a target: per-layer roofline and cycles/DRAM bars (.png, .svg or .pdf)")
    parser.add_argument("--tile-order", choices=("naive", "scan", "tsp"),
                        help="order of the tiles of a layer (scan reuses the block already on chip; default; "
                             "tsp: a conv/gemm's output tiles as a travelling-salesman path)")
    parser.add_argument("--tile-objective", choices=("cycles", "dram"),
                        help="what tile sizes minimise first: cycles (then DRAM bytes; default), or DRAM bytes "
                             "(then cycles: less DRAM energy, usually more cycles)")
    parser.add_argument("--program", type=Path, metavar="PREFIX",
                        help="write the program to PREFIX.nnbin (default: MODEL.TARGET.nnbin beside the model)")
    parser.add_argument("-S", "--emit-asm", action="store_true",
                        help="also write the textual assembly PREFIX.s (large: 190 MB for ResNet-50)")
    parser.add_argument("-j", "--jobs", type=jobs, metavar="N",
                        help="processes the tile search may use (default: the CPUs available; the program is "
                             "the same for any N)")
    parser.add_argument("--cp-rank", type=cp_rank, metavar="R",
                        help="CP-decompose every KxK conv (cp-decompose): an integer rank, or a fraction in (0, 1] "
                             "of each conv's weights; the output error it costs is reported")
    add_training_options(parser)
    add_pass_options(parser)
    add_common_options(parser)
    return parser


def jobs(text: str) -> int:
    """`--jobs`: an integer >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of processes >= 1")
    return int(text)


def cp_rank(text: str) -> int | float:
    """`--cp-rank`: an integer >= 1 (the CP rank) or a fraction in (0, 1] of each conv's weights."""
    try:
        value: int | float = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if isinstance(value, int) and value < 1:
        raise argparse.ArgumentTypeError(f"{value}: an absolute rank must be an integer >= 1")
    if isinstance(value, float) and not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: a fractional rank must be in (0, 1] (an integer is a rank)")
    return value


def add_pass_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by nncc and nncc-opt: IR printing and plugins."""
    parser.add_argument("--print-ir-after-all", action="store_true", help="print the IR after every pass")
    parser.add_argument("--print-ir-before-all", action="store_true", help="print the IR before every pass")
    parser.add_argument("--print-ir-after", action="append", default=[], metavar="PASS",
                        help="print the IR after this pass (repeatable)")
    parser.add_argument("--print-ir-before", action="append", default=[], metavar="PASS",
                        help="print the IR before this pass (repeatable)")
    parser.add_argument("--pass-plugin", action="append", default=[], metavar="FILE_OR_MODULE",
                        help="load passes from a Python file or module (repeatable)")
    parser.add_argument("--disable-pass", action="append", default=[], metavar="PASS",
                        help="leave this pass out of the pipeline (repeatable)")
    parser.add_argument("--add-passes", default="", metavar="PIPELINE",
                        help="run these passes after the graph passes, e.g. 'my-pass{opt=1}'")


TRAINING_DEFAULTS = {"loss": "cross-entropy", "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "steps": 1,
                     "dropout": "seeded"}
TRAINING_FLAGS = ("batch", "labels", "loss", "lr", "momentum", "weight_decay", "steps", "dropout", "save_weights")


def add_training_options(parser: argparse.ArgumentParser, one_run: bool = True) -> None:
    """--train and its options (docs/training.md); `one_run`: also those of a single run's data
    (--labels, --save-weights), which a sweep has not."""
    group = parser.add_argument_group("training (docs/training.md)")
    group.add_argument("--train", action="store_true",
                       help="compile training steps (forward, loss, backward, SGD update) instead of inference"
                            + (" (default target with --train: reference)" if one_run else ""))
    group.add_argument("--batch", type=int, metavar="N", help="batch size of the training inputs (default: the model's)")
    if one_run:
        group.add_argument("--labels", type=Path, metavar="NPZ",
                           help="class labels: an .npz with an integer array 'labels' [N] (mse: a float array "
                                "'target' of the output's shape); default: seeded random")
    group.add_argument("--loss", choices=("cross-entropy", "mse"),
                       help="the loss (default cross-entropy; a trailing Softmax is folded into it)")
    group.add_argument("--lr", type=float, help="SGD learning rate (default 0.01)")
    group.add_argument("--momentum", type=float, help="SGD momentum (default 0)")
    group.add_argument("--weight-decay", type=float, help="SGD weight decay (default 0)")
    group.add_argument("--steps", type=int, metavar="K", help="training steps on the batch (default 1)")
    group.add_argument("--dropout", choices=("seeded", "identity"),
                       help="Dropout in training: seeded, a mask per step drawn from --seed (default), or identity")
    if one_run:
        group.add_argument("--save-weights", type=output_file, metavar="ONNX",
                           help="write the model with its updated weights (and running statistics) here")


def check_training_flags(args: argparse.Namespace) -> None:
    """Training options without --train, and what --train cannot do yet, are errors."""
    given = [f"--{flag.replace('_', '-')}" for flag in TRAINING_FLAGS if getattr(args, flag) is not None]
    if not args.train:
        if given:
            raise NnccError(f"{given[0]} is a training option: add --train")
        return
    if Path(args.model).suffix == ".mlir":
        raise NnccError(f"{args.model}: --train needs the ONNX model (the autodiff pass runs on the imported nn IR)")
    if args.trace is not None:
        raise NnccError("--trace is not available with --train yet (nncc-run PROGRAM.nnbin --trace runs the "
                        "training program written beside the model)")
    run_only = [flag for flag in given if flag in ("--batch", "--labels", "--save-weights")]
    if args.emit and run_only:
        raise NnccError(f"--emit={args.emit} stops after that stage: {run_only[0]} needs a run (leave --emit out)")
    for flag, default in TRAINING_DEFAULTS.items():
        if getattr(args, flag) is None:
            setattr(args, flag, default)


def training_settings(args: argparse.Namespace) -> dict | None:
    if not args.train:
        return None
    from nncc.compiler.training import settings_from

    return settings_from(args)


def run_training_target(args: argparse.Namespace, files: UserFiles) -> int:
    """--train --target=reference: the training steps on numpy, checked against PyTorch."""
    from nncc.compiler.training import run_training

    from nncc.runtime.faults import MachineFault

    paths = []
    if args.target != REFERENCE_TARGET:
        from nncc.runtime.target import load_target

        name = load_target(args.target, args.target_set).name
        prefix = program_prefix(args.program) or args.model.with_name(f"{args.model.stem}.train.{name}")
        flag = "--program" if args.program else "the program (beside the model; choose with --program PREFIX)"
        paths = [files.writes(flag, prefix.with_name(prefix.name + suffix))
                 for suffix in ((".nnbin", ".s") if args.emit_asm else (".nnbin",))]
    declare_run_outputs(files, args)
    clock = Stopwatch()
    try:
        result = run_training(args, files, clock, options_from(args), registry_from(args), paths)
    except MachineFault as fault:
        print(f"nncc: {fault}", file=sys.stderr)
        return 3
    if result is None:
        wrote = f" -> {', '.join(p.name for p in paths)}" if paths else ""
        print(f"nncc: {args.model.name}: training step compiled for --target={args.target}{wrote} "
              f"(add --run to execute)", file=sys.stderr)
        return 0
    result.report.update(what_was_run(args.model, result.inputs, clock))
    if args.report:
        write_json(files, args.report, result.report)
    print(result.line)
    for failure in result.failures:
        print(f"  {failure.summary()}", file=sys.stderr)
    return EXIT_MISMATCH if result.failures else 0


def printing_from(args: argparse.Namespace):
    from nncc.compiler.pass_manager import IRPrinting

    return IRPrinting(after_all=args.print_ir_after_all, before_all=args.print_ir_before_all,
                      after=set(args.print_ir_after), before=set(args.print_ir_before))


def registry_from(args: argparse.Namespace):
    from nncc.compiler.registry import Registry

    registry = Registry.default()
    for plugin in args.pass_plugin:
        registry.load_plugin(plugin)
    return registry


def options_from(args: argparse.Namespace):
    from nncc.compiler.onnx_import import parse_input_shapes
    from nncc.compiler.pipeline import Options

    return Options(emit=args.emit, disabled=set(args.disable_pass), extra_passes=args.add_passes,
                   printing=printing_from(args),
                   target_options={"target": args.target or "", "target_set": tuple(args.target_set),
                                   "tile_order": args.tile_order, "tile_objective": args.tile_objective,
                                   "search_workers": args.jobs or available_cpus()},
                   input_shapes=parse_input_shapes(args.input_shape), cp_rank=args.cp_rank)


@report_errors("nncc")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.train and args.target is None:
        args.target = REFERENCE_TARGET  # training runs on numpy for now (docs/training.md)
    if args.target is None and Path(args.model).suffix != ".mlir":
        args.target = "vector"  # IR saved at a stage keeps the target it records (None: not given)
    check_flag_combinations(args)
    for option, default in DEFAULTS.items():
        setattr(args, option, default if getattr(args, option) is None else getattr(args, option))
    files = UserFiles()
    declare_inputs(files, args)
    with progress.reporting(progress.wanted(args.quiet) and not dumps_ir(args)):
        if args.train and not args.emit:
            return run_training_target(args, files)
        if args.emit:
            return emit(args, files)
        if args.target == REFERENCE_TARGET:
            return run_reference_target(args, files)
        return compile_for_target(args, files)


def dumps_ir(args: argparse.Namespace) -> bool:
    """IR dumps write to stderr as the passes run: no progress bar then."""
    return bool(args.print_ir_after_all or args.print_ir_before_all or args.print_ir_after or args.print_ir_before)


def check_flag_combinations(args: argparse.Namespace) -> None:
    """Flags that would be silently ignored in the chosen mode are errors."""
    check_training_flags(args)
    used = [f"--{flag}" for flag in RUN_FLAGS if getattr(args, flag)]
    tiling = [flag for flag, value in (("--tile-order", args.tile_order), ("--tile-objective", args.tile_objective))
              if value is not None]
    if args.output is not None and not args.emit:
        raise NnccError("-o writes IR and needs --emit=STAGE; a program is written with --program PREFIX")
    if args.seed is not None and args.inputs is not None:
        raise NnccError("--seed chooses random inputs and --inputs gives them: use one or the other")
    if args.emit:
        program_flags = (used + ["--seed"] * (args.seed is not None) + ["--program"] * (args.program is not None)
                         + ["-S"] * args.emit_asm + tiling * (args.emit in ("nn", "fused")))
        if program_flags:
            raise NnccError(f"--emit={args.emit} stops after that stage: {', '.join(program_flags)} "
                            "need a full compile (leave --emit out)")
    elif args.target == REFERENCE_TARGET:
        machine_flags = (["--target-set"] * bool(args.target_set) + ["--trace"] * (args.trace is not None)
                         + ["--plot"] * (args.plot is not None)
                         + ["--program"] * (args.program is not None) + ["-S"] * args.emit_asm + tiling)
        if machine_flags:
            raise NnccError(f"{machine_flags[0]} needs an accelerator target (reference is numpy execution "
                            "of the nn IR: no machine, no program)")
    elif "lower-to-isa" in args.disable_pass:
        raise NnccError("--disable-pass=lower-to-isa: a program cannot be made without it; "
                        "--emit=vector stops before it")
    if args.cp_rank is not None and args.emit == "nn":
        raise NnccError("--cp-rank decomposes convs in the fused stage; --emit=nn stops before it")
    if args.cp_rank is not None and args.train:
        raise NnccError("--cp-rank decomposes the convs of an inference model; --train trains the model as it is")
    if not args.emit and args.seed is not None and not used:
        raise NnccError(f"--seed {args.seed} chooses the random inputs of a run, and nothing runs: add --run")
    if Path(args.model).suffix == ".mlir":
        saved = (["--check"] * bool(args.check) + ["--input-shape"] * bool(args.input_shape)
                 + ["--cp-rank"] * (args.cp_rank is not None))
        if saved:
            raise NnccError(f"{args.model}: {saved[0]} needs the ONNX model; IR saved at a stage continues "
                            "from there (--run, --report, --outputs work)")


def declare_inputs(files: UserFiles, args: argparse.Namespace) -> None:
    """Every file the command reads: no output may be one of them."""
    files.reads("the model", args.model)
    if Path(args.model).suffix == ".mlir":  # IR saved at a stage, and the weights beside it
        from nncc.compiler.weights import weights_path_for

        files.reads("the model's weights", weights_path_for(Path(args.model)))
    files.reads("--inputs", args.inputs)
    files.reads("--labels", args.labels)
    if args.target and Path(args.target).is_file():
        files.reads("--target", args.target)
    for plugin in args.pass_plugin:
        if Path(plugin).is_file():
            files.reads("--pass-plugin", plugin)


def declare_run_outputs(files: UserFiles, args: argparse.Namespace) -> None:
    if getattr(args, "plot", None) is not None:
        from nncc.compiler.plots import plot_format

        plot_format(args.plot)  # a file name plots cannot be written to fails before any work
    for flag in ("outputs", "report", "trace", "plot"):
        if getattr(args, flag) is not None:
            files.writes(f"--{flag}", getattr(args, flag))


def emit(args: argparse.Namespace, files: UserFiles) -> int:
    from nncc.compiler.pipeline import compile_model
    from nncc.compiler.weights import save_beside, weights_path_for

    if args.emit not in ("nn", "fused") and args.target == REFERENCE_TARGET:
        raise NnccError(f"--emit={args.emit} needs an accelerator target (--target=vector, fusion, edge "
                        "or a TOML file); the reference target stops at the fused stage")
    if args.target and args.target != REFERENCE_TARGET:
        from nncc.runtime.target import load_target

        load_target(args.target, args.target_set)  # a misspelt target or --target-set fails even at --emit=nn
    if args.output is not None:
        files.writes("-o", args.output)
        files.writes("-o (its weights)", weights_path_for(args.output))
    options = options_from(args)
    options.training = training_settings(args)
    compilation = compile_model(args.model, registry_from(args), options, until=args.emit)
    from nncc.compiler.pass_manager import built, module_text

    if args.output is None:
        print(module_text(compilation.module))
        return 0
    built(compilation.module)  # the isa ops lower-to-isa deferred
    weights = save_beside(compilation.module, args.output)  # the module names its weights file
    files.write_text(args.output, module_text(compilation.module) + "\n")
    print(f"nncc: wrote {args.output}" + (f" and {weights}" if weights else ""), file=sys.stderr)
    return 0


def run_reference_target(args: argparse.Namespace, files: UserFiles) -> int:
    """Execute the nn IR with numpy; compare with onnxruntime when asked."""
    from nncc.compiler.nn_interpreter import input_signature, run_reference
    from nncc.compiler.pipeline import compile_model
    from nncc.support import check

    declare_run_outputs(files, args)
    clock = Stopwatch()
    with clock("compile"):
        compilation = compile_model(args.model, registry_from(args), options_from(args), until="fused")
    signature = input_signature(compilation.module)
    inputs = (check.load_inputs(args.inputs, signature) if args.inputs
              else check.random_inputs(signature, args.seed))
    if not any(getattr(args, flag) for flag in RUN_FLAGS):
        print(f"nncc: {args.model.name}: imported and verified for --target=reference "
              f"(add --run to execute)", file=sys.stderr)
        return 0
    with clock("simulate"), progress.stage("reference run"):
        outputs, layers = run_reference(compilation.module, inputs, compilation.store)
    if args.outputs:
        check.save_outputs(args.outputs, outputs)
    if args.cp_rank is None:
        checks = compare_with_onnxruntime(args, outputs, inputs, clock) if args.check else None
        report = reference_report(layers, checks)
    else:  # the outputs are the decomposed graph's reference: no check, the cost is stated instead
        checks = None
        report = {**reference_report(layers, None),
                  "cp_decompose": measure_decomposition(args, compilation, inputs, outputs, clock)[0]}
    report.update(what_was_run(args.model, inputs, clock))
    if args.report:
        write_json(files, args.report, report)
    print_summary(args.model, compilation, report, checks)
    return EXIT_MISMATCH if checks and not report["check"]["passed"] else 0


def compile_for_target(args: argparse.Namespace, files: UserFiles) -> int:
    """Compile, write the program (.nnbin; .s with -S), and run it on the interpreter when asked."""
    from nncc.runtime.target import load_target

    # a bad target fails before compiling; IR saved at a stage names the target it records
    name = load_target(args.target, args.target_set).name if args.target else recorded_target_name(args.model)
    prefix = program_prefix(args.program) or args.model.with_name(f"{args.model.stem}.{name}")
    suffixes = (".nnbin", ".s") if args.emit_asm else (".nnbin",)
    flag = "--program" if args.program else "the program (beside the model; choose with --program PREFIX)"
    paths = [files.writes(flag, prefix.with_name(prefix.name + suffix)) for suffix in suffixes]
    declare_run_outputs(files, args)
    clock = Stopwatch()
    with clock("compile"):
        compilation, program, decomposed = compile_program(args)
    check_dram_size(program, program.target)
    write_program(program, paths)
    summary = (f"nncc: {args.model.name} -> {', '.join(p.name for p in paths)}: "
               f"{len(program.instructions)} instructions, {program.dram_bytes / 2**20:.1f} MiB DRAM image"
               + dram_reuse_note(program))
    if not any(getattr(args, flag) for flag in RUN_FLAGS):
        print(summary)
        return 0
    return run_program(args, files, program, summary, clock, decomposed)


def recorded_target_name(ir_path: Path) -> str:
    """The name of the target saved IR records (`tile.target = {name = "edge", ...}` among the
    module's attributes, on its first line), else vector (the passes then record it)."""
    import re

    try:
        with open(ir_path, encoding="utf-8", errors="replace") as text:
            first_line = text.readline()
    except FileNotFoundError:
        raise NnccError(f"{ir_path}: no such file") from None
    except OSError as error:
        raise NnccError(f"{ir_path}: cannot read IR ({error.strerror or error})") from None
    found = re.search(r'tile\.target = \{name = "([^"]+)"', first_line)
    return found.group(1) if found else "vector"


def dram_reuse_note(program) -> str:
    """' (N MiB without reuse)' when the compiler planned the intermediates' DRAM by liveness."""
    plan = getattr(program, "dram_plan", None)
    return f" ({plan['without_reuse_bytes'] / 2**20:.1f} MiB without reuse)" if plan else ""


def program_prefix(given: Path | None) -> Path | None:
    """--program PREFIX: a file name without .nnbin/.s (`--program out/p.nnbin` writes out/p.nnbin)."""
    if given is None:
        return None
    if not given.name or given.name in (".", ".."):
        raise NnccError(f"--program {str(given)!r}: give a file prefix, e.g. --program out/model "
                        "(writes out/model.nnbin)")
    return given.with_suffix("") if given.suffix in (".nnbin", ".s") else given


def check_dram_size(program, target) -> None:
    """A program that cannot fit its target's DRAM is refused here, not left to fault at run time."""
    if program.dram_bytes > target.dram.size_bytes:
        raise NnccError(f"target {target.name}: the program needs {program.dram_bytes} bytes of DRAM, "
                        f"which has {target.dram.size_bytes} (dram.size_bytes)")


def compile_program(args: argparse.Namespace):
    """The compilation and its program: every stage through the pass manager, as nncc-opt runs
    them, lower-to-isa included. Its isa ops are built only for IR dumps (`--print-ir-*`); else
    the program is taken as the pass made it (`isa_module.defer_program`)."""
    from nncc.compiler.codegen.isa_module import module_to_program
    from nncc.compiler.pipeline import compile_model

    options = options_from(args)
    options.target_options["compare_orders"] = args.report is not None  # the report's naive-order figures
    if args.cp_rank is None:
        compilation = compile_model(args.model, registry_from(args), options, until="isa")
        return compilation, module_to_program(compilation.module, compilation.store), None
    from nncc.compiler.pipeline import compile_further

    registry = registry_from(args)  # the decomposed graph is kept at `fused` for the reference run
    decomposed = compile_model(args.model, registry, options, until="fused")
    compilation = compile_further(decomposed, registry, options, after="fused", until="isa")
    return compilation, module_to_program(compilation.module, compilation.store), decomposed


def write_program(program, paths: list[Path]) -> None:
    """Each path declared by `UserFiles.writes` before compiling; `save` writes atomically."""
    from nncc.runtime.program_file import save

    with progress.stage("writing program", total=len(paths)) as task:
        for path in paths:
            save(program, path)
            task.advance(detail=path.name)


def run_program(args: argparse.Namespace, files: UserFiles, program, summary: str, clock: Stopwatch,
                decomposed=None) -> int:
    from nncc.runtime.faults import MachineFault
    from nncc.runtime.interpreter import run
    from nncc.runtime.report import build_report, trace_events
    from nncc.runtime.target import target_to_dict
    from nncc.support import check

    signature = {symbol.name: symbol.shape for symbol in program.symbols_of("input")}
    inputs = (check.load_inputs(args.inputs, signature) if args.inputs
              else check.random_inputs(signature, args.seed))
    try:
        with clock("simulate"):
            result = run(program, inputs, trace=args.trace is not None)
    except MachineFault as fault:
        print(f"nncc: {fault}", file=sys.stderr)
        return 3
    outputs = {s.name: result.outputs[s.name].reshape(s.shape) for s in program.symbols_of("output")}
    if args.outputs:
        check.save_outputs(args.outputs, outputs)
    if decomposed is None:
        checks = compare_with_onnxruntime(args, outputs, inputs, clock) if args.check else None
    else:  # the program runs the decomposed graph: checked against its reference, and the cost stated
        cp_entry, reference = measure_decomposition(args, decomposed, inputs, outputs, clock)
        checks = check.compare(outputs, reference) if args.check else None
    report = build_report(result, check.check_summary(checks) if checks is not None else None)
    if decomposed is not None:
        report["cp_decompose"] = cp_entry
    merge_predictions(report, getattr(program, "predictions", {}))
    report.update(what_was_run(args.model, inputs, clock))
    report["target_description"] = target_to_dict(program.target)
    if args.report:
        write_json(files, args.report, report)
    if args.trace:
        write_json(files, args.trace, trace_events(result))
    if args.plot:
        from nncc.compiler.plots import layer_figure

        layer_figure(report, args.plot, title=f"{args.model.name} on {program.target.name}: "
                     f"{result.cycles:,} cycles, {result.mac_utilization:.1%} MAC utilisation")
    line = f"{summary}; {result.cycles} cycles, MAC utilization {result.mac_utilization:.1%}"
    if checks is not None:
        verdict = "check passed" if report["check"]["passed"] else "CHECK FAILED"
        line += f"; {verdict} (max abs err {report['check']['max_abs_err']:.3g})"
    print(line)
    if checks is not None and not report["check"]["passed"]:
        for output_check in checks:
            print(f"  {output_check.summary()}", file=sys.stderr)
        return EXIT_MISMATCH
    return 0


def measure_decomposition(args: argparse.Namespace, decomposed, inputs: dict, outputs: dict, clock: Stopwatch):
    """--cp-rank: (the report's `cp_decompose` entry, the decomposed graph's reference outputs); the
    entry's error is printed on stderr. With --check, also the error of `outputs` against onnxruntime
    on the original model."""
    from nncc.compiler.cp_error import measure, summary_line
    from nncc.passes.cp_decompose import relative_l2_error

    with clock("check"), progress.stage("cp-decompose error"):
        entry, reference = measure(args.model, registry_from(args), options_from(args), decomposed, inputs)
    if args.check:
        original = compare_with_onnxruntime(args, outputs, inputs, clock, expected_only=True)
        entry["onnxruntime_rel_l2_error"] = relative_l2_error(outputs, original)
    print(summary_line(entry), file=sys.stderr)
    return entry, reference


def compare_with_onnxruntime(args: argparse.Namespace, outputs: dict, inputs: dict, clock: Stopwatch,
                             expected_only: bool = False):
    from nncc.support import check

    with clock("check"), progress.stage("onnxruntime check"):
        expected = check.run_onnxruntime(args.model, inputs)
        return expected if expected_only else check.compare(outputs, expected)


class Stopwatch:
    """Wall and CPU (user + sys of this process) seconds per phase: `with clock("compile"): ...`;
    `clock.seconds` and `clock.cpu_seconds` for the report."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start
            self.cpu_seconds[phase] = self.cpu_seconds.get(phase, 0.0) + time.process_time() - cpu


def what_was_run(model: Path, inputs: dict, clock: Stopwatch) -> dict:
    """The report's record of the run: nncc's version, the model and its hash, input shapes, wall times."""
    from nncc.runtime.report import file_sha256

    return {
        "nncc_version": nncc_version(),
        "model": {"file": str(model), "sha256": file_sha256(model)},
        "inputs": {name: list(array.shape) for name, array in inputs.items()},
        "wall_seconds": {phase: round(seconds, 3) for phase, seconds in clock.seconds.items()},
        "cpu_seconds": {phase: round(seconds, 3) for phase, seconds in clock.cpu_seconds.items()},
    }


def write_json(files: UserFiles, path: Path, document: dict) -> None:
    import json

    files.write_text(path, json.dumps(document, indent=1) + "\n")


def merge_predictions(report: dict, predictions: dict[int, dict]) -> None:
    """The cost model's predicted cycles and DRAM bytes beside the simulated ones, per layer row
    (rows and predictions are both in the order of the program's layer markers)."""
    for index, row in enumerate(report["layers"]):
        prediction = predictions.get(index)
        if prediction is not None and prediction.get("name", row["name"]) == row["name"]:
            row.update({key: value for key, value in prediction.items() if key != "name"})
    naive = [row for row in report["layers"] if "predicted_dram_bytes_naive_order" in row]
    if naive:  # Scan's saving, by the cost model: the same tiles walked in naive order
        scan = sum(row["predicted_dram_read_bytes"] + row["predicted_dram_write_bytes"] for row in naive)
        report["scan_dram_bytes_saved"] = sum(row["predicted_dram_bytes_naive_order"] for row in naive) - scan


def reference_report(layers: list[dict], checks) -> dict:
    """docs/design.md's report at the nn level: no machine, so no cycle or memory fields."""
    from nncc.support import check

    report = {
        "target": REFERENCE_TARGET,
        "mode": "inference",
        "macs": sum(row["macs"] for row in layers),
        "layers": layers,
    }
    if checks is not None:
        report["check"] = check.check_summary(checks)
    return report


def print_summary(model: Path, compilation, report: dict, checks) -> None:
    ops = len(report["layers"])
    from nncc.dialects.nn import WeightOp

    used = {op.ref.data for op in compilation.module.walk() if isinstance(op, WeightOp)}  # not the replaced ones
    params = sum(math.prod(compilation.store[n].shape) for n in used)
    line = (f"nncc: {model.name} on {REFERENCE_TARGET}: {ops} ops, {params / 1e6:.2f} M weights, "
            f"{report['macs'] / 1e9:.3f} GMAC")
    if checks is not None:
        verdict = "check passed" if report["check"]["passed"] else "CHECK FAILED"
        line += f"; {verdict} (max abs err {report['check']['max_abs_err']:.3g}, " \
                f"max rel err {report['check']['max_rel_err']:.3g})"
    print(line)
    if checks is not None and not report["check"]["passed"]:
        for output_check in checks:
            print(f"  {output_check.summary()}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
