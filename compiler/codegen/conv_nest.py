"""The loop nest of a convolution (output channels on the lanes): what tile-layers writes.

    output-channel tiles (naive)                       spatial split: the cores take
      spatial tiles, dealt to the cores (serpentine)   different output tiles and share
        [residual load into the output tile]           the weight block (multicast)
        input-channel tiles (serpentine)
          load input window (halo, zero padding), load weights and bias
          conv (epilogue on the last input-channel tile)
        store the output tile

With the channel split the spatial loop is outside and the output-channel tiles are dealt to
the cores (they share the input block). Scan makes the inner two loops serpentine, so the
blocks on chip at the end of one walk are the first the next one needs. A cached halo
(`halo = "cache"` on the nest, tiles `halo` "cache": strips of whole rows, the channel split,
one input-channel tile) makes the input buffer a `ring`: each strip's load keeps the rows the
strip before loaded that it needs again and reads only the new ones from DRAM.

    %y = tile.nest "conv1" (%x, %w, %b) -> tensor<1x8x8x8xf32> attributes {op = "fused.conv2d"} {
    ^bb0(%X : ..., %W : ..., %B : ..., %Y : ...):
      %Wp = tile.relayout %W shape [1, 8, 3, 3, 3] permutation [0, 3, 4, 2, 1] : ...
      %in = tile.buffer "input" slots 2 : memref<9x17x3xf32, "L1">
      ...
      tile.for %oc[%toc] = 0 to 8 step 8 order naive {
        tile.for %n[%tn] = 0 to 1 step 1, %oh[%toh] = 0 to 8 step 4, %ow[%tow] = 0 to 8 step 8 cores 2 order serpentine {
          tile.for %ic[%tic] = 0 to 3 step 3 order serpentine {
            tile.load %X[%n, %ic, %oh * 2 - 1, %ow * 2 - 1] [1, %tic, %toh * 2 + 1, %tow * 2 + 1] -> %in[0] dims [2, 3, 1]
            ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from xdsl.dialects.builtin import IntegerAttr, StringAttr, i64
from xdsl.ir import Block, Operation, Region, SSAValue

from nncc.compiler.codegen.context import Lowering, layer_name, nhwc_strides, row_major_strides
from nncc.compiler.codegen.epilogue import Epilogue, fused_epilogue
from nncc.compiler.codegen.stream_nest import constant_weight, map_op
from nncc.compiler.codegen.nest_builder import (
    IndexExprs, add_buffers, epilogue_parameters, finish_nest, nest_block, replace_op, slice_op,
)
from nncc.dialects import nn, tile
from nncc.support.errors import NnccError


@dataclass(frozen=True)
class Strided:
    """A `tile.view` of a tensor: element offset, sizes and strides (0 broadcasts)."""

    offset: int
    sizes: tuple[int, ...]
    strides: tuple[int, ...]


View = tuple[list[int], list[int]] | Strided | None  # a relayout (shape, permutation), a view, or the tensor as it is


@dataclass
class ConvTensors:
    """The DRAM tensors of a conv nest. The nest reads `input` and `residual` as NCHW, `weight`
    as [group][kh][kw][c][o] ([group][kh][kw][o][c] for the width mapping) and writes `output`
    as NCHW, each through its `*_view` relayout when it is not so already (a gemm's [M, K]
    matrix is a 1 x M image of K channels). A batched matmul has `batch` (the output's batch
    axes) leading every view but the bias's, walked by a loop around the nest's. A gemm whose
    B is computed at run time and alpha is not 1 scales the product on chip (`product_scale`,
    after the last input-channel tile, before the activation), and its residual before the first
    (`residual_scale`)."""

    input: SSAValue
    weight: SSAValue
    bias: SSAValue | None
    residual: SSAValue | None
    output: SSAValue
    weight_view: View
    input_view: View = None
    residual_view: View = None
    output_view: View = None
    bias_view: View = None
    batch: tuple[int, ...] = ()
    residual_scale: float = 1.0
    product_scale: float = 1.0
    flip: bool = False  # the kernel read flipped (backward-data): one weight load per tap
    full_kernel_rows: int = 0  # the whole kernel's rows when `s.kh` is a block of them (backward-filter)


def conv_tensors(op: Operation, s, mapping: str = "channels") -> ConvTensors:
    """A conv op's tensors: only its weight is seen in another layout."""
    perm = [0, 3, 4, 2, 1] if mapping == "channels" else [0, 3, 4, 1, 2]
    return ConvTensors(op.input, op.weight, op.bias, getattr(op, "residual", None), op.result,
                       ([s.group, s.og, s.cg, s.kh, s.kw], perm))


