"""Cycle formulas of the compute units and the DMA/DRAM model."""

from nncc.runtime.target import load_target
from nncc.runtime.timing import DmaModel, matmul_issue_cycles, memory_cycles, vector_issue_cycles


def test_vector_unit_lanes_and_fmacs():
    unit = load_target("vector").main  # 16 lanes x 3
    assert matmul_issue_cycles(unit, 2, 8, 64, 64) == 1366  # 2*8*64 rows of k x ceil(64/16) passes / 3 = 1365.3
    assert matmul_issue_cycles(unit, 1, 1, 17, 3) == 2  # 1*3*2 passes / 3
    assert vector_issue_cycles(unit, (2, 3, 20), cost=4) == 16  # 2*3*2*4 / 3 = 16


def test_matrix_unit_tiles_k_on_rows_and_n_on_columns():
    unit = load_target("fusion").main  # 32 x 32
    assert matmul_issue_cycles(unit, 3, 7, 33, 64) == 3 * 7 * 2 * 2


def test_memory_bound_uses_each_memorys_bandwidth():
    target = load_target("vector")
    assert memory_cycles(target, {"AM": 1920, "SM": 80, "DRAM": 10**9}) == 10  # AM 192 B/c, SM 8 B/c


def test_dram_bus_is_shared_first_come_first_served():
    model = DmaModel(load_target("vector"))
    assert model.finish_time(0, "DRAM", "AM", 4096, 4096) == 261  # slot 164 + ceil(4096/42.6)
    assert model.finish_time(0, "DRAM", "AM", 4096, 4096) == 358  # waits for the bus until 261
    assert model.finish_time(0, "GSM", "AM", 4096, 4096) == 128  # on chip: 64 + 4096/64, no bus
