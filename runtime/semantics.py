"""What every instruction does to the memories, and the work it represents.

One function per instruction family. Each reads its operand tiles *now* (at its start) and returns
an `Effect`: the tile writes to apply when it completes, the bytes it read and wrote per memory, and
its work (MACs, elementwise operations, issue cycles on its unit). The interpreter decides when.
"""

from __future__ import annotations

import math
from operator import itemgetter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nncc.runtime import isa
from nncc.runtime.memory import Fault, Memories, check_tile_size, footprint
from nncc.runtime.target import ComputeUnit
from nncc.runtime.timing import (compute_cycles, dma_payload, instruction_macs, kernel_accesses,
                                 matmul_epilogue_passes, transfer_bytes)


@dataclass(slots=True)
class Effect:
    writes: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    read_bytes: dict[str, int] = field(default_factory=dict)
    write_bytes: dict[str, int] = field(default_factory=dict)
    macs: int = 0
    ops: int = 0
    cycles: int = 0  # compute instructions: busy cycles of the unit
    transfer: tuple | None = None  # DMA: timing.dma_payload (src, dst, read bytes, bytes per copy, copies, runs)
    key: tuple = ()  # its kind: what its bytes, work and cycles depend on (compute: `timing_key`)
    counted: bool = True  # False: bytes, work and cycles are those of the first instruction of its key


def _add(counter: dict[str, int], name: str, nbytes: int) -> None:
    counter[name] = counter.get(name, 0) + nbytes


# --------------------------------------------------------------------------------------------
# DMA


_DMA_TIMING: dict[tuple, tuple[int, int, tuple]] = {}
"""(bytes read, bytes written, `timing.dma_payload`) of a DMA by its spaces, box, strides and copies."""


def dma(mem: Memories, ins: Any) -> Effect:
    """A DMA's copy; its checks, byte counts and timing payload are found once per shape of DMA
    (`_dma_plan`)."""
    src_space, src_addr = ins.src
    dst_space, dst_addr = ins.dst
    shape, pad, cores, src_core = ins.shape, ins.pad, ins.cores, ins.src_core
    key = (src_space, dst_space, shape, pad, ins.src_stride, ins.dst_stride, cores, src_core)
    plan = mem.dma_plans.get(key)
    if plan is None:
        plan = mem.dma_plans[key] = _dma_plan(mem, *key)
    inner, window, read_bytes, write_bytes, transfer, timing = plan
    if inner is None:
        data = mem.view(src_space, src_core, src_addr, shape, ins.src_stride).copy()
    else:
        data = np.full(shape, ins.pad_value, dtype=np.float32)
        if window is not None:
            data[window] = mem.view(src_space, src_core, src_addr, inner, ins.src_stride)
    dst_stride = ins.dst_stride
    writes = [(mem.view(dst_space, core, dst_addr, shape, dst_stride), data) for core in cores]
    return Effect(writes, read_bytes, write_bytes, transfer=transfer, key=timing)
    # its DRAM bursts and rows: runtime/dram.py, walked by the interpreter


def _dma_plan(mem: Memories, src_space: str, dst_space: str, shape, pad, src_stride, dst_stride, cores,
              src_core: int) -> tuple:
    """What a DMA's checks, copy and counts depend on but its addresses: (the box without its
    padding or None when unpadded, the slices of the box it fills or None when all padding, bytes
    read, bytes written, `timing.dma_payload`, its key in `_DMA_TIMING`). Faults for a bad box,
    padding or destination."""
    check_tile_size(shape, "dma box")  # before a padded box of that shape is filled
    inner = tuple(n - pad[2 * d] - pad[2 * d + 1] for d, n in enumerate(shape))
    if min(inner) < 0:
        raise Fault(f"padding {','.join(map(str, pad))} is larger than the box {','.join(map(str, shape))}")
    if not cores:
        raise Fault("no destination core")
    if (dst_space == "DRAM" or mem.shared[dst_space]) and len(cores) > 1:
        raise Fault(f"multicast to {dst_space}, which has one instance")
    for core in (*cores, src_core):
        if core >= mem.target.cores:
            raise Fault(f"core {core} does not exist (target has {mem.target.cores})")
    key = (src_space, dst_space, shape, pad, src_stride, dst_stride, len(cores))
    found = _DMA_TIMING.get(key)
    if found is None:
        read, written = transfer_bytes(shape, pad)  # the timing model's byte counts
        payload = dma_payload(src_space, dst_space, shape, pad, src_stride, dst_stride, len(cores))
        found = _DMA_TIMING[key] = (read, written * len(cores), payload)
    read, written, payload = found
    window = None
    if min(inner) > 0:
        window = tuple(slice(pad[2 * d], n - pad[2 * d + 1]) for d, n in enumerate(shape))
    return (None if pad == (0, 0, 0, 0, 0, 0) else inner, window, {src_space: read}, {dst_space: written},
            payload, key)


