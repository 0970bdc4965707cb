"""The instructions of the `tile` dialect's compute ops, on the buffer views the unrolling resolved.

`tile.conv` on HWC tiles: one batched `matmul` per kernel row (batch = output rows, m = output
columns, n = output channels; k = kw x input channels, one contiguous run of the input and
weight tiles when there is no horizontal dilation), else one per kernel position; the
epilogue (bias, activation) rides on the matmuls on a vector main unit, or follows as
`vadd`/`vact` on the post-processing unit beside a matrix unit (epilogue.py):

    tile.conv %in[0], %wt[0] -> %out[0] sizes [4, 8, 3, 8] kernel [3, 3] strides [2, 2] ...
      -> matmul batch=4 mnk=8,8,9 a=in+0 a_stride=102,6,1 b=wt+0 b_stride=0,8,1 c=out ...  (x3)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from nncc.compiler.codegen.context import F32
from nncc.compiler.codegen.epilogue import Epilogue, clamp
from nncc.compiler.codegen.scheduler import BufRef, Compute
from nncc.dialects import tile
from nncc.support.errors import NnccError

if TYPE_CHECKING:
    from nncc.compiler.codegen.nest import NestLowering


def instructions(nest: NestLowering, op: tile.ComputeOp) -> list[Compute]:
    """The compute instructions of one execution of `op`."""
    return LOWERINGS[type(op)](nest, op)


def epilogue_of(op: tile.ConvOp | tile.DepthwiseOp) -> Epilogue:
    if op.act is None:
        return Epilogue()
    params = [float(v) for v in op.act_params.get_values()] if op.act_params is not None else []
    return Epilogue(op.act.data, *(params + [0.0, 0.0])[:2])


def shifted(ref: BufRef, elements: int) -> BufRef:
    return BufRef(ref.kind, ref.offset + F32 * elements)


@dataclass(frozen=True)
class WindowStatic:
    """What a tile.conv / tile.depthwise / tile.pool keeps from one execution to the next."""

    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    reduce: object  # the reduction loop's iv (tile.conv), else None
    onto_output: bool
    width: bool  # mapping width: output columns on the lanes
    has_bias: bool
    epilogue: Epilogue


def window_static(op) -> WindowStatic:
    reduce = getattr(op, "reduce", None)
    iv = op.indices[reduce.value.data] if reduce is not None and reduce.value.data >= 0 else None
    return WindowStatic(tile.ints(op.kernel), tile.ints(op.conv_strides), tile.ints(op.dilations), iv,
                        getattr(op, "accumulate_init", None) is not None, op.mapping is not None,
                        getattr(op, "has_bias", False), epilogue_of(op) if hasattr(op, "act") else Epilogue())


def unit_of(nest: NestLowering, op: tile.ComputeOp, default: str) -> str:
    """The unit op's `unit` attribute names ("pre", "post") when the target has it, else `default`."""
    attr = op.attributes.get("unit")
    return attr.data if attr is not None and attr.data in nest.lowering.target.units else default


def conv_instructions(nest: NestLowering, op: tile.ConvOp) -> list[Compute]:
    if op.last is not None and not nest.first_last[id(op.indices[op.last.value.data])][1]:
        return []
    info = nest.static(op, window_static)
    offsets_and_sizes = nest.values(op, "views", "sizes")
    count = info.has_bias + 3
    offsets, (toh, tow, tic, toc, *pitch) = offsets_and_sizes[:count], offsets_and_sizes[count:]
    first, last = nest.first_last[id(info.reduce)] if info.reduce is not None else (True, True)
    accumulate = not first or info.onto_output
    inputs, weights, out = (nest.view(op, i, offsets) for i in range(3))
    bias = nest.view(op, 3, offsets) if info.has_bias else None
    if pitch and info.width:
        raise NnccError(f"layer {nest.nest.layer.data}: tile.conv with an output row pitch needs the channels mapping")
    if not toh:  # no rows (a line buffer's strip outside the image)
        return []
    row_pitch = pitch[0] if pitch else tow * toc
    if len(pitch) > 1 and (info.width or bias is not None or info.epilogue.act):
        raise NnccError(f"layer {nest.nest.layer.data}: tile.conv with a column pitch has no epilogue (channels mapping)")
    matmuls = (width_matmuls if info.width else channel_matmuls)(info, inputs, weights, out, (toh, tow, tic, toc),
                                                                 accumulate, row_pitch, *pitch[1:])
    unit = unit_of(nest, op, "main")
    if unit != "main":
        matmuls = [Compute(c.mnemonic, c.operands | {"unit": unit}) for c in matmuls]
    return with_epilogue(nest, info, matmuls, out, bias, (toh, tow, toc), first, last, row_pitch)


