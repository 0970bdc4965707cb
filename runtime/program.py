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

import gc
import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from nncc.runtime import isa
from nncc.runtime.faults import MachineFault
from nncc.runtime.memory import MAX_SIMULATED_DRAM_BYTES
from nncc.runtime.target import Target, target_from_dict, target_to_dict
from nncc.support.errors import NnccError

MAGIC = b"NNCCBIN\0"
VERSION = 3  # 3: layer markers name their op
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
        return 4 * math.prod(self.shape)


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
    return [(addr, bytes(chunks[0]) if len(chunks) == 1 else b"".join(chunks)) for addr, chunks in merged_runs(data)]


def merged_runs(data: list[tuple[int, bytes]]) -> list[tuple[int, list[bytes]]]:
    """`merged_segments` with each segment's chunks in order, not joined (nothing copied)."""
    runs: list[tuple[int, int, list[bytes]]] = []  # (address, end, chunks) of contiguous runs
    for addr, chunk in sorted(data, key=lambda item: item[0]):
        if runs and runs[-1][1] == addr:
            runs[-1][2].append(chunk)
            runs[-1] = (runs[-1][0], addr + len(chunk), runs[-1][2])
        else:
            runs.append((addr, addr + len(chunk), [chunk]))
    return [(addr, chunks) for addr, _, chunks in runs]


# --------------------------------------------------------------------------------------------
# Layout: the DRAM size, symbols and data a file gives, checked before anything is allocated


class LayoutError(ValueError):
    """A DRAM size, symbol or data segment that no memory can hold."""


def check_layout(program: Program) -> None:
    """Raise `LayoutError` unless the program's DRAM fits its target and holds every symbol (each
    name once: inputs and outputs go by name) and segment."""
    check_dram_size(program.dram_bytes, program.target)
    names: set[str] = set()
    for symbol in program.symbols:
        check_symbol(symbol, program.dram_bytes)
        if symbol.name in names:
            raise LayoutError(f"symbol {symbol.name!r}: defined twice")
        names.add(symbol.name)
    for addr, chunk in program.data:
        check_segment(addr, len(chunk), program.dram_bytes)


def check_dram_size(dram_bytes: int, target: Target | None = None) -> None:
    if dram_bytes < 0 or dram_bytes % 4:
        raise LayoutError(f"DRAM size {dram_bytes:#x} is not a non-negative multiple of 4")
    if dram_bytes > MAX_SIMULATED_DRAM_BYTES:
        raise LayoutError(f"DRAM size {dram_bytes:#x} exceeds the interpreter's limit "
                          f"({MAX_SIMULATED_DRAM_BYTES:#x} bytes)")  # fmt: skip
    if target is not None and dram_bytes > target.dram.size_bytes:
        raise LayoutError(f"DRAM size {dram_bytes:#x} exceeds target {target.name}'s DRAM "
                          f"({target.dram.size_bytes:#x} bytes)")  # fmt: skip


def check_symbol(symbol: Symbol, dram_bytes: int | None = None) -> None:
    """Kind, dtype, shape and address of a symbol (inside `dram_bytes` when given)."""
    where = f"symbol {symbol.name!r}"
    if symbol.kind not in SYMBOL_KINDS:
        raise LayoutError(f"{where}: kind {symbol.kind!r} is not one of {', '.join(SYMBOL_KINDS)}")
    if symbol.dtype != "float32":
        raise LayoutError(f"{where}: dtype {symbol.dtype!r} is not float32")
    if any(d < 1 for d in symbol.shape):
        raise LayoutError(f"{where}: shape {','.join(map(str, symbol.shape))} has a size < 1")
    check_span(where, symbol.addr, symbol.nbytes, dram_bytes)


def check_segment(addr: int, nbytes: int, dram_bytes: int | None = None) -> None:
    """A data segment: whole fp32 words at an aligned address (inside `dram_bytes` when given)."""
    where = f"data at {addr:#x}"
    if nbytes % 4:
        raise LayoutError(f"{where}: {nbytes} bytes is not a whole number of 4-byte fp32 words")
    check_span(where, addr, nbytes, dram_bytes)


def check_span(where: str, addr: int, nbytes: int, dram_bytes: int | None) -> None:
    if addr < 0 or addr % 4:
        raise LayoutError(f"{where}: address {addr:#x} is not a non-negative multiple of 4")
    if dram_bytes is not None and addr + nbytes > dram_bytes:
        raise LayoutError(f"{where}: bytes {addr:#x}..{addr + nbytes:#x} lie outside the program's "
                          f"DRAM (0x0..{dram_bytes:#x})")  # fmt: skip


# --------------------------------------------------------------------------------------------
# Binary


def to_bytes(program: Program) -> bytes:
    return b"".join(to_parts(program))


