"""The nncc accelerator ISA: the one definition of every instruction.

The assembler, the disassembler, the binary encoder, the interpreter and the `isa` xDSL dialect
all read `INSTRUCTIONS`; nothing about an instruction is written anywhere else.

Instructions work on tiles. Data is fp32 everywhere; addresses are byte addresses (multiples of 4)
into a memory space named by the target (``DRAM`` or an on-chip memory such as ``AM``); strides and
shapes are counted in fp32 elements, outermost dimension first. A tile operand is a reference
``MEM[addr]`` plus a stride tuple; stride 0 broadcasts. Every executing instruction may ``wait`` on
semaphores (consuming one token each) before it starts and ``signal`` semaphores (producing one token
each) when it completes, in the spirit of VTA's dependency queues. An instruction is a namedtuple::

    >>> ins = make("vadd", shape=(1, 4, 16), x=("AM", 0), x_stride=(0, 16, 1), y=("AM", 256),
    ...            y_stride=(0, 16, 1), z=("AM", 512), z_stride=(0, 16, 1))
    >>> format_instr(ins)
    'vadd shape=1,4,16 x=AM[0x0] x_stride=0,16,1 y=AM[0x100] y_stride=0,16,1 z=AM[0x200] z_stride=0,16,1'
"""

from __future__ import annotations

import struct
from functools import lru_cache
from itertools import chain
from collections import namedtuple
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

import numpy as np

MAX_SEMAPHORES = 63
"""Semaphores are numbered 0..62 (a wait/signal set is one 63-bit mask in the binary)."""

MAX_CORES = 63


class Kind(Enum):
    """How an operand is written in assembly and how many 64-bit slots it takes in the binary."""

    INT = "int"  # 1 slot, decimal
    ADDR = "addr"  # 1 slot, hexadecimal
    FLOAT = "float"  # 1 slot (IEEE-754 double bits)
    ENUM = "enum"  # 1 slot (index into `choices`), written by name
    SET = "set"  # 1 slot (bit mask), written as comma-separated numbers
    STR = "str"  # 1 slot (index into the program's string table), written quoted
    REF = "ref"  # 2 slots (memory space, byte address), written MEM[0xADDR]
    INTS = "ints"  # `width` slots, written comma-separated


class Engine(Enum):
    """Which engine executes an instruction."""

    DMA = "dma"  # DMA channel `ch`
    UNIT = "unit"  # compute unit `unit` (main, pre, post) of core `core`
    CONTROL = "control"  # no engine: markers and barriers, handled by the dispatcher


@dataclass(frozen=True)
class Operand:
    name: str
    kind: Kind
    default: Any = None  # None: required
    width: int = 1  # INTS only
    choices: tuple[str, ...] = ()  # ENUM only
    doc: str = ""

    @property
    def slots(self) -> int:
        return {Kind.REF: 2, Kind.INTS: self.width}.get(self.kind, 1)


@dataclass(frozen=True)
class InstrDef:
    """One instruction: mnemonic, opcode, engine, operands and a one-line meaning."""

    mnemonic: str
    opcode: int
    engine: Engine
    operands: tuple[Operand, ...]
    semantics: str
    tuple_type: type = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [operand.name for operand in self.operands]
        cls = namedtuple(self.mnemonic.capitalize(), names)  # type: ignore[misc]
        cls.DEF = self  # type: ignore[attr-defined]
        cls.__doc__ = f"{self.mnemonic}: {self.semantics}"
        object.__setattr__(self, "tuple_type", cls)

    @property
    def slots(self) -> int:
        return sum(operand.slots for operand in self.operands)


UNITS = ("main", "pre", "post")
PHASES = ("forward", "backward", "update")