def channel_matmuls(info: WindowStatic, inputs: BufRef, weights: BufRef, out: BufRef, sizes, accumulate: bool,
                    row_pitch: int, column_pitch: int | None = None):
    """One matmul per kernel row (k = kw x tic, contiguous without horizontal dilation), else per
    kernel position: batch = output rows, m = output columns, n = output channels."""
    toh, tow, tic, toc = sizes
    (kh, kw), (sh, sw), (dh, dw) = info.kernel, info.strides, info.dilations
    cols = (tow - 1) * sw + (kw - 1) * dw + 1
    folded = dw == 1
    positions = [(i, None) for i in range(kh)] if folded else [(i, j) for i in range(kh) for j in range(kw)]
    compute = []
    for index, (i, j) in enumerate(positions):
        compute.append(Compute("matmul", {
            "batch": toh, "mnk": (tow, toc, kw * tic if folded else tic),
            "a": shifted(inputs, (i * dh * cols + (j or 0) * dw) * tic), "a_stride": (sh * cols * tic, sw * tic, 1),
            "b": shifted(weights, (i * kw + (j or 0)) * tic * toc), "b_stride": (0, toc, 1),
            "c": out, "c_stride": (row_pitch, column_pitch or toc, 1),
            "acc": int(accumulate or index > 0),
        }))
    return compute


def width_matmuls(info: WindowStatic, inputs: BufRef, weights: BufRef, out: BufRef, sizes, accumulate: bool,
                  row_pitch: int):
    """One matmul per kernel position: a = its weights [oc][ic] (broadcast scalars), b = the
    input rows [ic][iw] (output columns on the lanes), batch = output rows."""
    toh, tow, tic, toc = sizes
    (kh, kw), (sh, sw), (dh, dw) = info.kernel, info.strides, info.dilations
    cols = (tow - 1) * sw + (kw - 1) * dw + 1
    compute = []
    for i in range(kh):
        for j in range(kw):
            compute.append(Compute("matmul", {
                "batch": toh, "mnk": (toc, tow, tic),
                "a": shifted(weights, (i * kw + j) * toc * tic), "a_stride": (0, tic, 1),
                "b": shifted(inputs, i * dh * tic * cols + j * dw), "b_stride": (sh * tic * cols, cols, sw),
                "c": out, "c_stride": (toc * tow, tow, 1),
                "acc": int(accumulate or (i, j) != (0, 0)),
            }))
    return compute


def with_epilogue(nest: NestLowering, info: WindowStatic, compute: list[Compute], out: BufRef,
                  bias: BufRef | None, sizes, first: bool, last: bool, row_pitch: int) -> list[Compute]:
    """The bias on the tile's first matmul and the activation on its last (a vector main unit),
    else `vadd`/`vact` after the last on the post-processing unit."""
    toh, tow, toc = sizes
    epilogue, width = info.epilogue, info.width
    if nest.lowering.vector_unit == "main":
        head, tail = epilogue.matmul_operands(bias, (0, 1, 0) if width else (0, 0, 1), first, last)
        compute[0] = Compute("matmul", {**compute[0].operands, **head})
        compute[-1] = Compute("matmul", {**compute[-1].operands, **tail})
    elif last:
        compute += epilogue.instructions(nest.lowering, out, (toh, toc, tow) if width else (toh, tow, toc),
                                         bias=bias, layout="channels_middle" if width else "channels_last",
                                         row_pitch=None if width else row_pitch)
    return compute


def fill_instructions(nest: NestLowering, op: tile.FillOp) -> list[Compute]:
    """One `vfill` of the [rows][columns][channels] tile (none when it is empty: a fused
    group's border rows in a strip inside the image)."""
    (offset,) = nest.values(op, "views")
    rows, cols, channels, *pitch = nest.values(op, "sizes")
    if not rows * cols * channels:
        return []
    stride = (pitch[0] if pitch else cols * channels, channels, 1)
    return [Compute("vfill", {"unit": nest.lowering.vector_unit, "shape": (rows, cols, channels),
                              "z": nest.view(op, 0, (offset,)), "z_stride": stride,
                              "value": float(op.value.value.data)})]