# --------------------------------------------------------------------------------------------
# Compute


def _tile(mem: Memories, ins: Any, ref: tuple[str, int], shape, strides, effect: Effect, write: bool = False):
    space, addr = ref
    view = mem.views.get((space, ins.core, addr, shape, strides))  # on-chip tiles recur (`Memories.view`)
    if view is None:
        if space == "DRAM":
            raise Fault(f"compute operand {space}[{addr:#x}] is in DRAM; load it on chip first")
        view = mem.view(space, ins.core, addr, shape, strides)
    if effect.counted:
        _add(effect.write_bytes if write else effect.read_bytes, space, 4 * footprint(shape, strides))
    return view


def _effect(mem: Memories, ins: Any) -> Effect:
    """The effect of a compute instruction, counted (bytes, work, cycles) unless an instruction of
    the same `timing_key` was: those depend on its shapes, strides and memories, not addresses."""
    key = timing_key(ins)
    if key in mem.counts:  # its counts are the first's (`_finish`)
        return Effect([], _NONE, _NONE, key=key, counted=False)
    return Effect(key=key)


_NONE: dict[str, int] = {}  # an uncounted effect's bytes until `_finish`: never written


def _finish(mem: Memories, ins: Any, effect: Effect) -> Effect:
    """The instruction's busy cycles, by the timing model's one rule (`timing.compute_cycles`), and
    its counts, found once per `timing_key`."""
    if effect.counted:
        effect.cycles = compute_cycles(mem.target, type(ins).DEF.mnemonic, ins_operand(ins), _ref_memory)
        mem.counts[effect.key] = (effect.read_bytes, effect.write_bytes, effect.macs, effect.ops, effect.cycles)
    else:  # shared with the first: read, never changed
        effect.read_bytes, effect.write_bytes, effect.macs, effect.ops, effect.cycles = mem.counts[effect.key]
    return effect


_TIMING_FIELDS: dict[type, tuple[Callable, Callable]] = {}


def timing_key(ins: Any) -> tuple:
    """What a compute instruction's cycles depend on: its operands but the tile addresses (only
    their memories), the semaphores and the core."""
    cls = type(ins)
    fields = _TIMING_FIELDS.get(cls)
    if fields is None:
        operands = cls.DEF.operands
        plain = [i for i, o in enumerate(operands) if o.kind != isa.Kind.REF and o.name not in ("wait", "signal", "core")]
        refs = [i for i, o in enumerate(operands) if o.kind == isa.Kind.REF]
        fields = _TIMING_FIELDS[cls] = (_getter(plain), _getter(refs))
    plain, refs = fields
    return (cls, plain(ins), *[ref[0] for ref in refs(ins)])


def _getter(indices: list[int]) -> Callable[[tuple], tuple]:
    """The fields `indices` of a tuple, as a tuple (itemgetter returns one field alone)."""
    if len(indices) == 1:
        return lambda values, index=indices[0]: (values[index],)
    return itemgetter(*indices) if indices else lambda values: ()


def ins_operand(ins: Any):
    """An instruction's operands as the timing model reads them: `(name, default) -> value`."""
    return lambda name, default: getattr(ins, name, default)


def _ref_memory(ref: tuple[str, int]) -> str:
    return ref[0]


def vector_unit(mem: Memories, ins: Any) -> ComputeUnit:
    unit = compute_unit(mem, ins)
    if unit.kind != "vector":
        raise Fault(f"unit {ins.unit} is a matrix unit: it runs matmul only")
    return unit


def compute_unit(mem: Memories, ins: Any) -> ComputeUnit:
    if ins.core >= mem.target.cores:
        raise Fault(f"core {ins.core} does not exist (target has {mem.target.cores})")
    unit = mem.target.units.get(ins.unit)
    if unit is None:
        raise Fault(f"target {mem.target.name} has no {ins.unit} unit")
    return unit


