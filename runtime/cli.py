"""``nncc-run``: run a compiled program on the interpreter.

    nncc-run PROGRAM.{s,nnbin} [--inputs in.npz] [--outputs out.npz] [--expect ref.npz]
             [--report r.json] [--trace t.json] [--target-set KEY=VALUE ...]

The program carries its target (every resolved parameter); --target-set changes some for this run.

Exit codes: 0 ok, 1 outputs differ from --expect, 2 bad input (one line), 3 machine fault.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

import numpy as np

from nncc.compiler.errors import NnccError, one_line, report_errors
from nncc.compiler.target import apply_overrides, target_from_dict, target_to_dict
from nncc.runtime.faults import EXIT_FAULT, MachineFault
from nncc.runtime.interpreter import run
from nncc.runtime.program import load
from nncc.runtime.report import build_report, compare_outputs, trace_events, write_json

TOOL = "nncc-run"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=TOOL, description="Run an nncc program on the accelerator interpreter.")
    parser.add_argument("program", help="program file (.nnbin or .s)")
    parser.add_argument(
        "--target-set", action="append", default=[], metavar="KEY=VALUE",
        help="override a parameter of the program's target for this run (repeatable)",
    )
    parser.add_argument("--inputs", help="npz of input tensors by symbol name (default: seeded random)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    parser.add_argument("--outputs", help="write the outputs (npz)")
    parser.add_argument("--expect", help="npz of expected outputs: adds 'check' to the report, exit 1 on mismatch")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="relative tolerance of --expect")
    parser.add_argument("--report", help="write the JSON report here")
    parser.add_argument("--trace", help="write a Chrome trace-event JSON here (open in Perfetto)")
    return parser.parse_args(argv)


def read_npz(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise NnccError(f"{path}: cannot read npz: {one_line(str(error))}") from None


@report_errors(TOOL)
def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exit_:
        return 0 if exit_.code == 0 else 2
    if not Path(args.program).is_file():
        raise NnccError(f"{args.program}: no such program file")
    try:
        program = load(args.program)
        if args.target_set:
            raw = apply_overrides(target_to_dict(program.target), args.target_set, "--target-set")
            program = program.with_target(target_from_dict(raw, "--target-set"))
        inputs = read_npz(args.inputs) if args.inputs else None
        if inputs is None:
            from nncc.runtime.interpreter import random_inputs

            inputs = random_inputs(program, args.seed)
        result = run(program, inputs, trace=bool(args.trace))
    except MachineFault as fault:
        print(f"{TOOL}: {fault}", file=sys.stderr)
        return EXIT_FAULT
    check = compare_outputs(result.outputs, read_npz(args.expect), args.tolerance) if args.expect else None
    report = build_report(result, check)
    try:
        if args.outputs:
            np.savez(args.outputs, **result.outputs)
        if args.report:
            write_json(report, args.report)
        if args.trace:
            write_json(trace_events(result), args.trace)
    except OSError as error:
        raise NnccError(f"{error.filename}: cannot write: {error.strerror}") from None
    status = "" if check is None else (" check passed" if check["passed"] else " CHECK FAILED")
    print(
        f"{TOOL}: {program.target.name} {program.mode}: {result.instructions} instructions, {result.cycles} cycles, "
        f"{result.macs} MACs, MAC utilisation {result.mac_utilization:.1%}, "
        f"energy {report['energy_pj']['total'] / 1e6:.3f} uJ{status}"
    )
    return 1 if check is not None and not check["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