def depthwise_instructions(nest: NestLowering, op: tile.DepthwiseOp) -> list[Compute]:
    """One `vfma` per kernel tap over the whole output tile, the first starting from the bias
    (or from a residual the output tile holds, the bias then added; a `vmul` with neither),
    then the activation. Channels on the lanes ([rows][columns][channels] tiles), or with
    `mapping width` the output columns ([channels][rows][columns] tiles)."""
    offsets = nest.values(op, "views")
    toh, tow, channels, *pitch = nest.values(op, "sizes")
    kh, kw = tile.ints(op.kernel)
    sh, sw = tile.ints(op.conv_strides)
    dh, dw = tile.ints(op.dilations)
    rows, cols = (toh - 1) * sh + (kh - 1) * dh + 1, (tow - 1) * sw + (kw - 1) * dw + 1
    inputs, weights, out = (nest.view(op, i, offsets) for i in range(3))
    bias = nest.view(op, 3, offsets) if op.has_bias else None
    unit = nest.lowering.vector_unit
    if op.mapping is None:  # channels on the lanes
        row_pitch, col_pitch, out_pitch = (*pitch, tow * channels)[:3] if pitch else (cols * channels, channels,
                                                                                   tow * channels)
        shape, x_stride = (toh, tow, channels), (sh * row_pitch, sw * col_pitch, 1)
        w_stride, z_stride = (0, 0, 1), (out_pitch, channels, 1)
    else:  # output columns on the lanes
        row_pitch, col_pitch = cols, 1
        shape, x_stride = (channels, toh, tow), (rows * cols, sh * cols, sw)
        w_stride, z_stride = (1, 0, 0), (toh * tow, tow, 1)
    onto = op.accumulate_init is not None
    compute = []
    for i in range(kh):
        for j in range(kw):
            x = shifted(inputs, i * dh * row_pitch + j * dw * col_pitch)
            w = shifted(weights, (i * kw + j) * channels)
            operands = {"unit": unit, "shape": shape, "x": x, "x_stride": x_stride, "y": w, "y_stride": w_stride}
            if compute or bias is not None or onto:
                init = (out, z_stride) if compute or onto else (bias, w_stride)
                compute.append(Compute("vfma", {**operands, "w": init[0], "w_stride": init[1], "z": out,
                                                "z_stride": z_stride}))
            else:
                compute.append(Compute("vmul", {**operands, "z": out, "z_stride": z_stride}))
    if onto and bias is not None:
        compute.append(Compute("vadd", {"unit": unit, "shape": shape, "x": out, "x_stride": z_stride, "y": bias,
                                        "y_stride": w_stride, "z": out, "z_stride": z_stride}))
    return compute + epilogue_of(op).instructions(nest.lowering, out, shape, row_pitch=z_stride[0])


def pool_instructions(nest: NestLowering, op: tile.PoolOp) -> list[Compute]:
    """One `vpool` over the output tile (the window's step folded into its strides), then a
    `vmul` by the [rows][columns] reciprocal divisors when there are any."""
    offsets = nest.values(op, "views")
    toh, tow, channels = nest.values(op, "sizes")
    if not toh:  # no rows (a line buffer's strip outside the image)
        return []
    kh, kw = tile.ints(op.kernel)
    sh, sw = tile.ints(op.conv_strides)
    dh, dw = tile.ints(op.dilations)
    rows, cols = (toh - 1) * sh + (kh - 1) * dh + 1, (tow - 1) * sw + (kw - 1) * dw + 1
    inputs, out = nest.view(op, 0, offsets), nest.view(op, 1, offsets)
    unit = nest.lowering.vector_unit
    if op.mapping is None:  # channels on the lanes: (row, column, channel) strides
        shape, x_stride = (toh, tow, channels), (sh * cols * channels, sw * channels, 1)
        win_stride, z_stride, d_stride = (dh * cols * channels, dw * channels), (tow * channels, channels, 1), \
            (tow, 1, 0)
    else:  # columns on the lanes: (channel, row, column)
        shape, x_stride = (channels, toh, tow), (rows * cols, sh * cols, sw)
        win_stride, z_stride, d_stride = (dh * cols, dw), (toh * tow, tow, 1), (0, tow, 1)
    compute = [Compute("vpool", {"unit": unit, "func": op.func.data, "shape": shape, "window": (kh, kw),
                                 "x": inputs, "x_stride": x_stride, "win_stride": win_stride, "z": out,
                                 "z_stride": z_stride})]
    if len(op.buffers) == 3:
        compute.append(Compute("vmul", {"unit": unit, "shape": shape, "x": out, "x_stride": z_stride,
                                        "y": nest.view(op, 2, offsets), "y_stride": d_stride, "z": out,
                                        "z_stride": z_stride}))
    return compute


# --------------------------------------------------------------------------- streaming ops