def matmul(mem: Memories, ins: Any) -> Effect:
    unit = compute_unit(mem, ins)
    m, n, k = ins.mnk
    batch = ins.batch
    effect = _effect(mem, ins)
    a = _tile(mem, ins, ins.a, (batch, m, k), ins.a_stride, effect)
    b = _tile(mem, ins, ins.b, (batch, k, n), ins.b_stride, effect)
    result = np.matmul(a, b)
    if ins.acc:
        result += _tile(mem, ins, ins.c, (batch, m, n), ins.c_stride, effect)  # the same sums as c + a @ b
    if effect.counted and matmul_epilogue_cost(ins) and unit.kind != "vector":  # the key holds unit, bias and act
        raise Fault(f"unit {ins.unit} is a matrix unit: it has no bias/act epilogue (use a vector unit)")
    if ins.bias != isa.NO_REF:
        result += _tile(mem, ins, ins.bias, (batch, m, n), ins.bias_stride, effect)
    if ins.act != "none":
        with np.errstate(all="ignore"):
            result = _activation(ins.act, result, ins.p0, ins.p1)
    c_out = _tile(mem, ins, ins.c, (batch, m, n), ins.c_stride, effect, write=True)
    effect.writes.append((c_out, result))
    if effect.counted:
        effect.macs = instruction_macs("matmul", ins_operand(ins))
        effect.ops = batch * m * n * matmul_epilogue_cost(ins)
        if unit.micro_kernel:
            _kernel_accesses(unit, ins, effect)
    return _finish(mem, ins, effect)


def _kernel_accesses(unit: ComputeUnit, ins: Any, effect: Effect) -> None:
    """The accesses of a micro-kernel matmul beyond one pass over each operand
    (`timing.kernel_accesses`): b re-read by every row block, the broadcast operand written into
    its memory (staged) and read from there by every call."""
    m, n, k = ins.mnk
    a_space, b_space = ins.a[0], ins.b[0]
    staged = a_space != unit.broadcast_memory
    b_bytes = 4 * footprint((ins.batch, k, n), ins.b_stride)
    a_bytes = 4 * footprint((ins.batch, m, k), ins.a_stride)
    b_passes, broadcast_reads = kernel_accesses(unit, ins.batch, m, n, k)
    _add(effect.read_bytes, b_space, (b_passes - 1) * b_bytes)
    if staged:
        _add(effect.write_bytes, unit.broadcast_memory, a_bytes)
        _add(effect.read_bytes, unit.broadcast_memory, broadcast_reads)
    else:
        _add(effect.read_bytes, a_space, broadcast_reads - a_bytes)


def matmul_epilogue_cost(ins: Any) -> int:
    """Vector passes of a matmul's epilogue: 1 for the bias add, the activation's cost for act."""
    return matmul_epilogue_passes(ins_operand(ins))


_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "vadd": np.add,
    "vsub": np.subtract,
    "vmul": np.multiply,
    "vdiv": np.divide,
    "vmax": np.maximum,
    "vmin": np.minimum,
    "vcmpeq": lambda x, y: (x == y).astype(np.float32),
    "vcmpgt": lambda x, y: (x > y).astype(np.float32),
}


def binary(mem: Memories, ins: Any) -> Effect:
    vector_unit(mem, ins)
    mnemonic = type(ins).DEF.mnemonic
    effect = _effect(mem, ins)
    x = _tile(mem, ins, ins.x, ins.shape, ins.x_stride, effect)
    y = _tile(mem, ins, ins.y, ins.shape, ins.y_stride, effect)
    with np.errstate(all="ignore"):
        result = _BINARY[mnemonic](x, y)
    effect.writes.append((_tile(mem, ins, ins.z, ins.shape, ins.z_stride, effect, write=True), result))
    effect.ops = _elements(ins.shape)
    return _finish(mem, ins, effect)


def vfma(mem: Memories, ins: Any) -> Effect:
    vector_unit(mem, ins)
    effect = _effect(mem, ins)
    x = _tile(mem, ins, ins.x, ins.shape, ins.x_stride, effect)
    y = _tile(mem, ins, ins.y, ins.shape, ins.y_stride, effect)
    w = _tile(mem, ins, ins.w, ins.shape, ins.w_stride, effect)
    effect.writes.append((_tile(mem, ins, ins.z, ins.shape, ins.z_stride, effect, write=True), x * y + w))
    if effect.counted:
        effect.macs = instruction_macs("vfma", ins_operand(ins))  # one per element, on the FMAC units
    return _finish(mem, ins, effect)


