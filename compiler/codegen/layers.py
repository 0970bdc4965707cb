"""The code generators of conv, gemm and elementwise layers (`lowering_table` maps ops to them).

Each function takes the lowering state and one op and returns the (buffer kinds, jobs)
phases of its layer.
"""

from __future__ import annotations

import math

import numpy as np
from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr, StringAttr, i64
from xdsl.ir import Operation, SSAValue

from nncc.compiler.codegen import eltwise
from nncc.compiler.codegen.context import TILE_ATTR, Lowering, layer_name, row_major_strides, source_address
from nncc.compiler.codegen.conv import (
    ConvLowering, ConvShape, ConvTiles, fits, Operand, choose_tiles, conv_shape,
)
from nncc.compiler.codegen.conv_width import (
    choose_mapping,
)
from nncc.compiler.codegen.conv_nest import conv_nest, conv_tensors, gemm_tensors
from nncc.compiler.codegen.depthwise import depthwise_probe, depthwise_tiles, is_depthwise
from nncc.compiler.codegen.nest import lower_detached
from nncc.compiler.codegen.window_nest import depthwise_nest
from nncc.compiler.codegen.epilogue import fused_epilogue
from nncc.compiler.codegen.pool import pool_probe
from nncc.compiler.codegen.scheduler import BufRef, Compute
from nncc.dialects import nn
from nncc.support.errors import NnccError

# --------------------------------------------------------------------------- conv and gemm


def conv2d_shape(op: Operation) -> ConvShape:
    return conv_shape(op.input, nn.shape_of(op.weight), op.result, nn.ints(op.strides), nn.ints(op.pads),
                      nn.ints(op.dilations), op.group.value.data)


