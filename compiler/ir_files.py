"""Textual IR files: read, parse and verify them, with the weights beside them.

`nncc-opt` reads its input this way, and `nncc` IR saved at a stage (`nncc m.tile.mlir`).

    module = read_module("m.tile.mlir", registry, files)   # m.tile.weights.npz attached
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from nncc.support.errors import NnccError
from nncc.support.user_files import UserFiles

if TYPE_CHECKING:
    from xdsl.dialects.builtin import ModuleOp

    from nncc.compiler.registry import Registry


def read_source(name: str) -> tuple[str, Path]:
    if name == "-":
        return sys.stdin.read(), Path.cwd()
    path = Path(name)
    try:
        return path.read_text(), path.resolve().parent
    except FileNotFoundError:
        raise NnccError(f"{name}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise NnccError(f"{name}: cannot read IR ({error})") from None


def parse_module(text: str, name: str, ctx) -> ModuleOp:
    from xdsl.parser import Parser
    from xdsl.utils.exceptions import ParseError

    if not text.strip():
        raise NnccError(f"{name}: no IR (the input is empty)")
    if any(char < " " and char not in "\t\n\r" for char in text[:4096]):
        raise NnccError(f"{name}: not textual IR (control characters: a binary file? nncc compiles .onnx models)")
    try:
        module = Parser(ctx, text, name).parse_module()
    except ParseError as error:
        where = error.span.get_location()
        raise NnccError(f"{name}:{where.line}:{where.col}: {error.msg}") from None
    return module


def read_module(name: str, registry: Registry, files: UserFiles) -> ModuleOp:
    """Parse and verify the input IR; open the weights its `nn.weights` names (an input too)."""
    from nncc.compiler.pass_manager import verify
    from nncc.compiler.weights import WEIGHTS_ATTR, check_saved_shapes, open_beside

    text, ir_dir = read_source(name)
    module = parse_module(text, name, registry.context())
    verify(module, "parsing")
    if WEIGHTS_ATTR in module.attributes:
        store = open_beside(module, ir_dir)
        files.reads("weights", store.path)
        if store.path.exists():  # a missing file is an error only for passes that need the values
            store.names()  # not an .npz: said now
            check_saved_shapes(module, store)
    return module
