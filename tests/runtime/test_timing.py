"""Cycle formulas of the compute units and the DMA/DRAM model."""

import dataclasses

from nncc.runtime.target import load_target
from nncc.runtime.timing import (DmaModel, broadcast_panels, dram_bus_cycles, dram_runs, kernel_calls,
                                 kernel_c_cycles, matmul_issue_cycles, memory_cycles, vector_issue_cycles)


def test_vector_unit_lanes_and_fmacs():
    unit = dataclasses.replace(load_target("vector").main, kernel_rows=0)  # 16 lanes x 3, no micro-kernel
    assert matmul_issue_cycles(unit, 2, 8, 64, 64) == 1366  # 2*8*64 rows of k x ceil(64/16) passes / 3 = 1365.3
    assert matmul_issue_cycles(unit, 1, 1, 17, 3) == 2  # 1*3*2 passes / 3
    assert vector_issue_cycles(unit, (2, 3, 20), cost=4) == 16  # 2*3*2*4 / 3 = 16


def test_micro_kernel_calls_fill_drain_and_latency():
    unit = load_target("vector").main  # calls of <= 6 rows, 6 v + 2 v <= 64 registers, FMA latency 6
    # the published 6 x 3-vector kernel: 6k + 26 fill/drain (its 18 c stores inside) + 7 (the jump)
    assert [matmul_issue_cycles(unit, 1, 6, 48, k) for k in (64, 512, 1024)] == [417, 3105, 6177]
    # m = 8, n = 4 vectors: a 6-row call of 4 vectors (k x ceil(24/3) = 8) and a 2-row call, whose
    # 8 accumulators cannot hide the FMA latency (k x 6); their 24 and 8 c stores at 4 vectors per
    # cycle (2 units x register pairs) fit in the 9 cycles the fill/drain holds: (64*8 + 33) +
    # (64*6 + 33), twice
    assert kernel_calls(unit, 8, 4) == [(1, 6, 4), (1, 2, 4)]
    assert matmul_issue_cycles(unit, 2, 8, 64, 64) == 2 * (545 + 417)
    # 20 vectors in 6-row calls: at most 8 each, balanced: 7 + 7 + 6
    assert kernel_calls(unit, 6, 20) == [(2, 6, 7), (1, 6, 6)]
    # accumulating (c loaded first) and staged (a copied into SM: 62 cycles per panel, one DMA launch
    # + wait); k = 2000 makes a 6-row panel 48000 B > 32 KiB (half of SM): two panels, so two
    # calls, the second reloading c; 6 x 3 c loads and stores stay inside fill/drain:
    # 2000 x 6 + 2 x (26 + 7) + 2 x 62
    assert matmul_issue_cycles(unit, 1, 6, 48, 2000, acc=1, staged=True, broadcast_bytes=32768) == \
        12000 + 66 + 124


def test_micro_kernel_c_traffic_beyond_the_fill_drain():
    unit = load_target("vector").main  # fill/drain holds 18 c loads + 18 stores: ceil(36 / 4) = 9 cycles
    assert kernel_c_cycles(unit, 18, 1) == 0  # the library's 6 x 3 accumulating kernel
    assert kernel_c_cycles(unit, 24, 1) == 3  # 6 x 4 (a VGG conv call): ceil(48 / 4) - 9
    assert kernel_c_cycles(unit, 48, 1) == 15  # 6 x 8: ceil(96 / 4) - 9
    assert kernel_c_cycles(unit, 48, 0) == 3  # 6 x 8 storing only: ceil(48 / 4) - 9
    # a 6 x 4 accumulating call at k = 192 (VGG conv1_2's): 192 x 8 + 26 + 7 + 3
    assert matmul_issue_cycles(unit, 1, 6, 64, 192, acc=1) == 1572
    # one load/store per register (no pairs): 2 vectors per cycle, fill/drain holds ceil(36 / 2) = 18
    single = dataclasses.replace(unit, load_store_registers=1)
    assert kernel_c_cycles(single, 24, 1) == 6  # ceil(48 / 2) - 18


def test_broadcast_panels_hold_whole_row_blocks():
    unit = load_target("vector").main  # 6-row blocks, panels of at most 32 KiB (half of SM)
    # k = 512: a 6-row block is 12,288 B, two per panel (the library's M_S = 12): 600 rows, 100
    # blocks, 50 panels; 601 rows: a 101st block (1 row), 51 panels
    assert broadcast_panels(unit, 600, 512, 32768) == 50
    assert broadcast_panels(unit, 601, 512, 32768) == 51
    # k = 9 (VGG conv1_1's calls): 216 B per block, 151 per panel: 1000 rows (167 blocks) in 2
    assert broadcast_panels(unit, 1000, 9, 32768) == 2
    # k = 2000: one 6-row block is 48,000 B: each block in 2 pieces; 8 rows = blocks of 6 and 2
    # rows, the 2-row one (16,000 B) in one piece: 3 panels
    assert broadcast_panels(unit, 8, 2000, 32768) == 3
    # the staging cost: 6 x 48 x 512 from AM is one call (3,105) + one panel (62)
    assert matmul_issue_cycles(unit, 1, 6, 48, 512, staged=True, broadcast_bytes=32768) == 3105 + 62


def test_matrix_unit_tiles_k_on_rows_and_n_on_columns():
    unit = load_target("fusion").main  # 32 x 32
    assert matmul_issue_cycles(unit, 3, 7, 33, 64) == 3 * 7 * 2 * 2


def test_memory_bound_uses_each_memorys_bandwidth():
    target = load_target("vector")
    assert memory_cycles(target, {"AM": 1920, "SM": 80, "DRAM": 10**9}) == 15  # AM 128 B/c, SM 8 B/c


def test_dram_bus_is_shared_first_come_first_served():
    model = DmaModel(load_target("vector"))
    assert model.finish_time(0, "DRAM", "AM", 4096, 4096) == 261  # no runs given: slot 164 + ceil(4096/42.6)
    assert model.finish_time(0, "DRAM", "AM", 4096, 4096) == 358  # waits for the bus until 261
    assert model.finish_time(0, "GSM", "AM", 4096, 4096) == 128  # on chip: 64 + 4096/64, no bus


def test_dram_runs_and_bursts():
    target = load_target("vector")  # 64-B bursts at 0.8 x 42.6 B/cycle, >= 1 cycle per run
    assert dram_runs((8, 8, 16), (128, 16, 1)) == (1, 4096)  # contiguous rows merge into one run
    assert dram_runs((3, 14, 16), (3136, 224, 1)) == (42, 64)  # NHWC-like rows of a wider tensor
    assert dram_runs((16, 4, 4), (1, 896, 224)) == (16, 64)  # walked in DRAM order: smallest stride inside
    assert dram_bus_cycles(target, 4096, (1, 4096)) == 121  # ceil(64 x 64 / 34.08)
    assert dram_bus_cycles(target, 2688, (42, 64)) == 79  # 42 bursts
    assert dram_bus_cycles(target, 560, (10, 56)) == 19  # each 56-B run a whole burst: 640 B