def conv_nest(lowering: Lowering, op: Operation | None, s, t, tensors: ConvTensors, epilogue: Epilogue,
              scan: bool, mapping: str = "channels", slots: int = 1) -> tile.NestOp:
    """The nest of conv-like `op` (shape `s`, tiles `t`: a conv.ConvTiles) on `mapping`'s tiles:
    channels (output channels on the lanes: HWC tiles) or width (output columns on the lanes:
    [rows][channels][columns] tiles)."""
    block, args, inputs = nest_block([("X", tensors.input), ("W", tensors.weight), ("B", tensors.bias),
                                      ("R", tensors.residual)], tensors.output)
    views = {"X": tensors.input_view, "W": tensors.weight_view, "B": tensors.bias_view, "R": tensors.residual_view,
             "Y": tensors.output_view}
    for name, arg in list(args.items()):
        view = views[name]
        if view is not None:  # seen in another layout
            seen = tile.ViewOp(arg, view.offset, view.sizes, view.strides) if isinstance(view, Strided) \
                else tile.RelayoutOp(arg, *view)
            seen.result.name_hint = f"{name}v"
            block.add_op(seen)
            args[name] = seen.result
    X, W, B, R, Y = (args.get(name) for name in "XWBRY")
    rows, cols = s.input_extent(t.toh, 0), s.input_extent(t.tow, 1)
    weights = s.kh * s.kw * t.tic * t.toc
    channels_last = mapping == "channels"
    images = t.images  # > 1: the images' rows interleaved, the conv's row dilation times `images`
    if images > 1 and (not channels_last or s.strides[0] != 1 or s.n % images or tensors.batch
                       or tensors.product_scale != 1.0 or tensors.residual_scale != 1.0):
        raise NnccError(f"layer {layer_name(op) if op else 'probe'}: {images} images per tile need the channels "
                        "mapping, row stride 1 and a batch they divide")
    in_shape = ([rows, images, cols, t.tic] if images > 1 else [rows, cols, t.tic]) if channels_last \
        else [rows, t.tic, cols]
    out_shape = ([t.toh, images, t.tow, t.toc] if images > 1 else [t.toh, t.tow, t.toc]) if channels_last \
        else [t.toh, t.toc, t.tow]
    buffers = add_buffers(lowering, block, [
        ("in", "input", in_shape, t.split == "channel", t.halo == "cache"),
        ("wt", "weight", [weights + t.toc], t.split != "channel"),
        ("out", "output", out_shape, False)], slots)
    order = "serpentine" if scan else "naive"
    channel_loop = tile.ForOp.build([(0, s.group, 1), (0, s.og, t.toc)], "naive", names=["g", "oc"]) \
        if s.group > 1 else tile.ForOp.build([(0, s.og, t.toc)], "naive", names=["oc"])
    spatial_loop = tile.ForOp.build([(0, s.n, images), (0, s.oh, t.toh), (0, s.ow, t.tow)], "naive",
                                    names=["n", "oh", "ow"])
    outer, inner = (spatial_loop, channel_loop) if t.split == "channel" else (channel_loop, spatial_loop)
    inner.properties["order"] = StringAttr(order)
    inner.properties["cores"] = IntegerAttr(lowering.cores, i64)
    if tensors.full_kernel_rows:  # the reduction also runs over blocks of s.kh kernel rows
        ic_loop = tile.ForOp.build([(0, tensors.full_kernel_rows, s.kh), (0, s.cg, t.tic)], order, names=["kr", "ic"])
    else:
        ic_loop = tile.ForOp.build([(0, s.cg, t.tic)], order, names=["ic"])
    batch: list = []
    if tensors.batch:  # a batched matmul: one product per output batch index
        batch_loop = tile.ForOp.build([(0, size, 1) for size in tensors.batch], "naive",
                                      names=[f"b{i}" for i in range(len(tensors.batch))])
        block.add_op(batch_loop)
        batch = [batch_loop.block.args[2 * i] for i in range(len(tensors.batch))]
        batch_loop.block.add_op(outer)
    else:
        block.add_op(outer)
    outer.block.add_op(inner)
    lead = len(batch)

    def batched(item):  # offsets and sizes with the batch axes first, the buffer dims after them
        offsets, sizes, dims = item
        return batch + offsets, [1] * lead + sizes, [d + lead for d in dims]
    chans = channel_loop.block.args
    g = chans[0] if s.group > 1 else 0
    oc, toc = (chans[2], chans[3]) if s.group > 1 else (chans[0], chans[1])
    n, _, oh, toh, ow, tow = spatial_loop.block.args
    ic, tic = ic_loop.block.args[-2:]
    kr = ic_loop.block.args[0] if tensors.full_kernel_rows else 0
    tile_dims = ([2, 0, 3, 1] if images > 1 else [2, 3, 1]) if channels_last else [2, 1, 3]
    out_slice = batched(([n, ((g, s.og), (oc, 1)), oh, ow], [images, toc, toh, tow], tile_dims))
    if R is not None:
        inner.block.add_op(slice_op(tile.LoadOp, R, buffers["out"], *out_slice))
    inner.block.add_op(ic_loop)
    body = ic_loop.block
    sh, sw = s.strides
    kh_extent = (s.kh - 1) * s.dilations[0] + 1 - sh
    kw_extent = (s.kw - 1) * s.dilations[1] + 1 - sw
    body.add_op(slice_op(tile.LoadOp, X, buffers["in"], *batched((
        [n, ((g, s.cg), (ic, 1)), ((oh, sh), (kr, s.dilations[0]), -s.pads[0]), ((ow, sw), -s.pads[1])],
        [images, tic, ((toh, sh), kh_extent), ((tow, sw), kw_extent)], tile_dims))))
    if tensors.flip:  # tap (i, j) of the tile is tap (kh - 1 - i, kw - 1 - j) of the tensor
        # the taps are packed by the tile's extents: one of them must be the same on every tile
        varying, fixed = (tic, t.toc) if s.og % t.toc == 0 else (toc, t.tic)
        if s.og % t.toc and s.cg % t.tic:
            raise NnccError(f"layer {layer_name(op) if op else 'probe'}: a flipped kernel needs tiles that divide "
                            f"the input or the output channels ({t.tic} of {s.cg}, {t.toc} of {s.og})")
        for i in range(s.kh):
            for j in range(s.kw):
                body.add_op(slice_op(tile.LoadOp, W, buffers["wt"], [g, s.kh - 1 - i, s.kw - 1 - j, ic, oc],
                                     [1, 1, 1, tic, toc], [1, 2, 3, 4], at=((varying, (i * s.kw + j) * fixed),)))
    else:
        body.add_op(slice_op(tile.LoadOp, W, buffers["wt"], *batched((
            [g, kr, 0, ic, oc] if channels_last else [g, kr, 0, oc, ic],
            [1, s.kh, s.kw, tic, toc] if channels_last else [1, s.kh, s.kw, toc, tic], [1, 2, 3, 4]))))
    if B is not None:
        body.add_op(slice_op(tile.LoadOp, B, buffers["wt"], [((g, s.og), (oc, 1))], [toc], [0], at=weights))
    e = IndexExprs()
    views = [e(0), e(0), e(0)] + ([e(weights)] if B is not None else [])
    sizes = [e(toh) * images if images > 1 else e(toh), e(tow), e(tic), e(toc)]
    reduce = e(ic).position
    scaled = tensors.product_scale != 1.0
    if R is not None and tensors.residual_scale != 1.0:
        body.add_op(scale_op(buffers["out"], toh, tow, toc, "affine", [tensors.residual_scale, 0.0], first=ic))
    conv = tile.conv_op([buffers["in"], buffers["wt"], buffers["out"]] + ([buffers["wt"]] if B is not None else []),
                        views, e, sizes, [s.kh, s.kw], list(s.strides), [s.dilations[0] * images, s.dilations[1]],
                        reduce,
                        R is not None, None if scaled else epilogue.act, epilogue_parameters(epilogue))
    if not channels_last:
        conv.mapping = StringAttr(mapping)
    body.add_op(conv)
    if scaled:  # alpha A B with B computed at run time: the product scaled, then the activation
        body.add_op(scale_op(buffers["out"], toh, tow, toc, "affine", [tensors.product_scale, 0.0], last=ic))
        if epilogue.act is not None:
            body.add_op(scale_op(buffers["out"], toh, tow, toc, epilogue.act, epilogue_parameters(epilogue), last=ic))
    inner.block.add_op(slice_op(tile.StoreOp, Y, buffers["out"], *out_slice))
    nest = tile.NestOp("probe", inputs, [tensors.output.type], Region(block)) if op is None \
        else finish_nest(op, block, inputs)  # (a probe: what the tile search times)
    if t.halo == "cache":
        nest.attributes["halo"] = StringAttr("cache")
    return nest


