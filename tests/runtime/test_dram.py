"""DRAM banks and open rows (runtime/dram.py): bursts, hits and misses of small DMA patterns,
hand-computed, and each layer's DRAM bytes by role.

The machine of these tests: `edge` with 2 banks of 256-byte rows and 64-byte bursts, so a page
(256 bytes) holds 4 bursts, page p is bank p % 2, row p // 2: bytes [0, 256) bank 0 row 0,
[256, 512) bank 1 row 0, [512, 768) bank 0 row 1, [768, 1024) bank 1 row 1, ...
"""

import numpy as np
import pytest

from nncc.runtime import isa
from nncc.runtime.dram import RowBuffers, access_runs, dram_energy_pj, dram_order
from nncc.runtime.interpreter import run
from nncc.runtime.target import load_target
from nncc.support.errors import NnccError

SMALL = ["dram.banks=2", "dram.row_buffer_bytes=256", "dram.burst_bytes=64"]


def dma_in(addr, shape, stride, dst=0, **extra):
    """DRAM -> BUF; `stride` in elements, (s0, s1, s2)."""
    return isa.make("dma", src=("DRAM", addr), src_stride=stride, dst=("BUF", dst),
                    dst_stride=(shape[1] * shape[2], shape[2], 1), shape=shape, **extra)


def dma_out(addr, shape, stride, src=0, **extra):
    return isa.make("dma", src=("BUF", src), src_stride=(shape[1] * shape[2], shape[2], 1), dst=("DRAM", addr),
                    dst_stride=stride, shape=shape, **extra)


def counts(result):
    d = result.dram
    return d.read_bursts, d.write_bursts, d.hits, d.activations


def test_contiguous_kilobyte_opens_four_rows(build):
    # [0, 1024): pages 0..3 = bank 0 row 0, bank 1 row 0, bank 0 row 1, bank 1 row 1: 4 misses,
    # 16 bursts, 12 hits; reading [0, 64) again: bank 0 has row 1 open, a miss
    result = run(build("edge", [dma_in(0, (1, 1, 256), (0, 0, 1)), dma_in(0, (1, 1, 16), (0, 0, 1))],
                       overrides=SMALL))
    assert counts(result) == (17, 0, 12, 5)
    assert result.dram.hit_rate == 12 / 17


def test_strided_runs_share_pages_and_bursts(build):
    # 4 runs of 4 elements (16 bytes) every 32 elements (128 bytes): bytes 0, 128, 256, 384: one burst
    # each (0, 2, 4, 6); pages 0, 0, 1, 1: banks 0 and 1 open row 0: 2 misses, 2 hits
    assert counts(run(build("edge", [dma_in(0, (1, 4, 4), (0, 32, 1))], overrides=SMALL))) == (4, 0, 2, 2)
    # runs every 4 elements (16 bytes): 4 runs in one burst, combined: 1 burst, 1 miss
    assert counts(run(build("edge", [dma_in(0, (1, 4, 4), (0, 4, 1))], overrides=SMALL))) == (1, 0, 0, 1)


def test_ping_pong_between_rows_of_one_bank_misses_every_time(build):
    # runs every 512 bytes: pages 0, 2, 4, 6, all bank 0, rows 0..3: every burst opens a row
    assert counts(run(build("edge", [dma_in(0, (1, 4, 4), (0, 128, 1))], overrides=SMALL))) == (4, 0, 0, 4)
    # with 4 banks of 256 bytes pages 0, 2, 4, 6 are banks 0, 2, 0, 2, rows 0, 0, 1, 1: still 4 misses;
    # walking the same 4 runs twice (outer dimension 2, stride 0) misses 4 more times
    four = ["dram.banks=4", "dram.row_buffer_bytes=256"]
    assert counts(run(build("edge", [dma_in(0, (2, 4, 4), (0, 128, 1))], overrides=four))) == (8, 0, 0, 8)
    # and with 8 banks pages 0, 2, 4, 6 are 4 different banks: the second walk hits every row
    eight = ["dram.banks=8", "dram.row_buffer_bytes=256"]
    assert counts(run(build("edge", [dma_in(0, (2, 4, 4), (0, 128, 1))], overrides=eight))) == (8, 0, 4, 4)


