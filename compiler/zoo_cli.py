"""`nncc-zoo`: write a zoo model (torchvision architecture, random weights) as an ONNX file.

    nncc-zoo resnet50 -o resnet50.onnx
    nncc-zoo vgg16 --batch 2 --resolution 64 --seed 1 -o vgg16-64.onnx
    nncc-zoo --list
"""

from __future__ import annotations

import sys
from pathlib import Path

from nncc.support.command_line import ArgumentParser, add_common_options, seed
from nncc.support.errors import NnccError, report_errors
from nncc.support.user_files import UserFiles

TOOL = "nncc-zoo"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=TOOL,
        description="Write a model of the zoo as ONNX (opset 17, fixed-seed random weights).",
        epilog="the models: nncc-zoo --list",
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="model name (see --list)")
    parser.add_argument("-o", "--output", type=Path, help="output file (default: NAME.onnx)")
    parser.add_argument("--batch", type=int, default=1, help="batch size of `input` (default 1)")
    parser.add_argument(
        "--resolution", type=int, default=224, help="input height = width, a multiple of 32 (default 224)"
    )
    parser.add_argument("--seed", type=seed, default=0, help="weight seed (default 0)")
    parser.add_argument("--list", action="store_true", help="list the models and exit")
    add_common_options(parser)
    return parser


def list_models() -> None:
    from nncc.compiler.zoo import MODELS, describe

    for name in MODELS:
        print(f"{name:14s} {describe(name)}")


def summary(name: str, model, batch: int, resolution: int, path: Path) -> str:
    from nncc.compiler.zoo import count_macs, count_parameters

    params, macs = count_parameters(model), count_macs(model)
    return (
        f"{name}: {params:,} params, {macs / 1e9:.3f} GMACs "
        f"(batch {batch}, {resolution}x{resolution}) -> {path}"
    )


@report_errors(TOOL)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        list_models()
        return 0
    from nncc.compiler.zoo import MODELS, build_model, check_name, check_sizes

    if args.name is None:
        raise NnccError(f"no model named; choose from {', '.join(MODELS)}")
    check_name(args.name)
    check_sizes(args.batch, args.resolution)
    files = UserFiles()
    path = files.writes("-o", args.output or Path(f"{args.name}.onnx"))
    model = build_model(args.name, batch=args.batch, resolution=args.resolution, seed=args.seed)
    files.write_bytes(path, model.SerializeToString())
    print(summary(args.name, model, args.batch, args.resolution, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
