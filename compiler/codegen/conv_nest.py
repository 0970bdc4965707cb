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
blocks on chip at the end of one walk are the first the next one needs.

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

from dataclasses import dataclass

from xdsl.dialects.builtin import IntegerAttr, StringAttr, i64
from xdsl.ir import Block, Operation, Region, SSAValue

from nncc.compiler.codegen.context import Lowering
from nncc.compiler.codegen.epilogue import Epilogue, fused_epilogue
from nncc.compiler.codegen.nest_builder import (
    IndexExprs, add_buffers, epilogue_parameters, finish_nest, nest_block, replace_op, slice_op,
)
from nncc.dialects import nn, tile


View = tuple[list[int], list[int]] | None  # a relayout (shape, permutation), or None: the tensor as it is


@dataclass
class ConvTensors:
    """The DRAM tensors of a conv nest. The nest reads `input` and `residual` as NCHW, `weight`
    as [group][kh][kw][c][o] ([group][kh][kw][o][c] for the width mapping) and writes `output`
    as NCHW, each through its `*_view` relayout when it is not so already (a gemm's [M, K]
    matrix is a 1 x M image of K channels)."""

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
        if views[name] is not None:  # seen in another layout
            relayout = tile.RelayoutOp(arg, *views[name])
            relayout.result.name_hint = f"{name}v"
            block.add_op(relayout)
            args[name] = relayout.result
    X, W, B, R, Y = (args.get(name) for name in "XWBRY")
    rows, cols = s.input_extent(t.toh, 0), s.input_extent(t.tow, 1)
    weights = s.kh * s.kw * t.tic * t.toc
    channels_last = mapping == "channels"
    buffers = add_buffers(lowering, block, [
        ("in", "input", [rows, cols, t.tic] if channels_last else [rows, t.tic, cols], t.split == "channel"),
        ("wt", "weight", [weights + t.toc], t.split != "channel"),
        ("out", "output", [t.toh, t.tow, t.toc] if channels_last else [t.toh, t.toc, t.tow], False)], slots)
    order = "serpentine" if scan else "naive"
    channel_loop = tile.ForOp.build([(0, s.group, 1), (0, s.og, t.toc)], "naive", names=["g", "oc"]) \
        if s.group > 1 else tile.ForOp.build([(0, s.og, t.toc)], "naive", names=["oc"])
    spatial_loop = tile.ForOp.build([(0, s.n, 1), (0, s.oh, t.toh), (0, s.ow, t.tow)], "naive",
                                    names=["n", "oh", "ow"])
    outer, inner = (spatial_loop, channel_loop) if t.split == "channel" else (channel_loop, spatial_loop)
    inner.properties["order"] = StringAttr(order)
    inner.properties["cores"] = IntegerAttr(lowering.cores, i64)
    ic_loop = tile.ForOp.build([(0, s.cg, t.tic)], order, names=["ic"])
    block.add_op(outer)
    outer.block.add_op(inner)
    chans = channel_loop.block.args
    g = chans[0] if s.group > 1 else 0
    oc, toc = (chans[2], chans[3]) if s.group > 1 else (chans[0], chans[1])
    n, _, oh, toh, ow, tow = spatial_loop.block.args
    ic, tic = ic_loop.block.args
    tile_dims = [2, 3, 1] if channels_last else [2, 1, 3]
    out_slice = ([n, ((g, s.og), (oc, 1)), oh, ow], [1, toc, toh, tow])
    if R is not None:
        inner.block.add_op(slice_op(tile.LoadOp, R, buffers["out"], *out_slice, tile_dims))
    inner.block.add_op(ic_loop)
    body = ic_loop.block
    sh, sw = s.strides
    kh_extent = (s.kh - 1) * s.dilations[0] + 1 - sh
    kw_extent = (s.kw - 1) * s.dilations[1] + 1 - sw
    body.add_op(slice_op(tile.LoadOp, X, buffers["in"],
                         [n, ((g, s.cg), (ic, 1)), ((oh, sh), -s.pads[0]), ((ow, sw), -s.pads[1])],
                         [1, tic, ((toh, sh), kh_extent), ((tow, sw), kw_extent)], tile_dims))
    body.add_op(slice_op(tile.LoadOp, W, buffers["wt"], [g, 0, 0, ic, oc] if channels_last else [g, 0, 0, oc, ic],
                         [1, s.kh, s.kw, tic, toc] if channels_last else [1, s.kh, s.kw, toc, tic], [1, 2, 3, 4]))
    if B is not None:
        body.add_op(slice_op(tile.LoadOp, B, buffers["wt"], [((g, s.og), (oc, 1))], [toc], [0], at=weights))
    e = IndexExprs()
    views = [e(0), e(0), e(0)] + ([e(weights)] if B is not None else [])
    sizes = [e(toh), e(tow), e(tic), e(toc)]
    reduce = e(ic).position
    conv = tile.conv_op([buffers["in"], buffers["wt"], buffers["out"]] + ([buffers["wt"]] if B is not None else []),
                        views, e, sizes, [s.kh, s.kw], list(s.strides), list(s.dilations), reduce,
                        R is not None, epilogue.act, epilogue_parameters(epilogue))
    if not channels_last:
        conv.mapping = StringAttr(mapping)
    body.add_op(conv)
    inner.block.add_op(slice_op(tile.StoreOp, Y, buffers["out"], *out_slice, tile_dims))
    if op is None:  # a probe of the tile search
        return tile.NestOp("probe", inputs, [tensors.output.type], Region(block))
    return finish_nest(op, block, inputs)


