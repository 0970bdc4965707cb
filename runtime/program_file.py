"""A program in a file: `.nnbin` (binary, `program.to_bytes`) or `.s` (assembly, `assembler`),
chosen by the file's suffix."""

from __future__ import annotations

from pathlib import Path

from nncc.runtime.assembler import assemble, disassemble
from nncc.runtime.program import MAGIC, Program, from_bytes, to_parts
from nncc.support.errors import NnccError
from nncc.support.user_files import write_atomically


def save(program: Program, path: str | Path) -> None:
    """Write `.nnbin` (binary) or `.s` (assembly) by the file's suffix, atomically."""
    path = Path(path)
    if path.suffix == ".s":
        parts = [disassemble(program).encode()]
    else:
        parts = to_parts(program)  # written part by part: the weights are not copied into one image
    write_atomically(path, lambda file: file.writelines(parts))


def load(path: str | Path) -> Program:
    """Read a `.nnbin` or `.s` program. A missing file, or a file that is no program at all, is
    `NnccError` (bad input); a corrupt program is `MachineFault`."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as error:
        raise NnccError(f"{path}: cannot read program: {error.strerror}") from None
    if path.suffix != ".s" and not blob.startswith(MAGIC):
        raise NnccError(f"{path}: not an nncc program (a .nnbin starts with {MAGIC[:7].decode()}; "
                        "assembly files end in .s)")
    if path.suffix == ".s":
        return assemble(blob.decode(errors="replace"), str(path))
    return from_bytes(blob)