def test_dram_is_walked_smallest_stride_innermost(build):
    # a 2x3x4 box whose innermost dimension is 64 elements (256 bytes) apart in DRAM (channels
    # innermost on chip, one 256-byte plane per channel in DRAM): walked plane by plane (c outermost),
    # rows of 3 elements inside: per plane 2 runs of 12 bytes at 16 bytes apart, one burst; planes
    # 0..3 are pages 0..3: 4 bursts, 4 misses. In box order it would be 24 one-element accesses
    # alternating between the 4 pages: 24 misses.
    box = isa.make("dma", src=("DRAM", 0), src_stride=(4, 1, 64), dst=("BUF", 0), dst_stride=(12, 4, 1),
                   shape=(2, 3, 4))
    assert counts(run(build("edge", [box], overrides=SMALL))) == (4, 0, 0, 4)
    assert dram_order((2, 3, 4), (4, 1, 64)) == ((4, 2, 3), (64, 4, 1))
    assert dram_order((1, 5, 7), (99, 7, 1)) == ((1, 5, 7), (99, 7, 1))  # row-major already
    assert dram_order((3, 2, 8), (0, 8, 1)) == ((3, 2, 8), (0, 8, 1))  # a broadcast dimension stays outermost


def test_open_rows_persist_across_dmas_reads_and_writes(build):
    # read [0, 256) (bank 0 row 0), write [512, 768) (bank 0 row 1), read [0, 256) again: 3 misses;
    # write then read [256, 512) (bank 1 row 0): 1 miss, then hits
    code = [dma_in(0, (1, 1, 64), (0, 0, 1), signal=(0,)),
            dma_out(512, (1, 1, 64), (0, 0, 1), wait=(0,), signal=(1,)),
            dma_in(0, (1, 1, 64), (0, 0, 1), wait=(1,), signal=(2,)),
            dma_out(256, (1, 1, 64), (0, 0, 1), wait=(2,), signal=(3,)),
            dma_in(256, (1, 1, 64), (0, 0, 1), wait=(3,))]
    result = run(build("edge", code, overrides=SMALL))
    assert counts(result) == (12, 8, 20 - 4, 4)
    assert result.dram_energy_pj["total"] == pytest.approx(4 * 28080.0 + 12 * 11880.0 + 8 * 15120.0)


def test_padding_is_not_read_from_dram(build):
    # a 1x4x8 box with one padded row on top and bottom reads 2 rows of 8 elements: bytes [0, 32) and
    # [32, 64), both in burst 0: one burst
    box = isa.make("dma", src=("DRAM", 0), src_stride=(0, 8, 1), dst=("BUF", 0), dst_stride=(0, 8, 1),
                   shape=(1, 4, 8), pad=(0, 0, 1, 1, 0, 0))
    result = run(build("edge", [box], overrides=SMALL))
    assert counts(result) == (1, 0, 0, 1)
    assert result.read_bytes["DRAM"] == 64


def test_row_buffers_directly():
    rows = RowBuffers(load_target("edge", SMALL).dram)
    starts, lengths = access_runs(192, (1, 1, 32), (0, 0, 1))  # bytes [192, 320): bursts 3, 4; pages 0, 1
    assert (starts.tolist(), lengths.tolist()) == ([192], [128])
    assert rows.walk(starts, lengths) == (2, 2)
    assert rows.open_rows == [0, 0]
    starts, lengths = access_runs(0, (2, 1, 3), (5, 0, 2))  # elements 0, 2, 4, 5, 7, 9: one run each
    assert starts.tolist() == [0, 8, 16, 20, 28, 36] and set(lengths.tolist()) == {4}
    assert rows.walk(starts, lengths) == (1, 0)  # all in burst 0, page 0: bank 0 has row 0 open
    assert rows.walk(np.array([], dtype=np.int64), np.array([], dtype=np.int64)) == (0, 0)


