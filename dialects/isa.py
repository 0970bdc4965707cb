"""The `isa` dialect: one op per machine instruction, generated from `nncc.runtime.isa`.

Ops have no SSA operands: addresses are allocated. Every instruction operand is a property: an
integer (`i64`), a float (`f64`), a string (memory names, enum choices, layer names), or a
`array<i64>` (shapes, strides, semaphore sets). A tile reference ``x = AM[0x100]`` becomes two
properties ``x_mem = "AM"`` and ``x_addr = 256``::

    isa.layer {name = "relu1", nodes = "Relu_0", phase = "forward"}
    isa.vact {core = 0 : i64, unit = "main", func = "relu", p0 = 0.0 : f64, p1 = 0.0 : f64,
              shape = array<i64: 1, 8, 64>, x_mem = "AM", x_addr = 0 : i64, ...}

`op_from_instr` and `instr_from_op` convert between ops and runtime instructions; every op's
verifier rebuilds the instruction with `nncc.runtime.isa.make`, so the ISA's own checks apply.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, ClassVar, NamedTuple

from xdsl.dialects.builtin import DenseArrayBase, FloatAttr, IntegerAttr, StringAttr, f64, i64
from xdsl.ir import Attribute, Dialect
from xdsl.irdl import IRDLOperation, ParsePropInAttrDict, irdl_op_definition, prop_def
from xdsl.utils.exceptions import VerifyException

from nncc.runtime import isa


def _property_names(operand: isa.Operand) -> tuple[str, ...]:
    if operand.kind == isa.Kind.REF:
        return (f"{operand.name}_mem", f"{operand.name}_addr")
    return (operand.name,)


def _constraint(operand: isa.Operand) -> tuple[type[Attribute], ...]:
    kind = operand.kind
    if kind == isa.Kind.REF:
        return (StringAttr, IntegerAttr)
    if kind in (isa.Kind.INT, isa.Kind.ADDR):
        return (IntegerAttr,)
    if kind == isa.Kind.FLOAT:
        return (FloatAttr,)
    if kind in (isa.Kind.SET, isa.Kind.INTS):
        return (DenseArrayBase,)
    return (StringAttr,)


@lru_cache(maxsize=65536)
def _to_attributes(operand: isa.Operand, value: Any) -> tuple[Attribute, ...]:
    """Attributes are immutable, so equal operand values share them (a program repeats
    strides, shapes and memory names thousands of times)."""
    kind = operand.kind
    if kind == isa.Kind.REF:
        return (StringAttr(value[0]), IntegerAttr(value[1], i64))
    if kind in (isa.Kind.INT, isa.Kind.ADDR):
        return (IntegerAttr(value, i64),)
    if kind == isa.Kind.FLOAT:
        return (FloatAttr(value, f64),)
    if kind in (isa.Kind.SET, isa.Kind.INTS):
        return (DenseArrayBase.from_list(i64, list(value)),)
    return (StringAttr(value),)


@lru_cache(maxsize=65536)
def _from_attributes(operand: isa.Operand, attributes: tuple[Attribute, ...]) -> Any:
    kind = operand.kind
    if kind == isa.Kind.REF:
        memory, address = attributes
        return (memory.data, address.value.data)  # type: ignore[attr-defined]
    (attribute,) = attributes
    if kind in (isa.Kind.INT, isa.Kind.ADDR):
        return attribute.value.data  # type: ignore[attr-defined]
    if kind == isa.Kind.FLOAT:
        return attribute.value.data  # type: ignore[attr-defined]
    if kind in (isa.Kind.SET, isa.Kind.INTS):
        return tuple(attribute.get_values())  # type: ignore[attr-defined]
    return attribute.data  # type: ignore[attr-defined]


class IsaOperation(IRDLOperation):
    """Base of every `isa` op; `DEF` is the instruction's definition in `nncc.runtime.isa`."""

    DEF: ClassVar[isa.InstrDef]

    def instruction(self) -> NamedTuple:
        """The runtime instruction this op stands for (raises `isa.IsaError` if malformed)."""
        values = {}
        for operand in self.DEF.operands:
            attributes = tuple(self.properties[name] for name in _property_names(operand))
            values[operand.name] = _from_attributes(operand, attributes)
        return isa.make(self.DEF.mnemonic, **values)

    def verify_(self) -> None:
        try:
            self.instruction()
        except (isa.IsaError, AttributeError, TypeError, ValueError) as error:
            raise VerifyException(f"{self.name}: {error}") from None


def _op_class(definition: isa.InstrDef) -> type[IsaOperation]:
    fields: dict[str, Any] = {
        "name": f"isa.{definition.mnemonic}",
        "DEF": definition,
        "__doc__": f"``{definition.mnemonic}``: {definition.semantics}.",
        "assembly_format": "attr-dict",
        "irdl_options": (ParsePropInAttrDict(),),
        "__module__": __name__,
        "__annotations__": {"DEF": ClassVar[isa.InstrDef]},
    }
    for operand in definition.operands:
        for prop_name, constraint in zip(_property_names(operand), _constraint(operand)):
            # `name` is the op's name: the accessor of a property called "name" is `name_`
            field_name = f"{prop_name}_" if prop_name == "name" else prop_name
            fields[field_name] = prop_def(constraint, prop_name=prop_name)
    class_name = "".join(part.capitalize() for part in definition.mnemonic.split("_")) + "Op"
    return irdl_op_definition(type(class_name, (IsaOperation,), fields))


OPS: dict[str, type[IsaOperation]] = {d.mnemonic: _op_class(d) for d in isa.INSTRUCTIONS}
"""Op class by mnemonic: ``OPS["matmul"]`` is ``isa.matmul``."""

globals().update({cls.__name__: cls for cls in OPS.values()})


def op_from_instr(instr: NamedTuple) -> IsaOperation:
    """The `isa` op of a runtime instruction."""
    definition = isa.definition_of(instr)
    properties: dict[str, Attribute] = {}
    for operand, value in zip(definition.operands, instr):
        properties.update(zip(_property_names(operand), _to_attributes(operand, value)))
    return OPS[definition.mnemonic].create(properties=properties)


def instr_from_op(op: IsaOperation) -> NamedTuple:
    """The runtime instruction of an `isa` op."""
    return op.instruction()


ISA = Dialect("isa", list(OPS.values()), [])
