"""What every op's code generator sees: the target, the program, DRAM addresses of values.

Tensors live in DRAM row-major in their IR shape (activations NCHW, as ONNX has them),
so reshapes are free; on a burst-timed DRAM `dram-layout` stores the feature maps between
load/store nests channels-last, seen through a `tile.view` in those nests. Weights are laid out for the kernels that read them (e.g.
conv weights as [kh, kw, C, O]) when they are placed in the DRAM image.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field

import numpy as np
from xdsl.ir import Operation, SSAValue

from nncc.compiler.codegen.dram_plan import DramPlan
from nncc.compiler.weights import WeightStore
from nncc.dialects import nn
from nncc.runtime.program import Program
from nncc.runtime.target import Target

F32 = 4

TILE_ATTR = "tile"
"""Discardable attribute of a layer: its tile sizes, set by tile-layers (or by hand). Conv/gemm:
`tile = {oc = 64 : i64, ic = 64 : i64, oh = 4 : i64, ow = 56 : i64, split = "spatial", mapping = "channels"}`;
pooling and depthwise conv: `tile = {c = 32 : i64, oh = 8 : i64, ow = 8 : i64, layout = "hwc"}`."""


_COST_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def module_cost_cache(module: Operation, *parameters) -> dict:
    """The `Lowering.cost_cache` the passes over `module` share for the same lowering `parameters`
    (target, order, objective, cores, slots): fuse-groups times the layers of every chain as
    tile-layers then tiles them, and the tile searches are made once."""
    caches = _COST_CACHES.setdefault(module, {})
    return caches.setdefault(repr(parameters), {})


@dataclass
class Lowering:
    """State shared by the code generators of one program."""

    target: Target
    program: Program
    store: WeightStore
    addresses: dict[SSAValue, int] = field(default_factory=dict)
    weight_cache: dict[tuple[str, str], int] = field(default_factory=dict)
    tile_order: str = "scan"
    objective: str = "cycles"  # what tile choice minimises first: "cycles" or "dram" (bytes moved)
    layer_cores: int = 0  # cores a layer's tiles are dealt to (0: all; partition-cores decides)
    buffers: int = 2  # slots per buffer kind: 2 is double buffering (double-buffer decides)
    compare_orders: bool = False  # also predict each Scan conv layer's DRAM bytes in naive order
    # the cost model's figures per layer, by layer ordinal (the order of `layer` markers, as the
    # report's rows): {"name", "predicted_cycles", "predicted_dram_read_bytes", "predicted_dram_write_bytes"}
    predictions: dict[int, dict] = field(default_factory=dict)
    layer_index: int = -1
    cost_cache: dict = field(default_factory=dict)  # tile choices and predictions of layer shapes seen
    layer_name: str = ""
    dram_plan: DramPlan | None = None  # intermediates' DRAM by liveness (lower_module); else never reused

    # -- DRAM

    def allocate(self, nbytes: int, align: int = 64) -> int:
        """Room for an intermediate tensor (no symbol: it is neither input, output nor weight)."""
        if self.dram_plan is not None:
            return self.dram_plan.allocate(nbytes)
        addr = -(-self.program.dram_bytes // align) * align
        self.program.dram_bytes = addr + nbytes
        return addr

    def address(self, value: SSAValue) -> int:
        if value not in self.addresses:
            self.addresses[value] = self.allocate(F32 * math.prod(nn.shape_of(value)))
        return self.addresses[value]

    def constant(self, value: SSAValue) -> np.ndarray | None:
        """The array of a value defined by `nn.weight`, else None."""
        if isinstance(value.owner, nn.WeightOp):
            return self.store[value.owner.ref.data]
        return None

    def weight(self, name: str, layout: str, array: np.ndarray) -> int:
        """Place a (re-laid-out) weight in the DRAM image once; its byte address."""
        key = (name, layout)
        if key not in self.weight_cache:
            symbol = self.program.allocate(f"{name}#{layout}" if layout else name, "weight",
                                           array.shape, np.asarray(array, np.float32).reshape(array.shape))
            self.weight_cache[key] = symbol.addr
        return self.weight_cache[key]

    def record_prediction(self, prediction) -> None:
        """Add a `cost_model.Prediction` to the current layer's (phases of a layer add up)."""
        row = self.predictions.setdefault(self.layer_index, {
            "name": self.layer_name, "predicted_cycles": 0, "predicted_dram_read_bytes": 0,
            "predicted_dram_write_bytes": 0})
        for key, value in prediction.row().items():
            row[key] += value

    def record_naive_order(self, prediction) -> None:
        """The DRAM bytes the same tiles would move in naive order (a Scan layer's saving)."""
        row = self.predictions.setdefault(self.layer_index, {"name": self.layer_name})
        row["predicted_dram_bytes_naive_order"] = row.get("predicted_dram_bytes_naive_order", 0) + int(
            prediction.dram_read_bytes + prediction.dram_write_bytes)

    # -- machine

    @property
    def cores(self) -> int:
        return min(self.layer_cores or self.target.cores, self.target.cores)

    @property
    def vector_unit(self) -> str:
        """The unit that runs elementwise work: main on a vector DSP, else a post unit."""
        for role in ("main", "post", "pre"):
            unit = self.target.units.get(role)
            if unit is not None and unit.kind == "vector":
                return role
        raise ValueError(f"target {self.target.name} has no vector unit")

    @property
    def lanes(self) -> int:
        return self.target.units[self.vector_unit].lanes

    def fits(self, sizes: dict, single=()):
        """`buffers` 64-byte aligned slots of every buffer (role -> bytes) fit in their memories:
        tiles get half the capacity when double buffered, all of it otherwise; the roles in
        `single` have one slot (a ring). Byte counts may be numpy arrays (one candidate tiling per
        element): the answer is then an array too."""
        used: dict = {}
        for role, nbytes in sizes.items():
            memory = self.target.memory_for(role).name
            slots = 1 if role in single else self.buffers
            used[memory] = used.get(memory, 0) + self.copies(memory) * slots * (-(-nbytes // 64) * 64)
        return np.logical_and.reduce([nbytes <= self.target.memory(m).size_bytes for m, nbytes in used.items()])

    def copies(self, memory: str) -> int:
        """How many copies of a tile the memory holds: one per core when the memory has one
        instance for all cores (`edge`'s BUF with cores > 1). The tile search counts every role
        so, though a block the cores share (multicast elsewhere) is stored once."""
        return self.cores if self.target.memory(memory).shared else 1

    def capacity(self, role: str) -> int:
        """Bytes of the memory that holds `role` tiles: one core's share when the memory has one
        instance for all cores (`copies`)."""
        memory = self.target.memory_for(role)
        return memory.size_bytes // self.copies(memory.name)


def dram(addr: int) -> tuple[str, int]:
    return ("DRAM", addr)


def row_major_strides(shape) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def nhwc_strides(shape) -> tuple[int, ...]:
    """Element strides of an [N, C, H, W] tensor stored channels-last, as [N][H][W][C]
    (`dram-layout`, passes/dram_layout.py)."""
    _, c, h, w = shape
    return (h * w * c, 1, w * c, c)


def layer_name(op: Operation) -> str:
    return op.results[0].name_hint or op.name


def source_address(lowering: Lowering, value: SSAValue) -> int:
    """The DRAM address of a value a layer reads: a weight's place in the image, else its tensor's."""
    constant = lowering.constant(value)
    if constant is not None:
        return lowering.weight(value.owner.ref.data, "", constant)
    return lowering.address(value)


def is_alias(op) -> bool:
    """A reshape, or a slice that is one contiguous run of its input (`SliceOp.contiguous_offset`):
    its result is its input's memory (no layer, no code)."""
    return isinstance(op, nn.ReshapeOp) or (isinstance(op, nn.SliceOp) and op.contiguous_offset() is not None)
