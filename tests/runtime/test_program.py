"""The .nnbin container: layout, checksum, corruption, save/load by suffix."""

import struct

import numpy as np
import pytest

from nncc.runtime import isa
from nncc.runtime.faults import MachineFault
from nncc.runtime.program import MAGIC, VERSION, Program, Symbol, from_bytes, merged_segments, to_bytes
from nncc.runtime.program_file import load, save
from nncc.runtime.target import load_target
from nncc.support.errors import NnccError


def program() -> Program:
    p = Program(
        load_target("edge"),
        [isa.make("vfill", unit="post", shape=(1, 1, 4), z=("BUF", 0), z_stride=(0, 0, 1), value=2.5)],
        [Symbol("y", "output", 0, (4,))],
        dram_bytes=16,
    )
    p.add_data(0, np.ones(2))
    return p


def test_header_layout():
    blob = to_bytes(program())
    assert blob[:8] == MAGIC
    version, header_len = struct.unpack_from("<II", blob, 8)
    assert version == VERSION and header_len > 0


def test_round_trip_keeps_everything():
    original = program()
    copy = from_bytes(to_bytes(original))
    assert copy.instructions == original.instructions
    assert copy.symbols == original.symbols
    assert copy.data == original.data and copy.dram_bytes == 16 and copy.mode == "inference"
    assert copy.target == original.target


def test_corruption_is_a_fault():
    blob = bytearray(to_bytes(program()))
    blob[40] ^= 0xFF
    with pytest.raises(MachineFault, match="checksum mismatch"):
        from_bytes(bytes(blob))
    with pytest.raises(MachineFault, match="bad magic"):
        from_bytes(b"ELF" + bytes(40))


def test_unknown_opcode_in_binary_names_the_instruction():
    good = to_bytes(program())
    body = bytearray(good[:-4])
    header_len = struct.unpack_from("<I", body, 12)[0]
    struct.pack_into("<q", body, 16 + header_len, 0x7E)  # first instruction's opcode
    import zlib

    with pytest.raises(MachineFault) as info:
        from_bytes(bytes(body) + struct.pack("<I", zlib.crc32(body)))
    assert (info.value.index, info.value.opcode) == (0, "0x7e")
    assert "unknown opcode" in info.value.reason


def test_save_and_load_by_suffix(tmp_path):
    for name in ("p.nnbin", "p.s"):
        save(program(), tmp_path / name)
        assert load(tmp_path / name).instructions == program().instructions
    with pytest.raises(NnccError, match="cannot read program"):
        load(tmp_path / "missing.nnbin")


def test_segments_merge_when_contiguous():
    assert merged_segments([(8, b"cd"), (0, b"ab"), (2, b"xy")]) == [(0, b"abxy"), (8, b"cd")]


def test_allocate_places_symbols_and_weights():
    p = Program(load_target("edge"), [])
    x = p.allocate("x", "input", (3, 5))
    w = p.allocate("w", "weight", (2,), data=np.array([1.0, 2.0]))
    assert (x.addr, w.addr, p.dram_bytes) == (0, 64, 72)
    assert p.data == [(64, np.array([1.0, 2.0], dtype=np.float32).tobytes())]
    with pytest.raises(NnccError, match="data shape"):
        p.allocate("v", "weight", (3,), data=np.zeros(2))
