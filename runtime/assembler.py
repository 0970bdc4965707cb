"""Textual assembly (``.s``): assembler and disassembler.

One instruction a line, ``mnemonic operand=value ...``; operands at their default value may be left
out; ``#`` starts a comment. Directives carry the rest of the program::

    .nncc 1
    .target {"name": "vector", ...}              # every resolved target parameter, one JSON line
                                                 # (hand-written files may say `.target vector KEY=VALUE`)
    .mode inference
    .dram 0x2000                                 # DRAM bytes the program uses: every symbol and .data
                                                 # lies inside (left out: as many as they need)
    .symbol input x 0x0 1,16,8,8 float32
    .symbol output y 0x1000 1,16,4,4 float32

    layer name="pool1" nodes="MaxPool_0" phase=forward
        dma src=DRAM[0x0] src_stride=64,8,1 dst=AM[0x0] dst_stride=64,8,1 shape=16,8,8 signal=0   # pool1
        vpool func=max shape=16,4,4 window=2,2 x=AM[0x0] x_stride=64,16,2 win_stride=8,1 ...   # pool1
    .data 0x1400 AAAAAAAAgD8=                    # initial DRAM image, base64

`disassemble` writes the canonical text; ``disassemble(from_bytes(to_bytes(assemble(text))))``
gives that text back exactly.
"""

from __future__ import annotations

import base64
import json
import re

from nncc.runtime import isa
from nncc.runtime.faults import MachineFault
from nncc.runtime.program import (
    MODES, SYMBOL_KINDS, LayoutError, Program, Symbol, check_dram_size, check_layout, check_segment, check_symbol,
    merged_segments,
)  # fmt: skip
from nncc.runtime.target import load_target, target_from_dict, target_to_dict
from nncc.support.errors import NnccError