def to_parts(program: Program) -> list:
    """The `.nnbin` image of `program` in parts, in order (magic, version and header, the
    instructions, each data chunk, the checksum): written one after the other, the weights are
    never copied into one image (ResNet-50's 138 MiB)."""
    memory_ids = {name: i for i, name in enumerate(program.memory_names)}
    strings: dict[str, int] = {}
    collecting = gc.isenabled()
    gc.disable()  # encoding makes many short-lived tuples: no collection of the whole heap meanwhile
    try:
        slots = isa.encode_all(program.instructions, memory_ids, strings)
    except (KeyError, ValueError, TypeError, OverflowError):  # which instruction, and why: one by one
        strings, slots = {}, []
        for index, instr in enumerate(program.instructions):
            try:
                slots += isa.encode(instr, memory_ids, strings)
            except isa.IsaError as error:
                raise MachineFault(index, isa.definition_of(instr).mnemonic, str(error)) from None
    finally:
        if collecting:
            gc.enable()
    segments = merged_runs(program.data)
    header = program.header(list(strings), len(slots), [[a, sum(len(c) for c in chunks)] for a, chunks in segments])
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    parts = [
        MAGIC,
        struct.pack("<II", VERSION, len(header_bytes)),
        header_bytes,
        np.asarray(slots, dtype="<i8").tobytes(),
        *(chunk for _, chunks in segments for chunk in chunks),
    ]
    crc = 0
    for part in parts:  # the checksum of the body, part by part
        crc = zlib.crc32(part, crc)
    return [*parts, struct.pack("<I", crc)]


def from_bytes(blob: bytes) -> Program:
    """Parse a `.nnbin` image; any corruption raises `MachineFault`.

    The header is checked (types, sizes, every address) before anything is allocated.
    """
    if len(blob) < 20 or blob[:8] != MAGIC:
        raise MachineFault(0, "header", "corrupt file: bad magic (not an .nnbin program)")
    body, (crc,) = blob[:-4], struct.unpack("<I", blob[-4:])
    if zlib.crc32(body) != crc:
        raise MachineFault(0, "header", "corrupt file: checksum mismatch")
    version, header_len = struct.unpack_from("<II", body, 8)
    if version != VERSION:
        raise MachineFault(0, "header", f"unsupported .nnbin version {version} (this runtime reads {VERSION})")
    try:
        header = read_header(body[16 : 16 + header_len])
        target = target_from_dict(header["target"], "program target")
        position = 16 + header_len
        sizes = [8 * header["slot_count"], *(size for _, size in header["segments"])]
        if position + sum(sizes) != len(body):
            raise MachineFault(0, "data", "corrupt file: size does not match the header")
        slots = np.frombuffer(body, dtype="<i8", count=header["slot_count"], offset=position)
        position += sizes[0]
        data = []
        for addr, size in header["segments"]:
            data.append((addr, body[position : position + size]))
            position += size
        symbols = [Symbol(n, k, a, tuple(s), d) for n, k, a, s, d in header["symbols"]]
        program = Program(target, [], symbols, data, header["dram_bytes"], header["mode"])
        check_layout(program)
    except LayoutError as error:
        raise MachineFault(0, "header", str(error)) from None
    except (ValueError, KeyError, TypeError, NnccError) as error:
        raise MachineFault(0, "header", f"corrupt file: {error}") from None
    program.instructions = decode_all(slots, program.memory_names, header["strings"])
    if len(program.instructions) != header["instruction_count"]:
        raise MachineFault(len(program.instructions), "header", "corrupt file: instruction count mismatch")
    return program


HEADER_FIELDS: dict[str, type] = {
    "target": dict, "mode": str, "dram_bytes": int, "symbols": list, "strings": list,
    "instruction_count": int, "slot_count": int, "segments": list,
}  # fmt: skip


def read_header(text: bytes) -> dict[str, Any]:
    """The header JSON, every field of the right type (`ValueError` naming the field otherwise)."""
    try:
        header = json.loads(text)
    except (ValueError, RecursionError) as error:  # bad UTF-8 or JSON, or nested too deeply
        raise ValueError(f"header is not valid JSON: {error}") from None
    if not isinstance(header, dict):
        raise ValueError(f"header is not a JSON object: {shown(header)}")
    for key, kind in HEADER_FIELDS.items():
        if key not in header:
            raise ValueError(f"header field {key}: missing")
        expect(f"header field {key}", header[key], kind)
    for key in ("instruction_count", "slot_count"):
        if header[key] < 0:
            raise ValueError(f"header field {key}: {header[key]} is negative")
    if header["mode"] not in MODES:
        raise ValueError(f"header field mode: {header['mode']!r} is not one of {', '.join(MODES)}")
    for i, string in enumerate(header["strings"]):
        expect(f"header field strings[{i}]", string, str)
    for i, segment in enumerate(header["segments"]):
        expect_row(f"header field segments[{i}]", segment, (int, int))
        if segment[1] < 0:
            raise ValueError(f"header field segments[{i}]: size {segment[1]} is negative")
    for i, symbol in enumerate(header["symbols"]):
        expect_row(f"header field symbols[{i}]", symbol, (str, str, int, list, str))
        for dim in symbol[3]:
            expect(f"header field symbols[{i}] ({symbol[0]!r}) shape", dim, int)
    return header


def expect(where: str, value: Any, kind: type) -> None:
    """`ValueError` unless `value` is a `kind` (a bool is no int)."""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{where}: expected {kind.__name__}, got {shown(value)}")


def expect_row(where: str, row: Any, kinds: tuple[type, ...]) -> None:
    """`ValueError` unless `row` is a list of len(kinds) values of those types."""
    if not isinstance(row, list) or len(row) != len(kinds):
        raise ValueError(f"{where}: expected a list of {len(kinds)} values, got {shown(row)}")
    for value, kind in zip(row, kinds):
        expect(where, value, kind)


def shown(value: Any, limit: int = 40) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decode_all(slots: np.ndarray, memory_names: list[str], strings: list[str]) -> list[NamedTuple]:
    try:
        return isa.decode(slots, memory_names, strings)
    except isa.DecodeError as error:
        raise MachineFault(error.index, error.opcode, str(error)) from None

