"""DRAM for intermediate tensors by liveness: a tensor's bytes are reused after its last reader.

The program's layers run one after another (a barrier ends each), so once the last layer that
reads a tensor is done, its DRAM may hold a tensor a later layer writes. Before lowering,
`last_uses` gives every value of @main the position of the last layer that reads it (an op
nested in a layer, e.g. in a `tile.nest`, counts as that layer); values @main returns are never
freed, and neither are symbols (inputs, outputs, weights: `Program.allocate`), which are placed
apart from the plan. Activations training saves for the backward pass are read by a backward
layer, so they live until then.

Aliases (reshapes, contiguous slices, concat inputs written in place, nest results) get an
address inside their source's block: `DramPlan.place` extends the block's life to the alias's
last use. `DramPlan.release` after each layer frees the blocks no later layer reads; the holes
are reused best-fit (the smallest hole that fits; a hole at the top of DRAM is extended).
Layer 2 of the chain `x -> relu a -> relu b -> relu c -> relu y` writes `c` where `a` was:

    layer 0 writes a   [a]
    layer 1 writes b   [a b]       a freed after layer 1
    layer 2 writes c   [c b]       b freed after layer 2
    layer 3 writes y   (an output symbol)

The addresses are in the program's instructions; `Program.dram_bytes` is the peak (the high
water mark), and `program.dram_plan` says what the tensors would take without reuse.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from xdsl.ir import Operation, SSAValue

from nncc.runtime.program import Program

ALIGN = 64
NEVER = math.inf  # the last use of a value @main returns


def last_uses(layers: Sequence[Operation], returned: Iterable[SSAValue]) -> dict[SSAValue, float]:
    """Every value of the layers (results, operands, nested block arguments) -> the position of
    the last layer that defines or reads it; `returned` values -> `NEVER`."""
    last: dict[SSAValue, float] = {}
    for position, layer in enumerate(layers):
        for op in layer.walk():
            for value in (*op.operands, *op.results):
                last[value] = position
            for region in op.regions:
                for block in region.blocks:
                    for arg in block.args:
                        last[arg] = position
    for value in returned:
        last[value] = NEVER
    return last


@dataclass
class Block:
    start: int
    end: int
    until: float  # the position of the last layer that reads a value placed in it


class DramPlan:
    """The live blocks of intermediate tensors and the holes freed ones left."""

    def __init__(self, program: Program, last_use: dict[SSAValue, float]):
        self.program = program
        self.last_use = last_use
        self.layer = -1  # the position of the layer being lowered (-1: before the first)
        self.starts: list[int] = []  # of the live blocks, sorted
        self.blocks: dict[int, Block] = {}
        self.holes: list[tuple[int, int]] = []  # (start, end) of freed bytes, sorted, merged
        self.allocated_bytes = 0  # every block's bytes: what the intermediates take without reuse

    def allocate(self, nbytes: int) -> int:
        """The address of a new block of `nbytes` (live until `place` extends it)."""
        size = max(ALIGN, -(-nbytes // ALIGN) * ALIGN)
        self.allocated_bytes += size
        fitting = [(end - start, k) for k, (start, end) in enumerate(self.holes) if end - start >= size]
        program = self.program
        if fitting:
            _, k = min(fitting)
            start, end = self.holes[k]
            if end - start > size:
                self.holes[k] = (start + size, end)
            else:
                del self.holes[k]
        elif self.holes and self.holes[-1][1] >= program.dram_bytes:  # extend the hole at the top
            start = self.holes.pop()[0]
            program.dram_bytes = start + (nbytes or ALIGN)
        else:
            start = -(-program.dram_bytes // ALIGN) * ALIGN
            program.dram_bytes = start + (nbytes or ALIGN)
        bisect.insort(self.starts, start)
        self.blocks[start] = Block(start, start + size, self.layer)
        return start

    def place(self, value: SSAValue, addr: int) -> None:
        """`value` lives at `addr`: its block (if in one) lives until its last reader."""
        k = bisect.bisect_right(self.starts, addr) - 1
        if k >= 0 and addr < self.blocks[self.starts[k]].end:
            block = self.blocks[self.starts[k]]
            block.until = max(block.until, self.last_use.get(value, self.layer))
            return
        for start, end in self.holes:
            if start <= addr < end:
                raise AssertionError(f"DRAM plan: {value.name_hint or 'a value'} placed at {addr:#x}, "
                                     f"in a freed block (layer {self.layer})")

    def release(self, position: int) -> None:
        """After layer `position`: free the blocks no later layer reads."""
        for start in [s for s in self.starts if self.blocks[s].until <= position]:
            block = self.blocks.pop(start)
            self.starts.remove(start)
            self.free(block.start, block.end)

    def free(self, start: int, end: int) -> None:
        k = bisect.bisect_left(self.holes, (start, end))
        self.holes.insert(k, (start, end))
        if k + 1 < len(self.holes) and self.holes[k + 1][0] == end:  # merge with the next hole
            self.holes[k] = (start, self.holes.pop(k + 1)[1])
        if k > 0 and self.holes[k - 1][1] == start:  # and the previous one
            self.holes[k - 1] = (self.holes[k - 1][0], self.holes.pop(k)[1])

    def summary(self) -> dict[str, int]:
        """Peak DRAM bytes with reuse (`dram_bytes`) and without (every symbol and block apart)."""
        symbols = sum(-(-s.nbytes // ALIGN) * ALIGN for s in self.program.symbols)
        return {"dram_bytes": self.program.dram_bytes, "without_reuse_bytes": symbols + self.allocated_bytes,
                "intermediate_bytes": self.allocated_bytes}


class PlacedAddresses(dict):
    """`Lowering.addresses` under a `DramPlan`: every address given a value is `place`d."""

    def __init__(self, plan: DramPlan):
        super().__init__()
        self.plan = plan

    def __setitem__(self, value: SSAValue, addr: int) -> None:
        self.plan.place(value, addr)
        super().__setitem__(value, addr)

    def update(self, other=(), **kwargs) -> None:
        for value, addr in dict(other, **kwargs).items():
            self[value] = addr
