"""Where things are in an nncc module: its `func.func @main`, and the names of @main's inputs and
outputs (module attributes `nn.input_names`, `nn.output_names`).

Light on purpose (xDSL's builtin and func dialects only): the back end's passes find @main
without importing the reference interpreter, whose xDSL interpreter package costs 0.4 s to import.
"""

from __future__ import annotations

from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, ModuleOp, StringAttr

from nncc.support.errors import NnccError


def names_attr(module: ModuleOp, key: str, count: int, default: str) -> list[str]:
    attr = module.attributes.get(key)
    if isinstance(attr, ArrayAttr) and len(attr.data) == count:
        return [a.data for a in attr.data if isinstance(a, StringAttr)]
    return [f"{default}{i}" for i in range(count)]


def main_function(module: ModuleOp) -> func.FuncOp:
    for op in module.ops:
        if isinstance(op, func.FuncOp) and op.sym_name.data == "main":
            return op
    raise NnccError("the module has no func.func @main")
