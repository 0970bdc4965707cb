"""The loop nest of a fused group: [1x1 expand ->] depthwise -> 1x1 project [+ residual], the
intermediates in on-chip buffers (MobileNetV2's inverted residual block, MobileNetV1's
depthwise-separable pair). What `fuse-groups` writes in place of the three (or two) layers.

Output rows are walked in strips of `toh` rows, dealt to the cores. Each strip loads the input
rows its depthwise window needs (the halo rows are recomputed by the 1x1 expand of the strips on
both sides: recompute, not cache, so strips stay independent and can go to any core), then walks
the expanded channels in blocks of `tcb`: the block's expand (into `%m1`, a zero-bordered image
of the depthwise's padded input), its depthwise (into `%m2`) and the project conv, which
accumulates the blocks onto the output strip (its reduction loop; a residual is loaded into the
output strip first). Only the group's input, its weights and its output see DRAM.

    tile.for %n[%tn] = 0 to 1 step 1, %oh[%toh] = 0 to 56 step 2 cores 4 order naive {
      %top = tile.max [%oh - 1, 0]
      %bottom = tile.min [%oh + %toh + 1, 56]
      tile.load %X[%n, 0, %top, 0] [1, 24, %bottom - %top, 56] -> %in[0] dims [2, 3, 1]
      tile.load %R[%n, 0, %oh, 0] [1, 24, %toh, 56] -> %out[0] dims [2, 3, 1]
      tile.for %cb[%tcb] = 0 to 144 step 48 order serpentine {
        (weight and bias loads of the block)
        tile.fill %m1[0] sizes [%top - (%oh - 1), 58, 48] value 0.0          (border rows, columns)
        tile.conv %in[0], %w1[0] -> %m1[((%top - %oh + 1) * 58 + 1) * 48] sizes [%bottom - %top, 56, 24, 48] pitch [2784] ...
        tile.depthwise %m1[0], %wd[0] -> %m2[0] sizes [%toh, 56, 48] pitch [2784, 48] ...
        tile.conv %m2[0], %w2[0] -> %out[0] sizes [%toh, 56, 48, 24] ... reduce %cb onto_output bias %w2[1152]
      }
      tile.store %out[0] -> %Y[%n, 0, %oh, 0] [1, 24, %toh, 56] dims [2, 3, 1]
    }
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from xdsl.dialects.builtin import ArrayAttr, StringAttr
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
    """The layers of a group, in order: the expand 1x1 (None: the depthwise reads the group's
    input), the depthwise conv and the project 1x1 (which may carry a residual)."""

    expand: Operation | None
    depthwise: Operation
    project: Operation

    @property
    def ops(self) -> list[Operation]:
        return [op for op in (self.expand, self.depthwise, self.project) if op is not None]

    @property
    def input(self) -> SSAValue:
        return self.ops[0].input

    @property
    def name(self) -> str:
        return "+".join(layer_name(op) for op in self.ops)


@dataclass(frozen=True)
class GroupShape:
    """Sizes of a group: input [n, c, h, w], expanded channels e, output [n, o, oh, ow], and the
    depthwise window (kernel, strides, pads top/left/bottom/right, dilations)."""

    n: int
    c: int
    h: int
    w: int
    e: int
    o: int
    oh: int
    ow: int
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilations: tuple[int, int]

    def extent(self, axis: int) -> int:
        """Input rows (0) or columns (1) one output row (column) reads: the kernel's span."""
        return (self.kernel[axis] - 1) * self.dilations[axis] + 1

    def rows(self, toh: int) -> int:
        """Rows of the depthwise's (padded) input that `toh` output rows read."""
        return (toh - 1) * self.strides[0] + self.extent(0)

    @property
    def padded_width(self) -> int:
        return self.w + self.pads[1] + self.pads[3]


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
    if op.name not in CONV_OPS:
        return False
    o, cg = nn.shape_of(op.weight)[:2]
    c = nn.shape_of(op.input)[1]
    return op.group.value.data == c == o and cg == 1 and c > 1 and getattr(op, "residual", None) is None


def single_use(value: SSAValue) -> Operation | None:
    uses = list(value.uses)
    return uses[0].operation if len(uses) == 1 else None