def conv_problem(op: Operation) -> ConvShape | None:
    """The convolution a conv (not depthwise) or gemm op computes; None for other ops."""
    if op.name in ("nn.conv2d", "fused.conv2d"):
        s = conv2d_shape(op)
        return None if is_depthwise(s) else s
    if op.name in ("nn.gemm", "fused.gemm"):
        (m, k), (_, n) = gemm_mk(op), nn.shape_of(op.result)
        return ConvShape(1, k, 1, m, n, 1, 1, 1, m, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    return None


def window_problem(lowering: Lowering, op: Operation):
    """Pooling or depthwise conv: its lowering with placeholder addresses, whose `tiles()` are
    those lowering would choose (pool.WindowTiles); None for other ops."""
    probe = pool_probe(lowering, op)
    if probe is None and op.name in ("nn.conv2d", "fused.conv2d") and is_depthwise(s := conv2d_shape(op)):
        probe = depthwise_probe(lowering, s, layer_name(op))
    return probe


def gemm_mk(op: Operation) -> tuple[int, int]:
    shape = nn.shape_of(op.a)
    return shape[::-1] if op.trans_a.value else shape


def tiles_for(lowering: Lowering, op: Operation, s: ConvShape) -> ConvTiles:
    """The op's `tile` attribute when it has one (checked to fit), else the cost model's choice."""
    attr = op.attributes.get(TILE_ATTR)
    if attr is None:
        return choose_tiles(lowering, s, layer_name(op))
    try:
        sizes = {key: value.value.data for key, value in attr.data.items() if key not in ("split", "mapping")}
        tiles = ConvTiles(sizes["oc"], sizes["ic"], sizes["oh"], sizes["ow"],
                          attr.data["split"].data if "split" in attr.data else "spatial")
    except (AttributeError, KeyError) as error:
        raise NnccError(f"layer {layer_name(op)}: bad tile attribute {attr} (missing {error})") from None
    limits = {"oc": s.og, "ic": s.cg, "oh": s.oh, "ow": s.ow}
    if any(not 1 <= sizes[key] <= limit for key, limit in limits.items()) or \
            tiles.split not in ("spatial", "channel"):
        raise NnccError(f"layer {layer_name(op)}: tile sizes {sizes} must lie within {limits}")
    if not fits(lowering, tiles.slot_bytes(s)):
        raise NnccError(f"layer {layer_name(op)}: tile sizes {sizes} do not fit the target's memories")
    return tiles


def tile_attribute(tiles: ConvTiles, mapping: str = "channels") -> DictionaryAttr:
    return DictionaryAttr({"oc": IntegerAttr(tiles.toc, i64), "ic": IntegerAttr(tiles.tic, i64),
                           "oh": IntegerAttr(tiles.toh, i64), "ow": IntegerAttr(tiles.tow, i64),
                           "split": StringAttr(tiles.split), "mapping": StringAttr(mapping)})


def conv_mapping(lowering: Lowering, op: Operation, s: ConvShape) -> tuple[str, ConvTiles]:
    """The conv's mapping ("channels": output channels on the lanes, or "width": output columns on
    the lanes, weights broadcast; see conv_width) and its tiles. A `tile` attribute with a
    `mapping` entry fixes both; one without (tile-layers' choice of channel tiles) fixes the
    channels tiling, and on a vector main unit the width mapping's best tiling replaces it when
    the job-level model times it faster (as without an attribute)."""
    attr = op.attributes.get(TILE_ATTR)
    mapping = attr.data.get("mapping") if attr is not None else None
    if mapping is not None:
        mapping = getattr(mapping, "data", mapping)
        if mapping not in ("channels", "width"):
            raise NnccError(f"layer {layer_name(op)}: tile mapping must be channels or width, not {mapping!r}")
        if mapping == "width" and lowering.target.main.kind != "vector":
            raise NnccError(f"layer {layer_name(op)}: the width mapping needs a vector main unit")
        return mapping, tiles_for(lowering, op, s)
    bias = op.bias is not None
    if attr is None:
        return choose_mapping(lowering, s, layer_name(op), bias)
    tiles = tiles_for(lowering, op, s)
    if lowering.target.main.kind != "vector":
        return "channels", tiles
    return choose_mapping(lowering, s, layer_name(op), bias, channels=tiles)


def lower_conv(lowering: Lowering, op: Operation):
    """A conv (depthwise or not) that tile-layers did not write as a nest: its nest now, with
    the cost model's tiles (or those of its `tile` attribute), unrolled."""
    s = conv2d_shape(op)
    if is_depthwise(s):
        return lower_detached(lowering, op, depthwise_nest(lowering, op, s, depthwise_tiles(lowering, op, s),
                                                           fused_epilogue(op), lowering.buffers))
    mapping, tiles = conv_mapping(lowering, op, s)
    nest = conv_nest(lowering, op, s, tiles, conv_tensors(op, s, mapping), fused_epilogue(op),
                     lowering.tile_order == "scan", mapping, lowering.buffers)
    return lower_detached(lowering, op, nest)


def lower_gemm(lowering: Lowering, op: Operation):
    """Y[M,N] = alpha A B + beta C as a 1x1 conv over a 1 x M "image" of K channels.

    A constant B carries alpha and a constant C carries beta (folded at compile time). With a
    B computed at run time and alpha != 1 the product is scaled on chip (`vact affine` after the
    matmuls, the residual pre-scaled by 1/alpha); a C computed at run time is the residual,
    broadcast by stride-0 DMA and scaled by beta on chip."""
    (m, k), (_, n) = gemm_mk(op), nn.shape_of(op.result)
    alpha, beta = float(op.alpha.value.data), float(op.beta.value.data)
    s = conv_problem(op)
    tensors = gemm_tensors(lowering, op, s)
    if tensors is not None:
        return lower_detached(lowering, op, conv_nest(lowering, op, s, tiles_for(lowering, op, s), tensors,
                                                      fused_epilogue(op), lowering.tile_order == "scan",
                                                      "channels", lowering.buffers))
    a_addr = source_address(lowering, op.a)
    x = Operand(a_addr, (0, 1, 0, k) if not op.trans_a.value else (0, m, 0, 1))
    w = gemm_weight(lowering, op, k, n, alpha)
    bias, residual, residual_scale = gemm_c(lowering, op, m, n, beta)
    fused_residual = getattr(op, "residual", None)
    if fused_residual is not None:
        if residual is not None:
            raise NnccError(f"layer {layer_name(op)}: a gemm with both a full-size C and a residual "
                            "is not supported")
        residual, residual_scale = Operand(source_address(lowering, fused_residual), (0, 1, 0, n)), 1.0
    post_scale = 1.0 if lowering.constant(op.b) is not None else alpha
    if post_scale == 0.0:
        raise NnccError(f"layer {layer_name(op)}: gemm with alpha = 0 and B computed at run time "
                        "is not supported")
    if residual is not None:
        residual_scale /= post_scale
    y_addr = lowering.address(op.result)
    conv = ConvLowering(lowering, s, tiles_for(lowering, op, s), x, w, bias,
                        Operand(y_addr, (0, 1, 0, n)), fused_epilogue(op), residual,
                        scan=lowering.tile_order == "scan")
    jobs = conv.jobs()
    if residual is not None and residual_scale != 1.0 or post_scale != 1.0:
        for job in jobs:
            scale_on_chip(lowering, job, residual_scale if residual is not None else 1.0, post_scale)
    return [(conv.kinds(), jobs)]


def scale_on_chip(lowering: Lowering, job, residual_scale: float, post_scale: float) -> None:
    """Scale a gemm job's loaded residual (before the matmuls) and its product (after them)."""
    def affine(p0, shape):
        rows, cols, channels = shape
        stride = (cols * channels, channels, 1)
        return Compute("vact", {"unit": lowering.vector_unit, "func": "affine", "p0": p0, "p1": 0.0,
                                "shape": shape, "x": BufRef("out"), "x_stride": stride, "z": BufRef("out"),
                                "z_stride": stride})
    if post_scale != 1.0 and job.stores.get("out"):
        last = max(i for i, c in enumerate(job.compute) if c.mnemonic == "matmul")
        job.compute.insert(last + 1, affine(post_scale, job.stores["out"][0].shape))
    if residual_scale != 1.0 and job.loads.get("out"):
        job.compute.insert(0, affine(residual_scale, job.loads["out"][0].shape))


def gemm_weight(lowering: Lowering, op: Operation, k: int, n: int, alpha: float) -> Operand:
    """B as [K][N] (strides of group, kh, kw, c=K, o=N)."""
    constant = lowering.constant(op.b)
    if constant is not None:
        b = constant.T if op.trans_b.value else constant
        return Operand(lowering.weight(op.b.owner.ref.data, f"gemm{alpha}", b * np.float32(alpha)),
                       (0, 0, 0, n, 1))
    addr = lowering.address(op.b)
    return Operand(addr, (0, 0, 0, 1, k) if op.trans_b.value else (0, 0, 0, n, 1))


def gemm_c(lowering: Lowering, op: Operation, m: int, n: int, beta: float):
    """C as a bias (a constant [N] or scalar), or as a residual tensor read with Y's (n, o, h, w)
    strides (stride 0 along broadcast axes); and the factor the residual still needs on chip."""
    if op.c is None:
        return None, None, 1.0
    constant = lowering.constant(op.c)
    if constant is not None:
        full = np.broadcast_to(constant * np.float32(beta), (m, n))
        if np.all(full == full[0:1]):
            return lowering.weight(op.c.owner.ref.data, f"bias{beta}", np.ascontiguousarray(full[0])), None, 1.0
        return None, Operand(lowering.weight(op.c.owner.ref.data, f"c{beta}", np.ascontiguousarray(full)),
                             (0, 1, 0, n)), 1.0
    sm, sn = eltwise.broadcast_source(lowering.address(op.c), nn.shape_of(op.c), (m, n)).strides
    return None, Operand(lowering.address(op.c), (0, sn, 0, sm)), beta


# --------------------------------------------------------------------------- elementwise

BINARY = {"nn.add": "vadd", "nn.sub": "vsub", "nn.mul": "vmul", "nn.div": "vdiv"}


def source(lowering: Lowering, value: SSAValue, out_shape) -> eltwise.Source:
    return eltwise.broadcast_source(source_address(lowering, value), nn.shape_of(value), out_shape)


def output(lowering: Lowering, op: Operation) -> eltwise.Source:
    shape = nn.shape_of(op.results[0])
    return eltwise.Source(lowering.address(op.results[0]), row_major_strides(shape))


def lower_binary(lowering: Lowering, op: Operation):
    shape = nn.shape_of(op.result)
    layer = eltwise.ElementwiseLayer(lowering, shape, [source(lowering, op.lhs, shape), source(lowering, op.rhs, shape)],
                                     output(lowering, op), eltwise.binary(BINARY[op.name], lowering.vector_unit))
    return layer.layers()


UNARY = {
    "nn.relu": lambda op: ("relu", 0.0, 0.0),
    "nn.sigmoid": lambda op: ("sigmoid", 0.0, 0.0),
    "nn.hard_swish": lambda op: ("hardswish", 0.0, 0.0),
    "nn.sqrt": lambda op: ("sqrt", 0.0, 0.0),
    "nn.leaky_relu": lambda op: ("leaky", float(op.alpha.value.data), 0.0),
    "nn.hard_sigmoid": lambda op: ("hardsigmoid", float(op.alpha.value.data), float(op.beta.value.data)),
    "nn.tanh": lambda op: ("tanh", 0.0, 0.0),
    "nn.erf": lambda op: ("erf", 0.0, 0.0),
    "nn.gelu": lambda op: ("gelu", 0.0, 0.0),
    "nn.gelu_tanh": lambda op: ("gelu_tanh", 0.0, 0.0),
    "nn.silu": lambda op: ("silu", 0.0, 0.0),
}


def lower_unary(lowering: Lowering, op: Operation):
    func, p0, p1 = UNARY[op.name](op)
    shape = nn.shape_of(op.result)
    layer = eltwise.ElementwiseLayer(lowering, shape, [source(lowering, op.input, shape)], output(lowering, op),
                                     eltwise.activation(func, lowering.vector_unit, p0, p1))
    return layer.layers()


def lower_clip(lowering: Lowering, op: Operation):
    from nncc.compiler.codegen.epilogue import clamp

    low = float(op.min.value.data) if getattr(op, "min", None) is not None else -math.inf
    high = float(op.max.value.data) if getattr(op, "max", None) is not None else math.inf
    shape = nn.shape_of(op.result)
    layer = eltwise.ElementwiseLayer(lowering, shape, [source(lowering, op.input, shape)], output(lowering, op),
                                     eltwise.activation("clip", lowering.vector_unit, clamp(low), clamp(high)))
    return layer.layers()


def lower_batch_norm(lowering: Lowering, op: Operation):
    """y = x * scale' + shift' with the per-channel factors folded at compile time."""
    scale, bias, mean, var = (lowering.constant(v) for v in (op.scale, op.bias, op.mean, op.var))
    if any(a is None for a in (scale, bias, mean, var)):
        return batch_norm_on_chip(lowering, op)
    factor = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + float(op.epsilon.value.data))
    shift = bias - mean * factor
    shape = nn.shape_of(op.result)
    per_channel = (1, shape[1]) + (1,) * (len(shape) - 2)
    name = layer_name(op)
    factor_addr = lowering.weight(f"{name}.scale", "", factor.astype(np.float32).reshape(per_channel))
    shift_addr = lowering.weight(f"{name}.shift", "", shift.astype(np.float32).reshape(per_channel))
    inputs = [source(lowering, op.input, shape), eltwise.broadcast_source(factor_addr, per_channel, shape),
              eltwise.broadcast_source(shift_addr, per_channel, shape)]
    layer = eltwise.ElementwiseLayer(lowering, shape, inputs, output(lowering, op), eltwise.fma(lowering.vector_unit))
    return layer.layers()


