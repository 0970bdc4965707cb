"""The isa dialect mirrors runtime/isa.py: one op per instruction, round trips through text IR."""

import io

import pytest
from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from nncc.dialects.isa import ISA, OPS, instr_from_op, op_from_instr
from nncc.runtime import isa


def test_one_op_per_instruction():
    assert sorted(OPS) == sorted(isa.BY_MNEMONIC)
    assert OPS["matmul"].name == "isa.matmul"
    assert OPS["matmul"].DEF is isa.BY_MNEMONIC["matmul"]


def test_instructions_round_trip_through_printed_ir():
    instructions = [
        isa.make("layer", name="conv1", nodes="Conv_0,Relu_1", phase="forward"),
        isa.make("dma", src=("DRAM", 64), src_stride=(0, 10, 1), dst=("AM", 0), cores=(0, 1), dst_stride=(0, 12, 1),
                 shape=(1, 12, 12), pad=(0, 0, 1, 1, 1, 1), signal=(3,)),
        isa.make("matmul", batch=2, mnk=(4, 16, 8), a=("SM", 0), a_stride=(32, 8, 1), b=("AM", 0), b_stride=(0, 16, 1),
                 c=("AM", 4096), c_stride=(64, 16, 1), acc=1, wait=(3,)),
        isa.make("vact", func="leaky", p0=0.125, shape=(1, 1, 4), x=("AM", 0), x_stride=(0, 0, 1), z=("AM", 16),
                 z_stride=(0, 0, 1)),
        isa.make("barrier"),
    ]  # fmt: skip
    module = ModuleOp([op_from_instr(i) for i in instructions])
    module.verify()
    stream = io.StringIO()
    Printer(stream).print_op(module)
    context = Context()
    context.load_dialect(Builtin)
    context.load_dialect(ISA)
    parsed = Parser(context, stream.getvalue()).parse_module()
    parsed.verify()
    assert [instr_from_op(op) for op in parsed.ops] == instructions


def test_verifier_applies_isa_checks():
    op = op_from_instr(isa.make("vfill", shape=(1, 1, 4), z=("AM", 0), z_stride=(0, 0, 1)))
    from xdsl.dialects.builtin import StringAttr

    op.properties["unit"] = StringAttr("gpu")
    with pytest.raises(VerifyException, match="'gpu' is not one of main, pre, post"):
        op.verify()