ACTIVATIONS: dict[str, int] = {
    # function: cost in vector passes per element group (1 = one FMAC-unit operation)
    "copy": 1, "relu": 1, "clip": 1, "leaky": 1, "step": 1, "affine": 1, "abs": 1, "neg": 1, "square": 1,
    "hardsigmoid": 2, "hardswish": 3,
    "sigmoid": 4, "tanh": 4, "exp": 4, "log": 4, "recip": 4, "sqrt": 4, "rsqrt": 4,
    # appended (an enum operand is its index in this order: old binaries keep their meaning)
    "erf": 4, "gelu": 6, "gelu_tanh": 9, "silu": 5,
}  # fmt: skip
"""vact functions. clip: min(max(x,p0),p1); leaky: x>0?x:p0*x; step: x>0?1:0; affine: x*p0+p1;
hardsigmoid: clip(p0*x+p1, 0, 1); rsqrt: 1/sqrt(x+p0); gelu: x/2*(1+erf(x/sqrt(2)));
gelu_tanh: x/2*(1+tanh(sqrt(2/pi)*(x+0.044715*x^3))); silu: x*sigmoid(x); the rest as named.
Costs: a transcendental (sigmoid, tanh, erf, exp, ...) is 4 passes, like vdiv; a composite is
its transcendental plus one pass per extra multiply/FMA: silu = sigmoid + mul (5),
gelu = erf (argument scale folded in) + FMA + mul (6), gelu_tanh = x^2, FMA, mul, tanh, FMA, mul (9)."""

BINARY_OPS: dict[str, tuple[int, str]] = {
    "vadd": (0x20, "z = x + y"),
    "vsub": (0x21, "z = x - y"),
    "vmul": (0x22, "z = x * y"),
    "vdiv": (0x23, "z = x / y"),
    "vmax": (0x24, "z = max(x, y)"),
    "vmin": (0x25, "z = min(x, y)"),
    "vcmpeq": (0x26, "z = 1.0 if x == y else 0.0"),
    "vcmpgt": (0x27, "z = 1.0 if x > y else 0.0"),
}
BINARY_COST = {"vdiv": 4}


NO_REF = ("none", 0)
"""An optional tile reference that is absent: left out of assembly, memory id -1 in the binary."""


def _ref(name: str, doc: str = "") -> Operand:
    return Operand(name, Kind.REF, doc=doc)


def _ints(name: str, width: int, default: tuple[int, ...] | None = None, doc: str = "") -> Operand:
    return Operand(name, Kind.INTS, default=default, width=width, doc=doc)


_SYNC = (
    Operand("wait", Kind.SET, default=(), doc="semaphores to take one token from before starting"),
    Operand("signal", Kind.SET, default=(), doc="semaphores to give one token to on completion"),
)
_ON_UNIT = (
    Operand("core", Kind.INT, default=0),
    Operand("unit", Kind.ENUM, default="main", choices=UNITS),
)


def _tile(name: str) -> tuple[Operand, Operand]:
    return _ref(name), _ints(f"{name}_stride", 3)


def _binary(mnemonic: str, opcode: int, meaning: str) -> InstrDef:
    return InstrDef(
        mnemonic, opcode, Engine.UNIT,
        (*_ON_UNIT, _ints("shape", 3), *_tile("x"), *_tile("y"), *_tile("z"), *_SYNC),
        f"{meaning}, elementwise over a 3-D tile (lanes on the last dimension)",
    )  # fmt: skip


