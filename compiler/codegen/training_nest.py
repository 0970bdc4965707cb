"""The loop nests of training ops the back end lowers itself (not rewritten into forward ops by
`lower-training-ops`): conv backward-data as a conv nest reading its tensors through views,
conv backward-filter as a gemm nest, and the SGD update in one pass over each weight.

**Backward-data** (stride 1, group 1 or more than one channel per group on both sides): the conv
nest of a stride-1 conv of the output gradient (pads: the dilated kernel's extent minus the
forward pads) whose weights are the forward weights seen as [g][kh][kw][o][c] (a relayout: the
transpose is the DMA's gather) and flipped: one weight load per kernel tap, tap (i, j) of the
tile from tap (kh - 1 - i, kw - 1 - j). No transposed or flipped copy of the weights exists.
A strided backward-data is one nest of its phases (`phases_nest`): each phase (rows r, r + sh,
...; columns q, q + sw, ...) of dx the stride-1 conv of dy with the taps that reach it, stored in
place through a view of dx strided by (sh, sw) (no spread, transpose, concat or slice of dx).

**Backward-filter** (group 1): a gemm, dW^T[(tap, c), o] = sum over (n, y, x) of
x[n, c, y sh + i dh - pt, x sw + j dw - pl] dy[n, o, y, x] (`filter_nest`): the broadcast
operand's rows are (kernel tap, input channel) pairs, x loaded once per tap, shifted, so that each
row is one contiguous run of k = batch x output-gradient rows x OW; the output channels are the
lanes; the cores take different input channels and share the dy block. Every micro-kernel call
gets 6 rows and a long k, whatever the kernel (1x1 included) and the output size.

`nn.sgd` reads the weight, its gradient and (with momentum) its velocity once and writes the new
weight (and velocity) once: one `tile.map fma` per result, the factors (momentum, -lr, weight
decay) a three-element constant loaded beside the tiles and read with stride 0:

    %Cv = tile.view %C offset 0 sizes [1, 1, 3] strides [0, 0, 1] : ...
    tile.for %d0[%td0] = 0 to 1 step 1, %d1[%td1] = 0 to 1 step 1, %d2[%td2] = 0 to 1152 step 1152 cores 4 order naive {
      tile.load %Wv[%d0, %d1, %d2] [%td0, %td1, %td2] -> %in0[0] dims [0, 1, 2]
      tile.load %Gv[%d0, %d1, %d2] [%td0, %td1, %td2] -> %in1[0] dims [0, 1, 2]
      tile.load %Vv[%d0, %d1, %d2] [%td0, %td1, %td2] -> %in2[0] dims [0, 1, 2]
      tile.load %Cv[0, 0, 0] [1, 1, 3] -> %k[0] dims [0, 1, 2]
      tile.map fma %in2[0], %k[0] broadcast [0, 1, 2], %in1[0] -> %vel[0] shape [%td0, %td1, %td2]    # v' = m v + g
      tile.map fma %vel[0], %k[1] broadcast [0, 1, 2], %in0[0] -> %out[0] shape [%td0, %td1, %td2]   # w' = -lr v' + w
      tile.store %out[0] -> %Yv[%d0, %d1, %d2] [%td0, %td1, %td2] dims [0, 1, 2]
      tile.store %vel[0] -> %Y1v[%d0, %d1, %d2] [%td0, %td1, %td2] dims [0, 1, 2]
    }

With weight decay the step d = g + wd w is one more fma (into the velocity tile); without
momentum w' = -lr d + w directly. DRAM traffic: 3 (5 with momentum) x 4 bytes per weight, the
least an update that keeps weight, gradient and velocity in DRAM can move.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import ArrayAttr, FloatAttr, IntegerAttr, StringAttr, f64, i64
from xdsl.ir import Block, Operation, Region, SSAValue

from nncc.compiler.codegen.context import F32, Lowering, layer_name
from nncc.compiler.codegen.conv import ConvShape, ConvTiles, choose_tiles
from nncc.compiler.codegen.conv_nest import ConvTensors, Strided, conv_nest
from nncc.compiler.codegen.epilogue import Epilogue
from nncc.compiler.codegen.nest import lower_detached, lower_nest
from nncc.compiler.codegen.nest_fit import fits, fitting
from nncc.compiler.codegen.nest_builder import IndexExprs, add_buffers, finish_nest, nest_block, slice_op
from nncc.compiler.codegen.stream_nest import constant_weight, map_op
from nncc.dialects import nn, tile
from nncc.runtime import timing
from nncc.support.errors import NnccError

K_MOMENTUM, K_LR, K_DECAY = 0, 1, 2


def sgd_nest(lowering: Lowering, op: nn.SgdOp, slots: int = 1) -> tile.NestOp:
    """The one-pass update of `op` (results: the new weight, and the new velocity with momentum)."""
    lr, momentum, decay = (float(a.value.data) for a in (op.lr, op.momentum, op.weight_decay))
    count = math.prod(nn.shape_of(op.weight))
    factors = constant_weight(lowering, op, f"{layer_name(op)}.sgd", np.array([momentum, -lr, decay], np.float32))
    velocity = op.velocity is not None
    tensors = [("W", op.weight), ("G", op.grad)] + ([("V", op.velocity)] if velocity else []) + [("C", factors)]
    outputs = [("Y", op.result)] + ([("Y1", op.new_velocity)] if velocity else [])
    block = Block(arg_types=[v.type for _, v in tensors + outputs])
    args = {}
    for (name, _), arg in zip(tensors + outputs, block.args):
        arg.name_hint = name
        args[name] = arg
    streams = len(tensors) - 1 + len(outputs)  # tiles of `count` elements on chip at once
    budget = lowering.capacity("input") // (4 * F32 * streams)
    step = max(1, min(count, budget))
    views = {}
    for name in [n for n, _ in tensors + outputs]:
        size = 3 if name == "C" else count
        view = tile.ViewOp(args[name], 0, [1, 1, size], [0, 0, 1])
        view.result.name_hint = f"{name}v"
        block.add_op(view)
        views[name] = view.result
    specs = [(f"in{i}", "input", [1, 1, step], False) for i in range(len(tensors) - 1)] + \
        [("k", "input", [1, 1, 3], False), ("out", "output", [1, 1, step], False)] + \
        ([("vel", "output", [1, 1, step], False)] if velocity or decay else [])
    buffers = add_buffers(lowering, block, specs, slots)
    loop = tile.ForOp.build([(0, 1, 1), (0, 1, 1), (0, count, step)], "naive", lowering.cores,
                            names=["d0", "d1", "d2"])
    block.add_op(loop)
    body = loop.block
    ivs, extents = body.args[0::2], body.args[1::2]
    for index, (name, _) in enumerate(tensors[:-1]):
        body.add_op(slice_op(tile.LoadOp, views[name], buffers[f"in{index}"], ivs, extents, [0, 1, 2]))
    body.add_op(slice_op(tile.LoadOp, views["C"], buffers["k"], [0, 0, 0], [1, 1, 3], [0, 1, 2]))
    e = IndexExprs()
    shape = [e(x) for x in extents]
    w, g = (buffers["in0"], 0, 0), (buffers["in1"], 0, 0)
    k = lambda index: (buffers["k"], index, 7)  # noqa: E731  a factor, broadcast over the tile
    out = (buffers["out"], 0, 0)
    step_view = g
    if decay:  # d = wd w + g
        step_view = (buffers["vel"], 0, 0)
        body.add_op(map_op(e, "fma", [w, k(K_DECAY), g, step_view], shape))
    if velocity:  # v' = m v + d
        new_v = (buffers["vel"], 0, 0)
        body.add_op(map_op(e, "fma", [(buffers["in2"], 0, 0), k(K_MOMENTUM), step_view, new_v], shape))
        step_view = new_v
    body.add_op(map_op(e, "fma", [step_view, k(K_LR), w, out], shape))  # w' = -lr d + w
    body.add_op(slice_op(tile.StoreOp, views["Y"], buffers["out"], ivs, extents, [0, 1, 2]))
    if velocity:
        body.add_op(slice_op(tile.StoreOp, views["Y1"], buffers["vel"], ivs, extents, [0, 1, 2]))
    attributes = {"op": StringAttr(op.name), nn.ONNX_NODES: op.attributes.get(nn.ONNX_NODES, ArrayAttr([]))}
    nest = tile.NestOp(layer_name(op), [v for _, v in tensors], [v.type for _, v in outputs], Region(block),
                       attributes)
    for result, (_, value) in zip(nest.results, outputs):
        result.name_hint = value.name_hint
    return nest


def lower_sgd(lowering: Lowering, op: Operation):
    """A lowering-table entry: the update's nest, made and unrolled now (results at `op`'s addresses)."""
    nest = sgd_nest(lowering, op, lowering.buffers)
    for result, value in zip(nest.results, op.results):
        lowering.addresses[result] = lowering.address(value)
    return lower_nest(lowering, nest)


# --------------------------------------------------------------------------- conv backward


def backward_data_pads(op) -> tuple[int, int, int, int]:
    """The pads of the stride-1 conv of dy that gives dx (negative: dy would need cropping)."""
    (dh, dw), pads = nn.ints(op.dilations), nn.ints(op.pads)
    _, _, h, w = nn.shape_of(op.result)
    _, _, kh, kw = nn.shape_of(op.weight)
    _, _, oh, ow = nn.shape_of(op.grad)
    top, left = (kh - 1) * dh - pads[0], (kw - 1) * dw - pads[1]
    return top, left, h + (kh - 1) * dh - top - oh, w + (kw - 1) * dw - left - ow


def backward_data_shape(op) -> ConvShape | None:
    """The conv a stride-1 backward-data op is as a nest of this module, or None (strided,
    cropping, or depthwise-like: `phases_shape` or lower-training-ops)."""
    strides, group = nn.ints(op.strides), op.group.value.data
    o, cg, kh, kw = nn.shape_of(op.weight)
    pads = backward_data_pads(op)
    if tuple(strides) != (1, 1) or min(pads) < 0 or (group > 1 and min(cg, o // group) < 2):
        return None
    n, _, oh, ow = nn.shape_of(op.grad)
    _, c, h, w = nn.shape_of(op.result)
    return ConvShape(n, o, oh, ow, c, kh, kw, h, w, (1, 1), pads, tuple(nn.ints(op.dilations)), group)


def forward_conv_shape(op) -> ConvShape:
    """The forward conv of a backward-filter op: the shape of its gemm (`filter_nest`)."""
    n, c, h, w = nn.shape_of(op.input)
    o, _, kh, kw = nn.shape_of(op.result)
    _, _, oh, ow = nn.shape_of(op.grad)
    return ConvShape(n, c, h, w, o, kh, kw, oh, ow, tuple(nn.ints(op.strides)), tuple(nn.ints(op.pads)),
                     tuple(nn.ints(op.dilations)), 1)


def backward_filter_shape(op, lowering: Lowering | None = None) -> ConvShape | None:
    """The conv a backward-filter op is (group 1; else None) as a conv nest whose images are the
    input channels (`fused.conv2d_backward_filter_pre`, which normalises each image's tiles on
    the pre unit), its kernel a block of output-gradient rows that divides them (`kernel_block`;
    the whole plane without a lowering). Plain backward-filters are a gemm (`filter_nest`)."""
    if op.group.value.data != 1:
        return None
    n, c, h, w = nn.shape_of(op.input)
    o, _, kh, kw = nn.shape_of(op.result)
    _, _, oh, ow = nn.shape_of(op.grad)
    rows = kernel_block(lowering, n, o, oh, ow) if lowering is not None else oh
    return ConvShape(c, n, h, w, o, rows, ow, kh, kw, tuple(nn.ints(op.dilations)), tuple(nn.ints(op.pads)),
                     tuple(nn.ints(op.strides)), 1)


def kernel_block(lowering: Lowering, n: int, o: int, oh: int, ow: int) -> int:
    """Output-gradient rows per weight tile of a backward-filter nest: the most rows (a divisor
    of `oh`) whose tile of the whole batch and up to 64 output channels takes at most an eighth of
    the weight memory (room for the tile search's choice of channels and double buffering)."""
    budget = lowering.capacity("weight") // 8
    per_row = F32 * ow * n * min(o, 64)
    fitting = [d for d in range(1, oh + 1) if oh % d == 0 and d * per_row <= budget]
    return max(fitting, default=1)


def backward_tensors(op, s: ConvShape) -> ConvTensors:
    """The DRAM tensors of a backward conv's nest, seen in the layouts the conv nest reads."""
    if op.name == "nn.conv2d_backward_data":
        o, cg, kh, kw = nn.shape_of(op.weight)
        g = s.group
        return ConvTensors(op.grad, op.weight, None, None, op.result,
                           ([g, o // g, cg, kh, kw], [0, 3, 4, 1, 2]), flip=True)
    n, c, h, w = nn.shape_of(op.input)
    o, _, kh, kw = nn.shape_of(op.result)
    _, _, oh, ow = nn.shape_of(op.grad)
    plane = oh * ow
    return ConvTensors(op.input, op.grad, None, None, op.result,
                       Strided(0, (1, oh, ow, n, o), (0, ow, 1, o * plane, plane)),
                       input_view=Strided(0, (c, n, h, w), (h * w, c * h * w, w, 1)),
                       output_view=Strided(0, (c, o, kh, kw), (kh * kw, c * kh * kw, kw, 1)),
                       full_kernel_rows=oh)


def backward_tiles(lowering: Lowering, op, s: ConvShape) -> ConvTiles:
    """The cost model's tiles; for backward-data, with the input channels cut to a divisor when
    neither channel tile divides its extent (the flipped taps are packed by fixed extents)."""
    t = choose_tiles(lowering, s, layer_name(op), bias=False)
    if op.name == "nn.conv2d_backward_data" and s.og % t.toc and s.cg % t.tic:
        t = dataclasses.replace(t, tic=max(d for d in range(1, t.tic + 1) if s.cg % d == 0))
    return t


SMALL_PLANE = 32  # output pixels per image below which a backward-data tile may take several images


def with_images(lowering: Lowering, key, s: ConvShape, t: ConvTiles, build) -> ConvTiles:
    """`t`, or `t` with several images per tile (`ConvTiles.images`, a divisor of the batch) when
    its tile is a whole plane of a few pixels (ResNet's last stage at 64x64: 2x2): the one the
    cost model times fastest among those whose nest (`build(tiles)`) fits; once per `key`."""
    from nncc.compiler.codegen.group_nest import predict, scratch

    if (t.toh, t.tow) != (s.oh, s.ow) or s.oh * s.ow >= SMALL_PLANE or s.strides[0] != 1:
        return t
    key = ("images per tile", key)
    if key not in lowering.cost_cache:
        probe = scratch(lowering)
        timed = []
        for images in [d for d in range(1, s.n + 1) if s.n % d == 0]:
            option = dataclasses.replace(t, images=images)
            nest = build(probe, option)
            fit = fits(probe, nest)
            timed.append((predict(probe, nest).cycles if fit else float("inf"), images, option))
            if not fit:  # a probe: predict erased the others
                nest.erase(safe_erase=False)
        lowering.cost_cache[key] = min(timed, key=lambda item: item[:2])[2]
    return lowering.cost_cache[key]


def backward_nests(lowering: Lowering, op, slots: int) -> list[tile.NestOp]:
    """The nests of a backward conv op that lower-training-ops left to the back end, in order (a
    backward-filter whose reduction the cores split: its partial sums, then their sum)."""
    if op.name == "nn.conv2d_backward_filter":
        if op.group.value.data != 1:
            return [depthwise_filter_nest(lowering, op, slots)]
        return backward_filter_nests(lowering, op, slots)
    if tuple(nn.ints(op.strides)) != (1, 1):
        return [phases_nest(lowering, op, slots)]
    s = backward_data_shape(op)

    def build(lw, t):
        return conv_nest(lw, op, s, t, backward_tensors(op, s), Epilogue(), lw.tile_order == "scan", "channels", slots)
    tiles = with_images(lowering, ("backward-data", s, slots), s, backward_tiles(lowering, op, s), build)
    return [build(lowering, tiles)]


def backward_filter_nests(lowering: Lowering, op, slots: int) -> list[tile.NestOp]:
    """A backward-filter's nests in the mapping the cost model predicts faster (DRAM bytes break
    ties; once per shape): the gemm (`filter_nest`: long reductions, what a vector DSP wants; for
    kernels wider than 1 or a column stride, also with x's rows staged once per kernel row and
    each tap's run copied out on chip; at stride 1, also with x's rows staged once per step and
    every tap read in place, `window_filter_nest`; with fewer channel tiles than cores, also with the reduction split over the cores and the partial sums added by
    a second nest, `filter_sum_nest`), or the conv nest whose images are the input channels
    (`backward_filter_shape`: on a matrix array at small feature maps the gemm's rows, kernel
    taps x input channels, can be fewer than the array's)."""
    from nncc.compiler.codegen.group_nest import predict, scratch

    gemm = forward_conv_shape(op)
    conv = backward_filter_shape(op, lowering)
    builders = {}
    # with x's rows loaded once per kernel row, whole, its taps' runs copied out on chip; each
    # mapping only when some tiling of it fits (not a 224 stem's on `edge`)
    stagings = [staged for staged in sorted({False, gemm.kw > 1 or gemm.strides[1] > 1})
                if tiles_fit(lowering, gemm, staged)]
    for staged in stagings:
        builders[f"gemm{', rows staged' if staged else ''}"] = \
            lambda lw, staged=staged: [filter_nest(lw, op, gemm, filter_tiles(lw, gemm, staged), slots, staged)]
    if window_fits(gemm) and window_tiles_fit(lowering, gemm):
        builders["gemm, taps in place"] = \
            lambda lw: [window_filter_nest(lw, op, gemm, window_filter_tiles(lw, gemm), slots)]
    parts = lowering.cores
    if parts > 1 and gemm.oh % parts == 0 and stagings and \
            -(-gemm.c // filter_tiles(lowering, gemm, stagings[0]).channels) < parts:
        for staged in stagings:  # the channel tiles leave cores idle: split k
            if tiles_fit(lowering, part_shape(gemm, parts), staged, parts):
                builders[f"gemm, k split{', rows staged' if staged else ''}"] = \
                    lambda lw, staged=staged: split_filter_nests(lw, op, gemm, parts, slots, staged)
    if conv is not None:
        builders["conv"] = lambda lw: [conv_nest(lw, op, conv, backward_tiles(lw, op, conv), backward_tensors(op, conv),
                                                 Epilogue(), lw.tile_order == "scan", "channels", slots)]
    if not builders:
        raise NnccError(f"layer {layer_name(op)}: backward-filter {gemm}: not even one channel and one "
                        "output-gradient row fit on chip")
    key = ("backward-filter mapping", gemm, slots)
    if key not in lowering.cost_cache:
        probe = scratch(lowering)

        def rank(name: str) -> tuple:
            predictions = [predict(probe, nest) for nest in builders[name](probe)]
            cycles = sum(p.cycles for p in predictions)
            nbytes = sum(p.dram_read_bytes + p.dram_write_bytes for p in predictions)
            return (nbytes, cycles) if lowering.objective == "dram" else (cycles, nbytes)
        lowering.cost_cache[key] = min(builders, key=rank)
    return builders[lowering.cost_cache[key]](lowering)


def window_tiles_fit(lowering: Lowering, s: ConvShape) -> bool:
    try:
        window_filter_tiles(lowering, s)
    except NnccError:
        return False
    return True


def tiles_fit(lowering: Lowering, s: ConvShape, staged: bool, parts: int = 1) -> bool:
    """Whether some tiling of the gemm fits (whole staged rows of a wide stem can't)."""
    try:
        filter_tiles(lowering, s, staged, parts)
    except NnccError:
        return False
    return True


def part_shape(s: ConvShape, parts: int) -> ConvShape:
    """One core's part of a backward-filter gemm whose reduction the cores split: OH / parts dy rows."""
    return ConvShape(s.n, s.c, s.h, s.w, s.o, s.kh, s.kw, s.oh // parts, s.ow, s.strides, s.pads, s.dilations, 1)


# --------------------------------------------------------------------------- strided backward-data: phases


@dataclass(frozen=True)
class Phase:
    """Along one axis, the input positions r, r + s, r + 2s, ... of a stride-s conv's input: the
    kernel taps that reach them (`first`, every `step`-th, `count` of them) and the stride-1
    conv relation of those positions with the output gradient (`dilation`, pads)."""

    length: int  # positions of this phase
    first: int
    step: int
    count: int
    dilation: int
    pads: tuple[int, int]


def axis_phases(size: int, kernel: int, stride: int, pad: int, dilation: int, out: int) -> list[Phase | None]:
    """Every phase r < stride of an input axis of `size` (None: no tap reaches it, its gradient is 0)."""
    phases: list[Phase | None] = []
    for r in range(stride):
        taps = [k for k in range(kernel) if (k * dilation - r - pad) % stride == 0]
        length = len(range(r, size, stride))
        if not taps or not length:
            phases.append(None)
            continue
        step = taps[1] - taps[0] if len(taps) > 1 else 1
        dil = step * dilation // stride if len(taps) > 1 else 1  # one tap: any dilation
        top = (pad + r - taps[0] * dilation) // stride
        bottom = (out - 1) + (len(taps) - 1) * dil - (length - 1) - top
        phases.append(Phase(length, taps[0], step, len(taps), dil, (top, bottom)))
    return phases


def output_phases(op) -> tuple[list, list]:
    """The phases of a strided backward-data's rows and columns."""
    strides, pads, dilations = nn.ints(op.strides), nn.ints(op.pads), nn.ints(op.dilations)
    _, _, h, w = nn.shape_of(op.result)
    _, _, kh, kw = nn.shape_of(op.weight)
    _, _, oh, ow = nn.shape_of(op.grad)
    return (axis_phases(h, kh, strides[0], pads[0], dilations[0], oh),
            axis_phases(w, kw, strides[1], pads[1], dilations[1], ow))


@dataclass(frozen=True)
class PhaseConv:
    """Phase (r, q) of a strided backward-data: dx[:, :, r::sh, q::sw], the stride-1 conv of dy
    with the kernel taps that reach those positions (`rows` x `cols`; None: no tap, zeros). Its
    window of dy starts `window_start` rows and columns before the tile's (negative: after it;
    outside dy is zero padding, so no phase needs dy cropped)."""

    r: int
    q: int
    rows: Phase | None
    cols: Phase | None
    length: tuple[int, int]  # positions of dx in this phase, rows and columns

    @property
    def taps(self) -> int:
        return self.rows.count * self.cols.count if self.rows and self.cols else 0

    @property
    def window_start(self) -> tuple[int, int]:  # backward_data_pads of the phase's stride-1 conv
        return tuple((ph.count - 1) * ph.dilation - ph.pads[0] for ph in (self.rows, self.cols))


def phase_convs(op) -> list[PhaseConv] | None:
    """The phases of a strided backward-data (rows major; those with no positions left out), or
    None when this module does not write it (stride 1, or one output-gradient channel per group: depthwise)."""
    (sh, sw), group = nn.ints(op.strides), op.group.value.data
    o, cg, _, _ = nn.shape_of(op.weight)
    _, _, h, w = nn.shape_of(op.result)
    if (sh, sw) == (1, 1) or (group > 1 and o // group < 2):
        return None
    phases = output_phases(op)
    return [PhaseConv(r, q, rows, cols, (len(range(r, h, sh)), len(range(q, w, sw))))
            for r, rows in enumerate(phases[0]) for q, cols in enumerate(phases[1])
            if r < h and q < w]


def phases_shape(op) -> ConvShape | None:
    """The conv that stands for a strided backward-data's phases in the tile search (None: not
    written by `phases_nest`): a stride-1 conv with the whole kernel onto the phase grid times
    the strides (ceil(h / sh) sh x ceil(w / sw) sw), whose tiles hold about what the phases'
    do: every tap's weights, the s*s phases' outputs, their dy windows (spread: the stand-in
    counts s*s times the MACs and dy bytes, alike for every tiling)."""
    phases = phase_convs(op)
    if phases is None or not any(p.taps for p in phases):
        return None
    (sh, sw), (dh, dw) = nn.ints(op.strides), nn.ints(op.dilations)
    n, o, _, _ = nn.shape_of(op.grad)
    _, c, _, _ = nn.shape_of(op.result)
    _, _, kh, kw = nn.shape_of(op.weight)
    hm, wm = max(p.length[0] for p in phases) * sh, max(p.length[1] for p in phases) * sw
    top, left = (kh - 1) * dh // 2, (kw - 1) * dw // 2
    pads = (top, left, (kh - 1) * dh - top, (kw - 1) * dw - left)
    return ConvShape(n, o, hm, wm, c, kh, kw, hm, wm, (1, 1), pads, (dh, dw), op.group.value.data)


def phase_tiles(lowering: Lowering, op, s: ConvShape) -> ConvTiles:
    """The stand-in's tiles (`phases_shape`, the flipped taps' divisor rule) as tiles of the phase
    grid: output rows and columns divided by the strides."""
    (sh, sw), t = nn.ints(op.strides), backward_tiles(lowering, op, s)
    return dataclasses.replace(t, toh=max(1, t.toh // sh), tow=max(1, t.tow // sw))


def phases_nest(lowering: Lowering, op, slots: int) -> tile.NestOp:
    """A strided backward-data as one nest (`build_phases_nest`) with `phase_tiles`, shrunk until
    the phases' buffers fit, in the form the cost model predicts faster (DRAM bytes break ties;
    once per shape): each phase stored through its strided view of dx, or the phases
    interleaved on chip and dx stored in whole rows (where a strided view would cost a DRAM
    burst per float: NCHW on `vector`)."""
    from nncc.compiler.codegen.group_nest import predict, rank, scratch

    s = phases_shape(op)
    grid = dataclasses.replace(s, oh=s.oh // nn.ints(op.strides)[0], ow=s.ow // nn.ints(op.strides)[1])
    key = ("phase tiles", s, tuple(nn.shape_of(op.result)), tuple(nn.ints(op.strides)), slots)
    if key not in lowering.cost_cache:
        probe, forms = scratch(lowering), []
        for interleave in (False, True):
            t = fitting(lowering, grid, phase_tiles(lowering, op, s),
                        lambda t: build_phases_nest(lowering, op, grid, t, slots, interleave))
            if t is not None:
                prediction = predict(probe, build_phases_nest(probe, op, grid, t, slots, interleave))
                forms.append((rank(prediction, lowering.objective), interleave, t))
        if not forms:
            raise NnccError(f"layer {layer_name(op)}: the phases of the strided backward-data do not fit on chip")
        lowering.cost_cache[key] = min(forms, key=lambda form: form[:2])[1:]
    interleave, t = lowering.cost_cache[key]
    return build_phases_nest(lowering, op, grid, t, slots, interleave)


def build_phases_nest(lowering: Lowering, op, s: ConvShape, t: ConvTiles, slots: int,
                      interleave: bool = False) -> tile.NestOp:
    """dx of a stride-(sh, sw) conv written in place, phase by phase, in one nest: per tile of the
    phase grid and block of dy channels, each phase (r, q) loads its dy window and its kernel
    taps (flipped, packed one phase after another: every tap once) and runs its stride-1 conv
    into its part of the output buffer; after the last block each phase's tile is stored
    through its view of dx (rows r, r + sh, ...; columns q, q + sw, ...), phases no tap reaches
    get a zero tile. No spread, transpose, concat or slice of dx.

    `interleave`: the phases' tiles are one tile of dx on chip, [sh toh][sw tow][toc] (phase
    (r, q) written by its conv at row r, column q, with `pitch [sh sw tow toc, sw toc]`; zeros
    first where some phase has no tap), stored in whole rows through dx itself: where a strided
    view costs a DRAM burst per float (NCHW on `vector`), a run per row of the tile instead.

        tile.fill %out[0] sizes [16, 16, 64] value 0.0                   (a phase with no tap)
        tile.conv %in[0], %wt[0] -> %out[0] sizes [%toh, %tow, %tic, %toc] pitch [2048, 128] ...
        tile.store %out[0] strides [1024, 64, 1] -> %Y[%n, %oc, %oh * 2, %ow * 2] [1, %toc, %rows, %cols] dims [2, 3, 1]

        %Y0 = tile.view %Y offset 0 sizes [8, 128, 8, 8] strides [32768, 256, 32, 2]   (phase 0, 0)
        %Y1 = tile.view %Y offset 1 sizes [8, 128, 8, 8] strides [32768, 256, 32, 2]   (phase 0, 1)
        ...
        tile.for %oc[%toc] = 0 to 128 step 64 order naive {
          tile.for %n[%tn] = 0 to 8 step 1, %oh[%toh] = 0 to 8 step 8, %ow[%tow] = 0 to 8 step 8 ... {
            tile.for %ic[%tic] = 0 to 128 step 32 order serpentine {
              tile.load %DY[%n, %ic, %oh, %ow] [1, %tic, %toh, %tow] -> %in[0] dims [2, 3, 1]
              tile.load %Wp[0, 1, 1, %ic, %oc] [1, 1, 1, %tic, %toc] -> %wt[0] dims [1, 2, 3, 4]
              tile.conv %in[0], %wt[0] -> %out[0] sizes [%toh, %tow, %tic, %toc] kernel [1, 1] ... reduce %ic
              tile.load %DY[%n, %ic, %oh, %ow - 1] [1, %tic, %toh, %tow + 1] -> %in[2400] dims [2, 3, 1]
              ...                                                    (phases (0, 1), (1, 0), (1, 1))
            }
            tile.store %out[0] -> %Y0[%n, %oc, %oh, %ow] [1, %toc, %toh, %tow] dims [2, 3, 1] strides [...]
            ...
          }
        }
    """
    phases = phase_convs(op)
    n, c, h, w = nn.shape_of(op.result)
    o, cg_w, kh, kw = nn.shape_of(op.weight)
    (sh, sw), g = nn.ints(op.strides), s.group
    block, args, inputs = nest_block([("DY", op.grad), ("W", op.weight)], op.result)
    weights = tile.RelayoutOp(args["W"], [g, o // g, cg_w, kh, kw], [0, 3, 4, 1, 2])  # [g][kh][kw][o][c]
    weights.result.name_hint = "Wp"
    block.add_op(weights)
    views = []
    for p in ([] if interleave else phases):
        view = tile.ViewOp(args["Y"], p.r * w + p.q, [n, c, *p.length], [c * h * w, h * w, sh * w, sw])
        view.result.name_hint = f"Y{len(views)}"
        block.add_op(view)
        views.append(view.result)
    live = [p for p in phases if p.taps]
    window = max((t.toh + (p.rows.count - 1) * p.rows.dilation) * (t.tow + (p.cols.count - 1) * p.cols.dilation)
                 for p in live) * t.tic
    out_tile, pitch = t.toh * t.tow * t.toc, t.tow * t.toc  # each phase's output rows at a fixed pitch
    zero = any(not p.taps for p in phases)
    specs = [("in", "input", [len(live) * window], t.split == "channel"),
             ("wt", "weight", [kh * kw * t.tic * t.toc], t.split != "channel"),
             ("out", "output", [(sh * sw if interleave else len(live)) * out_tile], False)]
    if zero and not interleave:
        specs.append(("zero", "output", [out_tile], False))
    buffers = add_buffers(lowering, block, specs, slots)
    channel_loop = tile.ForOp.build([(0, g, 1), (0, s.og, t.toc)], "naive", names=["g", "oc"]) if g > 1 \
        else tile.ForOp.build([(0, s.og, t.toc)], "naive", names=["oc"])
    spatial_loop = tile.ForOp.build([(0, n, 1), (0, s.oh, t.toh), (0, s.ow, t.tow)], "naive", names=["n", "oh", "ow"])
    outer, inner = (spatial_loop, channel_loop) if t.split == "channel" else (channel_loop, spatial_loop)
    order = "serpentine" if lowering.tile_order == "scan" else "naive"
    inner.properties["order"] = StringAttr(order)
    inner.properties["cores"] = IntegerAttr(lowering.cores, i64)
    ic_loop = tile.ForOp.build([(0, s.cg, t.tic)], order, names=["ic"])
    block.add_op(outer)
    outer.block.add_op(inner)
    chans = channel_loop.block.args
    gi = chans[0] if g > 1 else 0
    oc, toc = chans[-2], chans[-1]
    n_, _, a, toh, b, tow = spatial_loop.block.args
    ic, tic = ic_loop.block.args
    if zero:
        e = IndexExprs()
        rows, cols = (sh * t.toh, sw * t.tow) if interleave else (t.toh, t.tow)
        inner.block.add_op(tile.FillOp.build(operands=[[buffers["out" if interleave else "zero"]], []], properties={
            "views": e.map([e(0)]), "sizes": e.map([e(rows), e(cols), e(t.toc)]), "value": FloatAttr(0.0, f64)}))
    inner.block.add_op(ic_loop)
    body = ic_loop.block
    varying, fixed = (tic, t.toc) if s.og % t.toc == 0 else (toc, t.tic)
    if s.og % t.toc and s.cg % t.tic:
        raise NnccError(f"layer {layer_name(op)}: flipped kernel taps need tiles that divide the input or the "
                        f"output channels ({t.tic} of {s.cg}, {t.toc} of {s.og})")
    base = 0
    for k, p in enumerate(live):
        rows, cols = p.rows, p.cols
        top, left = p.window_start
        body.add_op(slice_op(tile.LoadOp, args["DY"], buffers["in"],
                             [n_, ((gi, s.cg), (ic, 1)), ((a, 1), -top), ((b, 1), -left)],
                             [1, tic, ((toh, 1), (rows.count - 1) * rows.dilation),
                              ((tow, 1), (cols.count - 1) * cols.dilation)], [2, 3, 1], at=k * window))
        for i in range(rows.count):  # tap (i, j) of the phase's kernel: the tensor's tap flipped
            for j in range(cols.count):
                ti = rows.first + rows.step * (rows.count - 1 - i)
                tj = cols.first + cols.step * (cols.count - 1 - j)
                body.add_op(slice_op(tile.LoadOp, weights.result, buffers["wt"], [gi, ti, tj, ic, oc],
                                     [1, 1, 1, tic, toc], [1, 2, 3, 4],
                                     at=((varying, (base + i * cols.count + j) * fixed),) if base + i + j else 0))
        e = IndexExprs()
        at, pitches = (p.r * sw * pitch + p.q * t.toc, [sh * sw * pitch, sw * t.toc]) if interleave \
            else (k * out_tile, [pitch])
        body.add_op(tile.conv_op([buffers["in"], buffers["wt"], buffers["out"]],
                                 [e(k * window), e(varying) * (base * fixed) if base else e(0), e(at)], e,
                                 [e(toh), e(tow), e(tic), e(toc), *map(e, pitches)], [rows.count, cols.count], [1, 1],
                                 [rows.dilation, cols.dilation], e(ic).position, False, None, []))
        base += p.taps
    if interleave:
        interleaved_store(inner.block, op, args["Y"], buffers["out"], s, t, spatial_loop, chans, gi)
    index = 0
    for p, view in zip([] if interleave else phases, views):
        source, at = (buffers["out"], index * out_tile) if p.taps else (buffers["zero"], 0)
        index += bool(p.taps)
        extents = []
        for start, size, length, full in ((a, toh, p.length[0], s.oh), (b, tow, p.length[1], s.ow)):
            if length < full:  # a shorter phase: its last tile has fewer positions
                e = IndexExprs()
                exprs = e.map([e(size), e(start) * -1 + length])
                bound = tile.MinOp.build(operands=[list(e.values)], result_types=[tile.INDEX],
                                         properties={"exprs": exprs})
                bound.result.name_hint = f"{'rows' if start is a else 'cols'}{p.r}{p.q}"
                inner.block.add_op(bound)
                size = bound.result
            extents.append(size)
        e = IndexExprs()  # the tile's rows at the conv's row pitch, whatever its own length
        store = tile.StoreOp.make(view, source, e, [e(n_), e(gi) * s.og + e(oc), e(a), e(b)],
                                  [e(1), e(toc), e(extents[0]), e(extents[1])], [e(at)],
                                  [e(pitch), e(toc), e(1)], [2, 3, 1])
        inner.block.add_op(store)
    nest = finish_nest(op, block, inputs)
    nest.attributes["phases"] = StringAttr(f"{sh}x{sw}")
    return nest


def interleaved_store(block: Block, op, y: SSAValue, out: SSAValue, s: ConvShape, t: ConvTiles,
                      spatial_loop: tile.ForOp, chans, gi) -> None:
    """The store of an interleaved phases tile ([sh toh][sw tow][toc], `build_phases_nest`) into
    dx, at the end of `block`: rows sh a ... and columns sw b ... of the tile's image, cut at
    dx's edges (`tile.min`)."""
    _, _, h, w = nn.shape_of(op.result)
    (sh, sw) = nn.ints(op.strides)
    n_, _, a, toh, b, tow = spatial_loop.block.args
    oc, toc = chans[-2], chans[-1]
    extents = []
    for start, size, stride, full in ((a, toh, sh, h), (b, tow, sw, w)):
        e = IndexExprs()
        exprs = e.map([e(size) * stride, e(start) * -stride + full])
        bound = tile.MinOp.build(operands=[list(e.values)], result_types=[tile.INDEX], properties={"exprs": exprs})
        bound.result.name_hint = "rows" if start is a else "cols"
        block.add_op(bound)
        extents.append(bound.result)
    e = IndexExprs()
    block.add_op(tile.StoreOp.make(y, out, e, [e(n_), e(gi) * s.og + e(oc) if gi != 0 else e(oc), e(a) * sh, e(b) * sw],
                             [e(1), e(toc), e(extents[0]), e(extents[1])], [e(0)],
                             [e(sw * t.tow * t.toc), e(t.toc), e(1)], [2, 3, 1]))


def lower_backward_conv(lowering: Lowering, op: Operation):
    """A lowering-table entry: the backward conv's nests (tile-layers did not write them), unrolled
    (a reduction's partial sums in DRAM of their own, freed after the layer)."""
    *partials, last = backward_nests(lowering, op, lowering.buffers)
    phases = []
    for nest in partials:
        lowering.addresses[nest.results[0]] = lowering.address(nest.results[0])
        phases += lower_nest(lowering, nest)
    return phases + lower_detached(lowering, op, last)


# --------------------------------------------------------------------------- backward-filter as a gemm


@dataclass(frozen=True)
class FilterTiles:
    """Tiles of a backward-filter gemm: input channels per tile (times the kernel taps: the
    gemm's rows), output channels per tile (the lanes), output-gradient rows per reduction step
    (a divisor of OH: k = batch x rows x OW)."""

    channels: int
    outputs: int
    rows: int
    parts: int = 1  # > 1: the cores take different blocks of OH / parts dy rows (partial sums)


def filter_taps(s: ConvShape) -> list[tuple[int, int]]:
    return [(i, j) for i in range(s.kh) for j in range(s.kw)]


def staged_columns(s: ConvShape) -> int:
    """Columns of x a staged row holds: what the taps of a kernel row read, OW outputs at the
    column stride from each."""
    return (s.ow - 1) * s.strides[1] + (s.kw - 1) * s.dilations[1] + 1


def filter_tile_bytes(s: ConvShape, t: FilterTiles, staged: bool = False) -> dict[str, int]:
    k = s.n * t.rows * s.ow
    m = len(filter_taps(s)) * t.channels
    raw = F32 * s.kh * t.channels * s.n * t.rows * staged_columns(s) if staged else 0
    return {"input": F32 * m * k + raw, "weight": F32 * k * t.outputs, "output": F32 * m * t.outputs}


def subsample_cycles(lowering: Lowering, s: ConvShape, t: FilterTiles) -> int:
    """Cycles of a step's on-chip subsampling (one strided `vact copy` per tap): its vector issue
    or its AM reads and writes, whichever is longer, and the pipeline's depth."""
    unit = lowering.target.units[lowering.vector_unit]
    memory = lowering.target.memory_for("input")
    rows = t.channels * s.n * t.rows
    issue = timing.vector_issue_cycles(unit, (1, rows, s.ow), 1)
    moved = F32 * rows * ((s.ow - 1) * s.strides[1] + 1 + s.ow)
    return len(filter_taps(s)) * (max(issue, -(-moved // memory.bandwidth_bytes_per_cycle)) + unit.pipeline_depth)


def filter_estimate(lowering: Lowering, s: ConvShape, t: FilterTiles, staged: bool = False, parts: int = 1) -> float:
    """Closed-form cycles of a tiling: the busiest core's micro-kernel calls (and, `staged`, its
    subsampling copies), the DRAM bus (x read once per tap and output-channel tile, dy once per
    round of channel tiles), the DMA channels (dy written into every core's memory) and the first
    loads. `parts` > 1: `s` is one core's part (its OH / parts dy rows), all parts at once."""
    target = lowering.target
    unit = target.units["main"]
    taps = len(filter_taps(s))
    k, m = s.n * t.rows * s.ow, taps * t.channels
    half = target.memory(unit.broadcast_memory).size_bytes // 2 if unit.micro_kernel else 0
    matmul = timing.matmul_issue_cycles(unit, 1, m, t.outputs, k, 1, unit.micro_kernel, half)
    if staged:
        matmul += subsample_cycles(lowering, s, t)
    oc_tiles, c_tiles, steps = -(-s.o // t.outputs), -(-s.c // t.channels), s.oh // t.rows
    cores = lowering.cores if parts == 1 else 1
    rounds = -(-c_tiles // cores)
    compute = oc_tiles * rounds * steps * matmul
    x_bytes = F32 * s.n * s.c * s.oh * s.ow * taps * oc_tiles * parts
    dy_bytes = F32 * s.n * s.o * s.oh * s.ow * rounds * parts
    dram = (x_bytes + dy_bytes) / (target.dram_bytes_per_cycle * target.dram.sustained_fraction)
    channel = dy_bytes * min(cores, c_tiles) / (target.dma.bandwidth_bytes_per_cycle * target.dma.channels)
    # every DMA holds its channel for its latency: a step loads x per tap (staged: per kernel
    # row) and channel (one box each), and dy per image; the parts' loads share the channels
    boxes = oc_tiles * rounds * steps * ((s.kh if staged else taps) * t.channels + s.n) * parts
    issue = boxes * (target.dma.latency_cycles + target.dram_latency_cycles) / min(target.dma.channels, lowering.cores)
    first = F32 * k * (t.outputs + m) / target.dma.bandwidth_bytes_per_cycle
    return max(compute, dram, channel + issue) + first


def filter_tiles(lowering: Lowering, s: ConvShape, staged: bool = False, parts: int = 1) -> FilterTiles:
    """The tiling with the fewest estimated cycles (`filter_estimate`) whose buffers fit (double
    buffered); ties to fewer jobs. Output channels are whole vectors of lanes (or all of them).
    `parts` > 1: the tiles of one core's part, `s` (OH / parts dy rows)."""
    return searched_filter_tiles(
        lowering, s, ("filter tiles", s, staged, parts), (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 96),
        lambda tc, toc, rows: FilterTiles(tc, toc, rows, parts),
        lambda t: filter_tile_bytes(s, t, staged), lambda t: filter_estimate(lowering, s, t, staged, parts))


def searched_filter_tiles(lowering: Lowering, s: ConvShape, key, channel_tiles, make, tile_bytes,
                          estimate) -> FilterTiles:
    """The backward-filter tiling `make(channels, outputs, rows)` with the fewest `estimate`d
    cycles whose `tile_bytes` fit, ties to fewer jobs: rows divide OH, channels from
    `channel_tiles` (and all of them), outputs whole vectors of lanes (or all). Cached by `key`."""
    if key in lowering.cost_cache:
        return lowering.cost_cache[key]
    outputs = sorted({s.o} | set(range(lowering.lanes, s.o, lowering.lanes)))
    channels = sorted((set(channel_tiles) | {s.c}) & set(range(1, s.c + 1)))
    best = None
    for rows in [d for d in range(1, s.oh + 1) if s.oh % d == 0]:
        for tc in channels:
            for toc in outputs:
                t = make(tc, toc, rows)
                if not lowering.fits(tile_bytes(t)):
                    continue
                jobs = -(-s.o // toc) * -(-s.c // tc) * (s.oh // rows)
                rank = (estimate(t), jobs)
                if best is None or rank < best[0]:
                    best = (rank, t)
    if best is None:
        raise NnccError(f"backward-filter {s}: not even one channel and one output-gradient row fit on chip")
    lowering.cost_cache[key] = best[1]
    return best[1]


def tap_view(s: ConvShape, i: int, j: int, staged: bool = False) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """Where tap (i, j) reads x: (row and column of output pixel (0, 0) in the tap's view, the
    view (phase row, phase column, rows, columns) of x strided by the forward strides). x is
    always read through a view (one of the whole tensor at stride 1), so dram-layout keeps it
    NCHW: each tap's box is then runs of OW floats, where NHWC would make single floats.
    `staged`: the view's columns at stride 1 (whole rows: a strided column is a DRAM burst per
    float), the column its kernel row's box starts at (tap 0's: the taps' runs are copied out
    of it on chip), output column x of tap j at column x sw + j dw of the box."""
    (sh, sw), (dh, dw) = s.strides, s.dilations
    a, b = i * dh - s.pads[0], j * dw - s.pads[1]
    pa, pb = a % sh, b % sw
    if staged:
        return (a // sh, -s.pads[1]), (pa, 0, -(-(s.h - pa) // sh), s.w)
    return (a // sh, b // sw), (pa, pb, -(-(s.h - pa) // sh), -(-(s.w - pb) // sw))


def filter_nest(lowering: Lowering, op, s: ConvShape, t: FilterTiles, slots: int, staged: bool = False) -> tile.NestOp:
    """Backward-filter as one gemm per tile: dW^T[(tap, c), o] = sum over (n, y, x) of
    x[n, c, y sh + i dh - pt, x sw + j dw - pl] dy[n, o, y, x]. Per tap, the x block of `channels`
    input channels is loaded shifted (one DMA box per channel: padding from the tensor's edges),
    so that every row of the gemm's broadcast operand is one contiguous run of k = batch x rows x
    OW; the dy block [n][y][x][o] is the gemm's b (shared by the cores, which take different
    channel tiles); the result tile [tap][c][o] is stored into dW (O, C, KH, KW) seen as
    (taps, C, O). A 1 x M "image" of k channels: a 1x1 `tile.conv`, m = taps x channels.

        tile.for %oc[%toc] = 0 to 256 step 256 order naive {
          tile.for %c[%tc] = 0 to 256 step 6 cores 4 order naive {
            tile.for %r[%tr] = 0 to 56 step 2 order naive {
              tile.load %Xv0[0, %c, %r - 1, -1] [2, %tc, 2, 56] -> %in[0] dims [1, 0, 2, 3]
              ...                                            (one per tap, at tap x %tc x 224)
              tile.load %DYv[0, %r, 0, %oc] [2, 2, 56, %toc] -> %wt[0] dims [0, 1, 2, 3]
              tile.conv %in[0], %wt[0] -> %out[0] sizes [1, %tc * 9, 224, %toc] kernel [1, 1] ... reduce %r
            }
            tile.store %out[0] -> %Yv[0, %c, %oc] [9, %tc, %toc] dims [0, 1, 2]
          }
        }

    `staged`: x's rows are loaded once per kernel row, whole (`staged_columns` floats: one DRAM
    run each, where a column stride makes a burst per float: ResNet's stride-2 shortcuts; and
    kw times fewer DRAM reads of x: VGG's conv1_1, whose 3 channels make it DRAM-bound) into
    `raw`, and each tap's run copied out into `in` on chip (`tile.map copy`, strided by the
    column stride, from the tap's column):

        tile.load %Xv0[0, %c, %r - 1, -1] [2, %tc, 2, 226] -> %raw[0] dims [1, 0, 2, 3]
        tile.map copy %raw[0] strides [904, 226, 1] -> %in[0] shape [%tc, 4, 224]
        tile.map copy %raw[1] strides [904, 226, 1] -> %in[%tc * 896] shape [%tc, 4, 224]
        ...
    """
    taps = filter_taps(s)
    k = s.n * t.rows * s.ow
    parts, part_rows = t.parts, s.oh // t.parts
    partial = nn.tensor_type((parts * len(taps), s.c, s.o))  # [part][tap][c][o] partial sums
    block, args, inputs = nest_block([("X", op.input), ("DY", op.grad)], op.result)
    if parts > 1:
        block = Block(arg_types=[op.input.type, op.grad.type, partial])
        for arg, name in zip(block.args, ("X", "DY", "Y")):
            arg.name_hint = name
            args[name] = arg
    plane = s.oh * s.ow
    dy = tile.ViewOp(args["DY"], 0, [s.n, s.oh, s.ow, s.o], [s.o * plane, s.ow, 1, plane])
    out = (tile.ViewOp(args["Y"], 0, [len(taps), s.c, s.o], [1, len(taps), s.c * len(taps)]) if parts == 1
           else tile.ViewOp(args["Y"], 0, [parts * len(taps), s.c, s.o], [s.c * s.o, s.o, 1]))
    for view, name in ((dy, "DYv"), (out, "Yv")):
        view.result.name_hint = name
        block.add_op(view)
    views: dict = {}
    reads = []
    for i, j in taps:
        origin, phase = tap_view(s, i, j, staged)
        if phase not in views:
            pa, pb, rows, cols = phase
            view = tile.ViewOp(args["X"], pa * s.w + pb, [s.n, s.c, rows, cols],
                               [s.c * s.h * s.w, s.h * s.w, s.strides[0] * s.w, 1 if staged else s.strides[1]])
            view.result.name_hint = f"Xv{len(views)}"
            block.add_op(view)
            views[phase] = view.result
        reads.append((views[phase], origin))
    m = len(taps) * t.channels
    wide = staged_columns(s) if staged else s.ow  # columns of a loaded row
    raw = s.n * t.rows * wide  # a channel's loaded elements
    loaded: dict[int, int] = {}  # staged: kernel row -> its block's index in raw
    buffers = add_buffers(lowering, block, [("in", "input", [1, m, k], False),
                                            ("wt", "weight", [k * t.outputs], parts == 1),
                                            ("out", "output", [1, m, t.outputs], False)]
                          + ([("raw", "input", [1, s.kh * t.channels, raw], False)] if staged else []), slots)
    channel_loop = tile.ForOp.build([(0, s.o, t.outputs)], "naive", names=["oc"])
    part_loop = tile.ForOp.build([(0, parts, 1)], "naive", lowering.cores, names=["p"]) if parts > 1 else None
    image_loop = tile.ForOp.build([(0, s.c, t.channels)], "naive", lowering.cores if parts == 1 else None,
                                  names=["c"])
    row_loop = tile.ForOp.build([(0, part_rows, t.rows)], "naive", names=["r"])
    block.add_op(channel_loop)
    if part_loop is not None:
        channel_loop.block.add_op(part_loop)
        part_loop.block.add_op(image_loop)
        p = part_loop.block.args[0]
    else:
        channel_loop.block.add_op(image_loop)
    image_loop.block.add_op(row_loop)
    oc, toc = channel_loop.block.args
    c, tc = image_loop.block.args
    r, _ = row_loop.block.args
    row = ((p, part_rows), (r, 1)) if parts > 1 else ((r, 1),)  # the step's first dy row
    body = row_loop.block
    e = IndexExprs()
    for index, ((i, j), (tensor, (row0, col0))) in enumerate(zip(taps, reads)):
        if not staged:
            body.add_op(slice_op(tile.LoadOp, tensor, buffers["in"], [0, c, (*row, row0), col0],
                                 [s.n, tc, t.rows, s.ow], [1, 0, 2, 3], at=((tc, index * k),) if index else 0))
            continue
        if i not in loaded:
            block_index = loaded[i] = len(loaded)
            body.add_op(slice_op(tile.LoadOp, tensor, buffers["raw"], [0, c, (*row, row0), col0],
                                 [s.n, tc, t.rows, wide], [1, 0, 2, 3], at=((tc, block_index * raw),) if block_index else 0))
        source = e(tc) * (loaded[i] * raw) + j * s.dilations[1] if loaded[i] else e(j * s.dilations[1])
        body.add_op(map_op(e, "copy", [(buffers["raw"], source, [raw, wide, s.strides[1]]),
                                       (buffers["in"], e(tc) * (index * k) if index else 0, 0)],
                           [e(tc), e(s.n * t.rows), e(s.ow)]))
    body.add_op(slice_op(tile.LoadOp, dy.result, buffers["wt"], [0, row, 0, oc], [s.n, t.rows, s.ow, toc],
                         [0, 1, 2, 3]))
    zero = e(0)
    body.add_op(tile.conv_op([buffers["in"], buffers["wt"], buffers["out"]], [zero, zero, zero], e,
                             [e(1), e(tc) * len(taps), e(k), e(toc)], [1, 1], [1, 1], [1, 1], e(r).position, False,
                             None, []))
    first = ((p, len(taps)),) if parts > 1 else 0  # the part's first row of the partial sums
    image_loop.block.add_op(slice_op(tile.StoreOp, out.result, buffers["out"], [first, c, oc], [len(taps), tc, toc],
                                     [0, 1, 2]))
    if parts == 1:
        return finish_nest(op, block, inputs)
    nest = tile.NestOp(f"{layer_name(op)}_parts", inputs, [partial], Region(block),
                       {"op": StringAttr(op.name), nn.ONNX_NODES: op.attributes.get(nn.ONNX_NODES, ArrayAttr([]))})
    nest.results[0].name_hint = f"{op.result.name_hint or 'dw'}_parts"
    return nest


# --------------------------------------------------------------------------- backward-filter: taps in place


@dataclass(frozen=True)
class WindowLayout:
    """Where a step of `window_filter_nest` keeps x on chip: per input channel, per phase of x
    the taps read (stride 1: one; x[pa::sh, pb::sw] for the taps' row and column phases), a
    block of staged rows (rows x batch x `width` columns, the images of a row side by side), the
    channel's blocks one after another at a `pitch` that is a multiple of k (so the channels are
    the columns of a strided 1 x C image of k channels); `spare` elements after the last block
    that the last taps read past it (zeroed)."""

    width: int  # columns of a staged row: OW plus the kernel's horizontal reach in its phase
    rows: int  # staged rows per block: the step's dy rows plus the kernel's vertical reach
    blocks: tuple[tuple[int, int, int, int], ...]  # (row phase, column phase, first row, first column)
    taps: tuple[tuple[int, int], ...]  # per kernel tap (row-major): (its block, offset in the block)
    k: int  # the gemm's reduction per step: dy rows x batch x width
    spare: int
    pitch: int  # elements per channel: a multiple of k

    @property
    def stride(self) -> int:
        return self.pitch // self.k


def window_layout(s: ConvShape, rows: int) -> WindowLayout:
    """Tap (i, j) reads x's row y sh + a and column x sw + b (a = i dh - pt, b = j dw - pl): row
    y + a // sh of row phase a % sh, column x + b // sw of column phase b % sw."""
    (sh, sw), (dh, dw) = s.strides, s.dilations
    places = [(divmod(i * dh - s.pads[0], sh), divmod(j * dw - s.pads[1], sw)) for i, j in filter_taps(s)]
    first_row, first_col = {}, {}
    for (ra, pa), (cb, pb) in places:
        first_row[pa] = min(first_row.get(pa, ra), ra)
        first_col[pb] = min(first_col.get(pb, cb), cb)
    staged = rows + max(ra - first_row[pa] for (ra, pa), _ in places)
    width = s.ow + max(cb - first_col[pb] for _, (cb, pb) in places)
    phases = sorted({(pa, pb) for (_, pa), (_, pb) in places})
    blocks = tuple((pa, pb, first_row[pa], first_col[pb]) for pa, pb in phases)
    size = staged * s.n * width
    taps = tuple((phases.index((pa, pb)), phases.index((pa, pb)) * size + (ra - first_row[pa]) * s.n * width
                  + cb - first_col[pb]) for (ra, pa), (cb, pb) in places)
    k = rows * s.n * width
    spare = width - s.ow
    return WindowLayout(width, staged, blocks, taps, k, spare, -(-(len(blocks) * size + spare) // k) * k)


def window_fits(s: ConvShape) -> bool:
    """Whether the taps-in-place mapping writes this backward-filter: every tap's run of k is
    contiguous in its phase's staged rows, whatever the strides (a column stride reads x's
    columns strided from DRAM: a burst per float where bursts are timed, so the cost model
    weighs it)."""
    return True


def window_filter_bytes(s: ConvShape, t: FilterTiles) -> dict[str, int]:
    layout = window_layout(s, t.rows)
    return {"input": F32 * t.channels * layout.pitch, "weight": F32 * layout.k * t.outputs,
            "output": F32 * len(filter_taps(s)) * t.channels * t.outputs}


def window_matmul_cycles(lowering: Lowering, m: int, n: int, layout: WindowLayout) -> int:
    """The timing rule's cycles of one tap's matmul (m channels x k, strided by the pitch)."""
    target = lowering.target
    roles = {"x": "input", "dy": "weight", "dw": "output"}
    operands = {"unit": "main", "batch": 1, "mnk": (m, n, layout.k), "a": "x", "a_stride": (0, layout.pitch, 1),
                "b": "dy", "b_stride": (0, n, 1), "c": "dw", "c_stride": (0, n, 1), "acc": 1}
    return timing.compute_cycles(target, "matmul", lambda name, default: operands.get(name, default),
                                 lambda ref: target.memory_for(roles[ref]).name)


def window_filter_estimate(lowering: Lowering, s: ConvShape, t: FilterTiles) -> float:
    """Closed-form cycles of a taps-in-place tiling: the busiest core's matmuls (one per tap and
    step), the DRAM bus (x's staged rows once per output-channel tile, dy once per round of
    channel tiles), the DMAs' latencies (a box per channel and per dy row; one core's loads
    share one channel) and the first loads."""
    target = lowering.target
    layout = window_layout(s, t.rows)
    taps = len(filter_taps(s))
    oc_tiles, c_tiles, steps = -(-s.o // t.outputs), -(-s.c // t.channels), s.oh // t.rows
    rounds = -(-c_tiles // lowering.cores)
    compute = oc_tiles * rounds * steps * taps * window_matmul_cycles(lowering, t.channels, t.outputs, layout)
    x_bytes = F32 * s.c * s.n * layout.rows * layout.width * len(layout.blocks) * steps * oc_tiles
    dy_bytes = F32 * s.n * s.o * s.oh * s.ow * rounds
    dram = (x_bytes + dy_bytes) / (target.dram_bytes_per_cycle * target.dram.sustained_fraction)
    boxes = oc_tiles * steps * (c_tiles * t.channels * len(layout.blocks) + rounds * t.rows)
    issue = boxes * (target.dma.latency_cycles + target.dram_latency_cycles) / min(target.dma.channels, lowering.cores)
    first = F32 * (layout.k * t.outputs + t.channels * layout.pitch) / target.dma.bandwidth_bytes_per_cycle
    return max(compute, dram, issue) + first


def window_filter_tiles(lowering: Lowering, s: ConvShape) -> FilterTiles:
    """The taps-in-place tiling with the fewest estimated cycles (`window_filter_estimate`) whose
    buffers fit (double buffered); ties to fewer jobs."""
    return searched_filter_tiles(
        lowering, s, ("window filter tiles", s), (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256),
        FilterTiles, lambda t: window_filter_bytes(s, t), lambda t: window_filter_estimate(lowering, s, t))


def window_filter_nest(lowering: Lowering, op, s: ConvShape, t: FilterTiles, slots: int) -> tile.NestOp:
    """Backward-filter with x's rows staged once per step and every tap read in place (stride 1;
    with strides, the same per phase of x, `WindowLayout`):
    dW^T[(tap, c), o] = sum over (y, n, x') of raw[c][y + i dh][n][x' + j dw] dy'[y][n][x'][o],
    where raw holds the step's rows of x (and the kernel's reach) of every image, `width` =
    OW + (kw - 1) dw columns each (padding from the tensor's edges), and dy' the step's dy rows
    with zeros in columns x' >= OW (DMA padding): the product's extra columns add nothing. So
    tap (i, j)'s operand is one contiguous run of k = rows x batch x width per channel, at
    offset i dh batch width + j dw of the channel's block: one matmul per tap (a 1x1
    `tile.conv` of a 1 x C image of k channels whose columns are `pitch` apart), x loaded once
    per step (one DMA box per channel, not one per tap and channel), no copies on chip. The
    `spare` elements the last taps read past the rows are zeroed (`tile.fill`; they meet the
    zero columns of dy', and stale data could be infinite). The extra columns cost MACs:
    (width - OW) / width of the array (56x56: 3 %, 7x7: 22 %); the cost model weighs that.

        tile.for %oc[%toc] = 0 to 64 step 64 order naive {
          tile.for %c[%tc] = 0 to 64 step 32 order naive {
            tile.for %r[%tr] = 0 to 56 step 4 order naive {
              tile.load %Xv[0, %c, %r - 1, -1] [8, %tc, 6, 58] -> %raw[0] dims [1, 2, 0, 3] strides [3712, 464, 58, 1]
              tile.fill %raw[2784] sizes [%tc, 1, 2] pitch 3712 value 0.0
              tile.load %DYv[%r, 0, 0, %oc] [4, 8, 58, %toc] -> %wt[0] dims [0, 1, 2, 3]
              tile.conv %raw[0], %wt[0] -> %out[0] sizes [1, %tc, 1856, %toc] kernel [1, 1] strides [1, 2] ... reduce %r
              tile.conv %raw[1], %wt[0] -> %out[2048] sizes [1, %tc, 1856, %toc] ... reduce %r
              ...                                               (one per tap, at i dh 8 x 58 + j dw)
            }
            tile.store %out[0] strides [2048, %toc, 1] -> %Yv[0, %c, %oc] [9, %tc, %toc] dims [0, 1, 2]
          }
        }
    """
    taps = filter_taps(s)
    layout = window_layout(s, t.rows)
    (sh, sw) = s.strides
    block, args, inputs = nest_block([("X", op.input), ("DY", op.grad)], op.result)
    plane = s.oh * s.ow
    views = {f"Xv{index}": tile.ViewOp(args["X"], pa * s.w + pb, [s.n, s.c, -(-(s.h - pa) // sh), -(-(s.w - pb) // sw)],
                                       [s.c * s.h * s.w, s.h * s.w, sh * s.w, sw])
             for index, (pa, pb, _, _) in enumerate(layout.blocks)}
    views |= {"DYv": tile.ViewOp(args["DY"], 0, [s.oh, s.n, s.ow, s.o], [s.ow, s.o * plane, 1, plane]),
              "Yv": tile.ViewOp(args["Y"], 0, [len(taps), s.c, s.o], [1, len(taps), s.c * len(taps)])}
    for name, view in views.items():
        view.result.name_hint = name
        block.add_op(view)
    buffers = add_buffers(lowering, block, [("raw", "input", [1, t.channels * layout.pitch], False),
                                            ("wt", "weight", [layout.k * t.outputs], True),
                                            ("out", "output", [1, len(taps) * t.channels, t.outputs], False)], slots)
    channel_loop = tile.ForOp.build([(0, s.o, t.outputs)], "naive", names=["oc"])
    image_loop = tile.ForOp.build([(0, s.c, t.channels)], "naive", lowering.cores, names=["c"])
    row_loop = tile.ForOp.build([(0, s.oh, t.rows)], "naive", names=["r"])
    block.add_op(channel_loop)
    channel_loop.block.add_op(image_loop)
    image_loop.block.add_op(row_loop)
    oc, toc = channel_loop.block.args
    c, tc = image_loop.block.args
    r, _ = row_loop.block.args
    body = row_loop.block
    size = layout.rows * s.n * layout.width  # a block
    for index, (_, _, row0, col0) in enumerate(layout.blocks):
        e = IndexExprs()
        body.add_op(tile.LoadOp.make(views[f"Xv{index}"].result, buffers["raw"], e,
                                     [e(0), e(c), e(r) + row0, e(col0)],
                                     [e(s.n), e(tc), e(layout.rows), e(layout.width)], [e(index * size)],
                                     [e(layout.pitch), e(s.n * layout.width), e(layout.width), e(1)], [1, 2, 0, 3]))
    if layout.spare:
        e = IndexExprs()
        sizes = [e(tc), e(1), e(layout.spare), e(layout.pitch)]
        properties = {"views": e.map([e(len(layout.blocks) * size)]), "sizes": e.map(sizes),
                      "value": FloatAttr(0.0, f64)}
        body.add_op(tile.FillOp.build(operands=[[buffers["raw"]], list(e.values)], properties=properties))
    body.add_op(slice_op(tile.LoadOp, views["DYv"].result, buffers["wt"], [r, 0, 0, oc],
                         [t.rows, s.n, layout.width, toc], [0, 1, 2, 3]))
    for index, (_, offset) in enumerate(layout.taps):
        e = IndexExprs()
        at = e(index * t.channels * t.outputs)  # each tap's [tc][toc] block at a fixed pitch
        body.add_op(tile.conv_op([buffers["raw"], buffers["wt"], buffers["out"]], [e(offset), e(0), at], e,
                                 [e(1), e(tc), e(layout.k), e(toc)], [1, 1], [1, layout.stride], [1, 1], e(r).position,
                                 False, None, []))
    e = IndexExprs()
    image_loop.block.add_op(tile.StoreOp.make(views["Yv"].result, buffers["out"], e, [e(0), e(c), e(oc)],
                                              [e(len(taps)), e(tc), e(toc)], [e(0)],
                                              [e(t.channels * t.outputs), e(toc), e(1)], [0, 1, 2]))
    return finish_nest(op, block, inputs)


def split_filter_nests(lowering: Lowering, op, s: ConvShape, parts: int, slots: int,
                       staged: bool = False) -> list[tile.NestOp]:
    """Backward-filter with its reduction split over the cores (what pays when the input
    channels make fewer tiles than there are cores: VGG's conv1_1, 3 channels, 27 rows of the
    gemm): core p sums dy rows [p OH / parts, (p + 1) OH / parts) into its own partial dW
    (`filter_nest` with `parts`), then `filter_sum_nest` adds the parts."""
    t = filter_tiles(lowering, part_shape(s, parts), staged, parts)
    partials = filter_nest(lowering, op, s, t, slots, staged)
    return [partials, filter_sum_nest(lowering, op, partials.results[0], s, parts, slots)]


def filter_sum_nest(lowering: Lowering, op, partial: SSAValue, s: ConvShape, parts: int, slots: int) -> tile.NestOp:
    """dW = the sum of the `parts` partial sums [part][tap][c][o] (`filter_nest` with parts): per
    block of input channels, the parts loaded at once, added (`tile.map add`, parts - 1 times) and
    the block stored into dW (O, C, KH, KW) seen as (taps, C, O).

        tile.for %c[%tc] = 0 to 3 step 3 cores 4 order naive {
          tile.load %Pv[0, 0, %c, 0] [4, 9, %tc, 64] -> %in[0] dims [0, 1, 2, 3]
          tile.map add %in[0], %in[%tc * 576] -> %out[0] shape [9, %tc, 64]
          tile.map add %out[0], %in[%tc * 1152] -> %out[0] shape [9, %tc, 64]
          tile.map add %out[0], %in[%tc * 1728] -> %out[0] shape [9, %tc, 64]
          tile.store %out[0] -> %Yv[0, %c, 0] [9, %tc, 64] dims [0, 1, 2]
        }
    """
    taps = len(filter_taps(s))
    block, args, inputs = nest_block([("P", partial)], op.result)
    views = {"Pv": tile.ViewOp(args["P"], 0, [parts, taps, s.c, s.o], [taps * s.c * s.o, s.c * s.o, s.o, 1]),
             "Yv": tile.ViewOp(args["Y"], 0, [taps, s.c, s.o], [1, taps, s.c * taps])}
    for name, view in views.items():
        view.result.name_hint = name
        block.add_op(view)
    channels = s.c
    while channels > 1 and not lowering.fits({"input": F32 * parts * taps * channels * s.o,
                                              "output": F32 * taps * channels * s.o}):
        channels = -(-channels // 2)
    buffers = add_buffers(lowering, block, [("in", "input", [parts, taps, channels, s.o], False),
                                            ("out", "output", [taps, channels, s.o], False)], slots)
    loop = tile.ForOp.build([(0, s.c, channels)], "naive", lowering.cores, names=["c"])
    block.add_op(loop)
    c, tc = loop.block.args
    body = loop.block
    body.add_op(slice_op(tile.LoadOp, views["Pv"].result, buffers["in"], [0, 0, c, 0], [parts, taps, tc, s.o],
                         [0, 1, 2, 3]))
    e = IndexExprs()
    shape = [e(taps), e(tc), e(s.o)]
    for index in range(1, parts):
        total = (buffers["in"], 0, 0) if index == 1 else (buffers["out"], 0, 0)
        body.add_op(map_op(e, "add", [total, (buffers["in"], e(tc) * (index * taps * s.o), 0), (buffers["out"], 0, 0)],
                           shape))
    body.add_op(slice_op(tile.StoreOp, views["Yv"].result, buffers["out"], [0, c, 0], [taps, tc, s.o], [0, 1, 2]))
    return finish_nest(op, block, inputs)


# --------------------------------------------------------------------------- depthwise backward-filter


def depthwise_filter_shape(op) -> ConvShape | None:
    """The forward conv of a depthwise backward-filter (one input and one output channel per
    group), the shape of `depthwise_filter_nest`; else None."""
    n, c, h, w = nn.shape_of(op.input)
    o, cg, kh, kw = nn.shape_of(op.result)
    if op.group.value.data != c or cg != 1 or o != c:
        return None
    _, _, oh, ow = nn.shape_of(op.grad)
    return ConvShape(n, c, h, w, o, kh, kw, oh, ow, tuple(nn.ints(op.strides)), tuple(nn.ints(op.pads)),
                     tuple(nn.ints(op.dilations)), c)


@dataclass(frozen=True)
class DepthwiseFilterTiles:
    channels: int  # per tile (the cores take different tiles)
    rows: int  # dy rows per reduction step (a divisor of OH)


def row_phases(s: ConvShape) -> dict[tuple, list[tuple[int, int]]]:
    """Kernel rows by the view of x they read (x's rows at the row stride, from a phase): per
    view, (kernel row, its first row in the view)."""
    phases: dict[tuple, list[tuple[int, int]]] = {}
    for i in range(s.kh):
        (row0, _), phase = tap_view(s, i, 0, True)
        phases.setdefault(phase, []).append((i, row0))
    return phases


def staged_rows(s: ConvShape, rows: int) -> list[int]:
    """Rows of x a step loads per view (`row_phases`): its kernel rows' windows of `rows` rows."""
    return [rows + max(r for _, r in kernel_rows) - min(r for _, r in kernel_rows)
            for kernel_rows in row_phases(s).values()]


def depthwise_filter_bytes(s: ConvShape, t: DepthwiseFilterTiles) -> dict[str, int]:
    k = s.n * t.rows * s.ow
    taps = s.kh * s.kw
    raw = s.n * sum(staged_rows(s, t.rows)) * staged_columns(s)
    return {"input": F32 * t.channels * (raw + k * (1 + taps)), "output": F32 * taps * t.channels}


def depthwise_filter_estimate(lowering: Lowering, s: ConvShape, t: DepthwiseFilterTiles) -> float:
    """Closed-form cycles: the busiest core's steps (per tap a `vmul` of the step's elements, then
    one `vred`: on-chip bytes over the memory's bandwidth plus the pipeline's depth each), or the
    DRAM bus moving x's staged rows and dy, whichever is longer."""
    target = lowering.target
    unit = target.units[lowering.vector_unit]
    bandwidth = target.memory_for("input").bandwidth_bytes_per_cycle
    taps, k = s.kh * s.kw, s.n * t.rows * s.ow
    elements = t.channels * k
    step = taps * (unit.pipeline_depth + 3 * F32 * elements / bandwidth) + unit.pipeline_depth + \
        F32 * taps * elements / bandwidth
    tiles, steps = -(-s.c // t.channels), s.oh // t.rows
    compute = -(-tiles // lowering.cores) * steps * step
    x_bytes = F32 * s.c * s.n * sum(staged_rows(s, t.rows)) * staged_columns(s) * steps
    dram = (x_bytes + F32 * s.c * s.n * s.oh * s.ow) / (target.dram_bytes_per_cycle * target.dram.sustained_fraction)
    return max(compute, dram)


def depthwise_filter_tiles(lowering: Lowering, s: ConvShape) -> DepthwiseFilterTiles:
    """The tiles with the fewest estimated cycles (`depthwise_filter_estimate`) that fit (double
    buffered); ties to fewer jobs."""
    key = ("depthwise filter tiles", s)
    if key not in lowering.cost_cache:
        best = None
        for rows in [d for d in range(1, s.oh + 1) if s.oh % d == 0]:
            for channels in sorted({1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, s.c} & set(range(1, s.c + 1))
                                   | {-(-s.c // d) for d in (lowering.cores, 2 * lowering.cores)}):
                t = DepthwiseFilterTiles(channels, rows)
                if not lowering.fits(depthwise_filter_bytes(s, t)):
                    continue
                rank = (depthwise_filter_estimate(lowering, s, t), -(-s.c // channels) * (s.oh // rows))
                if best is None or rank < best[0]:
                    best = (rank, t)
        if best is None:
            raise NnccError(f"depthwise backward-filter {s}: not even one channel and one dy row fit on chip")
        lowering.cost_cache[key] = best[1]
    return lowering.cost_cache[key]


def depthwise_filter_nest(lowering: Lowering, op, slots: int) -> tile.NestOp:
    """Depthwise backward-filter, dW[c, 0, i, j] = sum over (n, y, x) of
    x[n, c, y sh + i dh - pt, x sw + j dw - pl] dy[n, c, y, x], as products and row sums on the
    vector unit (a gemm would have one output channel per group on its lanes: 1/16 of them):
    per step of dy rows, x's rows are loaded once per row phase (stride 1: once), the kernel
    rows' windows together, whole (`staged_columns`: one DRAM run each), dy's block once; each
    tap's product taken from its row and column (`tile.map mul`, strided by the column stride)
    and all the taps' products summed per (tap, channel) into the output tile across the steps
    (`tile.reduce sum ... reduce %r`); then stored into dW seen as (taps, C). The cores take
    different channel tiles.

        tile.for %c[%tc] = 0 to 32 step 8 cores 4 order naive {
          tile.for %r[%tr] = 0 to 112 step 4 order naive {
            tile.load %Xv0[0, %c, %r - 1, -1] [2, %tc, 6, 114] -> %raw[0] dims [1, 0, 2, 3]
            tile.load %DY[0, %c, %r, 0] [2, %tc, 4, 112] -> %dy[0] dims [1, 0, 2, 3]
            tile.map mul %raw[0] strides [684, 114, 1], %dy[0] -> %prod[0] shape [%tc * 2, 4, 112]
            tile.map mul %raw[1] strides [684, 114, 1], %dy[0] -> %prod[%tc * 896] shape [%tc * 2, 4, 112]
            ...                                                   (one per tap)
            tile.reduce sum %prod[0] -> %out[0] shape [%tc * 9, 8, 112] reduce %r
          }
          tile.store %out[0] -> %Yv[0, %c] [9, %tc] dims [0, 1]
        }
    """
    from nncc.compiler.codegen.reduce_nest import reduce_op

    s = depthwise_filter_shape(op)
    t = depthwise_filter_tiles(lowering, s)
    taps = filter_taps(s)
    k = s.n * t.rows * s.ow
    wide = staged_columns(s)
    block, args, inputs = nest_block([("X", op.input), ("DY", op.grad)], op.result)
    out = tile.ViewOp(args["Y"], 0, [len(taps), s.c], [1, len(taps)])
    out.result.name_hint = "Yv"
    block.add_op(out)
    loads = []  # per view of x: (view, first row, rows, offset of its block per channel)
    where = {}  # kernel row -> (its load, its first row in the block)
    offset = 0
    for (phase, kernel_rows), rows in zip(row_phases(s).items(), staged_rows(s, t.rows)):
        pa, _, length, _ = phase
        view = tile.ViewOp(args["X"], pa * s.w, [s.n, s.c, length, s.w], [s.c * s.h * s.w, s.h * s.w, s.strides[0] * s.w, 1])
        view.result.name_hint = f"Xv{len(loads)}"
        block.add_op(view)
        first = min(r for _, r in kernel_rows)
        for i, r in kernel_rows:
            where[i] = (len(loads), r - first)
        loads.append((view.result, first, rows, offset))
        offset += s.n * rows * wide
    buffers = add_buffers(lowering, block, [("raw", "input", [t.channels, offset], False),
                                            ("dy", "input", [t.channels, k], False),
                                            ("prod", "input", [len(taps), t.channels, k], False),
                                            ("out", "output", [len(taps), t.channels], False)], slots)
    channel_loop = tile.ForOp.build([(0, s.c, t.channels)], "naive", lowering.cores, names=["c"])
    row_loop = tile.ForOp.build([(0, s.oh, t.rows)], "naive", names=["r"])
    block.add_op(channel_loop)
    channel_loop.block.add_op(row_loop)
    c, tc = channel_loop.block.args
    r, _ = row_loop.block.args
    body = row_loop.block
    e = IndexExprs()
    for tensor, first, rows, at in loads:
        body.add_op(slice_op(tile.LoadOp, tensor, buffers["raw"], [0, c, ((r, 1), first), -s.pads[1]],
                             [s.n, tc, rows, wide], [1, 0, 2, 3], at=((tc, at),) if at else 0))
    body.add_op(slice_op(tile.LoadOp, args["DY"], buffers["dy"], [0, c, r, 0], [s.n, tc, t.rows, s.ow], [1, 0, 2, 3]))
    shape = [e(tc) * s.n, e(t.rows), e(s.ow)]  # (channel, image) pairs, rows, columns
    for index, (i, j) in enumerate(taps):
        load, row = where[i]
        _, _, rows, at = loads[load]
        source = (e(tc) * at if at else e(0)) + (row * wide + j * s.dilations[1])
        body.add_op(map_op(e, "mul", [(buffers["raw"], source, [rows * wide, wide, s.strides[1]]), (buffers["dy"], 0, 0),
                                      (buffers["prod"], e(tc) * (index * k) if index else 0, 0)], shape))
    body.add_op(reduce_op(e, "sum", (buffers["prod"], 0, 0), (buffers["out"], 0, 0),
                          [e(tc) * len(taps), e(s.n * t.rows), e(s.ow)], reduce=r))
    channel_loop.block.add_op(slice_op(tile.StoreOp, out.result, buffers["out"], [0, c], [len(taps), tc], [0, 1]))
    return finish_nest(op, block, inputs)


BACKWARD_CONVS = {
    "nn.conv2d_backward_data": lambda op, lowering: backward_data_shape(op) or phases_shape(op),
    "nn.conv2d_backward_filter": lambda op, lowering: backward_filter_shape(op, lowering) or depthwise_filter_shape(op),
}
"""Backward conv op name -> its conv shape (None: lower-training-ops rewrites it instead)."""


def kept_for_back_end(op: Operation) -> bool:
    """Whether lower-training-ops leaves `op` to this module's nests."""
    shape = BACKWARD_CONVS.get(op.name)
    return shape is not None and shape(op, None) is not None