DATA_LINE_BYTES = 3072
_OPERAND = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|[^\s"]+)')


# --------------------------------------------------------------------------------------------
# Disassembler


def disassemble(program: Program) -> str:
    """The canonical assembly text of `program`."""
    lines = [
        ".nncc 1",
        ".target " + json.dumps(target_to_dict(program.target), separators=(",", ":"), sort_keys=True),
        f".mode {program.mode}",
        f".dram {program.dram_bytes:#x}",
    ]
    for s in program.symbols:
        lines.append(f".symbol {s.kind} {isa.format_value(SYMBOL_NAME, s.name)} {s.addr:#x} "
                     f"{','.join(map(str, s.shape))} {s.dtype}")
    lines.append("")
    layer = ""
    for instr in program.instructions:
        text = isa.format_instr(instr)
        mnemonic = isa.definition_of(instr).mnemonic
        if mnemonic == "layer":
            layer = instr.name
            lines += ["", text]
        elif mnemonic == "barrier":
            lines.append(text)
        else:
            lines.append(f"    {text}   # {layer}" if layer else f"    {text}")
    lines.append("")
    for addr, chunk in merged_segments(program.data):
        for start in range(0, len(chunk), DATA_LINE_BYTES):
            piece = chunk[start : start + DATA_LINE_BYTES]
            lines.append(f".data {addr + start:#x} {base64.b64encode(piece).decode()}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Assembler


def assemble(text: str, source: str = "<assembly>") -> Program:
    """Parse assembly text into a `Program`.

    Errors in an instruction raise `MachineFault` naming the instruction index; errors in a
    directive raise `MachineFault` for the header.
    """
    parser = _Parser(source)
    for number, line in enumerate(text.splitlines(), 1):
        parser.line(number, _strip_comment(line).strip())
    return parser.finish()


def _preset(text: str) -> dict:
    """``.target NAME [KEY=VALUE ...]``: a preset (or TOML path) with overrides, for hand-written files."""
    name, *overrides = text.split()
    try:
        return target_to_dict(load_target(name, overrides))
    except NnccError as error:
        raise ValueError(str(error)) from None


SYMBOL_NAME = isa.Operand("name", isa.Kind.STR)
"""Symbol names are written quoted, like string operands: weight names carry `#` (a comment
outside quotes) and ONNX names may hold spaces."""


def _symbol_fields(text: str) -> list[str]:
    """KIND NAME ADDR SHAPE DTYPE, NAME quoted ("conv1.weight#conv") or, in hand-written files, bare."""
    kind, _, rest = text.partition(" ")
    rest = rest.strip()
    if not rest.startswith('"'):
        return [kind, *rest.split()]
    end = 1
    while end < len(rest) and (rest[end] != '"' or rest[end - 1] == "\\"):
        end += 1
    return [kind, isa.parse_value(SYMBOL_NAME, rest[: end + 1]), *rest[end + 1 :].split()]


def _symbol(text: str) -> Symbol:
    """``.symbol KIND NAME ADDR SHAPE DTYPE``, checked (`ValueError` says what is wrong)."""
    fields = _symbol_fields(text)
    if len(fields) != 5:
        raise ValueError(f"expected KIND NAME ADDR SHAPE DTYPE, got {len(fields)} field(s)")
    kind, name, addr, shape, dtype = fields
    if kind not in SYMBOL_KINDS or dtype != "float32":
        raise ValueError(f"bad symbol kind {kind!r} or dtype {dtype!r}")
    try:
        dims = tuple(int(d, 10) for d in shape.split(","))
    except ValueError:
        raise ValueError(f"symbol {name!r}: shape {shape!r} is not comma-separated decimal integers") from None
    symbol = Symbol(name, kind, _integer(addr, f"symbol {name!r}: address"), dims, dtype)
    check_symbol(symbol)
    return symbol


def _data(text: str) -> tuple[int, bytes]:
    """``.data ADDR BASE64``: whole fp32 words at an aligned address."""
    fields = text.split()
    if len(fields) != 2:
        raise ValueError(f"expected ADDR BASE64, got {len(fields)} field(s)")
    addr = _integer(fields[0], "address")
    chunk = base64.b64decode(fields[1], validate=True)
    check_segment(addr, len(chunk))
    return addr, chunk


def _integer(text: str, what: str) -> int:
    """A decimal or 0x-hexadecimal integer."""
    try:
        return int(text, 0)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an integer") from None


def _extent(symbols: list[Symbol], data: list[tuple[int, bytes]]) -> int:
    """The DRAM bytes that hold every symbol and data segment (the size when ``.dram`` is left out)."""
    ends = [s.addr + s.nbytes for s in symbols] + [addr + len(chunk) for addr, chunk in data]
    return max(ends, default=0)


def _strip_comment(line: str) -> str:
    in_string = False
    for i, char in enumerate(line):
        if char == '"' and (i == 0 or line[i - 1] != "\\"):
            in_string = not in_string
        elif char == "#" and not in_string:
            return line[:i]
    return line


class _Parser:
    def __init__(self, source: str):
        self.source = source
        self.target_raw: dict | None = None
        self.mode = "inference"
        self.dram_bytes: int | None = None  # None: no .dram directive, as much as the symbols and data need
        self.symbols: list[Symbol] = []
        self.data: list[tuple[int, bytes]] = []
        self.instructions: list = []

    def fail(self, number: int, opcode: str, reason: str) -> MachineFault:
        return MachineFault(len(self.instructions), opcode, f"{self.source}:{number}: {reason}")

    def line(self, number: int, line: str) -> None:
        if not line:
            return
        if line.startswith("."):
            self.directive(number, line)
        else:
            self.instruction(number, line)

    def directive(self, number: int, line: str) -> None:
        name, _, rest = line.partition(" ")
        rest = rest.strip()
        try:
            if name == ".nncc":
                if rest != "1":
                    raise ValueError(f"unsupported assembly version {rest!r}")
            elif name == ".target":
                self.target_raw = json.loads(rest) if rest.startswith("{") else _preset(rest)
            elif name == ".mode":
                if rest not in MODES:
                    raise ValueError(f"mode must be one of {', '.join(MODES)}")
                self.mode = rest
            elif name == ".dram":
                self.dram_bytes = _integer(rest, "size")
                check_dram_size(self.dram_bytes)
            elif name == ".symbol":
                self.symbols.append(_symbol(rest))
            elif name == ".data":
                self.data.append(_data(rest))
            else:
                raise ValueError(f"unknown directive {name}")
        except (ValueError, json.JSONDecodeError) as error:
            raise self.fail(number, "header", f"{name}: {error}") from None

    def instruction(self, number: int, line: str) -> None:
        mnemonic, _, rest = line.partition(" ")
        definition = isa.BY_MNEMONIC.get(mnemonic)
        if definition is None:
            raise self.fail(number, mnemonic, f"unknown opcode {mnemonic!r}")
        operands = {o.name: o for o in definition.operands}
        values = {}
        position = 0
        rest = rest.strip()
        while position < len(rest):
            match = _OPERAND.match(rest, position)
            if match is None:
                raise self.fail(number, mnemonic, f"cannot parse {rest[position:].strip()!r}")
            key, text = match.groups()
            if key not in operands:
                raise self.fail(number, mnemonic, f"unknown operand {key!r}")
            try:
                values[key] = isa.parse_value(operands[key], text)
            except isa.IsaError as error:
                raise self.fail(number, mnemonic, str(error)) from None
            position = match.end()
            while position < len(rest) and rest[position].isspace():
                position += 1
        try:
            self.instructions.append(isa.make(mnemonic, **values))
        except isa.IsaError as error:
            raise self.fail(number, mnemonic, str(error)) from None

    def finish(self) -> Program:
        if self.target_raw is None:
            raise MachineFault(0, "header", f"{self.source}: missing .target directive")
        try:
            target = target_from_dict(self.target_raw, f"{self.source} .target")
        except NnccError as error:
            raise MachineFault(0, "header", str(error)) from None
        dram_bytes = _extent(self.symbols, self.data) if self.dram_bytes is None else self.dram_bytes
        program = Program(target, self.instructions, self.symbols, merged_segments(self.data), dram_bytes, self.mode)
        try:
            check_layout(program)
        except LayoutError as error:
            raise MachineFault(0, "header", f"{self.source}: {error}") from None
        known = {*program.memory_names, isa.NO_REF[0]}
        for index, instr in enumerate(program.instructions):
            for value in instr:
                if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and value[0] not in known:
                    raise MachineFault(index, isa.definition_of(instr).mnemonic, f"unknown memory {value[0]!r}")
        return program