INSTRUCTIONS: tuple[InstrDef, ...] = (
    InstrDef(
        "dma", 0x01, Engine.DMA,
        (
            Operand("ch", Kind.INT, default=0, doc="DMA channel"),
            _ref("src"), Operand("src_core", Kind.INT, default=0, doc="instance of a per-core source memory"),
            _ints("src_stride", 3),
            _ref("dst"), Operand("cores", Kind.SET, default=(0,), doc="destination instances (multicast)"),
            _ints("dst_stride", 3),
            _ints("shape", 3, doc="destination box, padding included"),
            _ints("pad", 6, default=(0, 0, 0, 0, 0, 0), doc="lo0,hi0,lo1,hi1,lo2,hi2"),
            Operand("pad_value", Kind.FLOAT, default=0.0),
            *_SYNC,
        ),
        "copy a 3-D box; the source box is shape minus padding, padded elements get pad_value; "
        "one read delivered to every core in `cores`",
    ),
    InstrDef(
        "matmul", 0x10, Engine.UNIT,
        (
            *_ON_UNIT,
            Operand("batch", Kind.INT, default=1),
            _ints("mnk", 3, doc="m, n, k"),
            _ref("a"), _ints("a_stride", 3, doc="batch, m, k"),
            _ref("b"), _ints("b_stride", 3, doc="batch, k, n"),
            _ref("c"), _ints("c_stride", 3, doc="batch, m, n"),
            Operand("acc", Kind.INT, default=0, doc="1: accumulate into c"),
            Operand("bias", Kind.REF, default=NO_REF, doc="epilogue: a tile added once (none: no bias)"),
            _ints("bias_stride", 3, default=(0, 0, 0), doc="batch, m, n (stride 0 broadcasts)"),
            Operand("act", Kind.ENUM, default="none", choices=("none", *ACTIVATIONS),
                    doc="epilogue: a vact function applied to the result"),
            Operand("p0", Kind.FLOAT, default=0.0),
            Operand("p1", Kind.FLOAT, default=0.0),
            *_SYNC,
        ),
        "c[t,i,j] = act((acc ? c[t,i,j] : 0) + bias[t,i,j] + sum_l a[t,i,l] * b[t,l,j]; p0, p1); "
        "n on lanes (vector) or columns (matrix), a broadcast; bias and act (the epilogue) run on "
        "the vector unit's ALU slot beside its MACs",
    ),
    *(_binary(mnemonic, opcode, meaning) for mnemonic, (opcode, meaning) in BINARY_OPS.items()),
    InstrDef(
        "vfma", 0x30, Engine.UNIT,
        (*_ON_UNIT, _ints("shape", 3), *_tile("x"), *_tile("y"), *_tile("w"), *_tile("z"), *_SYNC),
        "z = x * y + w elementwise (per-channel scale/shift with stride-0 operands)",
    ),
    InstrDef(
        "vact", 0x31, Engine.UNIT,
        (
            *_ON_UNIT,
            Operand("func", Kind.ENUM, choices=tuple(ACTIVATIONS)),
            Operand("p0", Kind.FLOAT, default=0.0),
            Operand("p1", Kind.FLOAT, default=0.0),
            _ints("shape", 3), *_tile("x"), *_tile("z"), *_SYNC,
        ),
        "z = func(x; p0, p1) elementwise: copy relu clip leaky step affine sigmoid hardswish exp ...",
    ),
    InstrDef(
        "vfill", 0x32, Engine.UNIT,
        (*_ON_UNIT, _ints("shape", 3), *_tile("z"), Operand("value", Kind.FLOAT, default=0.0), *_SYNC),
        "z = value over a 3-D tile",
    ),
    InstrDef(
        "vred", 0x40, Engine.UNIT,
        (
            *_ON_UNIT,
            Operand("func", Kind.ENUM, choices=("sum", "max", "mean")),
            Operand("acc", Kind.INT, default=0, doc="1: combine with z (sum/mean add, max max)"),
            _ints("shape", 3), *_tile("x"), _ref("z"), Operand("z_stride", Kind.INT, default=1),
            *_SYNC,
        ),
        "z[i] (+)= reduce over j, l of x[i, j, l] (global pooling, batch-norm statistics)",
    ),
    InstrDef(
        "vpool", 0x41, Engine.UNIT,
        (
            *_ON_UNIT,
            Operand("func", Kind.ENUM, choices=("max", "avg", "sum")),
            _ints("shape", 3, doc="output tile"),
            _ints("window", 2),
            *_tile("x"),
            _ints("win_stride", 2, doc="element strides of the two window dimensions"),
            *_tile("z"),
            *_SYNC,
        ),
        "z[i,j,l] = reduce over a<window0, b<window1 of x[i*s0 + j*s1 + l*s2 + a*w0 + b*w1]",
    ),
    InstrDef(
        "barrier", 0x50, Engine.CONTROL, (),
        "every instruction before it completes before any instruction after it starts",
    ),
    InstrDef(
        "layer", 0x60, Engine.CONTROL,
        (
            Operand("name", Kind.STR),
            Operand("op", Kind.STR, default="", doc="the IR op the layer was lowered from, e.g. fused.conv2d"),
            Operand("nodes", Kind.STR, default="", doc="ONNX node names, comma-separated"),
            Operand("phase", Kind.ENUM, default="forward", choices=PHASES),
        ),
        "marker: the instructions that follow serve this layer (for per-layer counters)",
    ),
)  # fmt: skip

