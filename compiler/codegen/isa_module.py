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

Building one xDSL op per instruction costs about 250 us (a ResNet-50 has ~40k instructions), so
`lower-to-isa` defers it (`defer_program`): the module gets its `isa.*` attributes at once, but
`@program` holds only its return, the `Program` waits in a side table keyed by the module (as the
weight store does, `weights.attach`), and the marker attribute `isa.deferred = N` says that N
instructions are not built yet. `build_deferred` builds them, and the pass manager calls it
before the IR is printed or written and before a later pass runs (`pass_manager.built`), so no
one ever sees the marker; `module_to_program` takes the waiting `Program` as it is.
"""

from __future__ import annotations

import weakref
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
PREDICTIONS = "isa.predictions"  # module attribute: {layer ordinal: {name, predicted_cycles, ...}}
DEFERRED = "isa.deferred"  # marker: this many instructions wait in `_PROGRAMS`, not built as ops yet
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


def from_attribute(attr: Attribute, source: str = TARGET) -> Any:
    """The TOML-shaped value of `to_attribute`'s attribute (`source` names it in errors)."""
    if isinstance(attr, IntegerAttr):
        return bool(attr.value.data) if attr.type == IntegerType(1) else attr.value.data
    if isinstance(attr, FloatAttr):
        return attr.value.data
    if isinstance(attr, StringAttr):
        return attr.data
    if isinstance(attr, ArrayAttr):
        return [from_attribute(a, source) for a in attr.data]
    if isinstance(attr, DictionaryAttr):
        return {k: from_attribute(v, source) for k, v in attr.data.items()}
    raise NnccError(f"{source}: unexpected attribute {attr}")


def predictions_attribute(program: Program) -> Attribute:
    """The cost model's per-layer predictions of `program` as a module attribute."""
    return to_attribute({str(index): row for index, row in getattr(program, "predictions", {}).items()})


def predictions_of(module: ModuleOp) -> dict[int, dict]:
    """The predictions an `isa` module carries (empty when it has none)."""
    if PREDICTIONS not in module.attributes:
        return {}
    return {int(index): row for index, row in from_attribute(module.attributes[PREDICTIONS], PREDICTIONS).items()}


def format_symbol(symbol: Symbol) -> str:
    return f"{symbol.name} {symbol.kind} {symbol.addr:#x} {'x'.join(map(str, symbol.shape)) or '-'}"


def parse_symbol(text: str) -> Symbol:
    name, kind, addr, shape = text.rsplit(" ", 3)
    dims = () if shape == "-" else tuple(int(d) for d in shape.split("x"))
    return Symbol(name, kind, int(addr, 16), dims)


def program_attributes(program: Program) -> dict[str, Attribute]:
    """The module attributes of the `isa` stage: target, mode, DRAM size, symbols, predictions."""
    return {TARGET: to_attribute(target_to_dict(program.target)), MODE: StringAttr(program.mode),
            DRAM_BYTES: IntegerAttr(program.dram_bytes, i64),
            SYMBOLS: ArrayAttr([StringAttr(format_symbol(s)) for s in program.symbols]),
            PREDICTIONS: predictions_attribute(program)}


def store_dram_image(program: Program, store: WeightStore) -> None:
    for addr, data in program.data:
        store.replace(f"{DRAM_PREFIX}{addr:#x}", np.frombuffer(data, dtype=np.float32))


def program_function(instructions: list) -> func.FuncOp:
    """`func.func @program` holding one `isa` op per instruction."""
    block = Block([op_from_instr(instruction) for instruction in instructions])
    block.add_op(func.ReturnOp())
    return func.FuncOp("program", ((), ()), Region(block))


def program_to_module(program: Program, store: WeightStore) -> ModuleOp:
    """Replace nothing: a new module holding `program`, its isa ops built; its DRAM image goes into `store`."""
    module = ModuleOp([program_function(program.instructions)])
    module.attributes.update(program_attributes(program))
    store_dram_image(program, store)
    return module


_PROGRAMS: weakref.WeakKeyDictionary[ModuleOp, Program] = weakref.WeakKeyDictionary()


def defer_program(module: ModuleOp, program: Program, store: WeightStore) -> None:
    """Make `module` the `isa` module of `program` without building its isa ops: its body becomes
    an empty `@program`, its attributes those of the isa stage plus the marker `isa.deferred`."""
    for child in list(module.body.block.ops):
        child.detach()
        child.erase(safe_erase=False)
    module.body.block.add_op(program_function([]))
    module.attributes.update(program_attributes(program))
    module.attributes[DEFERRED] = IntegerAttr(len(program.instructions), i64)
    store_dram_image(program, store)
    _PROGRAMS[module] = program


def is_deferred(module: ModuleOp) -> bool:
    return DEFERRED in module.attributes


def build_deferred(module: ModuleOp) -> None:
    """Build the isa ops `defer_program` left out (nothing to do for any other module). From
    then on the ops are the program: a pass may rewrite them, `module_to_program` reads them."""
    if not is_deferred(module):
        return
    program = _PROGRAMS.pop(module, None)
    if program is None:  # a copy of a deferred module (`clone` copies attributes, not the side table)
        raise NnccError(f"the module's {DEFERRED} marker says its isa ops are not built, and its program "
                        "is not in memory (a copy of a module lowered by lower-to-isa?)")
    returned = next(op for op in module.walk() if isinstance(op, func.FuncOp)).body.block.last_op
    assert isinstance(returned, func.ReturnOp)
    returned.parent_block().insert_ops_before([op_from_instr(i) for i in program.instructions], returned)
    del module.attributes[DEFERRED]


def is_isa_module(module: ModuleOp) -> bool:
    return TARGET in module.attributes


def module_to_program(module: ModuleOp, store: WeightStore) -> Program:
    """The `Program` an `isa` module describes (what `.s` and `.nnbin` are written from), with the
    cost model's predictions: the one lower-to-isa deferred, or else read from the isa ops."""
    if not is_isa_module(module):
        raise NnccError("the module is not at the isa stage (no isa.target attribute)")
    if is_deferred(module):
        if module in _PROGRAMS:
            return _PROGRAMS[module]
        build_deferred(module)  # says why there is no program
    target = target_from_dict(from_attribute(module.attributes[TARGET]), TARGET)
    instructions = [instr_from_op(op) for op in module.walk() if isinstance(op, IsaOperation)]
    symbols = [parse_symbol(a.data) for a in module.attributes[SYMBOLS].data]
    program = Program(target, instructions, symbols, [], module.attributes[DRAM_BYTES].value.data,
                      module.attributes[MODE].data)
    for name in store.names():
        if name.startswith(DRAM_PREFIX):
            program.add_data(int(name[len(DRAM_PREFIX):], 16), store[name])
    program.predictions = predictions_of(module)  # merged into the report's layer rows
    return program
