"""Assembly text: parsing, canonical printing, exact text -> binary -> text, and its errors."""

import numpy as np
import pytest

from nncc.runtime import isa
from nncc.runtime.assembler import assemble, disassemble
from nncc.runtime.faults import MachineFault
from nncc.runtime.program import Program, Symbol, from_bytes, to_bytes
from nncc.runtime.target import load_target

HEADER = ".nncc 1\n.target edge\n.dram 0x100\n.symbol input x 0x0 4,4 float32\n"


def small_program() -> Program:
    program = Program(
        load_target("vector", ["dram.bandwidth_gbps=25.6"]),
        [
            isa.make("layer", name="relu#1", nodes="Relu_0"),
            isa.make("dma", src=("DRAM", 0), src_stride=(0, 0, 1), dst=("AM", 0), dst_stride=(0, 0, 1), shape=(1, 1, 16)),
            isa.make("barrier"),
        ],
        [Symbol("x", "input", 0, (16,)), Symbol("w", "weight", 64, (2000,))],
        dram_bytes=0x3000,
        mode="training",
    )
    program.add_data(64, np.arange(2000, dtype=np.float32))
    return program


def test_disassembly_is_readable_and_names_layers():
    text = disassemble(small_program())
    lines = text.splitlines()
    assert lines[0] == ".nncc 1" and lines[2] == ".mode training"
    assert 'layer name="relu#1" nodes="Relu_0"' in lines
    assert any(line.startswith("    dma ") and line.endswith("# relu#1") for line in lines)
    assert sum(line.startswith(".data ") for line in lines) == 3  # 8000 bytes in 3072-byte lines


def test_text_binary_text_is_exact_and_keeps_overrides():
    text = disassemble(small_program())
    program = from_bytes(to_bytes(assemble(text)))
    assert disassemble(program) == text
    assert program.target.dram.bandwidth_gbps == 25.6
    assert np.frombuffer(program.data[0][1], dtype=np.float32)[1999] == 1999


def test_comments_blank_lines_and_quoted_hashes():
    program = assemble(HEADER + '\n# a comment\nlayer name="a # b"   # trailing\n  barrier\n')
    assert [isa.definition_of(i).mnemonic for i in program.instructions] == ["layer", "barrier"]
    assert program.instructions[0].name == "a # b"


def test_target_directive_accepts_overrides():
    program = assemble(".nncc 1\n.target vector cores=2 memory.AM.size_bytes=4096\n")
    assert program.target.cores == 2 and program.target.memory("AM").size_bytes == 4096


@pytest.mark.parametrize(
    "body, index, opcode, reason",
    [
        ("barrier\nvfoo x=1\n", 1, "vfoo", "unknown opcode 'vfoo'"),
        ("vfill shape=1,1,1 z=BUF[0x0] z_stride=0,0,1 colour=3\n", 0, "vfill", "unknown operand 'colour'"),
        ("vfill shape=1,1,1 z=BUF[0x0]\n", 0, "vfill", "missing operand z_stride"),
        ("vfill shape=1,1,1 z=XX[0x0] z_stride=0,0,1\n", 0, "vfill", "unknown memory 'XX'"),
        ("vfill shape=1,1 z=BUF[0x0] z_stride=0,0,1\n", 0, "vfill", "expected 3 values"),
        ("vfill shape=1,1,1 z=BUF0x0 z_stride=0,0,1\n", 0, "vfill", "expected MEM[ADDR]"),
    ],
)
def test_errors_name_the_instruction(body, index, opcode, reason):
    with pytest.raises(MachineFault) as info:
        assemble(HEADER + body, "t.s")
    assert (info.value.index, info.value.opcode) == (index, opcode)
    assert reason in info.value.reason


@pytest.mark.parametrize(
    "text, reason",
    [
        (".nncc 2\n", "unsupported assembly version"),
        (".nncc 1\n", "missing .target"),
        (".nncc 1\n.target tpu\n", "unknown target 'tpu'"),
        (".nncc 1\n.target edge\n.mode sleep\n", "mode must be one of"),
        (".nncc 1\n.target edge\n.symbol blob x 0x0 1 float32\n", "bad symbol kind"),
        (".nncc 1\n.target edge\n.data 0x0 !!!\n", ".data"),
        (".nncc 1\n.target edge\n.section text\n", "unknown directive"),
    ],
)
def test_directive_errors_are_header_faults(text, reason):
    with pytest.raises(MachineFault, match=reason) as info:
        assemble(text)
    assert info.value.opcode == "header"