BY_MNEMONIC: dict[str, InstrDef] = {d.mnemonic: d for d in INSTRUCTIONS}
BY_OPCODE: dict[int, InstrDef] = {d.opcode: d for d in INSTRUCTIONS}


class IsaError(ValueError):
    """An instruction that is not well-formed (bad operand name, type or value)."""


# --------------------------------------------------------------------------------------------
# Construction and static checks


def make(mnemonic: str, **operands: Any) -> NamedTuple:
    """Build an instruction, filling defaults, normalising values and checking them.

    Each instruction has a constructor generated from its definition (`_constructor`): a value
    already in canonical form (an int in range, a tuple of them, a known memory reference...)
    is taken as it is, any other goes through `_normalise`."""
    constructor = _CONSTRUCTORS.get(mnemonic)
    if constructor is None:
        raise IsaError(f"unknown instruction {mnemonic!r}")
    return constructor(**operands)


_ABSENT = object()
_INT_LIMIT = 1 << 62
_REF_MEMORIES: set[str] = set()  # memory names seen valid in a reference


def _canonical_test(operand: Operand, name: str, index: int) -> str:
    """A Python expression: is `name` already what `_normalise` would make of it?"""
    kind = operand.kind
    if kind in (Kind.INT, Kind.ADDR):
        return f"type({name}) is int and 0 <= {name} < _LIMIT"
    if kind == Kind.FLOAT:
        return f"type({name}) is float"
    if kind == Kind.ENUM:
        return f"type({name}) is str and {name} in _CHOICES{index}"
    if kind == Kind.STR:
        return f"type({name}) is str and '\\n' not in {name}"
    if kind == Kind.REF:
        return (f"type({name}) is tuple and len({name}) == 2 and {name}[0] in _MEMORIES and "
                f"type({name}[1]) is int and 0 <= {name}[1] < _LIMIT")
    if kind == Kind.SET:
        return f"type({name}) is tuple and (not {name} or _members({name}))"
    low = 1 if operand.name in ("shape", "mnk", "window") else 0
    return f"type({name}) is tuple and len({name}) == {operand.width} and " + " and ".join(
        f"type({name}[{i}]) is int and {low} <= {name}[{i}] < _LIMIT" for i in range(operand.width))


def _members(value: tuple) -> bool:
    """Semaphore numbers in range, strictly increasing (a SET operand's canonical form)."""
    previous = -1
    for member in value:
        if type(member) is not int or member <= previous or member >= MAX_SEMAPHORES:
            return False
        previous = member
    return True


