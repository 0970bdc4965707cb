"""`nncc-opt`: run passes on textual IR, like `mlir-opt` and `xdsl-opt`.

    nncc-opt model.nn.mlir -p 'canonicalize-nn,cse' -o out.mlir
    nncc-opt model.nn.mlir -p my-pass --pass-plugin my_passes.py --print-ir-after-all

Parses any IR of nncc's and xDSL's dialects, verifies it after every pass, and
prints it in a form that parses again to the same IR. Weights named by the
module's `nn.weights` attribute are read beside the input and, with `-o`, written
beside the output.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from nncc.compiler.cli import add_pass_options, printing_from, registry_from
from nncc.compiler.ir_files import read_module
from nncc.support import progress
from nncc.support.command_line import ArgumentParser, add_common_options, output_file
from nncc.support.errors import report_errors
from nncc.support.user_files import UserFiles

if TYPE_CHECKING:  # xDSL is imported when there is IR to read: --help and usage errors answer at once
    from xdsl.dialects.builtin import ModuleOp
    from xdsl.passes import ModulePass

    from nncc.compiler.registry import Registry


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="nncc-opt", description="Run nncc passes on textual IR.")
    parser.add_argument("input", nargs="?", default="-", help="IR file, or - for stdin")
    parser.add_argument("-p", "--passes", default="", metavar="PIPELINE",
                        help="comma-separated passes with options: 'pass-a,pass-b{opt=1}'")
    parser.add_argument("-o", "--output", type=output_file, help="write the IR here (default, or -: stdout)")
    parser.add_argument("--list-passes", action="store_true", help="list the registered passes and exit")
    add_pass_options(parser)
    add_common_options(parser)
    return parser


def pipeline_of(args, registry: Registry) -> list[ModulePass]:
    """-p's passes less the --disable-pass ones, then the --add-passes ones (as in nncc)."""
    from nncc.compiler.pass_manager import check_pass_names

    check_pass_names(args.disable_pass, registry.passes, "--disable-pass")
    passes = [p for p in registry.pipeline(args.passes) if p.name not in args.disable_pass]
    return passes + registry.pipeline(args.add_passes, "--add-passes")


@report_errors("nncc-opt")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    registry = registry_from(args)
    if args.list_passes:
        print(registry.listing())
        return 0
    from nncc.compiler.pipeline import run_staged

    passes, printing = pipeline_of(args, registry), printing_from(args)
    printing.check_names(registry.passes)
    files = declare_files(args)
    module = read_module(args.input, registry, files)
    with progress.reporting(progress.wanted(args.quiet) and not printing.any()):
        run_staged(module, passes, registry.context(), printing)
        write_result(module, args.output, files)
    return 0


def declare_files(args) -> UserFiles:
    """The input IR (and, once parsed, its weights) are never overwritten by -o or its weights."""
    from nncc.compiler.weights import weights_path_for

    files = UserFiles()
    files.reads("IR", args.input)
    for plugin in args.pass_plugin:
        if Path(plugin).is_file():
            files.reads("--pass-plugin", plugin)
    if args.output is not None:
        files.writes("-o", args.output)
        files.writes("-o (its weights)", weights_path_for(args.output))
    return files


def write_result(module: ModuleOp, output: Path | None, files: UserFiles) -> None:
    from nncc.compiler.pass_manager import built, module_text
    from nncc.compiler.weights import WEIGHTS_ATTR, save_beside, store_of

    if output is None:
        print(module_text(module))  # with the isa ops lower-to-isa deferred
        if WEIGHTS_ATTR in module.attributes and store_of(module).dirty:
            print("nncc-opt: warning: passes created weights that stdout cannot hold; use -o FILE",
                  file=sys.stderr)
        return
    built(module)
    save_beside(module, output)  # the module names its weights file
    files.write_text(output, module_text(module) + "\n")


if __name__ == "__main__":
    sys.exit(main())
