"""The program container and the binary ``.nnbin`` file format.

A `Program` is what the compiler emits and the interpreter runs: the target it was built for (name
and every resolved parameter, so ``--target-set`` overrides survive), the instruction list, the
symbol table (inputs, outputs, weights: DRAM address, shape, dtype) and the initial DRAM image.

Binary layout (little endian)::

    b"NNCCBIN\\0"  u32 version  u32 header_len  header (UTF-8 JSON)
    i64 x header.slot_count              instructions: opcode then operand slots (runtime/isa.py)
    bytes of every data segment          initial DRAM image, in header.segments order
    u32 crc32 of everything above
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from nncc.compiler.errors import NnccError
from nncc.compiler.target import Target, target_from_dict, target_to_dict
from nncc.runtime import isa
from nncc.runtime.faults import MachineFault

MAGIC = b"NNCCBIN\0"
VERSION = 2
SYMBOL_KINDS = ("input", "output", "weight")
MODES = ("inference", "training")


@dataclass(frozen=True)
class Symbol:
    """A named tensor in DRAM: fp32, dense, row-major at `addr`."""

    name: str
    kind: str
    addr: int
    shape: tuple[int, ...]
    dtype: str = "float32"

    @property
    def nbytes(self) -> int:
        return 4 * int(np.prod(self.shape, dtype=np.int64))


@dataclass
class Program:
    target: Target
    instructions: list[NamedTuple]
    symbols: list[Symbol] = field(default_factory=list)
    data: list[tuple[int, bytes]] = field(default_factory=list)
    dram_bytes: int = 0
    mode: str = "inference"

    @property
    def memory_names(self) -> list[str]:
        """Memory spaces in binary-id order: DRAM is 0, then the target's on-chip memories."""
        return ["DRAM", *self.target.memory_names]

    def symbol(self, name: str) -> Symbol:
        for symbol in self.symbols:
            if symbol.name == name:
                return symbol
        raise NnccError(f"program has no symbol {name!r}")

    def symbols_of(self, kind: str) -> list[Symbol]:
        return [s for s in self.symbols if s.kind == kind]

    def allocate(self, name: str, kind: str, shape: tuple[int, ...], data: np.ndarray | None = None, align: int = 64) -> Symbol:
        """Place a new DRAM tensor after everything allocated so far (`dram_bytes` grows).

        `data` (weights) goes into the initial DRAM image.
        """
        if kind not in SYMBOL_KINDS:
            raise NnccError(f"symbol {name}: kind must be one of {', '.join(SYMBOL_KINDS)}")
        addr = -(-self.dram_bytes // align) * align
        symbol = Symbol(name, kind, addr, tuple(int(d) for d in shape))
        self.symbols.append(symbol)
        self.dram_bytes = addr + symbol.nbytes
        if data is not None:
            if tuple(np.shape(data)) != symbol.shape:
                raise NnccError(f"symbol {name}: data shape {np.shape(data)} differs from {symbol.shape}")
            self.add_data(addr, data)
        return symbol

    def with_target(self, target: Target) -> Program:
        """The same program for another resolution of its target (e.g. with --target-set overrides)."""
        return Program(target, self.instructions, self.symbols, self.data, self.dram_bytes, self.mode)

    def add_data(self, addr: int, array: np.ndarray) -> None:
        """Put fp32 values into the initial DRAM image at byte address `addr`."""
        self.data.append((addr, np.ascontiguousarray(array, dtype=np.float32).tobytes()))

    def header(self, strings: list[str], slot_count: int, segments: list[tuple[int, int]]) -> dict[str, Any]:
        return {
            "target": target_to_dict(self.target),
            "mode": self.mode,
            "dram_bytes": self.dram_bytes,
            "symbols": [[s.name, s.kind, s.addr, list(s.shape), s.dtype] for s in self.symbols],
            "strings": strings,
            "instruction_count": len(self.instructions),
            "slot_count": slot_count,
            "segments": segments,
        }


def merged_segments(data: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """Sort segments by address and merge the contiguous ones (the canonical DRAM image)."""
    merged: list[tuple[int, bytearray]] = []
    for addr, chunk in sorted(data, key=lambda item: item[0]):
        if merged and merged[-1][0] + len(merged[-1][1]) == addr:
            merged[-1][1].extend(chunk)
        else:
            merged.append((addr, bytearray(chunk)))
    return [(addr, bytes(chunk)) for addr, chunk in merged]


# --------------------------------------------------------------------------------------------
# Binary


def to_bytes(program: Program) -> bytes:
    memory_ids = {name: i for i, name in enumerate(program.memory_names)}
    strings: dict[str, int] = {}
    slots: list[int] = []
    for index, instr in enumerate(program.instructions):
        try:
            slots += isa.encode(instr, memory_ids, strings)
        except isa.IsaError as error:
            raise MachineFault(index, isa.definition_of(instr).mnemonic, str(error)) from None
    segments = merged_segments(program.data)
    header = program.header(list(strings), len(slots), [[a, len(b)] for a, b in segments])
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    body = b"".join(
        [
            MAGIC,
            struct.pack("<II", VERSION, len(header_bytes)),
            header_bytes,
            np.asarray(slots, dtype="<i8").tobytes(),
            *(chunk for _, chunk in segments),
        ]
    )
    return body + struct.pack("<I", zlib.crc32(body))


def from_bytes(blob: bytes) -> Program:
    """Parse a `.nnbin` image; any corruption raises `MachineFault`."""
    if len(blob) < 20 or blob[:8] != MAGIC:
        raise MachineFault(0, "header", "corrupt file: bad magic (not an .nnbin program)")
    body, (crc,) = blob[:-4], struct.unpack("<I", blob[-4:])
    if zlib.crc32(body) != crc:
        raise MachineFault(0, "header", "corrupt file: checksum mismatch")
    version, header_len = struct.unpack_from("<II", body, 8)
    if version != VERSION:
        raise MachineFault(0, "header", f"unsupported .nnbin version {version} (this runtime reads {VERSION})")
    try:
        header = json.loads(body[16 : 16 + header_len])
        target = target_from_dict(header["target"], "program target")
        position = 16 + header_len
        slot_bytes = 8 * header["slot_count"]
        slots = np.frombuffer(body, dtype="<i8", count=header["slot_count"], offset=position)
        position += slot_bytes
        data = []
        for addr, size in header["segments"]:
            data.append((addr, body[position : position + size]))
            position += size
        symbols = [Symbol(n, k, a, tuple(s), d) for n, k, a, s, d in header["symbols"]]
    except (ValueError, KeyError, TypeError, NnccError) as error:
        raise MachineFault(0, "header", f"corrupt file: {error}") from None
    if position != len(body):
        raise MachineFault(0, "data", "corrupt file: size does not match the header")
    program = Program(target, [], symbols, data, header["dram_bytes"], header["mode"])
    program.instructions = decode_all(slots, program.memory_names, header["strings"])
    if len(program.instructions) != header["instruction_count"]:
        raise MachineFault(len(program.instructions), "header", "corrupt file: instruction count mismatch")
    return program


def decode_all(slots: np.ndarray, memory_names: list[str], strings: list[str]) -> list[NamedTuple]:
    try:
        return isa.decode(slots, memory_names, strings)
    except isa.DecodeError as error:
        raise MachineFault(error.index, error.opcode, str(error)) from None


def save(program: Program, path: str | Path) -> None:
    """Write `.nnbin` (binary) or `.s` (assembly) by the file's suffix."""
    path = Path(path)
    if path.suffix == ".s":
        from nncc.runtime.assembler import disassemble

        path.write_text(disassemble(program))
    else:
        path.write_bytes(to_bytes(program))


def load(path: str | Path) -> Program:
    """Read a `.nnbin` or `.s` program. A missing file is `NnccError`; a corrupt one `MachineFault`."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as error:
        raise NnccError(f"{path}: cannot read program: {error.strerror}") from None
    if path.suffix == ".s":
        from nncc.runtime.assembler import assemble

        return assemble(blob.decode(errors="replace"), str(path))
    return from_bytes(blob)