def _constructor(definition: InstrDef):
    """`make` for one instruction, as a function of its operands by name (as namedtuple does,
    from the definition's text): defaults filled, canonical values taken as they are."""
    names = [operand.name for operand in definition.operands]
    env: dict[str, Any] = {"_ABSENT": _ABSENT, "_LIMIT": _INT_LIMIT, "_MEMORIES": _REF_MEMORIES,
                           "_members": _members, "_normalise": _normalise, "_new": tuple.__new__,
                           "_type": definition.tuple_type, "_missing": _missing, "_unknown": _unknown,
                           "_mnemonic": definition.mnemonic}
    parameters = ", ".join([*(f"{name}=_ABSENT" for name in names), "**_others"])
    lines = [f"def make_{definition.mnemonic}({parameters}):",
             "    if _others:", "        _unknown(_mnemonic, _others)"]
    for index, operand in enumerate(definition.operands):
        name = operand.name
        env[f"_OPERAND{index}"] = operand
        env[f"_CHOICES{index}"] = frozenset(operand.choices)
        if operand.default is None:
            lines += [f"    if {name} is _ABSENT or {name} is None:", f"        _missing(_mnemonic, {name!r})"]
        else:
            env[f"_DEFAULT{index}"] = _normalise(definition.mnemonic, operand, operand.default)
            lines += [f"    if {name} is _ABSENT:", f"        {name} = _DEFAULT{index}",
                      f"    elif {name} is None:", f"        _missing(_mnemonic, {name!r})"]
        lines += [f"    elif not ({_canonical_test(operand, name, index)}):",
                  f"        {name} = _normalise(_mnemonic, _OPERAND{index}, {name})"]
    lines.append(f"    return _new(_type, ({''.join(f'{n}, ' for n in names)}))")
    exec("\n".join(lines), env)  # noqa: S102 - text generated from the definition above
    return env[f"make_{definition.mnemonic}"]


def _missing(mnemonic: str, name: str) -> None:
    raise IsaError(f"{mnemonic}: missing operand {name}")


def _unknown(mnemonic: str, others: dict[str, Any]) -> None:
    raise IsaError(f"{mnemonic}: unknown operand(s) {', '.join(sorted(others))}")


def _normalise(mnemonic: str, operand: Operand, value: Any) -> Any:
    """The canonical form of an operand value (checked); equal values are normalised once."""
    try:
        return _normalise_cached(mnemonic, operand, value)
    except TypeError as error:  # unhashable (a list, an array): normalise without the cache
        if "unhashable" not in str(error):
            raise
        return _normalise_uncached(mnemonic, operand, value)


@lru_cache(maxsize=65536)
def _normalise_cached(mnemonic: str, operand: Operand, value: Any) -> Any:
    return _normalise_uncached(mnemonic, operand, value)


def _normalise_uncached(mnemonic: str, operand: Operand, value: Any) -> Any:
    where = f"{mnemonic}: {operand.name}"
    kind = operand.kind
    try:
        if kind in (Kind.INT, Kind.ADDR):
            return _check_int(where, value, minimum=0)
        if kind == Kind.FLOAT:
            return float(value)
        if kind == Kind.ENUM:
            if value not in operand.choices:
                raise IsaError(f"{where}: {value!r} is not one of {', '.join(operand.choices)}")
            return value
        if kind == Kind.SET:
            members = tuple(sorted({_check_int(where, v, minimum=0) for v in value}))
            if members and members[-1] >= MAX_SEMAPHORES:
                raise IsaError(f"{where}: {members[-1]} is out of range (0..{MAX_SEMAPHORES - 1})")
            return members
        if kind == Kind.STR:
            if not isinstance(value, str) or "\n" in value:
                raise IsaError(f"{where}: expected a one-line string")
            return value
        if kind == Kind.REF:
            memory, address = value
            if not isinstance(memory, str) or not memory.isidentifier():
                raise IsaError(f"{where}: bad memory name {memory!r}")
            reference = (memory, _check_int(where, address, minimum=0))
            if type(memory) is str:
                _REF_MEMORIES.add(memory)
            return reference
        values = tuple(_check_int(where, v, minimum=0) for v in value)
        if len(values) != operand.width:
            raise IsaError(f"{where}: expected {operand.width} values, got {len(values)}")
        if operand.name in ("shape", "mnk", "window") and min(values) < 1:
            raise IsaError(f"{where}: sizes must be >= 1, got {values}")
        return values
    except (TypeError, ValueError) as error:
        if isinstance(error, IsaError):
            raise
        raise IsaError(f"{where}: bad value {value!r}") from None


