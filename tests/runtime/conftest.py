"""A fixture to build small programs in tests."""

import pytest

from nncc.runtime.program import Program, Symbol
from nncc.runtime.target import load_target


@pytest.fixture
def build():
    """build(target, instructions, symbols=[(name, kind, addr, shape)], dram_bytes, overrides, mode)."""

    def make(target, instructions, symbols=(), dram_bytes=1 << 16, overrides=(), mode="inference"):
        return Program(
            load_target(target, list(overrides)),
            list(instructions),
            [Symbol(n, k, a, tuple(s)) for n, k, a, s in symbols],
            dram_bytes=dram_bytes,
            mode=mode,
        )

    return make