def scale_op(out: SSAValue, toh, tow, toc, func: str, params, first=None, last=None) -> tile.MapOp:
    """`func` (affine: a gemm's alpha or beta; or the activation after it) on the output tile, on
    the first or last iteration of the input-channel loop."""
    e = IndexExprs()
    shape = [e(toh), e(tow), e(toc)]
    return map_op(e, func, [(out, 0, 0), (out, 0, 0)], shape, params, first=first, last=last)


def replace_with_nest(lowering: Lowering, op: Operation, s, t, mapping: str = "channels",
                      slots: int = 1) -> tile.NestOp:
    """Put `op`'s nest (tiles `t`) in its place in @main; its buffers get `slots` slots."""
    tensors = conv_tensors(op, s, mapping) if op.name.endswith("conv2d") else \
        matmul_tensors(op)[1] if op.name == "nn.matmul" else gemm_tensors(lowering, op, s)
    return replace_op(op, conv_nest(lowering, op, s, t, tensors, fused_epilogue(op), lowering.tile_order == "scan",
                                    mapping, slots))


def gemm_tensors(lowering: Lowering, op: Operation, s) -> ConvTensors:
    """Y[M, N] = alpha A B + beta C as a 1 x M image of K channels: A [M, K] seen as NCHW
    [1, K, 1, M], B as [1][1][1][K][N], C as the bias when its rows are all equal ([N], [1, N],
    a scalar), else as the residual [M, N]. A constant B carries alpha and a constant C beta
    (new weights, folded at compile time); a C computed at run time is read with stride 0 along
    its broadcast axes and scaled on chip by beta, and with B computed at run time alpha scales
    the product on chip (the bias and the residual divided by alpha beforehand)."""
    m, k, n = s.ow, s.c, s.o
    alpha, beta = float(op.alpha.value.data), float(op.beta.value.data)
    name = layer_name(op)
    residual = getattr(op, "residual", None)
    a_view = ([1, 1, k, m], [0, 2, 1, 3]) if op.trans_a.value else ([1, 1, m, k], [0, 3, 1, 2])
    b, b_view = op.b, ([1, 1, 1, n, k], [0, 1, 2, 4, 3]) if op.trans_b.value else ([1, 1, 1, k, n], [0, 1, 2, 3, 4])
    image = ([1, 1, m, n], [0, 3, 1, 2])
    constant_b = lowering.constant(op.b)
    product_scale = 1.0
    if alpha != 1.0 and constant_b is not None:
        b = constant_weight(lowering, op, f"{name}.b_alpha",
                            (constant_b.T if op.trans_b.value else constant_b) * np.float32(alpha))
        b_view = ([1, 1, 1, k, n], [0, 1, 2, 3, 4])
    elif alpha != 1.0:
        if alpha == 0.0:
            raise NnccError(f"layer {name}: gemm with alpha = 0 and B computed at run time is not supported")
        product_scale = alpha
    bias = bias_view = None
    residual_view = image if residual is not None else None
    residual_scale = 1.0 / product_scale
    if op.c is not None:
        constant = lowering.constant(op.c)
        c_shape = tuple(nn.shape_of(op.c))
        if constant is not None:
            full = np.broadcast_to(constant * np.float32(beta), (m, n))
            if np.all(full == full[0:1]):  # the bias
                if beta == 1.0 and product_scale == 1.0 and c_shape in ((n,), (1, n)):
                    bias = op.c
                else:
                    bias = constant_weight(lowering, op, f"{name}.bias",
                                           np.ascontiguousarray(full[0] / np.float32(product_scale)))
                bias_view = ([n], [0])
            else:
                if residual is not None:
                    raise NnccError(f"layer {name}: a gemm with both a full-size C and a residual is not supported")
                residual, residual_view = op.c, image
                if beta != 1.0 or product_scale != 1.0 or c_shape != (m, n):
                    residual = constant_weight(lowering, op, f"{name}.c",
                                               np.ascontiguousarray(full / np.float32(product_scale)))
                residual_scale = 1.0
        else:
            if residual is not None:
                raise NnccError(f"layer {name}: a gemm with both a full-size C and a residual is not supported")
            shape = (1,) * (2 - len(c_shape)) + c_shape
            strides = [0 if size == 1 and out != 1 else stride
                       for size, out, stride in zip(shape, (m, n), (shape[1], 1))]
            residual, residual_view = op.c, Strided(0, (1, n, 1, m), (0, strides[1], 0, strides[0]))
            residual_scale = beta / product_scale
    return ConvTensors(op.a, b, bias, residual, op.result, b_view, a_view, residual_view, image, bias_view,
                       residual_scale=residual_scale if residual is not None else 1.0, product_scale=product_scale)


