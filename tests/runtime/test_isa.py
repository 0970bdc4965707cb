"""The ISA table: construction checks, canonical text, binary encoding."""

import pytest

from nncc.runtime import isa


def vadd(**overrides):
    operands = dict(shape=(1, 4, 16), x=("AM", 0), x_stride=(0, 16, 1), y=("AM", 256), y_stride=(0, 16, 1),
                    z=("AM", 512), z_stride=(0, 16, 1))  # fmt: skip
    operands.update(overrides)
    return isa.make("vadd", **operands)


def test_opcodes_and_mnemonics_are_unique():
    assert len({d.opcode for d in isa.INSTRUCTIONS}) == len(isa.INSTRUCTIONS)
    assert len(isa.BY_MNEMONIC) == len(isa.INSTRUCTIONS)


def test_make_fills_defaults_and_normalises_sets():
    ins = vadd(signal=[5, 2, 5])
    assert ins.core == 0 and ins.unit == "main" and ins.wait == () and ins.signal == (2, 5)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"shape": (1, 0, 16)}, "sizes must be >= 1"),
        ({"shape": (4, 16)}, "expected 3 values"),
        ({"unit": "gpu"}, "'gpu' is not one of main, pre, post"),
        ({"x": ("A M", 0)}, "bad memory name"),
        ({"core": -1}, "out of range"),
        ({"signal": (63,)}, "63 is out of range"),
        ({"bogus": 1}, "unknown operand"),
        ({"x_stride": (0, 1.5, 1)}, "expected an integer"),
    ],
)
def test_make_rejects_malformed_operands(overrides, message):
    with pytest.raises(isa.IsaError, match=message):
        vadd(**overrides)


def test_make_requires_operands():
    with pytest.raises(isa.IsaError, match="missing operand x"):
        isa.make("vact", func="relu", shape=(1, 1, 1))
    with pytest.raises(isa.IsaError, match="unknown instruction"):
        isa.make("vsqrt")


def test_format_leaves_out_defaults_and_parses_back():
    ins = isa.make("vact", func="leaky", p0=0.1, shape=(1, 2, 3), x=("SM", 4), x_stride=(0, 3, 1),
                   z=("SM", 64), z_stride=(0, 3, 1), wait=(1,))  # fmt: skip
    text = isa.format_instr(ins)
    assert text == "vact func=leaky p0=0.1 shape=1,2,3 x=SM[0x4] x_stride=0,3,1 z=SM[0x40] z_stride=0,3,1 wait=1"
    definition = isa.BY_MNEMONIC["vact"]
    operands = {o.name: o for o in definition.operands}
    parsed = {k: isa.parse_value(operands[k], v) for k, v in (part.split("=") for part in text.split()[1:])}
    assert isa.make("vact", **parsed) == ins


def test_encode_decode_every_instruction_kind():
    memory_ids = {"DRAM": 0, "AM": 1}
    strings: dict[str, int] = {}
    program = [
        isa.make("dma", src=("DRAM", 64), src_stride=(0, 10, 1), dst=("AM", 0), cores=(0, 3),
                 dst_stride=(0, 12, 1), shape=(1, 12, 12), pad=(0, 0, 1, 1, 1, 1), pad_value=float("-inf")),
        vadd(signal=(0, 62)),
        isa.make("layer", name='conv "1"', nodes="Conv_0,Relu_1", phase="backward"),
        isa.make("barrier"),
        matmul(),
        matmul(bias=("AM", 4096), bias_stride=(0, 0, 1), act="clip", p0=0.0, p1=6.0),
    ]  # fmt: skip
    slots = [s for ins in program for s in isa.encode(ins, memory_ids, strings)]
    assert isa.decode(slots, ["DRAM", "AM"], list(strings)) == program
    assert isa.decode(slots * 2, ["DRAM", "AM"], list(strings)) == program * 2


def test_decode_names_the_bad_instruction():
    barrier = [0x50]
    with pytest.raises(isa.DecodeError, match="unknown opcode 0x7f") as info:
        isa.decode(barrier * 3 + [0x7F], ["DRAM"], [])
    assert info.value.index == 3
    with pytest.raises(isa.DecodeError, match="truncated"):
        isa.decode([0x20, 0, 0], ["DRAM"], [])
    fill = isa.encode(isa.make("vfill", shape=(1, 1, 4), z=("DRAM", 0), z_stride=(0, 0, 1)), {"DRAM": 0}, {})
    broken = list(fill)
    broken[5] = 0  # shape 1,1,0
    with pytest.raises(isa.DecodeError, match="vfill: shape: bad value") as info:
        isa.decode(fill + barrier + broken, ["DRAM"], [])
    assert info.value.index == 2
    broken = list(fill)
    broken[6] = 3  # z: memory id 3 of 1
    with pytest.raises(isa.DecodeError, match="vfill: z: bad value"):
        isa.decode(broken, ["DRAM"], [])


def test_docs_describe_every_instruction():
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "isa.md").read_text()
    for definition in isa.INSTRUCTIONS:
        assert f"`{definition.mnemonic}`" in text, definition.mnemonic


def matmul(**extra):
    return isa.make("matmul", mnk=(2, 16, 3), a=("AM", 0), a_stride=(0, 3, 1), b=("AM", 64), b_stride=(0, 16, 1),
                    c=("AM", 512), c_stride=(0, 16, 1), **extra)  # fmt: skip


def test_matmul_epilogue_is_optional_and_written_only_when_used():
    plain = matmul()
    assert plain.bias == isa.NO_REF and plain.act == "none"
    assert "bias" not in isa.format_instr(plain) and "act" not in isa.format_instr(plain)
    fused = matmul(bias=("AM", 4096), bias_stride=(0, 0, 1), act="relu")
    assert isa.format_instr(fused).endswith("bias=AM[0x1000] bias_stride=0,0,1 act=relu")
    slots = isa.encode(plain, {"AM": 0}, {})
    bias_slot = 1 + sum(o.slots for o in isa.BY_MNEMONIC["matmul"].operands[: [o.name for o in
                        isa.BY_MNEMONIC["matmul"].operands].index("bias")])  # fmt: skip
    assert slots[bias_slot] == -1  # an absent reference has memory id -1
    broken = list(slots)
    broken[bias_slot] = -2
    with pytest.raises(isa.DecodeError, match="matmul: bias: bad value"):
        isa.decode(broken, ["AM"], [])