def _check_int(where: str, value: Any, minimum: int) -> int:
    if isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise IsaError(f"{where}: expected an integer, got {value!r}")
    if value < minimum or value >= 1 << 62:
        raise IsaError(f"{where}: {value} is out of range")
    return value


_CONSTRUCTORS = {definition.mnemonic: _constructor(definition) for definition in INSTRUCTIONS}


def definition_of(instr: NamedTuple) -> InstrDef:
    return type(instr).DEF  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# Assembly text


def format_instr(instr: NamedTuple) -> str:
    """One canonical assembly line (operands at their default are left out)."""
    definition = definition_of(instr)
    parts = [definition.mnemonic]
    for operand, value in zip(definition.operands, instr):
        text = _format_operand(definition.mnemonic, operand, value)
        if text:
            parts.append(text)
    return " ".join(parts)


@lru_cache(maxsize=65536)
def _format_operand(mnemonic: str, operand: Operand, value: Any) -> str:
    """`name=value`, or "" for an operand at its default (programs repeat values a lot)."""
    if operand.default is not None and value == _normalise(mnemonic, operand, operand.default):
        return ""
    return f"{operand.name}={format_value(operand, value)}"


def format_value(operand: Operand, value: Any) -> str:
    kind = operand.kind
    if kind == Kind.ADDR:
        return hex(value)
    if kind == Kind.FLOAT:
        return repr(float(value))
    if kind == Kind.STR:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if kind == Kind.REF:
        return f"{value[0]}[{hex(value[1])}]"
    if kind in (Kind.SET, Kind.INTS):
        return ",".join(str(v) for v in value)
    return str(value)


def parse_value(operand: Operand, text: str) -> Any:
    """Inverse of `format_value` (values are checked later by `make`)."""
    kind = operand.kind
    try:
        if kind in (Kind.INT, Kind.ADDR):
            return int(text, 0)
        if kind == Kind.FLOAT:
            return float(text)
        if kind == Kind.STR:
            if len(text) < 2 or text[0] != '"' or text[-1] != '"':
                raise IsaError(f"{operand.name}: expected a quoted string")
            return text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        if kind == Kind.REF:
            memory, bracket, rest = text.partition("[")
            if not bracket or not rest.endswith("]"):
                raise IsaError(f"{operand.name}: expected MEM[ADDR], got {text!r}")
            return (memory, int(rest[:-1], 0))
        if kind in (Kind.SET, Kind.INTS):
            return tuple(int(v, 0) for v in text.split(",")) if text else ()
        return text
    except IsaError:
        raise
    except ValueError:
        raise IsaError(f"{operand.name}: bad value {text!r}") from None


# --------------------------------------------------------------------------------------------
# Binary encoding: opcode followed by the operand slots, all int64


def encode(instr: NamedTuple, memory_ids: dict[str, int], strings: dict[str, int]) -> list[int]:
    """Slots of one instruction. `strings` grows as new strings are met."""
    definition = definition_of(instr)
    slots = [definition.opcode]
    for operand, value in zip(definition.operands, instr):
        kind = operand.kind
        if kind == Kind.REF and value == NO_REF:
            slots += [-1, 0]
        elif kind == Kind.REF:
            if value[0] not in memory_ids:
                raise IsaError(f"{definition.mnemonic}: {operand.name}: unknown memory {value[0]!r}")
            slots += [memory_ids[value[0]], value[1]]
        elif kind == Kind.INTS:
            slots += value
        elif kind == Kind.FLOAT:
            slots.append(struct.unpack("<q", struct.pack("<d", value))[0])
        elif kind == Kind.ENUM:
            slots.append(operand.choices.index(value))
        elif kind == Kind.SET:
            slots.append(sum(1 << v for v in value))
        elif kind == Kind.STR:
            slots.append(strings.setdefault(value, len(strings)))
        else:
            slots.append(value)
    return slots


