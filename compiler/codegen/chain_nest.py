"""The loop nest of a fused chain of full convs and pooling layers (the fused-layer schedule of
Alwani et al., MICRO 2016: VGG's conv1_1, conv1_2, pool1, conv2_1, ...), the intermediates in
on-chip buffers. What `fuse-groups` writes in place of the layers.

The last layer's output is walked in 2-D tiles of `toh` x `tow` (dealt to the cores). Each tile
loads the first layer's input window (the halos of every layer of the chain, in both
dimensions, with the first layer's zero padding as slice bounds), then runs the layers one
after the other, each on the whole window the next one reads: the halo rows and columns are
**recomputed** by every tile that needs them, so tiles stay independent (any core, any order)
and no intermediate survives from one tile to the next; the cost model sees the extra MACs and
picks the tile size. On one core the first input window may be a `ring` (`halo = "cache"`):
each tile keeps the columns it shares with the tile before it in its band of rows (whole-width
strips: the rows of the strip before), so a band reads its rows of the image once; the
intermediates' halos are still recomputed. Or every window is a line buffer (`halo = "cache"`,
`ChainTiles.lines`, `add_line_strips`): bands of columns walked down in strips, each layer
computing only the new rows of the window after it, the rows a window shares with the strip
before kept on chip (`tile.copy`), so no halo row is recomputed or read twice; the cost model
chooses among the three. Each intermediate window is kept in the padded coordinates of its
consumer: the producer computes all of it, then the rows and columns outside the image are
overwritten with the consumer's padding (`tile.fill`: 0 for a conv, -inf for a max pool). Every
conv's weights are one buffer loaded with the same slice by every tile, so they stay on chip
(the scheduler skips a load whose slot already holds it): they are read from DRAM once.

    tile.for %n[%tn] = 0 to 1 step 1, %oh[%toh] = 0 to 112 step 4, %ow[%tow] = 0 to 112 step 8 cores 1 order naive {
      %top = tile.max [%oh * 2 - 1, 0]   ...                              (each window's part inside the image)
      tile.load %X[%n, 0, %oh * 2 - 2, %ow * 2 - 2] [1, 3, %toh * 2 + 4, 20] -> %in[0] dims [2, 3, 1]
      tile.load %W1p[0, 0, 0, 0, 0] [1, 3, 3, 3, 64] -> %w1[0] dims [1, 2, 3, 4]   (whole weights: resident)
      tile.conv %in[0], %w1[0] -> %m1[0] sizes [%toh * 2 + 2, 18, 3, 64] kernel [3, 3] ... act relu
      tile.fill %m1[0] sizes [%top - %oh * 2 + 1, 18, 64] value 0.0      (conv1_2's padding rows, columns)
      tile.conv %m1[0], %w2[0] -> %m2[0] sizes [%toh * 2, 16, 64, 64] kernel [3, 3] ... act relu
      tile.pool max %m2[0] -> %out[0] sizes [%toh, 8, 64] kernel [2, 2] strides [2, 2] dilations [1, 1]
      tile.store %out[0] -> %Y[%n, 0, %oh, %ow] [1, 64, %toh, 8] dims [2, 3, 1]
    }

`tow` divides the output width, so every window has the same number of columns (the buffers'
row pitch is static); rows may end in a shorter tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.dialects.builtin import ArrayAttr, FloatAttr, StringAttr, f64
from xdsl.ir import Block, Operation, Region, SSAValue

from nncc.compiler.codegen.context import F32, Lowering, layer_name
from nncc.compiler.codegen.epilogue import fused_epilogue
from nncc.compiler.codegen.group_nest import (
    CONV_OPS, Estimate, Linear, Window, bound, compulsory_bytes, fill, predict, ranked, scratch, single_use, window_of,
)
from nncc.compiler.codegen.nest_builder import IndexExprs, epilogue_parameters, nest_block, slice_op
from nncc.dialects import nn, tile

POOL_OPS = ("nn.max_pool", "nn.avg_pool")


def is_chain_conv(op: Operation) -> bool:
    """A full (ungrouped) conv without a residual."""
    return op.name in CONV_OPS and op.group.value.data == 1 and getattr(op, "residual", None) is None


def is_chain_pool(op: Operation) -> bool:
    """Max pooling (any padding), or average pooling without padding (one divisor everywhere);
    no ceil mode."""
    if op.name not in POOL_OPS or op.ceil_mode.value:
        return False
    return op.name == "nn.max_pool" or not any(nn.ints(op.pads))


def is_chain_layer(op) -> bool:
    return isinstance(op, Operation) and (is_chain_conv(op) or is_chain_pool(op))


@dataclass(frozen=True)
class ConvChain:
    """Consecutive convs and pooling layers, each the only reader of the one before."""

    ops: tuple[Operation, ...]

    @property
    def input(self) -> SSAValue:
        return self.ops[0].input

    @property
    def name(self) -> str:
        return "+".join(layer_name(op) for op in self.ops)


def find_runs(block: Block, taken: set[int]) -> list[list[Operation]]:
    """The maximal runs of chain layers in @main's body (two or more, none of them in `taken`)."""
    runs, seen = [], set(taken)
    for op in block.ops:
        if id(op) in seen or not is_chain_layer(op):
            continue
        run = [op]
        while (follower := single_use(run[-1].result)) is not None and is_chain_layer(follower) \
                and follower.input is run[-1].result and id(follower) not in seen:
            run.append(follower)
        seen.update(id(member) for member in run)
        if len(run) >= 2:
            runs.append(run)
    return runs


