"""The loop nest of a fused group: [1x1 expand ->] depthwise [-> depthwise ...] -> 1x1 project
[+ residual], the intermediates in on-chip buffers (MobileNetV2's inverted residual block,
MobileNetV1's depthwise-separable pair, a CP-decomposed conv's 1x1 -> Kx1 -> 1xK -> 1x1 chain).
What `fuse-groups` writes in place of the layers.

Output rows are walked in strips of `toh` rows, dealt to the cores. Each strip loads the input
rows its depthwise windows need (the halo rows are recomputed by the strips on both sides:
recompute, not cache, so strips stay independent and can go to any core), then walks the
expanded channels in blocks of `tcb`: the block's expand (into `%m1`, a zero-bordered image of
the first depthwise's padded input), each depthwise (into the next one's zero-bordered input, the
last into `%mN`) and the project conv, which accumulates the blocks onto the output strip (its
reduction loop; a residual is loaded into the output strip first). Only the group's input, its
weights and its output see DRAM.

    tile.for %n[%tn] = 0 to 1 step 1, %oh[%toh] = 0 to 56 step 2 cores 4 order naive {
      %top = tile.max [%oh - 1, 0]
      %bottom = tile.min [%oh + %toh + 1, 56]
      tile.load %X[%n, 0, %top, 0] [1, 24, %bottom - %top, 56] -> %in[0] dims [2, 3, 1]
      tile.load %R[%n, 0, %oh, 0] [1, 24, %toh, 56] -> %out[0] dims [2, 3, 1]
      tile.for %cb[%tcb] = 0 to 144 step 48 order serpentine {
        (weight and bias loads of the block)
        tile.conv %in[0], %w1b[0] -> %m1[((%top - %oh + 1) * 58 + 1) * 48] sizes [%bottom - %top, 56, 24, 48] pitch [2784] ...
        tile.fill %m1[0] sizes [%top - %oh + 1, 58, 48] value 0.0          (border rows, columns)
        tile.depthwise %m1[0], %wdb[0] -> %m2[0] sizes [%toh, 56, 48] pitch [2784, 48] ...
        tile.conv %m2[0], %w2b[0] -> %out[0] sizes [%toh, 56, 48, 24] ... reduce %cb onto_output bias %w2b[1152]
      }
      tile.store %out[0] -> %Y[%n, 0, %oh, 0] [1, 24, %toh, 56] dims [2, 3, 1]
    }
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from xdsl.dialects.builtin import ArrayAttr, FloatAttr, StringAttr, f64
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.ir.affine import AffineExpr

from nncc.compiler.codegen.context import F32, Lowering, layer_name
from nncc.compiler.codegen.epilogue import fused_epilogue
from nncc.compiler.codegen.nest_builder import IndexExprs, epilogue_parameters, nest_block, slice_op
from nncc.dialects import nn, tile
from nncc.runtime.program import Program
from nncc.support.errors import NnccError

CONV_OPS = ("nn.conv2d", "fused.conv2d")


@dataclass(frozen=True)
class Chain:
    """The layers of a group, in order: the expand 1x1 (None: the first depthwise reads the
    group's input), the depthwise convs and the project 1x1 (which may carry a residual)."""

    expand: Operation | None
    depthwise: tuple[Operation, ...]
    project: Operation

    @property
    def ops(self) -> list[Operation]:
        return [op for op in (self.expand, *self.depthwise, self.project) if op is not None]

    @property
    def input(self) -> SSAValue:
        return self.ops[0].input

    @property
    def name(self) -> str:
        return "+".join(layer_name(op) for op in self.ops)


@dataclass(frozen=True)
class Window:
    """One depthwise conv's window: input [h, w], output [oh, ow], kernel, strides, pads
    (top, left, bottom, right), dilations."""

    h: int
    w: int
    oh: int
    ow: int
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilations: tuple[int, int]

    def extent(self, axis: int) -> int:
        """Input rows (0) or columns (1) one output row (column) reads: the kernel's span."""
        return (self.kernel[axis] - 1) * self.dilations[axis] + 1

    def rows(self, out_rows: int) -> int:
        """Rows of the (padded) input that `out_rows` output rows read."""
        return (out_rows - 1) * self.strides[0] + self.extent(0)

    @property
    def padded_width(self) -> int:
        return self.w + self.pads[1] + self.pads[3]

    @property
    def taps(self) -> int:
        return self.kernel[0] * self.kernel[1]


@dataclass(frozen=True)
class GroupShape:
    """Sizes of a group: input [n, c, h, w], expanded channels e, output channels o, the windows
    of its depthwise convs (the output [oh, ow] is the last one's)."""

    n: int
    c: int
    e: int
    o: int
    windows: tuple[Window, ...]

    @property
    def h(self) -> int:
        return self.windows[0].h

    @property
    def w(self) -> int:
        return self.windows[0].w

    @property
    def oh(self) -> int:
        return self.windows[-1].oh

    @property
    def ow(self) -> int:
        return self.windows[-1].ow

    def input_rows(self, toh: int) -> list[int]:
        """The most rows of each depthwise's (padded) input a strip of `toh` output rows reads."""
        rows, out = [], toh
        for window in reversed(self.windows):
            rows.append(window.rows(out))
            out = min(rows[-1], window.h)
        return rows[::-1]


@dataclass(frozen=True)
class GroupTiles:
    toh: int  # output rows per strip
    tcb: int  # expanded channels per block (divides e)


def is_pointwise(op: Operation) -> bool:
    """A 1x1, stride-1, unpadded, ungrouped conv."""
    if op.name not in CONV_OPS:
        return False
    return tuple(nn.shape_of(op.weight)[2:]) == (1, 1) and tuple(nn.ints(op.strides)) == (1, 1) \
        and not any(nn.ints(op.pads)) and op.group.value.data == 1


def is_depthwise_conv(op: Operation) -> bool:
    if not isinstance(op, Operation) or op.name not in CONV_OPS:
        return False
    o, cg = nn.shape_of(op.weight)[:2]
    c = nn.shape_of(op.input)[1]
    return op.group.value.data == c == o and cg == 1 and c > 1 and getattr(op, "residual", None) is None


def single_use(value: SSAValue) -> Operation | None:
    uses = list(value.uses)
    return uses[0].operation if len(uses) == 1 else None


def chain_from(depthwise: Operation) -> Chain | None:
    """The group around a run of depthwise convs starting at `depthwise` (each the only reader
    of the one before): the 1x1 that alone reads the last as its input, and the 1x1 (no
    residual) that it alone reads, if any."""
    if not is_depthwise_conv(depthwise):
        return None
    run = [depthwise]
    while is_depthwise_conv(follower := single_use(run[-1].result)) and follower.input is run[-1].result:
        run.append(follower)
    project = single_use(run[-1].result)
    if project is None or not is_pointwise(project) or project.input is not run[-1].result:
        return None
    producer = depthwise.input.owner
    expand = producer if isinstance(producer, Operation) and is_pointwise(producer) \
        and getattr(producer, "residual", None) is None and single_use(producer.result) is depthwise else None
    return Chain(expand, tuple(run), project)


def find_chains(block: Block) -> list[Chain]:
    """Every group in @main's body, in program order (a layer is in one group at most)."""
    chains, taken = [], set()
    for op in block.ops:
        if id(op) in taken:
            continue
        chain = chain_from(op)
        if chain is not None and not any(id(member) in taken for member in chain.ops):
            chains.append(chain)
            taken.update(id(member) for member in chain.ops)
    return chains


def window_of(op: Operation) -> Window:
    _, _, h, w = nn.shape_of(op.input)
    _, _, oh, ow = nn.shape_of(op.result)
    kh, kw = nn.shape_of(op.weight)[2:]
    return Window(h, w, oh, ow, (kh, kw), tuple(nn.ints(op.strides)), tuple(nn.ints(op.pads)),
                  tuple(nn.ints(op.dilations)))


def group_shape(chain: Chain) -> GroupShape:
    n, c, _, _ = nn.shape_of(chain.input)
    e = nn.shape_of(chain.depthwise[0].input)[1]
    o = nn.shape_of(chain.project.result)[1]
    return GroupShape(n, c, e, o, tuple(window_of(op) for op in chain.depthwise))


# --------------------------------------------------------------------------- buffers


def intermediate_names(s: GroupShape) -> list[str]:
    """%m1 .. %mK: each depthwise's input; %m(K+1): the last one's output, the projection's input."""
    return [f"m{i + 1}" for i in range(len(s.windows) + 1)]


def weight_names(s: GroupShape) -> list[str]:
    return ["wdb"] if len(s.windows) == 1 else [f"wd{i + 1}b" for i in range(len(s.windows))]


def buffer_specs(lowering: Lowering, chain: Chain, s: GroupShape, t: GroupTiles) -> list[tuple]:
    """(name, role, shape, memory, shared) of every buffer of the group's nest. The depthwise
    inputs (written by a conv's or a depthwise's output path) live where outputs do, the
    projection's input where inputs do."""
    target = lowering.target
    memory = {role: target.memory_for(role).name for role in ("input", "weight", "output")}
    rows = s.input_rows(t.toh)
    names = intermediate_names(s)
    specs = []
    if chain.expand is not None:
        specs += [("in", "input", [min(rows[0], s.h), s.w, s.c], memory["input"], False),
                  ("w1b", "weight", [s.c * t.tcb + t.tcb], memory["weight"], True)]
    for i, window in enumerate(s.windows):
        loaded = i == 0 and chain.expand is None
        specs.append((names[i], "input" if loaded else "intermediate", [rows[i], window.padded_width, t.tcb],
                      memory["input" if loaded else "output"], False))
    specs += [(name, "weight", [(window.taps + 1) * t.tcb], memory["weight"], True)
              for name, window in zip(weight_names(s), s.windows)]
    specs += [("w2b", "weight", [t.tcb * s.o + s.o], memory["weight"], True),
              (names[-1], "intermediate", [t.toh, s.ow, t.tcb], memory["input"], False),
              ("out", "output", [t.toh, s.ow, s.o], memory["output"], False)]
    return specs


def fits(lowering: Lowering, chain: Chain, s: GroupShape, t: GroupTiles) -> bool:
    """Every buffer's `lowering.buffers` 64-byte aligned slots fit in its memory."""
    used: dict[str, int] = {}
    for _, _, shape, memory, shared in buffer_specs(lowering, chain, s, t):
        copies = 1 if shared else lowering.copies(memory)
        used[memory] = used.get(memory, 0) + copies * lowering.buffers * (-(-F32 * math.prod(shape) // 64) * 64)
    return all(nbytes <= lowering.target.memory(m).size_bytes for m, nbytes in used.items())


def tile_candidates(lowering: Lowering, chain: Chain, s: GroupShape) -> list[GroupTiles]:
    """Strips of 1, 2, 4, ... output rows (and the whole height), blocks of channels that divide
    the expanded channels and fill the lanes (or any divisor, when only the whole does), that
    fit on chip."""
    rows = sorted({r for r in (1, 2, 4, 7, 8, 14, 16, 28, 32, 56, s.oh) if r <= s.oh})
    divisors = [b for b in range(1, s.e + 1) if s.e % b == 0]
    blocks = [b for b in divisors if b % lowering.lanes == 0 or b == s.e]
    if len(blocks) == 1:  # no smaller block fills the lanes (a CP rank of 69): every divisor
        blocks = divisors
    return [GroupTiles(r, b) for r in rows for b in blocks if fits(lowering, chain, s, GroupTiles(r, b))]


# --------------------------------------------------------------------------- the nest


@dataclass
class Linear:
    """An affine index expression over SSA index values, built in Python before it is given to
    an `IndexExprs` (each op has its own): `const + sum(coefficient * value)`."""

    const: int = 0
    terms: list[tuple[SSAValue, int]] = field(default_factory=list)

    @classmethod
    def of(cls, value: SSAValue | int) -> Linear:
        return cls(value) if isinstance(value, int) else cls(0, [(value, 1)])

    def __add__(self, other: Linear | int) -> Linear:
        other = other if isinstance(other, Linear) else Linear(other)
        return Linear(self.const + other.const, self.terms + other.terms)

    def __sub__(self, other: Linear | int) -> Linear:
        return self + (other if isinstance(other, Linear) else Linear(other)) * -1

    def __mul__(self, factor: int) -> Linear:
        return Linear(self.const * factor, [(value, c * factor) for value, c in self.terms])

    def expr(self, e: IndexExprs) -> AffineExpr:
        """The terms in order (equal values merged), then the constant."""
        merged: dict[SSAValue, int] = {}
        for value, coefficient in self.terms:
            merged[value] = merged.get(value, 0) + coefficient
        result = None
        for value, coefficient in merged.items():
            if coefficient:
                term = e(value) * coefficient
                result = term if result is None else result + term
        if result is None:
            return AffineExpr.constant(self.const)
        return result + self.const if self.const else result


@dataclass
class Rows:
    """The rows of one depthwise's input a strip uses: from `first` (in the unpadded image; row 0
    of its buffer), `count` of them, of which `top` .. `bottom` are inside the image (SSA values:
    tile.max / tile.min; None for a loaded first input, which the DMA pads)."""

    first: Linear
    count: Linear
    top: SSAValue | None = None
    bottom: SSAValue | None = None


def bound(cls, exprs: list[Linear | int], name: str) -> tile.BoundOp:
    e = IndexExprs()
    values = [(x if isinstance(x, Linear) else Linear(x)).expr(e) for x in exprs]
    op = cls.build(operands=[list(e.values)], result_types=[tile.INDEX], properties={"exprs": e.map(values)})
    op.result.name_hint = name
    return op


def strip_rows(body: Block, s: GroupShape, oh: SSAValue, toh: SSAValue, loaded_first: bool) -> list[Rows]:
    """Each depthwise's input rows for the strip `oh`, `toh`, from the last depthwise back (its
    output rows are the strip's; each earlier one's are the rows inside the image the next reads)."""
    out_first, out_count = Linear.of(oh), Linear.of(toh)
    rows: list[Rows] = []
    for i in reversed(range(len(s.windows))):
        window = s.windows[i]
        sh, pt = window.strides[0], window.pads[0]
        first = out_first * sh - pt
        count = out_count * sh + (window.extent(0) - sh)
        if i == 0 and loaded_first:
            rows.append(Rows(first, count))
            break
        suffix = "" if len(s.windows) == 1 else str(i + 1)
        top = bound(tile.MaxOp, [first, 0], f"top{suffix}")
        bottom = bound(tile.MinOp, [first + count, window.h], f"bottom{suffix}")
        body.add_op(top)
        body.add_op(bottom)
        rows.append(Rows(first, count, top.result, bottom.result))
        out_first, out_count = Linear.of(top.result), Linear.of(bottom.result) - Linear.of(top.result)
    return rows[::-1]


def fill(buffer: SSAValue, at: Linear | int, sizes: list[Linear | int], pitch: int | None) -> tile.FillOp:
    """Zero a [rows][columns][channels] part of `buffer`."""
    e = IndexExprs()
    exprs = [(x if isinstance(x, Linear) else Linear(x)).expr(e) for x in sizes]
    if pitch is not None:
        exprs.append(AffineExpr.constant(pitch))
    view = (at if isinstance(at, Linear) else Linear(at)).expr(e)
    return tile.FillOp.build(operands=[[buffer], list(e.values)],
                             properties={"views": e.map([view]), "sizes": e.map(exprs), "value": FloatAttr(0.0, f64)})


def add_border(body: Block, buffer: SSAValue, window: Window, rows: Rows, tcb: int) -> None:
    """Zero what a depthwise's input buffer holds outside the image: the rows above and below it
    and the padding columns (the producer writes the rows inside; the two are disjoint)."""
    wp, row = window.padded_width, window.padded_width * tcb
    pl, pr = window.pads[1], window.pads[3]
    top, bottom = Linear.of(rows.top), Linear.of(rows.bottom)
    body.add_op(fill(buffer, 0, [top - rows.first, wp, tcb], None))
    body.add_op(fill(buffer, (bottom - rows.first) * row, [rows.first + rows.count - bottom, wp, tcb], None))
    if pl:
        body.add_op(fill(buffer, 0, [rows.count, pl, tcb], row))
    if pr:
        body.add_op(fill(buffer, (pl + window.w) * tcb, [rows.count, pr, tcb], row))


def inside(window: Window, rows: Rows, tcb: int) -> Linear:
    """Where the rows inside the image start in a depthwise's input buffer (element offset)."""
    return ((Linear.of(rows.top) - rows.first) * window.padded_width + window.pads[1]) * tcb


def group_nest(lowering: Lowering, chain: Chain, s: GroupShape, t: GroupTiles, scan: bool, slots: int = 1) -> tile.NestOp:
    """The nest of `chain` with tiles `t` (not yet in @main; see `replace_with_group`)."""
    expand, project = chain.expand, chain.project
    dws = chain.depthwise
    named = [("X", chain.input), ("W1", expand.weight if expand else None), ("B1", expand.bias if expand else None)]
    for i, op in enumerate(dws):
        suffix = "" if len(dws) == 1 else str(i + 1)
        named += [(f"WD{suffix}", op.weight), (f"BD{suffix}", op.bias)]
    named += [("W2", project.weight), ("B2", project.bias), ("R", getattr(project, "residual", None))]
    block, args, inputs = nest_block(named, project.result)

    def relayout(name: str, shape, permutation) -> SSAValue:
        op = tile.RelayoutOp(args[name], shape, permutation)
        op.result.name_hint = f"{name}p"
        block.add_op(op)
        return op.result

    w1 = relayout("W1", [1, s.e, s.c, 1, 1], [0, 3, 4, 2, 1]) if expand else None
    wds = [relayout(name, [s.e, window.taps], [1, 0])
           for name, window in zip([n for n, _ in named if n.startswith("WD")], s.windows)]
    w2 = relayout("W2", [1, s.o, s.e, 1, 1], [0, 3, 4, 2, 1])
    buffers = {}
    for name, role, shape, memory, shared in buffer_specs(lowering, chain, s, t):
        op = tile.BufferOp(role, shape, memory, slots, shared)
        op.result.name_hint = name
        block.add_op(op)
        buffers[name] = op.result
    strips = tile.ForOp.build([(0, s.n, 1), (0, s.oh, t.toh)], "naive", lowering.cores, names=["n", "oh"])
    block.add_op(strips)
    n, _, oh, toh = strips.block.args
    body = strips.block
    rows = strip_rows(body, s, oh, toh, expand is None)
    if expand is not None:
        first = rows[0]
        body.add_op(slice_op(tile.LoadOp, args["X"], buffers["in"], [n, 0, first.top, 0],
                             [1, s.c, ((first.bottom, 1), (first.top, -1)), s.w], [2, 3, 1]))
    out_slice = ([n, 0, oh, 0], [1, s.o, toh, s.ow])
    if "R" in args:
        body.add_op(slice_op(tile.LoadOp, args["R"], buffers["out"], *out_slice, [2, 3, 1]))
    blocks = tile.ForOp.build([(0, s.e, t.tcb)], "serpentine" if scan else "naive", names=["cb"])
    body.add_op(blocks)
    cb, tcb = blocks.block.args
    inner = blocks.block
    names = intermediate_names(s)
    if expand is not None:
        inner.add_op(slice_op(tile.LoadOp, w1, buffers["w1b"], [0, 0, 0, 0, cb], [1, 1, 1, s.c, tcb], [3, 4]))
        if expand.bias is not None:
            inner.add_op(slice_op(tile.LoadOp, args["B1"], buffers["w1b"], [cb], [tcb], [0], at=s.c * t.tcb))
    else:
        first, window = rows[0], s.windows[0]
        inner.add_op(slice_op(tile.LoadOp, args["X"], buffers[names[0]],
                              [n, cb, tuple(first.first.terms) + (first.first.const,), -window.pads[1]],
                              [1, tcb, tuple(first.count.terms) + (first.count.const,), window.padded_width],
                              [2, 3, 1]))
    for name, wd, op, window in zip(weight_names(s), wds, dws, s.windows):
        inner.add_op(slice_op(tile.LoadOp, wd, buffers[name], [0, cb], [window.taps, tcb], [0, 1]))
        if op.bias is not None:
            bias_name = "BD" + name[2:-1]
            inner.add_op(slice_op(tile.LoadOp, args[bias_name], buffers[name], [cb], [tcb], [0],
                                  at=window.taps * t.tcb))
    inner.add_op(slice_op(tile.LoadOp, w2, buffers["w2b"], [0, 0, 0, cb, 0], [1, 1, 1, tcb, s.o], [3, 4]))
    if project.bias is not None:
        inner.add_op(slice_op(tile.LoadOp, args["B2"], buffers["w2b"], [0], [s.o], [0], at=t.tcb * s.o))
    if expand is not None:
        add_expand(inner, buffers, s, t, rows[0], expand)
    for i, (op, window) in enumerate(zip(dws, s.windows)):
        add_depthwise(inner, buffers, s, t, i, rows, toh, op)
    add_project(inner, buffers, s, t, toh, cb, project, "R" in args)
    body.add_op(slice_op(tile.StoreOp, args["Y"], buffers["out"], *out_slice, [2, 3, 1]))
    nodes = [node for op in chain.ops for node in nn.onnx_nodes_of(op)]
    nest = tile.NestOp(chain.name, inputs, [project.result.type], Region(block),
                       {"op": StringAttr("fused.group"), nn.ONNX_NODES: ArrayAttr([StringAttr(x) for x in nodes]),
                        "halo": StringAttr("recompute")})
    nest.results[0].name_hint = project.result.name_hint
    return nest


def add_expand(body: Block, buffers, s: GroupShape, t: GroupTiles, rows: Rows, op: Operation) -> None:
    """The expand conv writes the strip's rows inside the image into %m1, then the rest of %m1
    is zeroed (the fills on a post-processing unit then need not wait for the next block's
    expand on the matrix unit)."""
    window = s.windows[0]
    e = IndexExprs()
    views = [e(0), e(0), inside(window, rows, t.tcb).expr(e)] + ([e(s.c * t.tcb)] if op.bias is not None else [])
    conv(body, [buffers["in"], buffers["w1b"], buffers["m1"]], op, e, views,
         [e(rows.bottom) - e(rows.top), e(s.w), e(s.c), e(t.tcb), e(window.padded_width * t.tcb)], reduce=-1,
         onto=False)
    add_border(body, buffers["m1"], window, rows, t.tcb)


def add_depthwise(body: Block, buffers, s: GroupShape, t: GroupTiles, i: int, rows: list[Rows], toh,
                  op: Operation) -> None:
    """Depthwise `i` from its input buffer into the next one's (the rows inside the image, at
    their place in its zero border, which is then filled), or the last into the projection's input."""
    window, names = s.windows[i], intermediate_names(s)
    weights = buffers[weight_names(s)[i]]
    e = IndexExprs()
    if i + 1 < len(s.windows):
        following, after = s.windows[i + 1], rows[i + 1]
        at = inside(following, after, t.tcb).expr(e)
        sizes = [e(after.bottom) - e(after.top), e(window.ow), e(t.tcb), e(window.padded_width * t.tcb), e(t.tcb),
                 e(following.padded_width * t.tcb)]
    else:
        at = e(0)
        sizes = [e(toh), e(window.ow), e(t.tcb), e(window.padded_width * t.tcb), e(t.tcb)]
    views = [e(0), e(0), at] + ([e(window.taps * t.tcb)] if op.bias is not None else [])
    epilogue = fused_epilogue(op)
    body.add_op(tile.window_op(
        tile.DepthwiseOp, [buffers[names[i]], weights, buffers[names[i + 1]]] + ([weights] if op.bias is not None else []),
        views, e, sizes, list(window.kernel), list(window.strides), list(window.dilations), epilogue.act,
        epilogue_parameters(epilogue)))
    if i + 1 < len(s.windows):
        add_border(body, buffers[names[i + 1]], s.windows[i + 1], rows[i + 1], t.tcb)


def add_project(body: Block, buffers, s: GroupShape, t: GroupTiles, toh, cb, op: Operation, residual: bool) -> None:
    e = IndexExprs()
    views = [e(0), e(0), e(0)] + ([e(t.tcb * s.o)] if op.bias is not None else [])
    conv(body, [buffers[intermediate_names(s)[-1]], buffers["w2b"], buffers["out"]], op, e, views,
         [e(toh), e(s.ow), e(t.tcb), e(s.o)], reduce=e(cb).position, onto=residual)


def conv(body: Block, buffers: list[SSAValue], op: Operation, e: IndexExprs, views, sizes, reduce: int,
         onto: bool) -> None:
    """A 1x1 tile.conv of `op` (its bias and activation as the epilogue)."""
    epilogue = fused_epilogue(op)
    if op.bias is not None:
        buffers = buffers + [buffers[1]]
    body.add_op(tile.conv_op(buffers, views, e, sizes, [1, 1], [1, 1], [1, 1], reduce, onto, epilogue.act,
                             epilogue_parameters(epilogue)))


# --------------------------------------------------------------------------- choosing


def scratch(lowering: Lowering) -> Lowering:
    """`lowering` on a program of its own: what probes place in DRAM leaves the real one untouched."""
    return replace(lowering, program=Program(lowering.target, []), addresses={}, weight_cache={})


def predict(probe: Lowering, nest: tile.NestOp):
    """The cost model's prediction of `nest`, unrolled in the scratch lowering `probe`; the nest
    is erased afterwards (it is a probe, not in @main)."""
    from nncc.compiler.codegen.cost_model import predict_jobs
    from nncc.compiler.codegen.nest import NestLowering

    try:
        unrolled = NestLowering(probe, nest)
        return predict_jobs(probe.target, unrolled.kinds(), unrolled.jobs(), slots=probe.buffers, barriers=False)
    finally:
        nest.erase(safe_erase=False)


def rank(prediction, objective: str) -> tuple:
    """The cycles objective's order: the fastest, then the fewest DRAM bytes."""
    nbytes = prediction.dram_read_bytes + prediction.dram_write_bytes
    return (nbytes, prediction.cycles) if objective == "dram" else (prediction.cycles, nbytes)


def ranked(predictions: list, objective: str, floor: int = 0) -> list[int]:
    """Indices of `predictions` (cycles, DRAM bytes) best first. Cycles: by `rank`. DRAM: by
    `conv.preference`, the rule of the layers' tile search: bytes whose excess over `floor` (the
    traffic no schedule avoids, `compulsory_bytes`) is within its tolerance of the least excess
    tie, and among those the fastest wins; e.g. 6.03 MB compulsory, 55.1 and 55.5 MB tie, and
    the faster of them is taken."""
    import numpy as np

    from nncc.compiler.codegen.conv import preference

    if objective != "dram":
        return sorted(range(len(predictions)), key=lambda i: rank(predictions[i], objective))
    cycles = np.array([p.cycles for p in predictions], dtype=np.float64)
    nbytes = np.array([p.dram_read_bytes + p.dram_write_bytes for p in predictions], dtype=np.float64)
    return [int(i) for i in preference(cycles, nbytes, np.zeros(len(predictions)), objective, floor)]


def compulsory_bytes(ops) -> int:
    """DRAM bytes every schedule of the layers `ops` moves: each value they read from outside
    them (the input, weights, biases, a residual) and the last layer's result, once."""
    inside = {id(op) for op in ops}
    outside = {id(v): v for op in ops for v in op.operands if id(v.owner) not in inside}
    return F32 * (sum(math.prod(nn.shape_of(v)) for v in outside.values()) + math.prod(nn.shape_of(ops[-1].results[0])))


@dataclass
class Estimate:
    """A closed-form guess at a tiling's cost (what `best_group` short-lists by)."""

    cycles: float
    dram_read_bytes: int
    dram_write_bytes: int = 0


def strip_extents(s: GroupShape, oh: int, toh: int) -> list[tuple[int, int]]:
    """`strip_rows` in numbers: (top, bottom) of each depthwise's input rows inside the image."""
    out, first, count = [], oh, toh
    for window in reversed(s.windows):
        sh = window.strides[0]
        start = first * sh - window.pads[0]
        top, bottom = max(start, 0), min(start + count * sh + window.extent(0) - sh, window.h)
        out.append((top, bottom))
        first, count = top, bottom - top
    return out[::-1]


def strips(s: GroupShape, t: GroupTiles) -> list[tuple[int, list[tuple[int, int]]]]:
    """(output rows, each depthwise's input rows inside the image) of every strip of one image."""
    return [(min(t.toh, s.oh - oh), strip_extents(s, oh, min(t.toh, s.oh - oh))) for oh in range(0, s.oh, t.toh)]


def estimate(lowering: Lowering, chain: Chain, s: GroupShape, t: GroupTiles) -> Estimate:
    """DRAM bytes (the input rows with their halos; the weights of every block once per wave of
    strips the cores share, less the blocks the serpentine walk finds still on chip; the output
    and a residual) and cycles (each instruction's issue or on-chip traffic time, whichever is
    longer, summed per job as the units run in order, over the cores; or the DRAM time, if longer)."""
    target = lowering.target
    walk = strips(s, t)
    blocks = s.e // t.tcb
    in_rows = sum(extents[0][1] - extents[0][0] for _, extents in walk)
    weights = (s.c * s.e + s.e) * (chain.expand is not None) + sum((w.taps + 1) * s.e for w in s.windows) \
        + s.e * s.o + s.o * blocks
    waves = s.n * math.ceil(len(walk) / lowering.cores)
    reloaded = 0 if blocks <= 2 else (waves - 1) * (blocks - 2) / blocks  # serpentine keeps two blocks
    outputs = s.n * s.o * s.oh * s.ow
    residual = outputs if getattr(chain.project, "residual", None) is not None else 0
    read = F32 * (s.n * in_rows * s.w * (s.c if chain.expand is not None else s.e) + (1 + reloaded) * weights
                  + residual)
    work = sum(job_cycles(lowering, chain, s, t, toh, extents) for toh, extents in walk)
    cycles = max(s.n * blocks * work / lowering.cores, (read + F32 * outputs) / target.dram_bytes_per_cycle)
    return Estimate(cycles, int(read), F32 * outputs)


def job_cycles(lowering: Lowering, chain: Chain, s: GroupShape, t: GroupTiles, toh: int,
               extents: list[tuple[int, int]]) -> float:
    """The busy cycles of one block of one strip: expand (and its epilogue on a post unit),
    the depthwise taps, the project conv."""
    from nncc.runtime.timing import matmul_issue_cycles, vector_issue_cycles

    target = lowering.target
    main, vector = target.units["main"], target.units[lowering.vector_unit]
    bandwidth = target.memory_for("input").bandwidth_bytes_per_cycle

    def busy(unit, issue: float, elements: int) -> float:
        return max(issue, F32 * elements / bandwidth) + unit.pipeline_depth

    cycles = 0.0
    if chain.expand is not None:
        in_rows = extents[0][1] - extents[0][0]
        pixels = in_rows * s.w
        cycles += busy(main, matmul_issue_cycles(main, 1, pixels, t.tcb, s.c), pixels * (s.c + t.tcb) + s.c * t.tcb)
        if lowering.vector_unit != "main":  # bias and activation on the post unit
            cycles += 2 * busy(vector, vector_issue_cycles(vector, (in_rows, s.w, t.tcb), 1), 2 * pixels * t.tcb)
    out_rows = [bottom - top for top, bottom in extents[1:]] + [toh]
    for window, rows in zip(s.windows, out_rows):
        cycles += window.taps * busy(vector, vector_issue_cycles(vector, (rows, window.ow, t.tcb), 1),
                                     4 * rows * window.ow * t.tcb)
    out_pixels = toh * s.ow
    cycles += busy(main, matmul_issue_cycles(main, 1, out_pixels, s.o, t.tcb),
                   out_pixels * (t.tcb + 2 * s.o) + t.tcb * s.o)
    return cycles


SHORTLIST = 2  # tilings per group timed by the cost model, best estimates first


def best_group(lowering: Lowering, chain: Chain) -> tuple[GroupTiles, object] | None:
    """The group's tiles the cost model ranks first (by `lowering.objective`) among the
    `SHORTLIST` best estimated ones, and their prediction; None when no tiling fits."""
    s = group_shape(chain)
    probe, floor = scratch(lowering), compulsory_bytes(chain.ops)
    candidates = tile_candidates(lowering, chain, s)
    if not candidates:
        return None
    estimates = [estimate(lowering, chain, s, t) for t in candidates]
    shortlist = [candidates[i] for i in ranked(estimates, lowering.objective, floor)[:SHORTLIST]]
    timed = [predict(probe, group_nest(probe, chain, s, t, lowering.tile_order == "scan", lowering.buffers))
             for t in shortlist]
    best = ranked(timed, lowering.objective, floor)[0]
    return shortlist[best], timed[best]


def check_group(chain: Chain) -> None:
    if chain.project.input is not chain.depthwise[-1].result:
        raise NnccError(f"fuse-groups: {chain.name} is not a chain")


def replace_with_group(lowering: Lowering, chain: Chain, t: GroupTiles, slots: int = 1) -> tile.NestOp:
    """Put the group's nest in place of its layers in @main."""
    check_group(chain)
    nest = group_nest(lowering, chain, group_shape(chain), t, lowering.tile_order == "scan", slots)
    project = chain.project
    project.parent.insert_op_before(nest, project)
    project.result.replace_all_uses_with(nest.results[0])
    for op in reversed(chain.ops):
        op.detach()
        op.erase()
    return nest
