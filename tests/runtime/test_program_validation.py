"""Bad program files and bad addresses: one line naming the field and the reason, exit 3, nothing allocated.

Every case here is a class of file that crashed `nncc-run` with a traceback, wrapped around in DRAM or
tried to allocate tens of GiB before the loaders checked the header and the memories their bounds.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from nncc.runtime import isa
from nncc.runtime.assembler import assemble
from nncc.runtime.cli import main
from nncc.runtime.faults import MachineFault
from nncc.runtime.interpreter import run
from nncc.runtime.memory import MAX_TILE_ELEMENTS, Fault, Memories
from nncc.runtime.program import MAGIC, VERSION, Program, Symbol, from_bytes, to_bytes
from nncc.runtime.target import load_target

EXAMPLES = Path(__file__).parents[2] / "examples" / "programs"
DELETE = object()


def run_cli(path: Path, *options: str, capsys) -> tuple[int, str]:
    code = main([str(path), *options])
    return code, capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# .nnbin headers (the checksum recomputed, so the header itself is what is checked)


def nnbin(path: tuple, value, data: bytes = b"") -> bytes:
    """maxpool.s as .nnbin with the header value at `path` (() for all of it) replaced by `value` and
    `data` as its DRAM image bytes."""
    blob = to_bytes(assemble((EXAMPLES / "maxpool.s").read_text()))
    header_len = struct.unpack_from("<I", blob, 12)[0]
    header = json.loads(blob[16 : 16 + header_len])
    slots = blob[16 + header_len : 16 + header_len + 8 * header["slot_count"]]
    if not path:
        header = value
    else:
        *parents, last = path
        holder = header
        for key in parents:
            holder = holder[key]
        if value is DELETE:
            del holder[last]
        else:
            holder[last] = value
    header_bytes = json.dumps(header).encode()
    return with_crc(MAGIC + struct.pack("<II", VERSION, len(header_bytes)) + header_bytes + slots + data)


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize(
    "path, value, data, message",
    [
        # fields missing or of the wrong type (were KeyError, AttributeError, TypeError tracebacks)
        (("mode",), DELETE, b"", "corrupt file: header field mode: missing"),
        (("dram_bytes",), True, b"", "corrupt file: header field dram_bytes: expected int, got true"),
        (("strings", 0), 7, b"", "corrupt file: header field strings[0]: expected str, got 7"),
        (("symbols", 1, 0), [1], b"", "corrupt file: header field symbols[1]: expected str, got [1]"),
        (("symbols", 0, 3, 1), 1.5, b"", "corrupt file: header field symbols[0] ('x') shape: expected int, got 1.5"),
        (("segments",), [[0]], b"", "corrupt file: header field segments[0]: expected a list of 2 values, got [0]"),
        (("slot_count",), -1, b"", "corrupt file: header field slot_count: -1 is negative"),
        (("mode",), "sleep", b"", "corrupt file: header field mode: 'sleep' is not one of inference, training"),
        ((), [], b"", "corrupt file: header is not a JSON object: []"),
        # DRAM size: negative, not whole words, beyond the interpreter's limit or the target's DRAM
        (("dram_bytes",), -4, b"", "DRAM size -0x4 is not a non-negative multiple of 4"),
        (("dram_bytes",), 0x1402, b"", "DRAM size 0x1402 is not a non-negative multiple of 4"),
        (("dram_bytes",), 8 << 30, b"", "DRAM size 0x200000000 exceeds the interpreter's limit (0x100000000 bytes)"),
        (("target", "dram", "size_bytes"), 4096, b"", "DRAM size 0x1400 exceeds target vector's DRAM (0x1000 bytes)"),
        # symbols: address, shape (a product of 10^10 elements), kind, dtype
        (("symbols", 0, 2), -64, b"", "symbol 'x': address -0x40 is not a non-negative multiple of 4"),
        (("symbols", 0, 3), [100000, 100000], b"",
         "symbol 'x': bytes 0x0..0x9502f9000 lie outside the program's DRAM (0x0..0x1400)"),
        (("symbols", 0, 3), [8, 0, 16], b"", "symbol 'x': shape 8,0,16 has a size < 1"),
        (("symbols", 0, 1), "blob", b"", "symbol 'x': kind 'blob' is not one of input, output, weight"),
        (("symbols", 0, 4), "float16", b"", "symbol 'x': dtype 'float16' is not float32"),
        (("symbols", 1, 0), "x", b"", "symbol 'x': defined twice"),  # was exit 2: "input x: shape ... does not match"
        # data segments: not whole fp32 words, outside DRAM, at a negative address
        (("segments",), [[0, 6]], bytes(6), "data at 0x0: 6 bytes is not a whole number of 4-byte fp32 words"),
        (("segments",), [[0x1400, 8]], bytes(8),
         "data at 0x1400: bytes 0x1400..0x1408 lie outside the program's DRAM (0x0..0x1400)"),
        (("segments",), [[-8, 8]], bytes(8), "data at -0x8: address -0x8 is not a non-negative multiple of 4"),
    ],
)
def test_bad_header_is_one_line_fault(tmp_path, capsys, path, value, data, message):
    program = tmp_path / "p.nnbin"
    program.write_bytes(nnbin(path, value, data))
    assert run_cli(program, capsys=capsys) == (3, f"nncc-run: {program}: fault at instruction 0 (header): {message}\n")


def test_slot_count_beyond_the_file_is_a_size_mismatch():
    # 2**64 slots was an OverflowError in numpy before the sizes were compared with the file's
    with pytest.raises(MachineFault, match="corrupt file: size does not match the header") as info:
        from_bytes(nnbin(("slot_count",), 2**64))
    assert info.value.opcode == "data"


def test_header_that_is_not_utf8_json():
    blob = to_bytes(assemble((EXAMPLES / "maxpool.s").read_text()))
    body = bytearray(blob[:-4])
    body[16] = 0xFF  # the header's opening brace
    with pytest.raises(MachineFault, match=r"corrupt file: header is not valid JSON: 'utf-8' codec"):
        from_bytes(with_crc(bytes(body)))


def test_large_legitimate_image_still_loads_and_runs():
    """ResNet-50's DRAM image is 141 MiB: limits must leave such programs alone."""
    program = Program(load_target("vector"), [])
    program.allocate("x", "input", (4,))
    program.allocate("w", "weight", (36 << 20,), data=None)  # 144 MiB
    program.allocate("y", "output", (4,))
    program.add_data(program.symbol("y").addr, np.arange(4))
    loaded = from_bytes(to_bytes(program))
    assert loaded.dram_bytes > 144 << 20
    np.testing.assert_array_equal(run(loaded).outputs["y"], np.arange(4))


