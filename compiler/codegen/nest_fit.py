"""Shrinking a conv nest's tiles until its buffers fit the target's memories.

`fitting(lowering, s, tiles, build)` builds the nest of `tiles`, and while its buffers
(`tile.buffer ... slots N` in each named memory, times the copies the memory keeps) exceed a
memory, tries the next smaller tiles (`shrink`: fewer output rows, then columns, then input
channels), e.g. toh 8 -> 4 -> 2 -> 1 before tow.
"""

from __future__ import annotations

import dataclasses

from nncc.compiler.codegen.context import Lowering
from nncc.compiler.codegen.conv import ConvTiles
from nncc.dialects import tile


def fits(lowering: Lowering, nest: tile.NestOp) -> bool:
    used: dict[str, int] = {}
    for op in nest.block.walk():
        if isinstance(op, tile.BufferOp):
            copies = 1 if op.shared is not None else lowering.copies(op.memory)
            used[op.memory] = used.get(op.memory, 0) + copies * tile.slot_bytes(op) * op.slots.value.data
    return all(nbytes <= lowering.target.memory(name).size_bytes for name, nbytes in used.items())


def divisor_at_most(extent: int, limit: int) -> int:
    return max(d for d in range(1, min(extent, limit) + 1) if extent % d == 0)


def shrink(s, t: ConvTiles) -> ConvTiles | None:
    if t.toh > 1:
        return dataclasses.replace(t, toh=divisor_at_most(s.oh, t.toh - 1))
    if t.tow > 1:
        return dataclasses.replace(t, tow=divisor_at_most(s.ow, t.tow - 1))
    if t.tic > 1:
        return dataclasses.replace(t, tic=max(1, t.tic // 2))
    return None


def fitting(lowering: Lowering, s, t: ConvTiles, build_nest) -> ConvTiles | None:
    """`t`, shrunk until its nest (`build_nest(tiles)`) fits (None: not even one row of one column does)."""
    while True:
        nest = build_nest(t)
        fit = fits(lowering, nest)
        nest.erase(safe_erase=False)
        if fit:
            return t
        t = shrink(s, t)
        if t is None:
            return None