def chain_from(depthwise: Operation) -> Chain | None:
    """The group around a depthwise conv: its sole consumer a 1x1 reading it as input, its
    producer a 1x1 (no residual) it alone reads, if any."""
    if not is_depthwise_conv(depthwise):
        return None
    project = single_use(depthwise.result)
    if project is None or not is_pointwise(project) or project.input is not depthwise.result:
        return None
    producer = depthwise.input.owner
    expand = producer if isinstance(producer, Operation) and is_pointwise(producer) \
        and getattr(producer, "residual", None) is None and single_use(producer.result) is depthwise else None
    return Chain(expand, depthwise, project)


def find_chains(block: Block) -> list[Chain]:
    """Every group in @main's body, in program order (a layer is in one group at most)."""
    chains, taken = [], set()
    for op in block.ops:
        chain = chain_from(op)
        if chain is not None and not any(id(member) in taken for member in chain.ops):
            chains.append(chain)
            taken.update(id(member) for member in chain.ops)
    return chains


def group_shape(chain: Chain) -> GroupShape:
    n, c, h, w = nn.shape_of(chain.input)
    _, e, _, _ = nn.shape_of(chain.depthwise.input)
    _, o, oh, ow = nn.shape_of(chain.project.result)
    dw = chain.depthwise
    kh, kw = nn.shape_of(dw.weight)[2:]
    top, left, bottom, right = nn.ints(dw.pads)
    return GroupShape(n, c, h, w, e, o, oh, ow, (kh, kw), tuple(nn.ints(dw.strides)), (top, left, bottom, right),
                      tuple(nn.ints(dw.dilations)))


# --------------------------------------------------------------------------- buffers


def buffer_specs(lowering: Lowering, chain: Chain, s: GroupShape, t: GroupTiles) -> list[tuple]:
    """(name, role, shape, memory, shared) of every buffer of the group's nest. The first
    intermediate (written by a conv's output path) lives where outputs do, the second (read as
    a conv's input) where inputs do."""
    target = lowering.target
    memory = {role: target.memory_for(role).name for role in ("input", "weight", "output")}
    taps = s.kernel[0] * s.kernel[1]
    m1 = [s.rows(t.toh), s.padded_width, t.tcb]
    specs = []
    if chain.expand is not None:
        specs += [("in", "input", [s.rows(t.toh), s.w, s.c], memory["input"], False),
                  ("w1b", "weight", [s.c * t.tcb + t.tcb], memory["weight"], True),
                  ("m1", "intermediate", m1, memory["output"], False)]
    else:
        specs += [("m1", "input", m1, memory["input"], False)]
    specs += [("wdb", "weight", [(taps + 1) * t.tcb], memory["weight"], True),
              ("w2b", "weight", [t.tcb * s.o + s.o], memory["weight"], True),
              ("m2", "intermediate", [t.toh, s.ow, t.tcb], memory["input"], False),
              ("out", "output", [t.toh, s.ow, s.o], memory["output"], False)]
    return specs