def _activation(func: str, x: np.ndarray, p0: float, p1: float) -> np.ndarray:
    p0 = np.float32(p0)
    p1 = np.float32(p1)
    match func:
        case "copy":
            return x.copy()
        case "relu":
            return np.maximum(x, np.float32(0))
        case "clip":
            return np.minimum(np.maximum(x, p0), p1)
        case "leaky":
            return np.where(x > 0, x, p0 * x)
        case "step":
            return (x > 0).astype(np.float32)
        case "affine":
            return x * p0 + p1
        case "abs":
            return np.abs(x)
        case "neg":
            return -x
        case "square":
            return x * x
        case "hardsigmoid":
            return np.clip(x * p0 + p1, 0, 1).astype(np.float32)
        case "hardswish":
            return x * np.clip(x / np.float32(6) + np.float32(0.5), 0, 1).astype(np.float32)
        case "sigmoid":
            return (1 / (1 + np.exp(-x))).astype(np.float32)
        case "tanh":
            return np.tanh(x)
        case "exp":
            return np.exp(x)
        case "log":
            return np.log(x)
        case "recip":
            return (np.float32(1) / x).astype(np.float32)
        case "sqrt":
            return np.sqrt(x)
        case "rsqrt":
            return (np.float32(1) / np.sqrt(x + p0)).astype(np.float32)
        case "erf":
            return _erf(x)
        case "gelu":
            return (x * (0.5 * (1 + _erf(x / np.float32(np.sqrt(2)))))).astype(np.float32)
        case "gelu_tanh":
            x64 = x.astype(np.float64)
            inner = np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64**3)
            return (0.5 * x64 * (1 + np.tanh(inner))).astype(np.float32)
        case "silu":
            return (x / (1 + np.exp(-x))).astype(np.float32)
    raise Fault(f"unknown activation {func!r}")  # pragma: no cover - make() checks choices


_ERF = np.vectorize(math.erf, otypes=[np.float64])


def _erf(x: np.ndarray) -> np.ndarray:
    """erf elementwise (float64 math.erf, rounded to float32: numpy has no erf)."""
    return _ERF(x.astype(np.float64)).astype(np.float32) if x.size else x.copy()


def vact(mem: Memories, ins: Any) -> Effect:
    vector_unit(mem, ins)
    effect = _effect(mem, ins)
    x = _tile(mem, ins, ins.x, ins.shape, ins.x_stride, effect)
    with np.errstate(all="ignore"):
        result = _activation(ins.func, x, ins.p0, ins.p1)
    effect.writes.append((_tile(mem, ins, ins.z, ins.shape, ins.z_stride, effect, write=True), result))
    effect.ops = _elements(ins.shape)
    return _finish(mem, ins, effect)


def vfill(mem: Memories, ins: Any) -> Effect:
    vector_unit(mem, ins)
    effect = _effect(mem, ins)
    z = _tile(mem, ins, ins.z, ins.shape, ins.z_stride, effect, write=True)
    effect.writes.append((z, np.full(ins.shape, ins.value, dtype=np.float32)))
    return _finish(mem, ins, effect)


def vred(mem: Memories, ins: Any) -> Effect:
    vector_unit(mem, ins)
    effect = _effect(mem, ins)
    x = _tile(mem, ins, ins.x, ins.shape, ins.x_stride, effect)
    if ins.func == "max":
        result = x.max(axis=(1, 2))
    else:
        result = x.sum(axis=(1, 2), dtype=np.float32)
        if ins.func == "mean":
            result = result / np.float32(ins.shape[1] * ins.shape[2])
    n0 = ins.shape[0]
    if ins.acc:
        old = _tile(mem, ins, ins.z, (n0,), (ins.z_stride,), effect)
        result = np.maximum(old, result) if ins.func == "max" else old + result
    effect.writes.append((_tile(mem, ins, ins.z, (n0,), (ins.z_stride,), effect, write=True), result))
    effect.ops = _elements(ins.shape)
    return _finish(mem, ins, effect)


def vpool(mem: Memories, ins: Any) -> Effect:
    vector_unit(mem, ins)
    effect = _effect(mem, ins)
    shape5 = (*ins.shape, *ins.window)
    x = _tile(mem, ins, ins.x, shape5, (*ins.x_stride, *ins.win_stride), effect)
    if ins.func == "max":
        result = x.max(axis=(3, 4))
    else:
        result = x.sum(axis=(3, 4), dtype=np.float32)
        if ins.func == "avg":
            result = result / np.float32(ins.window[0] * ins.window[1])
    effect.writes.append((_tile(mem, ins, ins.z, ins.shape, ins.z_stride, effect, write=True), result))
    window = ins.window[0] * ins.window[1]
    effect.ops = _elements(ins.shape) * window
    return _finish(mem, ins, effect)


def _elements(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


SEMANTICS: dict[str, Callable[[Memories, Any], Effect]] = {
    "matmul": matmul,
    **{mnemonic: binary for mnemonic in isa.BINARY_OPS},
    "vfma": vfma,
    "vact": vact,
    "vfill": vfill,
    "vred": vred,
    "vpool": vpool,
}
"""Compute instructions by mnemonic (dma, barrier and layer are handled by the interpreter)."""
