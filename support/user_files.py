"""The files of one command: inputs are never overwritten, outputs are written atomically.

Every driver declares what it reads and what it will write before doing any work:

    files = UserFiles()
    files.reads("model", Path("m.onnx"))
    report = files.writes("--report", Path("r.json"))   # refused here if r.json *is* m.onnx
    ...
    files.write_text(report, json.dumps(...))            # temporary file in the folder, then rename

An output is refused (one line, `NnccError`) when it is an input of the same command or another of
its outputs (the same file by inode, so hard links and symlinks count), when it names a folder,
or when its folder is missing or not writable. Writes go to a temporary file beside the target and
are renamed into place, so an interrupted or failed run leaves the previous file intact.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from nncc.support.errors import NnccError

Identity = tuple


def identity(path: Path) -> Identity:
    """What makes two paths the same file: device and inode when it exists, else its real path."""
    try:
        status = os.stat(path)
    except OSError:
        return ("path", os.path.realpath(path))
    return ("inode", status.st_dev, status.st_ino)


@dataclass
class UserFiles:
    """The inputs and outputs of one command, checked against each other as they are declared."""

    inputs: dict[Identity, str] = field(default_factory=dict)  # identity -> "what (path)"
    outputs: dict[Identity, str] = field(default_factory=dict)  # identity -> "flag path"

    def reads(self, what: str, path: Path | str | None) -> None:
        """Declare an input (`what` names it in messages: 'the model', '--inputs')."""
        if path is None or str(path) == "-" or not Path(path).exists():
            return  # stdin, or a missing file (its reader says so)
        key = identity(Path(path))
        if key in self.outputs:
            raise NnccError(f"{self.outputs[key]}: is the input {what} ({path}); refusing to overwrite it")
        self.inputs.setdefault(key, f"{what} ({path})")

    def writes(self, flag: str, path: Path | str) -> Path:
        """Declare an output; refused now, before any work, if it cannot or must not be written."""
        path = Path(path)
        check_writable(flag, path)
        key = identity(path)
        if key in self.inputs:
            raise NnccError(f"{flag} {path}: is the input {self.inputs[key]}; refusing to overwrite it")
        if key in self.outputs:
            raise NnccError(f"{flag} {path}: is also the output {self.outputs[key]}; give each output its own file")
        self.outputs[key] = f"{flag} {path}"
        return path

    def write_bytes(self, path: Path, data: bytes) -> None:
        write_atomically(path, lambda file: file.write(data))

    def write_text(self, path: Path, text: str) -> None:
        self.write_bytes(path, text.encode())


def check_writable(flag: str, path: Path) -> None:
    """A one-line error for an output that cannot be written: a folder, or a missing or read-only folder."""
    if path.is_dir():
        raise NnccError(f"{flag} {path}: is a folder; give a file name")
    folder = path.parent
    if not folder.exists():
        raise NnccError(f"{flag} {path}: folder {folder} does not exist")
    if not folder.is_dir():
        raise NnccError(f"{flag} {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise NnccError(f"{flag} {path}: folder {folder} is not writable")


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a temporary file in the target's folder, then rename it into place.

    A symlink is written through (its target is replaced). The file keeps the mode of the file it
    replaces, or gets the usual mode of a new file (0666 minus the umask).
    """
    target = Path(os.path.realpath(path))
    mode = existing_mode(target)
    try:
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as error:
        raise NnccError(f"{path}: cannot write: {error.strerror}") from None
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise NnccError(f"{path}: cannot write: {error.strerror}") from None
        raise


def existing_mode(path: Path) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