def fits(lowering: Lowering, chain: Chain, s: GroupShape, t: GroupTiles) -> bool:
    """Every buffer's `lowering.buffers` 64-byte aligned slots fit in its memory."""
    used: dict[str, int] = {}
    for _, _, shape, memory, _ in buffer_specs(lowering, chain, s, t):
        used[memory] = used.get(memory, 0) + lowering.buffers * (-(-F32 * math.prod(shape) // 64) * 64)
    return all(nbytes <= lowering.target.memory(m).size_bytes for m, nbytes in used.items())


def tile_candidates(lowering: Lowering, chain: Chain, s: GroupShape) -> list[GroupTiles]:
    """Strips of 1, 2, 4, ... output rows (and the whole height), blocks of channels that divide
    the expanded channels, that fit on chip."""
    rows = sorted({r for r in (1, 2, 4, 7, 8, 14, 16, 28, 32, 56, s.oh) if r <= s.oh})
    blocks = sorted(b for b in range(1, s.e + 1) if s.e % b == 0 and (b % lowering.lanes == 0 or b == s.e))
    if not blocks:
        blocks = [b for b in range(1, s.e + 1) if s.e % b == 0]
    return [GroupTiles(r, b) for r in rows for b in blocks if fits(lowering, chain, s, GroupTiles(r, b))]


# --------------------------------------------------------------------------- the nest


def bound(cls, e: IndexExprs, exprs: list[AffineExpr], name: str) -> tile.BoundOp:
    op = cls.build(operands=[list(e.values)], result_types=[tile.INDEX], properties={"exprs": e.map(exprs)})
    op.result.name_hint = name
    return op


def fill(buffer: SSAValue, at: AffineExpr | int, sizes: list, pitch: int | None, e: IndexExprs) -> tile.FillOp:
    """Zero a [rows][columns][channels] part of `buffer` (sizes: expressions or ints)."""
    from xdsl.dialects.builtin import FloatAttr, f64

    exprs = [x if isinstance(x, AffineExpr) else AffineExpr.constant(x) for x in sizes]
    if pitch is not None:
        exprs.append(AffineExpr.constant(pitch))
    view = at if isinstance(at, AffineExpr) else AffineExpr.constant(at)
    return tile.FillOp.build(operands=[[buffer], list(e.values)],
                             properties={"views": e.map([view]), "sizes": e.map(exprs), "value": FloatAttr(0.0, f64)})


def group_nest(lowering: Lowering, chain: Chain, s: GroupShape, t: GroupTiles, scan: bool, slots: int = 1) -> tile.NestOp:
    """The nest of `chain` with tiles `t` (not yet in @main; see `replace_with_group`)."""
    expand, dw, project = chain.expand, chain.depthwise, chain.project
    named = [("X", chain.input), ("W1", expand.weight if expand else None),
             ("B1", expand.bias if expand else None), ("WD", dw.weight), ("BD", dw.bias),
             ("W2", project.weight), ("B2", project.bias), ("R", getattr(project, "residual", None))]
    block, args, inputs = nest_block(named, project.result)
    taps = s.kernel[0] * s.kernel[1]

    def relayout(name: str, shape, permutation) -> SSAValue:
        op = tile.RelayoutOp(args[name], shape, permutation)
        op.result.name_hint = f"{name}p"
        block.add_op(op)
        return op.result

    w1 = relayout("W1", [1, s.e, s.c, 1, 1], [0, 3, 4, 2, 1]) if expand else None
    wd = relayout("WD", [s.e, taps], [1, 0])
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
    sh = s.strides[0]
    pt, pl = s.pads[0], s.pads[1]
    wp = s.padded_width
    body = strips.block
    out_slice = ([n, 0, oh, 0], [1, s.o, toh, s.ow])
    e = IndexExprs()
    first_row = e(oh) * sh - pt  # the strip's first row of the depthwise input (may be above the image)
    if expand is not None:
        top = bound(tile.MaxOp, e, [first_row, AffineExpr.constant(0)], "top")
        e = IndexExprs()
        bottom = bound(tile.MinOp, e, [e(oh) * sh + e(toh) * sh + (s.extent(0) - sh - pt), AffineExpr.constant(s.h)],
                       "bottom")
        body.add_op(top)
        body.add_op(bottom)
        body.add_op(slice_op(tile.LoadOp, args["X"], buffers["in"], [n, 0, top.result, 0],
                             [1, s.c, ((bottom.result, 1), (top.result, -1)), s.w], [2, 3, 1]))
    if "R" in args:
        body.add_op(slice_op(tile.LoadOp, args["R"], buffers["out"], *out_slice, [2, 3, 1]))
    blocks = tile.ForOp.build([(0, s.e, t.tcb)], "serpentine" if scan else "naive", names=["cb"])
    body.add_op(blocks)
    cb, tcb = blocks.block.args
    inner = blocks.block
    if expand is not None:
        inner.add_op(slice_op(tile.LoadOp, w1, buffers["w1b"], [0, 0, 0, 0, cb], [1, 1, 1, s.c, tcb], [3, 4]))
        if expand.bias is not None:
            inner.add_op(slice_op(tile.LoadOp, args["B1"], buffers["w1b"], [cb], [tcb], [0], at=s.c * t.tcb))
    else:
        inner.add_op(slice_op(tile.LoadOp, args["X"], buffers["m1"], [n, cb, ((oh, sh), -pt), -pl],
                              [1, tcb, ((toh, sh), s.extent(0) - sh), wp], [2, 3, 1]))
    inner.add_op(slice_op(tile.LoadOp, wd, buffers["wdb"], [0, cb], [taps, tcb], [0, 1]))
    if dw.bias is not None:
        inner.add_op(slice_op(tile.LoadOp, args["BD"], buffers["wdb"], [cb], [tcb], [0], at=taps * t.tcb))
    inner.add_op(slice_op(tile.LoadOp, w2, buffers["w2b"], [0, 0, 0, cb, 0], [1, 1, 1, tcb, s.o], [3, 4]))
    if project.bias is not None:
        inner.add_op(slice_op(tile.LoadOp, args["B2"], buffers["w2b"], [0], [s.o], [0], at=t.tcb * s.o))
    if expand is not None:
        add_expand(inner, buffers, s, t, oh, toh, top.result, bottom.result, expand)
    add_depthwise(inner, buffers, s, t, toh, dw)
    add_project(inner, buffers, s, t, toh, cb, project, "R" in args)
    body.add_op(slice_op(tile.StoreOp, args["Y"], buffers["out"], *out_slice, [2, 3, 1]))
    nodes = [node for op in chain.ops for node in nn.onnx_nodes_of(op)]
    nest = tile.NestOp(chain.name, inputs, [project.result.type], Region(block),
                       {"op": StringAttr("fused.group"), nn.ONNX_NODES: ArrayAttr([StringAttr(x) for x in nodes])})
    nest.results[0].name_hint = project.result.name_hint
    return nest


def add_expand(body: Block, buffers, s: GroupShape, t: GroupTiles, oh, toh, top, bottom, op: Operation) -> None:
    """Zero the parts of %m1 outside the image (rows above and below it, the padding columns),
    then the expand conv writes the strip's rows inside the image."""
    sh, (pt, pl, _, pr) = s.strides[0], s.pads
    wp, row = s.padded_width, s.padded_width * t.tcb
    e = IndexExprs()
    body.add_op(fill(buffers["m1"], 0, [e(top) - e(oh) * sh + pt, wp, t.tcb], None, e))  # rows above the image
    e = IndexExprs()
    start = e(bottom) - e(oh) * sh + pt  # first row below the image
    below = e(oh) * sh + e(toh) * sh + (s.extent(0) - sh - pt) - e(bottom)
    body.add_op(fill(buffers["m1"], start * row, [below, wp, t.tcb], None, e))
    e = IndexExprs()
    rows = e(toh) * sh + (s.extent(0) - sh)
    if pl:
        body.add_op(fill(buffers["m1"], 0, [rows, pl, t.tcb], row, e))
    if pr:
        e = IndexExprs()
        body.add_op(fill(buffers["m1"], (pl + s.w) * t.tcb, [e(toh) * sh + (s.extent(0) - sh), pr, t.tcb], row, e))
    e = IndexExprs()
    at = ((e(top) - e(oh) * sh + pt) * wp + pl) * t.tcb
    views = [e(0), e(0), at] + ([e(s.c * t.tcb)] if op.bias is not None else [])
    conv(body, [buffers["in"], buffers["w1b"], buffers["m1"]], op, e, views,
         [e(bottom) - e(top), e(s.w), e(s.c), e(t.tcb), e(row)], reduce=-1, onto=False)


def add_depthwise(body: Block, buffers, s: GroupShape, t: GroupTiles, toh, op: Operation) -> None:
    e = IndexExprs()
    taps = s.kernel[0] * s.kernel[1]
    weights = buffers["wdb"]
    views = [e(0), e(0), e(0)] + ([e(taps * t.tcb)] if op.bias is not None else [])
    epilogue = fused_epilogue(op)
    body.add_op(tile.window_op(
        tile.DepthwiseOp, [buffers["m1"], weights, buffers["m2"]] + ([weights] if op.bias is not None else []), views, e,
        [e(toh), e(s.ow), e(t.tcb), e(s.padded_width * t.tcb), e(t.tcb)], list(s.kernel), list(s.strides),
        list(s.dilations), epilogue.act, epilogue_parameters(epilogue)))


def add_project(body: Block, buffers, s: GroupShape, t: GroupTiles, toh, cb, op: Operation, residual: bool) -> None:
    e = IndexExprs()
    views = [e(0), e(0), e(0)] + ([e(t.tcb * s.o)] if op.bias is not None else [])
    conv(body, [buffers["m2"], buffers["w2b"], buffers["out"]], op, e, views, [e(toh), e(s.ow), e(t.tcb), e(s.o)],
         reduce=e(cb).position, onto=residual)


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
    nbytes = prediction.dram_read_bytes + prediction.dram_write_bytes
    return (nbytes, prediction.cycles) if objective == "dram" else (prediction.cycles, nbytes)


@dataclass
class Estimate:
    """A closed-form guess at a tiling's cost (what `best_group` short-lists by)."""

    cycles: float
    dram_read_bytes: int
    dram_write_bytes: int = 0


def strips(s: GroupShape, t: GroupTiles) -> list[tuple[int, int]]:
    """(first, last + 1) input rows inside the image that each output strip reads (one image)."""
    out = []
    for oh in range(0, s.oh, t.toh):
        toh = min(t.toh, s.oh - oh)
        first = oh * s.strides[0] - s.pads[0]
        out.append((max(first, 0), min(first + s.rows(toh), s.h)))
    return out


def estimate(lowering: Lowering, chain: Chain, s: GroupShape, t: GroupTiles) -> Estimate:
    """DRAM bytes (the input rows with their halos; the weights of every block once per wave of
    strips the cores share, less the blocks the serpentine walk finds still on chip; the output
    and a residual) and cycles (each instruction's issue or on-chip traffic time, whichever is
    longer, summed per job as the units run in order, over the cores; or the DRAM time, if longer)."""
    target = lowering.target
    rows = strips(s, t)
    blocks = s.e // t.tcb
    taps = s.kernel[0] * s.kernel[1]
    in_rows = sum(b - a for a, b in rows)
    weights = (s.c * s.e + s.e) * (chain.expand is not None) + (taps + 1) * s.e + s.e * s.o + s.o * blocks
    waves = s.n * math.ceil(len(rows) / lowering.cores)
    reloaded = 0 if blocks <= 2 else (waves - 1) * (blocks - 2) / blocks  # serpentine keeps two blocks
    outputs = s.n * s.o * s.oh * s.ow
    residual = outputs if getattr(chain.project, "residual", None) is not None else 0
    read = F32 * (s.n * in_rows * s.w * (s.c if chain.expand is not None else s.e) + (1 + reloaded) * weights
                  + residual)
    work = sum(job_cycles(lowering, chain, s, t, b - a, min(t.toh, s.oh - i * t.toh)) for i, (a, b) in enumerate(rows))
    cycles = max(s.n * blocks * work / lowering.cores, (read + F32 * outputs) / target.dram_bytes_per_cycle)
    return Estimate(cycles, int(read), F32 * outputs)


def job_cycles(lowering: Lowering, chain: Chain, s: GroupShape, t: GroupTiles, in_rows: int, toh: int) -> float:
    """The busy cycles of one block of one strip: expand (and its epilogue on a post unit),
    the depthwise taps, the project conv."""
    from nncc.runtime.timing import matmul_issue_cycles, vector_issue_cycles

    target = lowering.target
    main, vector = target.units["main"], target.units[lowering.vector_unit]
    bandwidth = target.memory_for("input").bandwidth_bytes_per_cycle

    def busy(unit, issue: float, elements: int) -> float:
        return max(issue, F32 * elements / bandwidth) + unit.pipeline_depth

    pixels, out_pixels = in_rows * s.w, toh * s.ow
    cycles = 0.0
    if chain.expand is not None:
        cycles += busy(main, matmul_issue_cycles(main, 1, pixels, t.tcb, s.c), pixels * (s.c + t.tcb) + s.c * t.tcb)
        if lowering.vector_unit != "main":  # bias and activation on the post unit
            cycles += 2 * busy(vector, vector_issue_cycles(vector, (in_rows, s.w, t.tcb), 1), 2 * pixels * t.tcb)
    taps = s.kernel[0] * s.kernel[1]
    cycles += taps * busy(vector, vector_issue_cycles(vector, (toh, s.ow, t.tcb), 1), 4 * out_pixels * t.tcb)
    cycles += busy(main, matmul_issue_cycles(main, 1, out_pixels, s.o, t.tcb),
                   out_pixels * (t.tcb + 2 * s.o) + t.tcb * s.o)
    return cycles


SHORTLIST = 2  # tilings per group timed by the cost model, best estimates first


def best_group(lowering: Lowering, chain: Chain) -> tuple[GroupTiles, object] | None:
    """The group's tiles the cost model ranks first (by `lowering.objective`) among the
    `SHORTLIST` best estimated ones, and their prediction; None when no tiling fits."""
    s = group_shape(chain)
    best, probe = None, scratch(lowering)
    candidates = tile_candidates(lowering, chain, s)
    candidates.sort(key=lambda t: rank(estimate(lowering, chain, s, t), lowering.objective))
    for t in candidates[:SHORTLIST]:
        prediction = predict(probe, group_nest(probe, chain, s, t, lowering.tile_order == "scan", lowering.buffers))
        if best is None or rank(prediction, lowering.objective) < rank(best[1], lowering.objective):
            best = (t, prediction)
    return best


def check_group(chain: Chain) -> None:
    if chain.project.input is not chain.depthwise.result:
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
