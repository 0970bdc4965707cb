"""Simulated memories: views, bounds, alignment, per-core instances, footprints (DRAM rows: test_dram.py)."""

import numpy as np
import pytest

from nncc.runtime.memory import Fault, Memories, footprint
from nncc.runtime.target import load_target


def test_views_alias_the_memory_and_per_core_instances_are_separate():
    memories = Memories(load_target("vector"), 4096)
    view = memories.view("AM", 1, 16, (2, 3), (8, 2))
    view[...] = np.arange(6).reshape(2, 3)
    am1 = memories.array("AM", 1)
    np.testing.assert_array_equal(am1[[4, 6, 8, 12, 14, 16]], np.arange(6))
    assert not memories.array("AM", 0).any()
    assert memories.array("GSM", 3) is memories.array("GSM", 0)


def test_bounds_and_alignment():
    memories = Memories(load_target("edge"), 64)
    assert memories.view("DRAM", 0, 60, (1,), (1,)).shape == (1,)
    with pytest.raises(Fault, match=r"address out of range: tile DRAM\[0x3c\] shape 2 ends at byte 0x44, beyond DRAM size 0x40"):
        memories.view("DRAM", 0, 60, (2,), (1,))
    with pytest.raises(Fault, match="BUF overflow"):
        memories.view("BUF", 0, 0, (2, 2), (0, 65536))
    with pytest.raises(Fault, match="misaligned"):
        memories.view("BUF", 0, 6, (1,), (1,))


def test_footprint_counts_broadcast_dimensions_once():
    assert footprint((4, 5, 6), (30, 6, 1)) == 120
    assert footprint((4, 5, 6), (0, 0, 1)) == 6