@dataclass(frozen=True)
class StreamStatic:
    """What a tile.map / tile.reduce keeps from one execution to the next."""

    layouts: tuple[int, ...]
    names: tuple[str, ...]  # the index-expression properties to evaluate
    first: object  # iv of the loop whose first / last iteration alone runs the op (tile.map), or None
    last: object
    reduce: object  # iv of the loop whose later iterations accumulate (tile.reduce), or None


def stream_static(op) -> StreamStatic:
    def iv(name):
        attr = getattr(op, name, None)
        return op.indices[attr.value.data] if attr is not None else None
    names = ("views", "sizes") + (("view_strides",) if op.view_strides is not None else ())
    return StreamStatic(tile.ints(op.layouts), names, iv("first"), iv("last"), iv("reduce"))


def stream_views(nest: NestLowering, op, info: StreamStatic):
    """The buffer views of a streaming op, its sizes, and each view's strides over `shape`
    (dense row-major by it with size 1 and stride 0 along broadcast dimensions, or explicit)."""
    values = nest.values(op, *info.names)
    count = len(info.layouts)
    offsets, rest = values[:count], values[count:]
    sizes_count = len(op.sizes.data.results)
    sizes, explicit = rest[:sizes_count], rest[sizes_count:]
    n0, n1, n2 = sizes[:3]
    strides, given = [], 0
    for layout in info.layouts:
        if layout == tile.STRIDED:
            strides.append(tuple(explicit[given:given + 3]))
            given += 3
        else:  # dense by the shape with size 1 along the broadcast dimensions, stride 0 there
            m1, m2 = (1 if layout & 2 else n1), (1 if layout & 4 else n2)
            strides.append((0 if layout & 1 else m1 * m2, 0 if layout & 2 else m2, 0 if layout & 4 else 1))
    return [nest.view(op, i, offsets) for i in range(count)], sizes, strides


def map_instructions(nest: NestLowering, op: tile.MapOp) -> list[Compute]:
    """One instruction: vadd/vsub/vmul/vdiv/vmax/vmin, vfma, or vact with the function's parameters."""
    info = nest.static(op, stream_static)
    if info.first is not None and not nest.first_last[id(info.first)][0] or \
            info.last is not None and not nest.first_last[id(info.last)][1]:
        return []
    refs, sizes, strides = stream_views(nest, op, info)
    func, unit = op.func.data, unit_of(nest, op, nest.lowering.vector_unit)
    shape = tuple(sizes[:3])
    operands: dict = {"unit": unit}
    if func in tile.MAP_BINARY or func == "fma":
        mnemonic = tile.MAP_BINARY.get(func, "vfma")
        operands["shape"] = shape
    else:
        mnemonic = "vact"
        params = [float(p) for p in op.params.get_values()] if op.params is not None else []
        p0, p1 = (clamp(p) for p in (params + [0.0, 0.0])[:2])
        operands |= {"func": func, "p0": p0, "p1": p1, "shape": shape}
    names = ("x", "y", "w")[:len(refs) - 1] + ("z",)
    for name, ref, stride in zip(names, refs, strides):
        operands[name] = ref
        operands[f"{name}_stride"] = stride
    return [Compute(mnemonic, operands)]


def reduce_instructions(nest: NestLowering, op: tile.ReduceOp) -> list[Compute]:
    """`vred` (repeated with `repeat`; acc on the later iterations of the `reduce` loop), or one
    `vpool` over the window's taps."""
    info = nest.static(op, stream_static)
    (x, z), sizes, (x_stride, z_stride) = stream_views(nest, op, info)
    shape, unit, func = tuple(sizes[:3]), nest.lowering.vector_unit, op.func.data
    if op.window is not None:
        return [Compute("vpool", {"unit": unit, "func": func, "shape": shape, "window": tile.ints(op.window),
                                  "x": x, "x_stride": x_stride, "win_stride": tuple(sizes[3:5]), "z": z,
                                  "z_stride": z_stride})]
    acc = int(info.reduce is not None and not nest.first_last[id(info.reduce)][0])
    count, x_step, z_step = sizes[3:6] if op.repeat is not None else (1, 0, 0)
    return [Compute("vred", {"unit": unit, "func": func, "acc": acc, "shape": shape, "x": shifted(x, r * x_step),
                             "x_stride": x_stride, "z": shifted(z, r * z_step), "z_stride": 1})
            for r in range(count)]


LOWERINGS = {tile.ConvOp: conv_instructions, tile.DepthwiseOp: depthwise_instructions, tile.PoolOp: pool_instructions,
             tile.FillOp: fill_instructions, tile.MapOp: map_instructions, tile.ReduceOp: reduce_instructions}
