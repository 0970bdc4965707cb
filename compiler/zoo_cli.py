"""`nncc-zoo`: write a zoo model (torchvision architecture, random weights) as an ONNX file.

    nncc-zoo resnet50 -o resnet50.onnx
    nncc-zoo vgg16 --batch 2 --resolution 64 --seed 1 -o vgg16-64.onnx
    nncc-zoo --list
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx

from nncc.compiler.errors import NnccError, report_errors
from nncc.compiler.zoo import MODELS, build_model, count_macs, count_parameters, describe

TOOL = "nncc-zoo"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=TOOL,
        description="Write a model of the zoo as ONNX (opset 17, fixed-seed random weights).",
        epilog=f"models: {', '.join(MODELS)}",
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="model name (see --list)")
    parser.add_argument("-o", "--output", type=Path, help="output file (default: NAME.onnx)")
    parser.add_argument("--batch", type=int, default=1, help="batch size of `input` (default 1)")
    parser.add_argument(
        "--resolution", type=int, default=224, help="input height = width, a multiple of 32 (default 224)"
    )
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument("--list", action="store_true", help="list the models and exit")
    return parser.parse_args(argv)


def list_models() -> None:
    for name in MODELS:
        print(f"{name:14s} {describe(name)}")


def write_model(model: onnx.ModelProto, path: Path) -> None:
    try:
        onnx.save(model, str(path))
    except OSError as error:
        raise NnccError(f"cannot write {path}: {error.strerror or error}") from error


def summary(name: str, model: onnx.ModelProto, batch: int, resolution: int, path: Path) -> str:
    params, macs = count_parameters(model), count_macs(model)
    return (
        f"{name}: {params:,} params, {macs / 1e9:.3f} GMACs "
        f"(batch {batch}, {resolution}x{resolution}) -> {path}"
    )


@report_errors(TOOL)
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        list_models()
        return 0
    if args.name is None:
        raise NnccError(f"no model named; choose from {', '.join(MODELS)}")
    model = build_model(args.name, batch=args.batch, resolution=args.resolution, seed=args.seed)
    path = args.output or Path(f"{args.name}.onnx")
    write_model(model, path)
    print(summary(args.name, model, args.batch, args.resolution, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