# --------------------------------------------------------------------------------------------
# .s directives: the file, the line and the reason


@pytest.mark.parametrize(
    "lines, message",
    [
        (".dram -0x10", "{path}:3: .dram: DRAM size -0x10 is not a non-negative multiple of 4"),
        (".dram 0x2540be400",
         "{path}:3: .dram: DRAM size 0x2540be400 exceeds the interpreter's limit (0x100000000 bytes)"),
        (".dram 1e9", "{path}:3: .dram: size '1e9' is not an integer"),
        (".symbol input x -0x40 4 float32",
         "{path}:3: .symbol: symbol 'x': address -0x40 is not a non-negative multiple of 4"),
        (".symbol input x 0x0 4,0 float32", "{path}:3: .symbol: symbol 'x': shape 4,0 has a size < 1"),
        (".symbol input x 0x0 4,0x10 float32",
         "{path}:3: .symbol: symbol 'x': shape '4,0x10' is not comma-separated decimal integers"),
        (".symbol input x 0x0", "{path}:3: .symbol: expected KIND NAME ADDR SHAPE DTYPE, got 3 field(s)"),
        (".symbol input x 1e9 4 float32", "{path}:3: .symbol: symbol 'x': address '1e9' is not an integer"),
        (".dram 0x1000\n.symbol input x 0x0 100000,100000 float32",
         "{path}: symbol 'x': bytes 0x0..0x9502f9000 lie outside the program's DRAM (0x0..0x1000)"),
        (".data 0x0 AAAAAAAA", "{path}:3: .data: data at 0x0: 6 bytes is not a whole number of 4-byte fp32 words"),
        (".data -0x4 AAAAAA==", "{path}:3: .data: data at -0x4: address -0x4 is not a non-negative multiple of 4"),
        (".data 0x0", "{path}:3: .data: expected ADDR BASE64, got 1 field(s)"),
        (".dram 0x4\n.data 0x4 AAAAAA==",
         "{path}: data at 0x4: bytes 0x4..0x8 lie outside the program's DRAM (0x0..0x4)"),
    ],
)
def test_bad_directive_is_one_line_fault(tmp_path, capsys, lines, message):
    path = tmp_path / "t.s"
    path.write_text(f".nncc 1\n.target vector\n{lines}\n")
    expected = message.format(path=path)
    assert run_cli(path, capsys=capsys) == (3, f"nncc-run: fault at instruction 0 (header): {expected}\n")


def test_dram_beyond_the_target_is_refused_before_allocating(tmp_path, capsys):
    path = tmp_path / "t.s"
    path.write_text(".nncc 1\n.target edge\n.dram 0x80000000\n")
    assert run_cli(path, capsys=capsys) == (
        3, f"nncc-run: fault at instruction 0 (header): {path}: DRAM size 0x80000000 exceeds target edge's DRAM "
           "(0x40000000 bytes)\n")  # fmt: skip


def test_without_dram_directive_the_symbols_decide():
    program = assemble(".nncc 1\n.target vector\n.symbol input x 0x0 4 float32\n.symbol output y 0x40 4 float32\n")
    assert program.dram_bytes == 0x50