def encode_all(instructions: Sequence[NamedTuple], memory_ids: dict[str, int], strings: dict[str, int]) -> np.ndarray:
    """The int64 slots of a whole instruction stream, vectorised per opcode: the same slots as
    `encode` of each instruction in turn (`strings` grows in the same order). Raises `KeyError`,
    `ValueError` or `TypeError` on a value `encode` would refuse (ask it which instruction)."""
    groups: dict[type, list[int]] = {}
    text: dict[type, list[int]] = {}  # per instruction type: the positions of its string operands
    size: dict[type, int] = {}  # per instruction type: its slots, the opcode's included
    sizes = []
    for index, instr in enumerate(instructions):
        cls = type(instr)
        members = groups.get(cls)
        if members is None:
            members = groups[cls] = []
            text[cls] = [i for i, operand in enumerate(cls.DEF.operands) if operand.kind == Kind.STR]
            size[cls] = 1 + cls.DEF.slots
        members.append(index)
        for position in text[cls]:  # the string table in order of first use, as `encode` builds it
            strings.setdefault(instr[position], len(strings))
        sizes.append(size[cls])
    ends = np.cumsum(np.asarray(sizes, dtype=np.int64))
    out = np.empty(int(ends[-1]) if len(ends) else 0, dtype=np.int64)
    starts = ends - np.asarray(sizes, dtype=np.int64)
    for cls, members in groups.items():
        definition = cls.DEF
        rows = np.empty((len(members), 1 + definition.slots), dtype=np.int64)
        rows[:, 0] = definition.opcode
        columns = list(zip(*(instructions[i] for i in members)))
        offset = 1
        for operand, column in zip(definition.operands, columns):
            width = operand.slots
            rows[:, offset:offset + width] = _encode_column(operand, column, memory_ids, strings)
            offset += width
        out[starts[members][:, None] + np.arange(rows.shape[1])] = rows
    return out


def _encode_column(operand: Operand, column: tuple, memory_ids: dict[str, int], strings: dict[str, int]):
    kind, count = operand.kind, len(column)
    if kind == Kind.INTS:
        if any(len(value) != operand.width for value in column):
            raise ValueError(f"{operand.name}: values of the wrong width")
        return np.fromiter(chain.from_iterable(column), np.int64, count * operand.width).reshape(count, operand.width)
    if kind == Kind.REF:
        ids = {**memory_ids, NO_REF[0]: -1}
        memories = np.fromiter((ids[memory] for memory, _ in column), np.int64, count)
        if (memories < 0).any() and any(value[0] == NO_REF[0] and value != NO_REF for value in column):
            raise KeyError(NO_REF[0])  # a memory named "none" that is not the absent reference
        addresses = np.fromiter((address for _, address in column), np.int64, count)
        return np.stack([memories, np.where(memories < 0, 0, addresses)], axis=1)
    if kind == Kind.FLOAT:
        return np.array(column, dtype=np.float64).view(np.int64)[:, None]
    if kind == Kind.ENUM:
        index = {choice: i for i, choice in enumerate(operand.choices)}
        return np.fromiter((index[value] for value in column), np.int64, count)[:, None]
    if kind == Kind.SET:
        masks: dict[tuple[int, ...], int] = {}
        return np.fromiter((masks[value] if value in masks else masks.setdefault(value, sum(1 << v for v in value))
                            for value in column), np.int64, count)[:, None]
    if kind == Kind.STR:
        return np.fromiter((strings[value] for value in column), np.int64, count)[:, None]
    return np.fromiter(column, np.int64, count)[:, None]


class DecodeError(IsaError):
    """A binary instruction stream that cannot be decoded; `index` is the instruction's position."""

    def __init__(self, index: int, opcode: str, reason: str):
        super().__init__(reason)
        self.index = index
        self.opcode = opcode