@dataclass(frozen=True)
class Stage:
    """One layer of a chain: "conv", "max" or "avg"; input channels c, output channels o; its window."""

    kind: str
    c: int
    o: int
    window: Window

    @property
    def pad_value(self) -> float:
        """What lies outside its input image: -inf for max pooling, else zero."""
        return -math.inf if self.kind == "max" else 0.0


def stage_of(op: Operation) -> Stage:
    c = nn.shape_of(op.input)[1]
    o = nn.shape_of(op.result)[1]
    if op.name in CONV_OPS:
        return Stage("conv", c, o, window_of(op))
    _, _, h, w = nn.shape_of(op.input)
    _, _, oh, ow = nn.shape_of(op.result)
    window = Window(h, w, oh, ow, tuple(nn.ints(op.kernel)), tuple(nn.ints(op.strides)), tuple(nn.ints(op.pads)),
                    tuple(nn.ints(op.dilations)))
    return Stage("max" if op.name == "nn.max_pool" else "avg", c, o, window)


@dataclass(frozen=True)
class ChainTiles:
    toh: int  # output rows of the last layer per tile
    tow: int  # output columns per tile (divides the output width)
    tcb: int = 0  # the tail's channel block (divides the last conv's output channels; 0: all of them)
    outer: bool = False  # the blocks outermost (each block's weights once, the layers before the tail
    #                      recomputed per block), else innermost (per tile: its weights reloaded)
    halo: str = "recompute"  # "cache": the first input window a one-slot ring (one core): the columns
    #                          (rows, for whole-width strips) a tile shares with the one before are
    #                          kept on chip, not read again; the intermediates' halos are recomputed
    lines: bool = False  # with halo "cache": line buffers, every window that shares rows with the
    #                      strip before a ring (`line_rows`); each band of columns walked top down


def tail(stages: list[Stage]) -> int:
    """The index of the chain's last conv (the tail: it and the pooling after it work on channel
    blocks); 0 without a conv."""
    convs = [k for k, s in enumerate(stages) if s.kind == "conv"]
    return convs[-1] if convs else 0


def block(stages: list[Stage], t: ChainTiles) -> int:
    """Output channels of the tail per block."""
    return t.tcb or stages[tail(stages)].o


def channels(stages: list[Stage], t: ChainTiles, k: int) -> int:
    """Channels of layer `k`'s input window (after the tail conv: a block's)."""
    return block(stages, t) if k > tail(stages) else stages[k].c


def extents(stages: list[Stage], toh: int, tow: int) -> list[tuple[int, int]]:
    """(rows, columns) of each layer's input window for a full `toh` x `tow` output tile, in padded
    coordinates (halo included), first layer first."""
    rows, cols, out = [], [], (toh, tow)
    for stage in reversed(stages):
        w = stage.window
        out = ((out[0] - 1) * w.strides[0] + w.extent(0), (out[1] - 1) * w.strides[1] + w.extent(1))
        rows.append(out[0])
        cols.append(out[1])
    return list(zip(rows[::-1], cols[::-1]))


def buffer_specs(lowering: Lowering, stages: list[Stage], t: ChainTiles) -> list[tuple]:
    """(name, role, shape, memory, shared, resident, ring) of every buffer: the first input window (a
    ring when the halo is cached), each
    conv's whole weights and bias (resident: one slot, loaded once; the tail conv's: a block's,
    when it has blocks), each intermediate window (read by a conv: where inputs live; by a pool:
    where outputs live), the output tile."""
    target = lowering.target
    memory = {role: target.memory_for(role).name for role in ("input", "weight", "output")}
    windows = extents(stages, t.toh, t.tow)
    lines = line_rows(stages, t) if t.lines else None
    specs = []
    for k, (stage, (rows, cols)) in enumerate(zip(stages, windows)):
        c = channels(stages, t, k)
        rows, ring = (lines[k].count, lines[k].ring) if lines else (rows, k == 0 and t.halo == "cache")
        if k == 0:
            specs.append(("in", "input", [rows, cols, c], memory["input"], False, False, ring))
        else:
            specs.append((f"m{k}", "intermediate", [rows, cols, c],
                          memory["input" if stage.kind == "conv" else "output"], False, False, ring))
        if stage.kind == "conv":
            o = block(stages, t) if k == tail(stages) else stage.o
            specs.append((weight_name(stages, k), "weight", [stage.window.taps * stage.c * o + o], memory["weight"],
                          True, o == stage.o, False))
    specs.append(("out", "output", [t.toh, t.tow, block(stages, t)], memory["output"], False, False, False))
    return specs


def weight_name(stages: list[Stage], k: int) -> str:
    """The weight buffer of layer `k` (a conv): wt1, wt2, ... in the order of the convs."""
    return f"wt{sum(s.kind == 'conv' for s in stages[:k + 1])}"