@pytest.mark.parametrize("row_bytes", [256, 0])
def test_walking_a_batch_is_walking_each_access_in_turn(row_bytes):
    # 300 accesses of 50 random boxes (1-3 runs per row, strided, some crossing pages) at random
    # addresses, walked one by one with `walk` and all at once with `walk_many`: the same bursts
    # and misses per access, the same open rows after
    dram = load_target("edge", [f"dram.row_buffer_bytes={row_bytes}", "dram.banks=2", "dram.burst_bytes=64"]).dram
    rng = np.random.default_rng(3)
    boxes = []
    for _ in range(50):
        shape = tuple(int(n) for n in rng.integers(1, 4, size=3))
        strides = (int(rng.integers(0, 200)), int(rng.integers(1, 40)), int(rng.choice([1, 3])))
        boxes.append(access_runs(0, *dram_order(shape, strides)))
    which = np.arange(300) % 50
    addrs = 4 * rng.integers(0, 2000, size=300)
    one_by_one, batch = RowBuffers(dram), RowBuffers(dram)
    expected = [one_by_one.walk(addr + boxes[box][0], boxes[box][1]) for addr, box in zip(addrs, which)]
    bursts, misses = batch.walk_many(addrs, which, boxes)
    assert list(zip(bursts.tolist(), misses.tolist())) == expected
    assert sum(m for _, m in expected) > (50 if row_bytes else -1)
    assert batch.open_rows == one_by_one.open_rows


def test_energy_rule():
    dram = load_target("edge", ["dram.energy_pj_per_byte=0.5"]).dram
    energy = dram_energy_pj(dram, 100, 28, read_bursts=2, write_bursts=1, activations=3)
    assert energy == {"activation": 3 * 28080.0, "read": 2 * 11880.0, "write": 15120.0, "transfer": 64.0,
                      "total": 3 * 28080.0 + 2 * 11880.0 + 15120.0 + 64.0}


def test_without_a_row_model_only_bytes_cost_energy(build):
    # a DRAM table without row_buffer_bytes (an old program's target): bursts are counted, no misses
    result = run(build("edge", [dma_in(0, (1, 1, 256), (0, 0, 1))],
                       overrides=["dram.row_buffer_bytes=0", "dram.energy_pj_per_byte=100.0"]))
    assert counts(result) == (16, 0, 16, 0)
    assert result.energy_pj["dram"] == 16 * 11880.0 + 1024 * 100.0


@pytest.mark.parametrize("override, message", [
    ("dram.burst_bytes=6", "dram.burst_bytes: 6 is not a multiple of 4"),
    ("dram.row_buffer_bytes=100", "dram.row_buffer_bytes: 100 is not a multiple of dram.burst_bytes (64)"),
    ("dram.banks=0", "dram.banks: 0 is impossible"),
    ("dram.banks=4096", "dram.banks: 4096 is more than the simulator supports"),
    ("dram.read_burst_energy_pj=-1", "dram.read_burst_energy_pj: -1 is impossible"),
])
def test_bad_dram_fields_are_one_line_errors(override, message):
    with pytest.raises(NnccError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_target("edge", [override])


def test_bytes_by_role(build):
    # symbols: input x [0, 256), weight w [256, 512), output y [1024, 1280); [512, 1024) is no symbol
    symbols = [("x", "input", 0, (64,)), ("w", "weight", 256, (64,)), ("y", "output", 1024, (64,))]
    code = [
        isa.make("layer", name="conv", nodes="conv"),
        dma_in(0, (1, 1, 64), (0, 0, 1), signal=(0,)),            # x: 256 input bytes
        dma_in(256, (1, 1, 64), (0, 0, 1), dst=1024, signal=(1,)),  # w: 256 weight bytes
        dma_out(512, (1, 1, 32), (0, 0, 1), wait=(0, 1), signal=(2,)),  # 128 intermediate bytes written
        isa.make("layer", name="fc", nodes="fc"),
        dma_in(192, (1, 1, 128), (0, 0, 1), wait=(2,), signal=(3,)),  # [192, 704): 64 x, 256 w, 192 intermediate
        dma_out(1024, (1, 1, 64), (0, 0, 1), wait=(3,)),           # y: 256 output bytes
    ]
    result = run(build("edge", code, symbols=symbols, overrides=SMALL))
    conv, fc = result.layers
    assert conv.dram.role_bytes == {"input": [256, 0], "weight": [256, 0], "output": [0, 0], "intermediate": [0, 128]}
    assert fc.dram.role_bytes == {"input": [64, 0], "weight": [256, 0], "output": [0, 256],
                                  "intermediate": [192, 0]}
    assert result.dram.role_bytes == {"input": [320, 0], "weight": [512, 0], "output": [0, 256],
                                      "intermediate": [192, 128]}
    assert sum(r + w for r, w in result.dram.role_bytes.values()) == result.read_bytes["DRAM"] + result.write_bytes["DRAM"]
