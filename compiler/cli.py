"""`nncc MODEL.onnx ...`: the compiler driver (contract in DESIGN.md, "Command line").

    nncc model.onnx --emit=nn                       # print the nn IR
    nncc model.onnx --emit=nn -o model.nn.mlir      # write it, weights beside it
    nncc model.onnx --target=reference --run --check --report r.json

Exit codes: 0 success, 1 outputs differ from onnxruntime, 2 bad input (one line
on stderr), 3 a fault of the simulated machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from nncc.compiler import check
from nncc.compiler.errors import NnccError, report_errors
from nncc.compiler.onnx_import import parse_input_shape
from nncc.compiler.pass_manager import IRPrinting
from nncc.compiler.pipeline import STAGE_NAMES, Compilation, Options, compile_model
from nncc.compiler.registry import Registry
from nncc.compiler.target import load_target
from nncc.compiler.weights import save_beside

REFERENCE_TARGET = "reference"
EXIT_MISMATCH = 1


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="nncc", description="Compile an ONNX model for a deep-learning accelerator.")
    parser.add_argument("model", type=Path, help="the ONNX model")
    parser.add_argument("--target", default="vector",
                        help="'reference' (numpy execution of the nn IR), a preset (vector, fusion, edge) "
                             "or a target TOML file")
    parser.add_argument("--target-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one target parameter (repeatable)")
    parser.add_argument("--input-shape", action="append", default=[], metavar="[NAME=]D0xD1x...",
                        help="static shape of an input with dynamic dimensions, e.g. input=1x3x224x224 "
                             "(repeatable; the name may be left out for a model with one input)")
    parser.add_argument("--emit", choices=STAGE_NAMES, help="print the IR after this stage and stop")
    parser.add_argument("-o", "--output", type=Path, help="with --emit: write the IR here (weights beside it)")
    parser.add_argument("--run", action="store_true", help="execute the compiled model")
    parser.add_argument("--check", action="store_true", help="compare the outputs with onnxruntime (implies --run)")
    parser.add_argument("--inputs", type=Path, help=".npz of inputs by name (default: seeded random)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    parser.add_argument("--outputs", type=Path, help="write the outputs to this .npz")
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    parser.add_argument("--trace", type=Path, help="with --run on a target: Chrome trace of the engines")
    parser.add_argument("--tile-order", choices=("naive", "scan"), default="scan",
                        help="order of the tiles of a layer (scan reuses the block already on chip)")
    parser.add_argument("--tile-objective", choices=("cycles", "dram"), default="cycles",
                        help="what tile sizes minimise first: cycles (then DRAM bytes), or DRAM bytes "
                             "(then cycles: less DRAM energy, usually more cycles)")
    parser.add_argument("--program", type=Path, metavar="PREFIX",
                        help="where to write PREFIX.s and PREFIX.nnbin (default: MODEL.TARGET beside the model)")
    add_pass_options(parser)
    return parser


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


def printing_from(args: argparse.Namespace) -> IRPrinting:
    return IRPrinting(after_all=args.print_ir_after_all, before_all=args.print_ir_before_all,
                      after=set(args.print_ir_after), before=set(args.print_ir_before))


def registry_from(args: argparse.Namespace) -> Registry:
    registry = Registry.default()
    for plugin in args.pass_plugin:
        registry.load_plugin(plugin)
    return registry


@report_errors("nncc")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    registry = registry_from(args)
    options = Options(emit=args.emit, disabled=set(args.disable_pass), extra_passes=args.add_passes,
                      printing=printing_from(args),
                      target_options={"target": args.target, "target_set": tuple(args.target_set),
                                      "tile_order": args.tile_order, "tile_objective": args.tile_objective},
                      input_shapes=dict(parse_input_shape(text) for text in args.input_shape))
    if args.emit:
        return emit(args, registry, options)
    if args.target == REFERENCE_TARGET:
        if args.target_set:
            raise NnccError("--target-set needs an accelerator target (reference has no parameters)")
        compilation = compile_model(args.model, registry, options, until="fused")
        return run_reference_target(args, compilation)
    target = load_target(args.target, args.target_set)  # a bad target fails before compiling
    if "lower-to-isa" in options.disabled:
        raise NnccError("--disable-pass=lower-to-isa: a program cannot be made without it; "
                        "--emit=vector stops before it")
    if options.printing.any():
        compilation = compile_model(args.model, registry, options, until="isa")
        return compile_for_target(args, compilation, isa_program(compilation))
    # Without IR dumps, lower-to-isa's work is done without building its ~10^5 isa ops: the
    # same lowering (tests hold the two paths to the same program), several times faster.
    compilation = compile_model(args.model, registry, options, until="vector")
    from nncc.compiler.codegen.lower import lower_module, pipeline_decisions

    program = lower_module(compilation.module, compilation.store, target, args.tile_order,
                           objective=args.tile_objective,
                           compare_orders=args.report is not None, **pipeline_decisions(compilation.module))
    return compile_for_target(args, compilation, program)


def isa_program(compilation: Compilation):
    """The program an isa-stage module describes, with the cost model's predictions."""
    from nncc.compiler.codegen.isa_module import module_to_program
    from nncc.compiler.codegen.lower import predictions_of

    program = module_to_program(compilation.module, compilation.store)
    program.predictions = predictions_of(compilation.module)  # merged into the report's layer rows
    return program