def batch_norm_on_chip(lowering: Lowering, op: Operation):
    """Batch norm whose parameters are computed at run time: the factors are made on chip,
    per tile, in the parameters' own (stride-0 broadcast) buffers:

        var <- rsqrt(var + eps); var <- var * scale; out <- (x - mean) * var + bias
    """
    shape = nn.shape_of(op.result)
    per_channel = (1, shape[1]) + (1,) * (len(shape) - 2)
    eps = float(op.epsilon.value.data)
    unit = lowering.vector_unit
    inputs = [source(lowering, op.input, shape)] + [
        eltwise.broadcast_source(source_address(lowering, v), per_channel, shape)
        for v in (op.scale, op.bias, op.mean, op.var)]

    def build(refs, strides, out, out_stride, size):
        x, scale, bias, mean, var = zip(refs, strides)

        def op2(mnemonic, a, b, z):
            return Compute(mnemonic, {"unit": unit, "shape": size, "x": a[0], "x_stride": a[1], "y": b[0],
                                      "y_stride": b[1], "z": z[0], "z_stride": z[1]})
        result = (out, out_stride)
        return [
            Compute("vact", {"unit": unit, "func": "rsqrt", "p0": eps, "p1": 0.0, "shape": size, "x": var[0],
                             "x_stride": var[1], "z": var[0], "z_stride": var[1]}),
            op2("vmul", var, scale, var), op2("vsub", x, mean, result), op2("vmul", result, var, result),
            op2("vadd", result, bias, result),
        ]
    layer = eltwise.ElementwiseLayer(lowering, shape, inputs, output(lowering, op), build)
    phases = layer.layers()
    for _, jobs in phases:
        for index, job in enumerate(jobs):
            # var is overwritten on chip: never reuse a resident copy in a later job
            job.buffers["in4"] = ("in4", index)
    return phases