def replace_with_nest(lowering: Lowering, op: Operation, s, t, mapping: str = "channels",
                      slots: int = 1) -> tile.NestOp | None:
    """Put `op`'s nest (tiles `t`) in its place in @main; its buffers get `slots` slots. None
    (and `op` kept) for a gemm whose scaling or C the nest does not express (`gemm_tensors`)."""
    tensors = conv_tensors(op, s, mapping) if op.name.endswith("conv2d") else gemm_tensors(lowering, op, s)
    if tensors is None:
        return None
    return replace_op(op, conv_nest(lowering, op, s, t, tensors, fused_epilogue(op), lowering.tile_order == "scan",
                                    mapping, slots))


def gemm_tensors(lowering: Lowering, op: Operation, s) -> ConvTensors | None:
    """Y[M, N] = A B + C as a 1 x M image of K channels: A [M, K] seen as NCHW [1, K, 1, M], B as
    [1][1][1][K][N], C as the bias when it is a constant [N] or [1, N], as the residual when it
    is [M, N]. None when alpha or beta is not 1, or C broadcasts otherwise, or a fused residual
    comes with a full C (the attribute path, `layers.lower_gemm`, lowers those)."""
    m, k, n = s.ow, s.c, s.o
    alpha, beta = float(op.alpha.value.data), float(op.beta.value.data)
    residual = getattr(op, "residual", None)
    if alpha != 1.0 or (op.c is not None and beta != 1.0):
        return None
    a_view = ([1, 1, k, m], [0, 2, 1, 3]) if op.trans_a.value else ([1, 1, m, k], [0, 3, 1, 2])
    b_view = ([1, 1, 1, n, k], [0, 1, 2, 4, 3]) if op.trans_b.value else ([1, 1, 1, k, n], [0, 1, 2, 3, 4])
    image = ([1, 1, m, n], [0, 3, 1, 2])
    bias, bias_view = None, None
    if op.c is not None:
        c_shape = tuple(nn.shape_of(op.c))
        if lowering.constant(op.c) is not None and c_shape in ((n,), (1, n)):
            bias, bias_view = op.c, ([n], [0])
        elif c_shape == (m, n) and residual is None:
            residual = op.c
        else:
            return None
    return ConvTensors(op.a, op.b, bias, residual, op.result, b_view, a_view,
                       image if residual is not None else None, image, bias_view)


def probe_nest(lowering: Lowering, s, t, mapping: str, bias: bool) -> tile.NestOp:
    """The nest a conv of shape `s` would get with tiles `t` and `mapping`, on placeholder
    tensors (a ReLU epilogue, no residual): what the tile search times. Its weights are read
    through the relayout's strides, in as few DMA boxes as the packed copy a constant gets."""
    from xdsl.dialects.builtin import TensorType, f32

    types = [TensorType(f32, [s.n, s.c, s.h, s.w]), TensorType(f32, [s.o, s.cg, s.kh, s.kw]),
             TensorType(f32, [s.o]), TensorType(f32, [s.n, s.o, s.oh, s.ow])]
    x, w, b, y = Block(arg_types=types).args
    perm = [0, 3, 4, 2, 1] if mapping == "channels" else [0, 3, 4, 1, 2]
    tensors = ConvTensors(x, w, b if bias else None, None, y, ([s.group, s.og, s.cg, s.kh, s.kw], perm))
    return conv_nest(lowering, None, s, t, tensors, Epilogue("relu"), lowering.tile_order == "scan", mapping,
                     lowering.buffers)