def test_symbol_size_does_not_overflow():
    assert Symbol("x", "input", 0, (10**10, 10**10)).nbytes == 4 * 10**20


# --------------------------------------------------------------------------------------------
# Memory addressing: negative addresses, empty or huge tiles, DRAM reads and writes


def test_negative_dram_address_in_an_instruction_names_it(build):
    fill = isa.make("vfill", unit="post", shape=(1, 1, 4), z=("BUF", 0), z_stride=(0, 0, 1), value=1.0, signal=(0,))
    store = isa.make("dma", src=("BUF", 0), src_stride=(0, 0, 1), dst=("DRAM", 0), dst_stride=(0, 0, 1),
                     shape=(1, 1, 4), wait=(0,))  # fmt: skip
    program = build("edge", [fill, store._replace(dst=("DRAM", -64))], [("y", "output", 0, (4,))], dram_bytes=64)
    with pytest.raises(MachineFault) as info:
        run(program)
    assert (info.value.index, info.value.opcode) == (1, "dma")
    assert info.value.reason == ("address out of range: tile DRAM[-0x40] shape 1,1,4 starts at byte -0x40, "
                                 "before the start of DRAM")


def test_negative_symbol_address_is_a_header_fault(build):
    program = build("edge", [], [("y", "output", -16, (4,))], dram_bytes=64)
    with pytest.raises(MachineFault, match=r"symbol 'y': address -0x10 is not a non-negative multiple of 4") as info:
        run(program)
    assert (info.value.index, info.value.opcode) == (0, "header")


@pytest.mark.parametrize(
    "space, addr, shape, strides, reason",
    [
        ("DRAM", -4, (1,), (1,), r"tile DRAM\[-0x4\] shape 1 starts at byte -0x4, before the start of DRAM"),
        ("DRAM", 4, (3,), (-1,), r"tile DRAM\[0x4\] shape 3 starts at byte -0x4, before the start of DRAM"),
        ("BUF", 0, (0, 4), (4, 1), r"tile BUF\[0x0\] shape 0,4: sizes must be >= 1"),
        ("BUF", 0, (-2, 4), (4, 1), r"tile BUF\[0x0\] shape -2,4: sizes must be >= 1"),
        ("DRAM", 0, (1 << 20, 1 << 20), (0, 0),
         rf"has {1 << 40} elements, more than the interpreter's limit \({MAX_TILE_ELEMENTS}\)"),
    ],
)
def test_view_faults(space, addr, shape, strides, reason):
    with pytest.raises(Fault, match=reason):
        Memories(load_target("edge"), 64).view(space, 0, addr, shape, strides)


def test_view_in_bounds_with_negative_stride_or_huge_stride_of_size_one():
    memories = Memories(load_target("edge"), 64)
    memories.dram[:4] = [0, 1, 2, 3]
    np.testing.assert_array_equal(memories.view("DRAM", 0, 8, (3,), (-1,)), [2, 1, 0])
    # a size-1 dimension never steps, whatever its stride (2**62 overflowed numpy's byte strides)
    np.testing.assert_array_equal(memories.view("DRAM", 0, 4, (1, 2), (2**62, 1)), [[1, 2]])


def test_dram_reads_and_writes_are_bounds_checked():
    memories = Memories(load_target("edge"), 64)
    with pytest.raises(Fault, match=r"1 words at DRAM\[-0x4\] are outside DRAM size 0x40"):
        memories.write_dram(-4, np.ones(1))
    with pytest.raises(Fault, match=r"2 words at DRAM\[0x3c\] are outside DRAM size 0x40"):
        memories.read_dram(60, (2,))
    with pytest.raises(Fault, match="misaligned"):
        memories.write_dram(2, np.ones(1))
    memories.write_dram(56, np.ones(2))
    np.testing.assert_array_equal(memories.read_dram(56, (2,)), [1, 1])


def test_dram_beyond_the_simulated_limit_is_not_allocated():
    with pytest.raises(Fault, match=r"DRAM size 0x400000000 is outside 0..0x100000000"):
        Memories(load_target("vector"), 16 << 30)


def test_huge_dma_box_faults_before_allocating(tmp_path, capsys):
    # a broadcast source (stride 0) fits any memory; the box copied from it would be 40 GB
    path = tmp_path / "t.s"
    path.write_text(".nncc 1\n.target vector\n.dram 0x100\n"
                    "dma src=DRAM[0x0] src_stride=0,0,0 dst=AM[0x0] dst_stride=0,0,0 shape=1,100000,100000 "
                    "pad=0,0,0,0,0,1\n")  # fmt: skip
    assert run_cli(path, capsys=capsys) == (
        3, f"nncc-run: {path}: fault at instruction 0 (dma): dma box shape 1,100000,100000 has 10000000000 elements, more "
           f"than the interpreter's limit ({MAX_TILE_ELEMENTS})\n")  # fmt: skip
