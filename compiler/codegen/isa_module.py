"""The `isa` stage as IR: a `Program` <-> a module of `isa` ops.

    builtin.module attributes {isa.target = {name = "vector", cores = 4 : i64, ...}, isa.mode = "inference",
                               isa.dram_bytes = 1234 : i64,
                               isa.symbols = ["input input 0x0 1x3x32x32", "logits output 0x3000 1x10", ...]} {
      func.func @program() {
        isa.layer {name = "conv1", nodes = "conv1,bn1,relu1", phase = "forward"}
        isa.dma {ch = 0 : i64, src_mem = "DRAM", src_addr = 4096 : i64, ...}
        ...
      }
    }

The initial DRAM image (weights, laid out for the kernels) lives in the weight store under
`dram@0xADDR` names, like every other weight: never in attributes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr, DictionaryAttr, FloatAttr, IntegerAttr, IntegerType, ModuleOp, StringAttr, f64, i64,
)
from xdsl.ir import Attribute, Block, Region

from nncc.compiler.weights import WeightStore
from nncc.dialects.isa import IsaOperation, instr_from_op, op_from_instr
from nncc.runtime.program import Program, Symbol
from nncc.runtime.target import target_from_dict, target_to_dict
from nncc.support.errors import NnccError

TARGET, MODE, DRAM_BYTES, SYMBOLS = "isa.target", "isa.mode", "isa.dram_bytes", "isa.symbols"
DRAM_PREFIX = "dram@"


def to_attribute(value: Any) -> Attribute:
    """A TOML-shaped value (the resolved target) as builtin attributes, printed readably."""
    if isinstance(value, bool):
        return IntegerAttr(int(value), IntegerType(1))
    if isinstance(value, int):
        return IntegerAttr(value, i64)
    if isinstance(value, float):
        return FloatAttr(value, f64)
    if isinstance(value, str):
        return StringAttr(value)
    if isinstance(value, list):
        return ArrayAttr([to_attribute(v) for v in value])
    return DictionaryAttr({k: to_attribute(v) for k, v in value.items()})


def from_attribute(attr: Attribute) -> Any:
    if isinstance(attr, IntegerAttr):
        return bool(attr.value.data) if attr.type == IntegerType(1) else attr.value.data
    if isinstance(attr, FloatAttr):
        return attr.value.data
    if isinstance(attr, StringAttr):
        return attr.data
    if isinstance(attr, ArrayAttr):
        return [from_attribute(a) for a in attr.data]
    if isinstance(attr, DictionaryAttr):
        return {k: from_attribute(v) for k, v in attr.data.items()}
    raise NnccError(f"isa.target: unexpected attribute {attr}")


def format_symbol(symbol: Symbol) -> str:
    return f"{symbol.name} {symbol.kind} {symbol.addr:#x} {'x'.join(map(str, symbol.shape)) or '-'}"


def parse_symbol(text: str) -> Symbol:
    name, kind, addr, shape = text.rsplit(" ", 3)
    dims = () if shape == "-" else tuple(int(d) for d in shape.split("x"))
    return Symbol(name, kind, int(addr, 16), dims)


def program_to_module(program: Program, store: WeightStore) -> ModuleOp:
    """Replace nothing: a new module holding `program`; its DRAM image goes into `store`."""
    block = Block([op_from_instr(instruction) for instruction in program.instructions])
    block.add_op(func.ReturnOp())
    module = ModuleOp([func.FuncOp("program", ((), ()), Region(block))])
    module.attributes[TARGET] = to_attribute(target_to_dict(program.target))
    module.attributes[MODE] = StringAttr(program.mode)
    module.attributes[DRAM_BYTES] = IntegerAttr(program.dram_bytes, i64)
    module.attributes[SYMBOLS] = ArrayAttr([StringAttr(format_symbol(s)) for s in program.symbols])
    for addr, data in program.data:
        store.replace(f"{DRAM_PREFIX}{addr:#x}", np.frombuffer(data, dtype=np.float32))
    return module


def is_isa_module(module: ModuleOp) -> bool:
    return TARGET in module.attributes


def module_to_program(module: ModuleOp, store: WeightStore) -> Program:
    """The `Program` an `isa` module describes (what `.s` and `.nnbin` are written from)."""
    if not is_isa_module(module):
        raise NnccError("the module is not at the isa stage (no isa.target attribute)")
    target = target_from_dict(from_attribute(module.attributes[TARGET]), "isa.target")
    instructions = [instr_from_op(op) for op in module.walk() if isinstance(op, IsaOperation)]
    symbols = [parse_symbol(a.data) for a in module.attributes[SYMBOLS].data]
    program = Program(target, instructions, symbols, [], module.attributes[DRAM_BYTES].value.data,
                      module.attributes[MODE].data)
    for name in store.names():
        if name.startswith(DRAM_PREFIX):
            program.add_data(int(name[len(DRAM_PREFIX):], 16), store[name])
    return program