def matmul_tensors(op: Operation) -> tuple[tuple[int, int, int], ConvTensors]:
    """numpy matmul as 1x1 convs over a 1 x M image of K channels: ((M, K, N), tensors). When B
    has no batch of its own and A's batch is contiguous the batch folds into M (one product, B
    loaded once); otherwise a product per output batch index (`ConvTensors.batch`), A and B read
    with their broadcast batch strides."""
    a_shape, b_shape = nn.shape_of(op.a), nn.shape_of(op.b)
    a2 = (1,) + a_shape if len(a_shape) == 1 else a_shape
    b2 = b_shape + (1,) if len(b_shape) == 1 else b_shape
    m, k = a2[-2:]
    n = b2[-1]
    width = max(len(a2), len(b2)) - 2
    pad = lambda shape: (1,) * (width - len(shape)) + tuple(shape)  # noqa: E731
    a_batch, b_batch = pad(a2[:-2]), pad(b2[:-2])
    out_batch = tuple(max(x, y) for x, y in zip(a_batch, b_batch))

    def batch_strides(batch, matrix):
        strides = row_major_strides(batch) if batch else ()
        return tuple(0 if size == 1 and out != 1 else stride * matrix for size, out, stride in zip(batch, out_batch, strides))
    a_strides, b_strides = batch_strides(a_batch, m * k), batch_strides(b_batch, k * n)
    if all(st == 0 for st in b_strides) and a_strides == batch_strides(out_batch, m * k):
        rows = m * math.prod(out_batch)
        tensors = ConvTensors(op.a, op.b, None, None, op.result, Strided(0, (1, 1, 1, k, n), (0, 0, 0, n, 1)),
                              Strided(0, (1, k, 1, rows), (0, 1, 0, k)), None, Strided(0, (1, n, 1, rows), (0, 1, 0, n)))
        return (rows, k, n), tensors
    y_strides = batch_strides(out_batch, m * n)
    tensors = ConvTensors(op.a, op.b, None, None, op.result,
                          Strided(0, out_batch + (1, 1, 1, k, n), b_strides + (0, 0, 0, n, 1)),
                          Strided(0, out_batch + (1, k, 1, m), a_strides + (0, 1, 0, k)), None,
                          Strided(0, out_batch + (1, n, 1, m), y_strides + (0, 1, 0, n)), batch=out_batch)
    return (m, k, n), tensors