def emit(args: argparse.Namespace, registry: Registry, options: Options) -> int:
    if args.emit not in ("nn", "fused") and args.target == REFERENCE_TARGET:
        raise NnccError(f"--emit={args.emit} needs an accelerator target (--target=vector, fusion, edge "
                        "or a TOML file); the reference target stops at the fused stage")
    compilation = compile_model(args.model, registry, options, until=args.emit)
    if args.output is None:
        print(compilation.module)
        return 0
    refuse_overwriting_model(args.output, args.model)
    weights = save_beside(compilation.module, args.output)
    args.output.write_text(str(compilation.module) + "\n")
    print(f"nncc: wrote {args.output}" + (f" and {weights}" if weights else ""), file=sys.stderr)
    return 0


def refuse_overwriting_model(output: Path, model: Path) -> None:
    if output.exists() and model.exists() and output.resolve() == model.resolve():
        raise NnccError(f"{output}: refusing to overwrite the input model with IR")


def run_reference_target(args: argparse.Namespace, compilation: Compilation) -> int:
    """Execute the nn IR with numpy; compare with onnxruntime when asked."""
    from nncc.runtime.nn_interpreter import input_signature, run_reference

    signature = input_signature(compilation.module)
    inputs = (check.load_inputs(args.inputs, signature) if args.inputs
              else check.random_inputs(signature, args.seed))
    run = args.run or args.check or args.outputs or args.report
    if not run:
        print(f"nncc: {args.model.name}: imported and verified for --target=reference "
              f"(add --run to execute)", file=sys.stderr)
        return 0
    outputs, layers = run_reference(compilation.module, inputs, compilation.store)
    if args.outputs:
        check.save_outputs(args.outputs, outputs)
    checks = check.compare(outputs, check.run_onnxruntime(args.model, inputs)) if args.check else None
    report = reference_report(layers, checks)
    if args.report:
        args.report.write_text(json.dumps(report, indent=1) + "\n")
    print_summary(args.model, compilation, report, checks)
    return EXIT_MISMATCH if checks and not report["check"]["passed"] else 0


def compile_for_target(args: argparse.Namespace, compilation: Compilation, program) -> int:
    """Write the program as .s and .nnbin, and run it on the interpreter when asked."""
    from nncc.runtime.program import save

    prefix = args.program or args.model.with_name(f"{args.model.stem}.{program.target.name}")
    for suffix in (".nnbin", ".s"):
        refuse_overwriting_model(prefix.with_name(prefix.name + suffix), args.model)
        save(program, prefix.with_name(prefix.name + suffix))
    summary = (f"nncc: {args.model.name} -> {prefix.name}.s, {prefix.name}.nnbin: "
               f"{len(program.instructions)} instructions, {program.dram_bytes / 2**20:.1f} MiB DRAM image")
    if not (args.run or args.check or args.outputs or args.report or args.trace):
        print(summary)
        return 0
    return run_program(args, compilation, program, summary)


def run_program(args: argparse.Namespace, compilation: Compilation, program, summary: str) -> int:
    from nncc.runtime.faults import MachineFault
    from nncc.runtime.interpreter import run
    from nncc.runtime.report import build_report, trace_events

    signature = {symbol.name: symbol.shape for symbol in program.symbols_of("input")}
    inputs = (check.load_inputs(args.inputs, signature) if args.inputs
              else check.random_inputs(signature, args.seed))
    try:
        result = run(program, inputs, trace=args.trace is not None)
    except MachineFault as fault:
        print(f"nncc: {fault}", file=sys.stderr)
        return 3
    outputs = {s.name: result.outputs[s.name].reshape(s.shape) for s in program.symbols_of("output")}
    if args.outputs:
        check.save_outputs(args.outputs, outputs)
    checks = check.compare(outputs, check.run_onnxruntime(args.model, inputs)) if args.check else None
    report = build_report(result, check.check_summary(checks) if checks is not None else None)
    merge_predictions(report, getattr(program, "predictions", {}))
    if args.report:
        args.report.write_text(json.dumps(report, indent=1) + "\n")
    if args.trace:
        args.trace.write_text(json.dumps(trace_events(result)) + "\n")
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
    """DESIGN.md's report at the nn level: no machine, so no cycle or memory fields."""
    report = {
        "target": REFERENCE_TARGET,
        "mode": "inference",
        "macs": sum(row["macs"] for row in layers),
        "layers": layers,
    }
    if checks is not None:
        report["check"] = check.check_summary(checks)
    return report


def print_summary(model: Path, compilation: Compilation, report: dict, checks) -> None:
    ops = len(report["layers"])
    params = sum(math.prod(compilation.store[n].shape) for n in compilation.store.names())
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
