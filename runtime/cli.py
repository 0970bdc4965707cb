"""``nncc-run``: run a compiled program on the interpreter.

    nncc-run PROGRAM.{s,nnbin} [--inputs in.npz] [--outputs out.npz] [--expect ref.npz]
             [--report r.json] [--trace t.json] [--target-set KEY=VALUE ...]

The program carries its target (every resolved parameter); --target-set changes some for this run.

Exit codes: 0 ok, 1 outputs differ from --expect, 2 bad input (one line), 3 machine fault.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nncc.runtime.faults import EXIT_FAULT, MachineFault
from nncc.support import progress
from nncc.support.command_line import ArgumentParser, add_common_options, seed, tolerance
from nncc.support.errors import NnccError, report_errors
from nncc.support.user_files import UserFiles

TOOL = "nncc-run"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=TOOL, description="Run an nncc program on the accelerator interpreter.")
    parser.add_argument("program", type=Path, help="program file (.nnbin or .s)")
    parser.add_argument(
        "--target-set", action="append", default=[], metavar="KEY=VALUE",
        help="override a parameter of the program's target for this run (repeatable)",
    )
    parser.add_argument("--inputs", type=Path,
                        help="npz of input tensors (and, optionally, weights) by symbol name (default: seeded random)")
    parser.add_argument("--seed", type=seed, help="seed of the random inputs (default: 0)")
    parser.add_argument("--outputs", type=Path, help="write the outputs (npz)")
    parser.add_argument("--expect", type=Path,
                        help="npz of expected outputs: adds 'check' to the report, exit 1 on mismatch")
    parser.add_argument("--tolerance", type=tolerance,
                        help="relative tolerance of --expect (default: 1e-4)")
    parser.add_argument("--report", type=Path, help="write the JSON report here (fields: docs/cli.md)")
    parser.add_argument("--trace", type=Path, help="write a Chrome trace-event JSON here (open in Perfetto)")
    add_common_options(parser)
    return parser


def declare_files(args) -> UserFiles:
    """The program, --inputs and --expect are never overwritten; outputs are checked before running."""
    files = UserFiles()
    for flag in ("program", "inputs", "expect"):
        files.reads(flag if flag == "program" else f"--{flag}", getattr(args, flag))
    for flag in ("outputs", "report", "trace"):
        if getattr(args, flag) is not None:
            files.writes(f"--{flag}", getattr(args, flag))
    return files


def read_arrays(path: Path, program) -> dict:
    """--inputs: float arrays named after the program's input (or weight) symbols; every input is
    given (the interpreter checks their shapes)."""
    import numpy as np

    from nncc.support.check import read_npz

    arrays = read_npz(path, "--inputs")
    known = {s.name for s in program.symbols if s.kind in ("input", "weight")}
    inputs = ", ".join(s.name for s in program.symbols_of("input"))
    for name, array in arrays.items():
        if name not in known:
            raise NnccError(f"{path}: array '{name}' is not an input or weight of the program (inputs: {inputs})")
        if not np.issubdtype(array.dtype, np.floating):
            raise NnccError(f"{path}: array '{name}' has dtype {array.dtype}; the program computes float32")
    missing = [s.name for s in program.symbols_of("input") if s.name not in arrays]
    if missing:
        raise NnccError(f"{path}: has no array for input {', '.join(missing)} (inputs: {inputs})")
    return arrays


def read_expected(path: Path, program) -> dict:
    """--expect: a numeric array for every output of the program, by name."""
    import numpy as np

    from nncc.support.check import read_npz

    arrays = read_npz(path, "--expect")
    outputs = {s.name: tuple(s.shape) for s in program.symbols_of("output")}
    for name, array in arrays.items():
        if name not in outputs:
            raise NnccError(f"{path}: array '{name}' is not an output of the program (outputs: {', '.join(outputs)})")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise NnccError(f"{path}: array '{name}' has dtype {array.dtype}; expected outputs are numbers")
        if array.shape != outputs[name]:
            raise NnccError(f"{path}: array '{name}' has shape {list(array.shape)}; the program's output has "
                            f"{list(outputs[name])}")
    missing = [name for name in outputs if name not in arrays]
    if missing:
        raise NnccError(f"{path}: has no array for output {', '.join(missing)}: --expect checks every output")
    return arrays


def check_flags(args) -> None:
    """Options that would be silently ignored are errors; then their defaults."""
    if args.seed is not None and args.inputs is not None:
        raise NnccError("--seed chooses random inputs and --inputs gives them: use one or the other")
    if args.tolerance is not None and args.expect is None:
        raise NnccError("--tolerance applies to the comparison with --expect, which is not given")
    args.seed = 0 if args.seed is None else args.seed
    args.tolerance = 1e-4 if args.tolerance is None else args.tolerance


def retarget(program, overrides: list[str]):
    """The program on its target with --target-set applied; the memories it uses must remain."""
    from nncc.runtime.target import apply_overrides, target_from_dict, target_to_dict

    raw = apply_overrides(target_to_dict(program.target), overrides, "--target-set")
    target = target_from_dict(raw, "--target-set")
    lost = [name for name in program.target.memory_names if name not in target.memory_names]
    if lost:
        raise NnccError(f"--target-set: the program uses memory {', '.join(lost)}, which the changed target "
                        "does not have (a memory cannot be renamed under a compiled program)")
    return program.with_target(target)


@report_errors(TOOL)
def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors (already printed)
        return exit_.code if isinstance(exit_.code, int) else 2
    check_flags(args)
    files = declare_files(args)
    if args.program.is_dir():
        raise NnccError(f"{args.program}: is a folder, not a program file (.nnbin or .s)")
    if not args.program.is_file():
        raise NnccError(f"{args.program}: no such program file")
    try:
        with progress.reporting(progress.wanted(args.quiet)):
            return run_program(args, files)
    except MachineFault as fault:
        where = "" if str(args.program) in str(fault) else f"{args.program}: "  # .s faults name file:line
        print(f"{TOOL}: {where}{fault}", file=sys.stderr)
        return EXIT_FAULT


def run_program(args, files: UserFiles) -> int:
    import json
    import time

    from nncc.runtime.interpreter import random_inputs, run
    from nncc.runtime.program_file import load
    from nncc.runtime.report import build_report, compare_outputs, file_sha256, trace_events
    from nncc.runtime.target import target_to_dict
    from nncc.support.check import save_outputs
    from nncc.support.command_line import nncc_version

    with progress.stage("loading program"):
        program = load(args.program)
    if args.target_set:
        program = retarget(program, args.target_set)
    inputs = read_arrays(args.inputs, program) if args.inputs else random_inputs(program, args.seed)
    expected = read_expected(args.expect, program) if args.expect else None
    start, cpu = time.perf_counter(), time.process_time()
    result = run(program, inputs, trace=args.trace is not None)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    check = compare_outputs(result.outputs, expected, args.tolerance) if expected is not None else None
    report = build_report(result, check)
    report.update({
        "nncc_version": nncc_version(),
        "program": {"file": str(args.program), "sha256": file_sha256(args.program)},
        "inputs": {s.name: list(s.shape) for s in program.symbols_of("input")},
        "target_description": target_to_dict(program.target),
        "wall_seconds": {"simulate": round(seconds, 3)},
        "cpu_seconds": {"simulate": round(cpu, 3)},
    })
    if args.outputs:
        save_outputs(args.outputs, result.outputs)
    if args.report:
        files.write_text(args.report, json.dumps(report, indent=1) + "\n")
    if args.trace:
        files.write_text(args.trace, json.dumps(trace_events(result)) + "\n")
    status = "" if check is None else (" check passed" if check["passed"] else " CHECK FAILED")
    print(
        f"{TOOL}: {program.target.name} {program.mode}: {result.instructions} instructions, {result.cycles} cycles, "
        f"{result.macs} MACs, MAC utilisation {result.mac_utilization:.1%}, "
        f"energy {report['energy_pj']['total'] / 1e6:.3f} uJ{status}"
    )
    return 1 if check is not None and not check["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