def fits(lowering: Lowering, stages: list[Stage], t: ChainTiles) -> bool:
    """Every buffer's 64-byte aligned slots (`lowering.buffers`, one if resident) fit in its memory."""
    used: dict[str, int] = {}
    for _, _, shape, memory, shared, resident, ring in buffer_specs(lowering, stages, t):
        slots = 1 if resident or ring else lowering.buffers
        copies = 1 if shared else lowering.copies(memory)
        used[memory] = used.get(memory, 0) + copies * slots * (-(-F32 * math.prod(shape) // 64) * 64)
    return all(nbytes <= lowering.target.memory(m).size_bytes for m, nbytes in used.items())


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def tile_candidates(lowering: Lowering, stages: list[Stage]) -> list[ChainTiles]:
    """Output tiles of rows x columns, each a divisor of the output's height and width, with the
    tail's channels whole or in blocks that fill the lanes (innermost or outermost), that fit."""
    last, o = stages[-1].window, stages[tail(stages)].o
    blocks = [0] + [b for b in divisors(o)[:-1] if b % lowering.lanes == 0] if stages[tail(stages)].kind == "conv" \
        else [0]
    choices = [(0, False)] + [(b, outer) for b in blocks if b for outer in (False, True)]
    halos = [("recompute", False), ("cache", True)] + ([("cache", False)] if lowering.cores == 1 else [])
    return [ChainTiles(r, c, b, outer, halo, lines) for r in divisors(last.oh) for c in divisors(last.ow)
            for b, outer in choices for halo, lines in halos
            if (halo == "recompute" or (worth_lines(lowering, stages, ChainTiles(r, c, b, outer, halo, lines)) if lines
                                        else worth_caching(lowering, stages, r, c)))
            and fits(lowering, stages, ChainTiles(r, c, b, outer, halo, lines))]


def worth_caching(lowering: Lowering, stages: list[Stage], toh: int, tow: int) -> bool:
    """Whether tiles of `toh` x `tow` outputs may cache the input's halo: whole-width strips (the
    new rows are whole rows of the image), or column tiles whose new columns make runs of at least
    a DRAM burst (narrower runs cost a burst each: fewer bytes, more DRAM energy and time)."""
    last = stages[-1].window
    if tow == last.ow:
        return toh < last.oh
    columns = tow * math.prod(stage.window.strides[1] for stage in stages)
    return F32 * columns >= lowering.target.dram.burst_bytes


def worth_lines(lowering: Lowering, stages: list[Stage], t: ChainTiles) -> bool:
    """Whether line buffers may serve tiles `t`: some window keeps rows, there are several strips,
    and a band's new input rows make runs of at least a DRAM burst (whole-width strips always)."""
    last = stages[-1].window
    columns = min(extents(stages, t.toh, t.tow)[0][1], stages[0].window.w)
    return t.toh < last.oh and any(r.ring for r in line_rows(stages, t)) \
        and (t.tow == last.ow or F32 * columns >= lowering.target.dram.burst_bytes)


# --------------------------------------------------------------------------- line buffers


@dataclass(frozen=True)
class LineRows:
    """The rows of one window of a chain walked in strips with line buffers, in the coordinates of
    its layer's input image, for the strip whose first output row (of the last layer) is `oh`:
    `count` rows from `scale * oh + first`, the last `new` of them computed (or loaded) by the
    strip, the others kept from the strip before (a ring: `new < count`).

        conv 3x3 pad 1 -> conv 3x3 pad 1, strips of 1 row: window 1 rows oh - 1 .. oh + 1, new: oh + 1;
        window 0 (the image) rows oh .. oh + 2, new: oh + 2 (layer 0 computes only window 1's new row)"""

    scale: int
    first: int
    count: int
    new: int

    @property
    def ring(self) -> bool:
        return self.new < self.count

    def start(self, oh: SSAValue) -> Linear:
        """The window's first row in the strip at `oh`."""
        return Linear.of(oh) * self.scale + self.first


def line_rows(stages: list[Stage], t: ChainTiles) -> list[LineRows]:
    """Each window's `LineRows`, from the last layer back: a layer computes the new rows of the
    window after it (all its rows when that one keeps none), so its own window holds just the
    rows those read. A window keeps rows when it shares some with the strip before and holds all
    the channels of its layer's input for every strip in turn (not a channel block of an innermost
    block loop)."""
    blocked = block(stages, t) < stages[tail(stages)].o and not t.outer
    scale, first, count, out = 1, 0, t.toh, []
    for k in reversed(range(len(stages))):
        w = stages[k].window
        s, p, e = w.strides[0], w.pads[0], w.extent(0)
        scale, first, count = scale * s, first * s - p, (count - 1) * s + e
        step = scale * t.toh
        ring = t.lines and count > step and not (blocked and k > tail(stages))
        rows = LineRows(scale, first, count, step if ring else count)
        out.append(rows)
        first, count = first + rows.count - rows.new, rows.new
    return out[::-1]


def prologue(rows: list[LineRows], toh: int, even: bool = False) -> int:
    """Strips walked before the first output row (their outputs above the image, not stored) so
    that every intermediate line buffer's kept rows are above the image at a band's first strip:
    the rows inside it are then all computed by the band's strips before they are read. `even`:
    rounded up to an even count (a serpentine block loop inside the strips turns at every strip,
    the prologue's too: so a band's first strip continues the walk of the band before)."""
    skip = max([0] + [-(-(r.first + r.count - r.new) // (r.scale * toh)) for r in rows[1:] if r.ring])
    return skip + skip % 2 if even else skip


def serpentine_blocks(lowering: Lowering, stages: list[Stage], t: ChainTiles) -> bool:
    """Whether the tail's channel blocks are a serpentine loop inside the strips."""
    return block(stages, t) < stages[tail(stages)].o and not t.outer and lowering.tile_order == "scan"


def clipped(body: Block, a: Linear, b: Linear, limit: int, name: str) -> tuple[SSAValue, SSAValue]:
    """`lo`, `hi` with a <= lo <= hi <= b: the rows [a, b) inside [0, limit), or an empty range
    at the nearer end."""
    top = add_bound(body, tile.MaxOp, [a, 0], f"top{name}")
    lo = add_bound(body, tile.MinOp, [Linear.of(top), b], f"lo{name}")
    bottom = add_bound(body, tile.MinOp, [b, limit], f"bottom{name}")
    hi = add_bound(body, tile.MaxOp, [Linear.of(bottom), Linear.of(lo)], f"hi{name}")
    return lo, hi


def column_spans(body: Block, stages: list[Stage], ow: SSAValue, tow: int) -> list[Span]:
    """Each layer's input columns for the band at `ow` (`spans`' columns), first layer first."""
    cols, first, count = [], Linear.of(ow), Linear(tow)
    for k in reversed(range(len(stages))):
        w = stages[k].window
        first, count = first * w.strides[1] - w.pads[1], (count - 1) * w.strides[1] + w.extent(1)
        col = Span(first, count)
        if k > 0 and any(w.pads):
            col.low = add_bound(body, tile.MaxOp, [first, 0], f"col_low{k}")
            col.high = add_bound(body, tile.MinOp, [first + count, w.w], f"col_high{k}")
        cols.append(col)
    return cols[::-1]


def add_line_strips(lowering: Lowering, parent: Block, chain: ConvChain, stages: list[Stage], t: ChainTiles, args,
                    buffers, weights, cb) -> None:
    """The strips of a chain with line buffers: bands of `tow` output columns (dealt to the
    cores), each walked down on its core from `prologue` strips above the image; per strip, every ring's kept rows copied up
    (`tile.copy`, none at a band's first strip), then each layer computes the new rows of the
    next window inside the image, the rows outside it filled with the consumer's padding; the
    output rows inside the image are stored.

        tile.for %n[%tn] = 0 to 1 step 1, %ow[%tow] = 0 to 4 step 4 cores 1 order naive {
          %col_low1 = ...                                          (the band's columns inside the image)
          tile.for %oh[%toh] = -2 to 4 step 1 order naive {
          %kept1 = tile.min [%oh * 2 + 4, 2]
          tile.copy %m1[80] -> %m1[0] sizes [%kept1 * 80]
          tile.load %X[%n, 0, %oh * 2 + 1, -4] [1, 3, 4, 12] -> %in[0] dims [2, 3, 1]   (a ring too)
          %lo1 = ...  %hi1 = ...                                  (window 1's new rows inside the image)
          tile.conv %in[(%lo1 - %oh * 2 - 1) * 36], %wt1[0] -> %m1[(%lo1 - %oh * 2 + 1) * 80] sizes [%hi1 - %lo1, 10, 3, 8] ...
          ...
          tile.store %out[0] -> %Y[%n, 0, %row, %ow] [1, 16, %end - %row, 4] dims [2, 3, 1]
        } }"""
    rows = line_rows(stages, t)
    skip = prologue(rows, t.toh, serpentine_blocks(lowering, stages, t))
    last = stages[-1].window
    bands = tile.ForOp.build([(0, nn.shape_of(chain.input)[0], 1), (0, last.ow, t.tow)], "naive", lowering.cores,
                             names=["n", "ow"])
    parent.add_op(bands)
    n, _, ow, _ = bands.block.args
    cols = column_spans(bands.block, stages, ow, t.tow)
    loop = tile.ForOp.build([(-skip * t.toh, last.oh, t.toh)], "naive", names=["oh"])
    bands.block.add_op(loop)
    oh, toh = loop.block.args
    body = loop.block
    windows = extents(stages, t.toh, t.tow)
    pitch = [windows[k][1] * channels(stages, t, k) for k in range(len(stages))]
    for k in range(1, len(stages)):
        if rows[k].ring:
            kept = rows[k].count - rows[k].new
            count = add_bound(body, tile.MinOp, [(Linear.of(oh) + skip * t.toh) * kept, kept], f"kept{k}")
            e = IndexExprs()
            views, size = [e(rows[k].new * pitch[k]), e(0)], (Linear.of(count) * pitch[k]).expr(e)
            body.add_op(tile.CopyOp.build(operands=[buffers[f"m{k}"], list(e.values)],
                                          properties={"views": e.map(views), "sizes": e.map([size])}))
    load = slice_op(tile.LoadOp, args["X"], buffers["in"], [n, 0, terms(rows[0].start(oh)), terms(cols[0].first)],
                    [1, stages[0].c, rows[0].count, windows[0][1]], [2, 3, 1])
    if stages[0].kind == "max":
        load.pad = FloatAttr(-math.inf, f64)
    body.add_op(load)
    first_tail, tb, o = tail(stages), block(stages, t), stages[-1].o
    for k in range(first_tail):
        if stages[k].kind == "conv":
            add_weights(body, chain.ops[k], stages[k], weights[k], buffers[weight_name(stages, k)], args, 0,
                        stages[k].o, weight_name(stages, k)[2:])
    row = add_bound(body, tile.MaxOp, [Linear.of(oh), 0], "row")
    end = add_bound(body, tile.MaxOp, [Linear.of(oh) + Linear.of(toh), 0], "end")
    inner = body
    for k, (op, stage) in enumerate(zip(chain.ops, stages)):
        if k == first_tail:
            if tb < o and not t.outer:
                blocks = tile.ForOp.build([(0, o, tb)], "serpentine" if lowering.tile_order == "scan" else "naive",
                                          names=["cb"])
                body.add_op(blocks)
                inner, cb = blocks.block, blocks.block.args[0]
            if stage.kind == "conv":
                add_weights(inner, op, stage, weights[k], buffers[weight_name(stages, k)], args, cb, tb,
                            weight_name(stages, k)[2:])
        final = k + 1 == len(stages)
        if final:
            lo, hi, target, target_at = row, end, buffers["out"], Linear(0)
        else:
            following = rows[k + 1]
            start = following.start(oh)
            a = start + (following.count - following.new)
            lo, hi = clipped(inner, a, a + following.new, stages[k + 1].window.h, str(k + 1))
            target, target_at = buffers[f"m{k + 1}"], (Linear.of(lo) - start) * pitch[k + 1]
        w = stage.window
        source_at = (Linear.of(lo) * w.strides[0] - w.pads[0] - rows[k].start(oh)) * pitch[k]
        add_layer(inner, op, stage, buffers["in" if k == 0 else f"m{k}"],
                  buffers[weight_name(stages, k)] if stage.kind == "conv" else None, target,
                  Linear.of(hi) - Linear.of(lo), t.tow if final else windows[k + 1][1], channels(stages, t, k),
                  tb if k >= first_tail else stage.o, source_at, target_at)
        if not final and any(stages[k + 1].window.pads):
            add_line_padding(inner, target, stages[k + 1], rows[k + 1], start, lo, hi, cols[k + 1],
                             windows[k + 1][1], channels(stages, t, k + 1), f"{k + 1}")
    inner.add_op(slice_op(tile.StoreOp, args["Y"], buffers["out"], [n, cb, row, ow],
                          [1, tb, terms(Linear.of(end) - Linear.of(row)), t.tow], [2, 3, 1]))


def add_line_padding(body: Block, buffer: SSAValue, stage: Stage, rows: LineRows, start: Linear, lo: SSAValue,
                     hi: SSAValue, col: Span, ccount: int, c: int, name: str) -> None:
    """The padding of a line-buffer window: its rows above the image (kept ones too: at a band's
    first strip they hold what the band before left), its new rows below the image, and the
    padding columns of the rows just computed (fills of nothing emit nothing)."""
    pitch, value = ccount * c, stage.pad_value
    if rows.ring:
        up = add_bound(body, tile.MaxOp, [Linear(0) - start, 0], f"up{name}")
        above = add_bound(body, tile.MinOp, [Linear.of(up), rows.count], f"above{name}")
        body.add_op(padded(fill(buffer, 0, [Linear.of(above), ccount, c], None), value))
    else:
        body.add_op(padded(fill(buffer, 0, [Linear.of(lo) - start, ccount, c], None), value))
    end = start + rows.count
    body.add_op(padded(fill(buffer, (Linear.of(hi) - start) * pitch, [end - Linear.of(hi), ccount, c], None), value))
    if col.low is None:
        return
    at, computed = (Linear.of(lo) - start) * pitch, Linear.of(hi) - Linear.of(lo)
    left, right = Linear.of(col.low), Linear.of(col.high)
    body.add_op(padded(fill(buffer, at, [computed, left - col.first, c], pitch), value))
    body.add_op(padded(fill(buffer, at + (right - col.first) * c, [computed, col.first + col.count - right, c], pitch),
                       value))


# --------------------------------------------------------------------------- the nest


@dataclass
class Span:
    """The rows (or columns) of one layer's input window a tile uses, in the image's coordinates:
    from `first`, `count` of them (padding included), of which `low` .. `high` (SSA values:
    tile.max / tile.min) are inside the image."""

    first: Linear
    count: Linear
    low: SSAValue | None = None
    high: SSAValue | None = None


def spans(body: Block, stages: list[Stage], oh: SSAValue, toh: SSAValue, ow: SSAValue, tow: int):
    """Each layer's input rows and columns for the tile at (`oh`, `ow`), last layer first back
    to the first; the parts inside the image (for the fills) of every intermediate window."""
    rows, cols = [], []
    r_first, r_count, c_first, c_count = Linear.of(oh), Linear.of(toh), Linear.of(ow), Linear(tow)
    for k in reversed(range(len(stages))):
        w = stages[k].window
        r_first, r_count = r_first * w.strides[0] - w.pads[0], (r_count - 1) * w.strides[0] + w.extent(0)
        c_first, c_count = c_first * w.strides[1] - w.pads[1], (c_count - 1) * w.strides[1] + w.extent(1)
        row, col = Span(r_first, r_count), Span(c_first, c_count)
        if k > 0 and any(w.pads):
            for span, limit, axis in ((row, w.h, "row"), (col, w.w, "col")):
                span.low = add_bound(body, tile.MaxOp, [span.first, 0], f"{axis}_low{k}")
                span.high = add_bound(body, tile.MinOp, [span.first + span.count, limit], f"{axis}_high{k}")
        rows.append(row)
        cols.append(col)
    return rows[::-1], cols[::-1]


def add_bound(body: Block, cls, exprs, name: str) -> SSAValue:
    op = bound(cls, exprs, name)
    body.add_op(op)
    return op.result


def add_padding(body: Block, buffer: SSAValue, stage: Stage, row: Span, col: Span, ccount: int, c: int) -> None:
    """Overwrite the rows and columns of an intermediate window (`c` channels) outside the image
    with the consumer's padding value (fills of no rows or columns emit nothing)."""
    pitch, value = ccount * c, stage.pad_value
    low, high = Linear.of(row.low), Linear.of(row.high)
    body.add_op(padded(fill(buffer, 0, [low - row.first, ccount, c], None), value))
    body.add_op(padded(fill(buffer, (high - row.first) * pitch, [row.first + row.count - high, ccount, c], None),
                       value))
    left, right = Linear.of(col.low), Linear.of(col.high)
    body.add_op(padded(fill(buffer, 0, [row.count, left - col.first, c], pitch), value))
    body.add_op(padded(fill(buffer, (right - col.first) * c, [row.count, col.first + col.count - right, c], pitch),
                       value))


def padded(op: tile.FillOp, value: float) -> tile.FillOp:
    op.value = FloatAttr(value, f64)
    return op


def chain_nest(lowering: Lowering, chain: ConvChain, t: ChainTiles, slots: int = 1) -> tile.NestOp:
    """The nest of `chain` with tiles `t` (not yet in @main; see `replace_with_chain`)."""
    stages = [stage_of(op) for op in chain.ops]
    named = [("X", chain.input)]
    for k, op in enumerate(chain.ops):
        if stages[k].kind == "conv":
            j = weight_name(stages, k)[2:]
            named += [(f"W{j}", op.weight), (f"B{j}", op.bias)]
    nest_body, args, inputs = nest_block(named, chain.ops[-1].result)
    weights = {}
    for k, stage in enumerate(stages):
        if stage.kind == "conv":
            kh, kw = stage.window.kernel
            j = weight_name(stages, k)[2:]
            relayout = tile.RelayoutOp(args[f"W{j}"], [1, stage.o, stage.c, kh, kw], [0, 3, 4, 2, 1])
            relayout.result.name_hint = f"W{j}p"
            nest_body.add_op(relayout)
            weights[k] = relayout.result
    buffers = {}
    for name, role, shape, memory, shared, resident, ring in buffer_specs(lowering, stages, t):
        op = tile.BufferOp(role, shape, memory, slots, shared, resident=resident, ring=ring)
        op.result.name_hint = name
        nest_body.add_op(op)
        buffers[name] = op.result
    tb, o = block(stages, t), stages[-1].o
    parent, cb = nest_body, 0
    if tb < o and t.outer:
        blocks = tile.ForOp.build([(0, o, tb)], "naive", names=["cb"])
        nest_body.add_op(blocks)
        parent, cb = blocks.block, blocks.block.args[0]
    if t.lines:
        add_line_strips(lowering, parent, chain, stages, t, args, buffers, weights, cb)
    else:
        add_tiles(lowering, parent, chain, stages, t, args, buffers, weights, cb)
    nodes = [node for op in chain.ops for node in nn.onnx_nodes_of(op)]
    nest = tile.NestOp(chain.name, inputs, [chain.ops[-1].result.type], Region(nest_body),
                       {"op": StringAttr("fused.group"), nn.ONNX_NODES: ArrayAttr([StringAttr(x) for x in nodes]),
                        "halo": StringAttr(t.halo)})
    nest.results[0].name_hint = chain.ops[-1].result.name_hint
    return nest


def add_tiles(lowering: Lowering, parent: Block, chain: ConvChain, stages: list[Stage], t: ChainTiles, args,
              buffers, weights, cb) -> None:
    """The 2-D tiles of a chain whose intermediates' halos are recomputed (the module docstring)."""
    first_tail, tb, o = tail(stages), block(stages, t), stages[-1].o
    blocked = tb < o
    last = stages[-1].window
    loop = tile.ForOp.build([(0, nn.shape_of(chain.input)[0], 1), (0, last.oh, t.toh), (0, last.ow, t.tow)], "naive",
                            lowering.cores, names=["n", "oh", "ow"])
    parent.add_op(loop)
    n, _, oh, toh, ow, _ = loop.block.args
    body = loop.block
    rows, cols = spans(body, stages, oh, toh, ow, t.tow)
    windows = extents(stages, t.toh, t.tow)
    load = slice_op(tile.LoadOp, args["X"], buffers["in"],
                    [n, 0, terms(rows[0].first), terms(cols[0].first)],
                    [1, stages[0].c, terms(rows[0].count), windows[0][1]], [2, 3, 1])
    if stages[0].kind == "max":
        load.pad = FloatAttr(-math.inf, f64)
    body.add_op(load)
    for k in range(first_tail):
        if stages[k].kind == "conv":
            add_weights(body, chain.ops[k], stages[k], weights[k], buffers[weight_name(stages, k)], args, 0,
                        stages[k].o, weight_name(stages, k)[2:])
    inner = body
    if blocked and not t.outer:
        blocks = tile.ForOp.build([(0, o, tb)], "serpentine" if lowering.tile_order == "scan" else "naive",
                                  names=["cb"])
        cb = blocks.block.args[0]
    if stages[first_tail].kind == "conv":
        weight_loads = Block()
        add_weights(weight_loads, chain.ops[first_tail], stages[first_tail], weights[first_tail],
                    buffers[weight_name(stages, first_tail)], args, cb, tb, weight_name(stages, first_tail)[2:])
    for k, (op, stage) in enumerate(zip(chain.ops, stages)):
        if k == first_tail:
            if blocked and not t.outer:
                body.add_op(blocks)
                inner = blocks.block
            if stage.kind == "conv":
                for load_op in list(weight_loads.ops):
                    load_op.detach()
                    inner.add_op(load_op)
        source = buffers["in" if k == 0 else f"m{k}"]
        final = k + 1 == len(stages)
        target = buffers["out" if final else f"m{k + 1}"]
        out_rows = toh if final else rows[k + 1].count
        out_cols = t.tow if final else windows[k + 1][1]
        weight = buffers[weight_name(stages, k)] if stage.kind == "conv" else None
        add_layer(inner, op, stage, source, weight, target, out_rows, out_cols, channels(stages, t, k),
                  tb if k >= first_tail else stage.o)
        if not final and rows[k + 1].low is not None:
            add_padding(inner, target, stages[k + 1], rows[k + 1], cols[k + 1], windows[k + 1][1],
                        channels(stages, t, k + 1))
    inner.add_op(slice_op(tile.StoreOp, args["Y"], buffers["out"], [n, cb, oh, ow], [1, tb, toh, t.tow], [2, 3, 1]))


def add_weights(body: Block, op: Operation, stage: Stage, relayout: SSAValue, buffer: SSAValue, args, cb, tb: int,
                j: str) -> None:
    """The loads of a conv's weights (output channels `cb` .. `cb + tb`) and bias."""
    kh, kw = stage.window.kernel
    body.add_op(slice_op(tile.LoadOp, relayout, buffer, [0, 0, 0, 0, cb], [1, kh, kw, stage.c, tb], [1, 2, 3, 4]))
    if op.bias is not None:
        body.add_op(slice_op(tile.LoadOp, args[f"B{j}"], buffer, [cb], [tb], [0], at=kh * kw * stage.c * tb))


def terms(x: Linear | SSAValue | int):
    """`x` as slice_op's ((value, coefficient), ..., constant) terms."""
    if not isinstance(x, Linear):
        return x
    return tuple(x.terms) + (x.const,)


def add_layer(body: Block, op: Operation, stage: Stage, source: SSAValue, weights: SSAValue | None,
              target: SSAValue, rows, cols: int, c: int, o: int, source_at: Linear | int = 0,
              target_at: Linear | int = 0) -> None:
    """One layer on the whole window its consumer reads (or, from `source_at` into `target_at`,
    `rows` of it): a tile.conv (`c` -> `o` channels; its bias and activation as the epilogue) or
    a tile.pool (`c` channels), dense [rows][columns][channels] in and out."""
    e = IndexExprs()
    size = lambda x: (x if isinstance(x, Linear) else Linear.of(x)).expr(e)  # noqa: E731
    w = stage.window
    if stage.kind == "conv":
        epilogue = fused_epilogue(op)
        views = [size(source_at), e(0), size(target_at)] + ([e(w.taps * c * o)] if op.bias is not None else [])
        operands = [source, weights, target] + ([weights] if op.bias is not None else [])
        body.add_op(tile.conv_op(operands, views, e, [size(rows), e(cols), e(c), e(o)],
                                 list(w.kernel), list(w.strides), list(w.dilations), -1, False, epilogue.act,
                                 epilogue_parameters(epilogue)))
        return
    sizes, views = [size(rows), e(cols), e(c)], [size(source_at), size(target_at)]
    body.add_op(tile.PoolOp.build(
        operands=[[source, target], list(e.values)],
        properties={"func": StringAttr(stage.kind), "kernel": tile.ints_attr(list(w.kernel)),
                    "conv_strides": tile.ints_attr(list(w.strides)), "dilations": tile.ints_attr(list(w.dilations)),
                    "views": e.map(views), "sizes": e.map(sizes)}))


# --------------------------------------------------------------------------- choosing


def estimate(lowering: Lowering, stages: list[Stage], t: ChainTiles, n: int) -> Estimate:
    """DRAM bytes (the first input window of every tile, clipped to the image, or with a cached
    halo each band's rows of the image once, once per block when the blocks are outermost; the
    weights once, the tail's once per tile when its blocks are
    innermost; the output once) and cycles (each layer's instructions over its whole window,
    issue or on-chip traffic time, summed per tile, the layers before the tail once per block
    when the blocks are outermost, over the cores; or the DRAM time, if longer)."""
    from nncc.runtime.timing import matmul_issue_cycles, vector_issue_cycles

    target, last = lowering.target, stages[-1].window
    main, vector = target.units["main"], target.units[lowering.vector_unit]
    bandwidth = target.memory_for("input").bandwidth_bytes_per_cycle
    windows = extents(stages, t.toh, t.tow)
    first, first_tail, tb = stages[0].window, tail(stages), block(stages, t)
    blocks = stages[-1].o // tb
    tiles = n * math.ceil(last.oh / t.toh) * (last.ow // t.tow)
    in_rows, in_cols = min(windows[0][0], first.h), min(windows[0][1], first.w)
    weights = [s.window.taps * s.c * s.o + s.o if s.kind == "conv" else 0 for s in stages]
    outputs = n * stages[-1].o * last.oh * last.ow
    bands = n * math.ceil(last.oh / t.toh)
    outs = [(r, c) for r, c in windows[1:]] + [(t.toh, t.tow)]
    if t.lines:  # bands of columns walked down, each layer computing its next window's new rows
        lines = line_rows(stages, t)
        bands = n * (last.ow // t.tow)
        tiles = bands * (last.oh // t.toh + prologue(lines, t.toh, serpentine_blocks(lowering, stages, t)))
        windows = [(r.count, c) for r, (_, c) in zip(lines, windows)]
        outs = [(r.new, c) for r, (_, c) in zip(lines[1:], windows[1:])] + [(t.toh, t.tow)]
        in_rows = min(lines[0].count, first.h)
    reloads = tiles if blocks > 1 and not t.outer else 1
    if t.lines and lines[0].ring:  # every row of the image once per band
        window_reads = bands * first.h * in_cols
    elif t.lines:
        window_reads = tiles * in_rows * in_cols
    elif t.halo == "cache" and t.tow < last.ow:  # a band of tiles reads its rows of the image once
        window_reads = bands * in_rows * first.w
    elif t.halo == "cache":  # whole-width strips: every row once
        window_reads = n * first.h * in_cols
    else:
        window_reads = tiles * in_rows * in_cols
    read = F32 * (window_reads * stages[0].c * (blocks if t.outer else 1)
                  + sum(weights) + (reloads - 1) * weights[first_tail])

    def busy(unit, issue: float, elements: int) -> float:
        return max(issue, F32 * elements / bandwidth) + unit.pipeline_depth

    def layer(stage: Stage, rows: int, cols: int, orows: int, ocols: int, c: int, o: int) -> float:
        if stage.kind == "conv":
            kh, kw = stage.window.kernel
            cycles = kh * busy(main, matmul_issue_cycles(main, orows, ocols, o, kw * c),
                               orows * (cols * c + ocols * o) + kw * c * o)
            if lowering.vector_unit != "main":
                cycles += 2 * busy(vector, vector_issue_cycles(vector, (orows, ocols, o), 1), 2 * orows * ocols * o)
            return cycles
        return busy(vector, vector_issue_cycles(vector, (orows, ocols, c), stage.window.taps),
                    rows * cols * c + orows * ocols * c)

    prefix = tail_work = 0.0
    for k, (stage, (rows, cols), (orows, ocols)) in enumerate(zip(stages, windows, outs)):
        if k < first_tail:
            prefix += layer(stage, rows, cols, orows, ocols, stage.c, stage.o)
        else:
            tail_work += blocks * layer(stage, rows, cols, orows, ocols, channels(stages, t, k),
                                        tb if stage.kind == "conv" else channels(stages, t, k))
    work = prefix * (blocks if t.outer else 1) + tail_work
    cycles = max(tiles * work / lowering.cores, (read + F32 * outputs) / target.dram_bytes_per_cycle)
    return Estimate(cycles, int(read), F32 * outputs)


SHORTLIST = 2  # tilings per chain timed by the cost model, best estimates first


def best_chain(lowering: Lowering, chain: ConvChain) -> tuple[ChainTiles, object] | None:
    """The chain's tiles the cost model ranks first (by `lowering.objective`) among the
    `SHORTLIST` best estimated ones, and their prediction; None when no tiling fits."""
    stages = [stage_of(op) for op in chain.ops]
    n = nn.shape_of(chain.input)[0]
    candidates = tile_candidates(lowering, stages)
    if not candidates:
        return None
    floor, probe = compulsory_bytes(chain.ops), scratch(lowering)
    estimates = [estimate(lowering, stages, t, n) for t in candidates]
    shortlist = [candidates[i] for i in ranked(estimates, lowering.objective, floor)[:SHORTLIST]]
    timed = [predict(probe, chain_nest(probe, chain, t, lowering.buffers)) for t in shortlist]
    best = ranked(timed, lowering.objective, floor)[0]
    return shortlist[best], timed[best]


def replace_with_chain(lowering: Lowering, chain: ConvChain, t: ChainTiles, slots: int = 1) -> tile.NestOp:
    """Put the chain's nest in place of its layers in @main."""
    nest = chain_nest(lowering, chain, t, slots)
    last = chain.ops[-1]
    last.parent.insert_op_before(nest, last)
    last.result.replace_all_uses_with(nest.results[0])
    for op in reversed(chain.ops):
        op.detach()
        op.erase()
    return nest