def decode(slots: np.ndarray | Sequence[int], memory_names: Sequence[str], strings: Sequence[str]) -> list[NamedTuple]:
    """Decode a whole instruction stream (int64 slots), vectorised per opcode.

    Raises `DecodeError` naming the first bad instruction (unknown opcode, truncation, operand values
    out of range).
    """
    slots = np.asarray(slots, dtype=np.int64)
    positions, opcodes = _instruction_starts(slots)
    instructions: list[Any] = [None] * len(positions)
    starts = np.asarray(positions, dtype=np.int64)
    codes = np.asarray(opcodes, dtype=np.int64)
    for opcode in sorted(set(opcodes)):
        definition = BY_OPCODE[opcode]
        members = np.nonzero(codes == opcode)[0]
        rows = slots[starts[members][:, None] + np.arange(1, 1 + definition.slots)]
        columns = []
        offset = 0
        for operand in definition.operands:
            block = rows[:, offset : offset + operand.slots]
            bad = _invalid_rows(operand, block, len(memory_names), len(strings))
            if bad.any():
                first = int(members[np.argmax(bad)])
                raise DecodeError(first, definition.mnemonic, f"{definition.mnemonic}: {operand.name}: bad value")
            columns.append(_column(operand, block, memory_names, strings))
            offset += operand.slots
        make_tuple = definition.tuple_type._make
        rows_values = zip(*columns) if columns else [()] * len(members)
        for index, values in zip(members.tolist(), rows_values):
            instructions[index] = make_tuple(values)
    return instructions


def _instruction_starts(slots: np.ndarray) -> tuple[list[int], list[int]]:
    sizes = {opcode: 1 + definition.slots for opcode, definition in BY_OPCODE.items()}
    flat = slots.tolist()
    positions: list[int] = []
    opcodes: list[int] = []
    position = 0
    while position < len(flat):
        opcode = flat[position]
        size = sizes.get(opcode)
        if size is None:
            raise DecodeError(len(positions), f"{opcode:#x}", f"unknown opcode {opcode:#x}")
        if position + size > len(flat):
            raise DecodeError(len(positions), BY_OPCODE[opcode].mnemonic, "truncated instruction")
        positions.append(position)
        opcodes.append(opcode)
        position += size
    return positions, opcodes


def _invalid_rows(operand: Operand, block: np.ndarray, memories: int, strings: int) -> np.ndarray:
    kind = operand.kind
    if kind == Kind.FLOAT:
        return np.zeros(len(block), dtype=bool)
    if kind == Kind.REF:
        lowest = -1 if operand.default == NO_REF else 0  # -1: an absent optional reference
        return (block[:, 0] < lowest) | (block[:, 0] >= memories) | (block[:, 1] < 0)
    limit = {Kind.ENUM: len(operand.choices), Kind.STR: strings, Kind.SET: 1 << MAX_SEMAPHORES}.get(kind)
    low = 1 if operand.name in ("shape", "mnk", "window") else 0
    bad = (block < low).any(axis=1)
    if limit is not None:
        bad |= (block >= limit).any(axis=1)
    return bad


def _members(mask: int) -> tuple[int, ...]:
    return tuple(i for i in range(mask.bit_length()) if mask >> i & 1)


def _column(operand: Operand, block: np.ndarray, memory_names: Sequence[str], strings: Sequence[str]) -> list[Any]:
    kind = operand.kind
    if kind == Kind.INTS:
        return list(map(tuple, block.tolist()))
    if kind == Kind.REF:
        return [(memory_names[m], a) if m >= 0 else NO_REF for m, a in block.tolist()]
    column = block[:, 0]
    if kind == Kind.FLOAT:
        return np.ascontiguousarray(column).view(np.float64).tolist()
    values = column.tolist()
    if kind == Kind.ENUM:
        return [operand.choices[v] for v in values]
    if kind == Kind.STR:
        return [strings[v] for v in values]
    if kind == Kind.SET:
        cache: dict[int, tuple[int, ...]] = {}
        return [cache[m] if m in cache else cache.setdefault(m, _members(m)) for m in values]
    return values
