"""The conv, gemm and matmul layers: their problems, tiles and (made at lowering, when
tile-layers did not write them) nests (`lowering_table` maps ops to them).

Each `lower_*` function takes the lowering state and one op and returns the (buffer kinds,
jobs) phases of its layer.
"""

from __future__ import annotations

from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr, StringAttr, i64
from xdsl.ir import Operation

from nncc.compiler.codegen.context import TILE_ATTR, Lowering, layer_name
from nncc.compiler.codegen.conv import ConvShape, ConvTiles, choose_tiles, conv_shape, fits
from nncc.compiler.codegen.conv_width import (
    choose_mapping,
)
from nncc.compiler.codegen.conv_nest import conv_nest, conv_tensors, gemm_tensors, matmul_tensors
from nncc.compiler.codegen.depthwise import depthwise_probe, depthwise_tiles, is_depthwise
from nncc.compiler.codegen.nest import lower_detached
from nncc.compiler.codegen.window_nest import depthwise_nest
from nncc.compiler.codegen.epilogue import fused_epilogue
from nncc.compiler.codegen.pool import pool_probe
from nncc.dialects import nn
from nncc.support.errors import NnccError

# --------------------------------------------------------------------------- conv and gemm


def conv2d_shape(op: Operation) -> ConvShape:
    return conv_shape(op.input, nn.shape_of(op.weight), op.result, nn.ints(op.strides), nn.ints(op.pads),
                      nn.ints(op.dilations), op.group.value.data)


def conv_problem(op: Operation) -> ConvShape | None:
    """The convolution a conv (not depthwise), gemm or matmul op computes; None for other ops."""
    if op.name in ("nn.conv2d", "fused.conv2d"):
        s = conv2d_shape(op)
        return None if is_depthwise(s) else s
    if op.name in ("nn.gemm", "fused.gemm"):
        (m, k), (_, n) = gemm_mk(op), nn.shape_of(op.result)
        return ConvShape(1, k, 1, m, n, 1, 1, 1, m, (1, 1), (0, 0, 0, 0), (1, 1), 1, True, True)
    if op.name == "nn.matmul":
        m, k, n = matmul_tensors(op)[0]
        return ConvShape(1, k, 1, m, n, 1, 1, 1, m, (1, 1), (0, 0, 0, 0), (1, 1), 1, True, True)
    return None


def window_problem(lowering: Lowering, op: Operation):
    """Pooling or depthwise conv: its lowering with placeholder addresses, whose `tiles()` are
    those lowering would choose (pool.WindowTiles); None for other ops."""
    probe = pool_probe(lowering, op)
    if probe is None and op.name in ("nn.conv2d", "fused.conv2d") and is_depthwise(s := conv2d_shape(op)):
        probe = depthwise_probe(lowering, s, layer_name(op))
    return probe


def has_bias(op: Operation) -> bool:
    """Whether the layer's weight blocks carry a bias (a conv's `bias`, a gemm's C: the tile
    search counts its bytes with every weight block)."""
    if op.name in ("nn.gemm", "fused.gemm"):
        return op.c is not None
    return getattr(op, "bias", None) is not None


def gemm_mk(op: Operation) -> tuple[int, int]:
    shape = nn.shape_of(op.a)
    return shape[::-1] if op.trans_a.value else shape


def tiles_for(lowering: Lowering, op: Operation, s: ConvShape) -> ConvTiles:
    """The op's `tile` attribute when it has one (checked to fit), else the cost model's choice."""
    attr = op.attributes.get(TILE_ATTR)
    if attr is None:
        return choose_tiles(lowering, s, layer_name(op), has_bias(op))
    try:
        sizes = {key: value.value.data for key, value in attr.data.items() if key not in ("split", "mapping", "halo")}
        tiles = ConvTiles(sizes["oc"], sizes["ic"], sizes["oh"], sizes["ow"],
                          attr.data["split"].data if "split" in attr.data else "spatial",
                          attr.data["halo"].data if "halo" in attr.data else "recompute")
    except (AttributeError, KeyError) as error:
        raise NnccError(f"layer {layer_name(op)}: bad tile attribute {attr} (missing {error})") from None
    limits = {"oc": s.og, "ic": s.cg, "oh": s.oh, "ow": s.ow}
    if any(not 1 <= sizes[key] <= limit for key, limit in limits.items()) or \
            tiles.split not in ("spatial", "channel"):
        raise NnccError(f"layer {layer_name(op)}: tile sizes {sizes} must lie within {limits}")
    if tiles.halo not in ("recompute", "cache"):
        raise NnccError(f"layer {layer_name(op)}: tile halo must be recompute or cache, not {tiles.halo!r}")
    if not fits(lowering, tiles.slot_bytes(s), tiles.halo):
        raise NnccError(f"layer {layer_name(op)}: tile sizes {sizes} do not fit the target's memories")
    return tiles


def tile_attribute(tiles: ConvTiles, mapping: str = "channels") -> DictionaryAttr:
    return DictionaryAttr({"oc": IntegerAttr(tiles.toc, i64), "ic": IntegerAttr(tiles.tic, i64),
                           "oh": IntegerAttr(tiles.toh, i64), "ow": IntegerAttr(tiles.tow, i64),
                           "split": StringAttr(tiles.split), "mapping": StringAttr(mapping),
                           "halo": StringAttr(tiles.halo)})


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
    bias = has_bias(op)
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
    """A gemm or matmul that tile-layers did not write as a nest: its nest now (a 1x1 conv over
    a 1 x M image of K channels, `conv_nest.gemm_tensors` / `matmul_tensors`), unrolled."""
    s = conv_problem(op)
    tensors = matmul_tensors(op)[1] if op.name == "nn.matmul" else gemm_tensors(lowering, op, s)
    return lower_detached(lowering, op, conv_nest(lowering, op, s, tiles_for(lowering, op, s), tensors,
                                                  fused_epilogue(op), lowering.tile_order == "scan", "channels",
                                                  lowering.buffers))