def probe_nest(lowering: Lowering, s, t, mapping: str, bias: bool) -> tile.NestOp:
    """The nest a conv of shape `s` would get with tiles `t` and `mapping`, on placeholder
    tensors (a ReLU epilogue, no residual): what the tile search times. Its weights are read
    through the relayout's strides, in as few DMA boxes as the packed copy a constant gets; its
    input and output channels-last where the shape expects `dram-layout` to store them so."""
    from xdsl.dialects.builtin import TensorType, f32

    types = [TensorType(f32, [s.n, s.c, s.h, s.w]), TensorType(f32, [s.o, s.cg, s.kh, s.kw]),
             TensorType(f32, [s.o]), TensorType(f32, [s.n, s.o, s.oh, s.ow])]
    x, w, b, y = Block(arg_types=types).args
    perm = [0, 3, 4, 2, 1] if mapping == "channels" else [0, 3, 4, 1, 2]
    burst_timed = lowering.target.dram.burst_timing  # where dram-layout stores feature maps channels-last
    x_view, y_view = (Strided(0, shape, nhwc_strides(shape)) if burst_timed and nhwc else None
                      for shape, nhwc in (((s.n, s.c, s.h, s.w), s.x_nhwc), ((s.n, s.o, s.oh, s.ow), s.y_nhwc)))
    tensors = ConvTensors(x, w, b if bias else None, None, y, ([s.group, s.og, s.cg, s.kh, s.kw], perm),
                          input_view=x_view, output_view=y_view)
    return conv_nest(lowering, None, s, t, tensors, Epilogue("relu"), lowering.tile_order == "scan", mapping,
                     lowering.buffers)
