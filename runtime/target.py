"""Target descriptions: the parameterised machine nncc compiles for.

A target is a TOML file. Presets live in ``runtime/targets/NAME.toml``; a user passes their own
file by path. Any field can be overridden with ``KEY=VALUE`` strings (``--target-set``)::

    load_target("vector", ["dram.bandwidth_gbps=25.6", "memory.AM.size_bytes=524288"])

A TOML file looks like this (every key shown is required unless marked optional)::

    name = "vector"
    description = "..."          # optional
    clock_ghz = 1.0
    cores = 4
    barrier_cycles = 64          # optional (default 0): the cost of a barrier

    [core.main]                  # the compute unit of every core; also [core.pre], [core.post] (optional)
    kind = "vector"              # "vector": lanes x macs_per_lane MACs/cycle; "matrix": rows x cols
    lanes = 16                   # vector only
    macs_per_lane = 3            # vector only
    rows = 32                    # matrix only
    cols = 32                    # matrix only
    pipeline_depth = 8           # cycles added to every instruction on this unit
    mac_energy_pj = 4.6          # one multiply-accumulate
    op_energy_pj = 1.0           # one elementwise operation
    kernel_rows = 6              # optional, vector only, all seven or none (0: off): the micro-kernel
    fma_latency = 6              #   rules of a matmul (runtime/timing.py, docs/targets.md)
    vector_registers = 64
    kernel_fill_drain = 26
    load_store_units = 2
    broadcast_memory = "SM"
    broadcast_stage_cycles = 62
    kernel_call_cycles = 7       #   optional: cycles per call beyond its fill/drain (default 0)
    load_store_registers = 2     #   optional: registers one vector load/store moves (default 1)

    [[memory]]                   # one table per on-chip memory
    name = "AM"
    size_bytes = 786432
    word_bytes = 64              # one access reads or writes a word
    banks = 16
    bandwidth_bytes_per_cycle = 128
    latency_cycles = 2
    read_energy_pj = 20.0        # per word
    write_energy_pj = 22.0       # per word
    shared = false               # true: one instance for all cores; false: one per core

    [dma]
    channels = 4
    bandwidth_bytes_per_cycle = 64
    latency_cycles = 64
    broadcast = false            # optional (default true): a multicast writes every destination at once
    launch_cycles = 62           # optional (default 0): core cycles to launch a DMA and wait for it

    [dram]
    size_bytes = 4294967296
    bandwidth_gbps = 42.6
    latency_ns = 100.0
    energy_pj_per_byte = 0.0     # energy per byte beyond the burst figures below
    row_buffer_bytes = 8192      # optional: bytes of one row of a bank (all chips of the rank): the row model
    banks = 16                   # optional (default 1): banks of the rank
    burst_bytes = 64             # optional (default 64): one burst (BL8 x 64-bit bus)
    activation_energy_pj = 3737  # optional: one activate + precharge (a row-buffer miss)
    read_burst_energy_pj = 2880  # optional: one read burst
    write_burst_energy_pj = 2477 # optional: one write burst
    burst_timing = true          # optional (default false): bus time by whole bursts per contiguous run
    sustained_fraction = 0.8     # optional (default 1): of bandwidth_gbps, with burst_timing
    run_cycles = 1               # optional (default 0): bus cycles per run at least, with burst_timing

The row model's address mapping and energy rule are in `runtime/dram.py`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from nncc.support.errors import NnccError

REFERENCE_TARGET = "reference"
"""Handled by the compiler itself (numpy execution of the nn IR); there is no TOML for it."""

UNIT_KINDS = ("vector", "matrix")
MAX_CORES = 1024
MAX_UNIT_SIZE = 4096  # lanes, macs per lane, matrix rows or columns
MAX_ON_CHIP_BYTES = 4 * 2**30
"""The simulator allocates every on-chip memory instance: their total (size x instances) is capped."""
MAX_DRAM_BYTES = 2**40
MAX_CLOCK_GHZ = 1000.0
MAX_CYCLES = 10**9  # latencies and pipeline depths, in cycles (latency_ns: in ns)
MAX_ENERGY_PJ = 1e9  # per operation, access or byte: larger sums overflow the report's energies
MAX_BANDWIDTH = 1e12  # bytes per cycle, or GB/s
MAX_DRAM_BANKS = 1024  # banks of the DRAM row model (the interpreter keeps one open row per bank)
UNIT_ROLES = ("main", "pre", "post")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
"""A target's name: it names program files (`MODEL.NAME.nnbin`), so no spaces or slashes."""


@dataclass(frozen=True)
class ComputeUnit:
    """A compute unit of a core: the main unit, or a pre-/post-processing unit."""

    role: str
    kind: str
    lanes: int
    macs_per_lane: int
    rows: int
    cols: int
    pipeline_depth: int
    mac_energy_pj: float
    op_energy_pj: float
    # the micro-kernel rules of a vector unit's matmul (timing.matmul_kernel_cycles); kernel_rows 0: off
    kernel_rows: int = 0  # rows of the broadcast operand one micro-kernel call covers at most
    fma_latency: int = 1  # cycles before an FMA's result can feed the next FMA on that accumulator
    vector_registers: int = 0  # per lane: accumulators + the double-buffered row of b
    kernel_fill_drain: int = 0  # cycles of a call's prologue and epilogue (software pipeline)
    load_store_units: int = 0  # vector loads/stores per cycle (a call's b rows and c stores)
    broadcast_memory: str = ""  # where the broadcast operand must be; staged there per panel
    broadcast_stage_cycles: int = 0  # core cycles to launch and wait for one panel's DMA
    kernel_call_cycles: int = 0  # cycles of a call beyond its fill/drain (the jump into it)
    load_store_registers: int = 1  # vector registers one load/store moves (2: register pairs)

    @property
    def micro_kernel(self) -> bool:
        return self.kind == "vector" and self.kernel_rows > 0

    @property
    def macs_per_cycle(self) -> int:
        if self.kind == "matrix":
            return self.rows * self.cols
        return self.lanes * self.macs_per_lane

    @property
    def vector_lanes(self) -> int:
        """Lanes an elementwise instruction is spread over (a matrix unit uses its columns)."""
        return self.lanes if self.kind == "vector" else self.cols


@dataclass(frozen=True)
class Memory:
    """An on-chip memory; `shared` memories have one instance, the others one per core."""

    name: str
    size_bytes: int
    word_bytes: int
    banks: int
    bandwidth_bytes_per_cycle: float
    latency_cycles: int
    read_energy_pj: float
    write_energy_pj: float
    shared: bool
    holds: tuple[str, ...] = ()  # what the compiler's tiles may place here: input, weight, output


@dataclass(frozen=True)
class Dma:
    channels: int
    bandwidth_bytes_per_cycle: float
    latency_cycles: int
    broadcast: bool = True  # a multicast writes all destinations at once; false: one copy after another
    launch_cycles: int = 0  # core cycles to launch a DMA and wait for it (`timing.dma_launch_cores`)


@dataclass(frozen=True)
class Dram:
    size_bytes: int
    bandwidth_gbps: float
    latency_ns: float
    energy_pj_per_byte: float
    row_buffer_bytes: int = 0
    activation_energy_pj: float = 0.0
    banks: int = 1
    burst_bytes: int = 64
    read_burst_energy_pj: float = 0.0
    write_burst_energy_pj: float = 0.0
    burst_timing: bool = False  # bus time by whole bursts per contiguous run (timing.dram_bus_cycles)
    sustained_fraction: float = 1.0  # of bandwidth_gbps the bus sustains (burst_timing only)
    run_cycles: int = 0  # bus cycles every contiguous run costs at least (burst_timing only)


@dataclass(frozen=True)
class Target:
    """A resolved target. `raw` is the TOML table after overrides (programs carry it)."""

    name: str
    description: str
    clock_ghz: float
    cores: int
    units: dict[str, ComputeUnit]
    memories: tuple[Memory, ...]
    dma: Dma
    dram: Dram
    raw: dict[str, Any]
    barrier_cycles: int = 0  # a barrier's cost: all engines wait this long after the last one ends

    def __hash__(self) -> int:
        return hash((self.name, repr(self.raw)))

    @property
    def main(self) -> ComputeUnit:
        return self.units["main"]

    @property
    def mac_units(self) -> int:
        """MAC units of the whole target (main units of every core): the utilisation denominator."""
        return self.cores * self.main.macs_per_cycle

    @property
    def dram_bytes_per_cycle(self) -> float:
        return self.dram.bandwidth_gbps / self.clock_ghz

    @property
    def dram_latency_cycles(self) -> int:
        return math.ceil(self.dram.latency_ns * self.clock_ghz)

    def memory(self, name: str) -> Memory:
        for memory in self.memories:
            if memory.name == name:
                return memory
        raise NnccError(f"target {self.name}: no memory named {name!r}")

    def memory_for(self, role: str) -> Memory:
        """The on-chip memory that holds the compiler's `role` tiles (input, weight, output)."""
        for memory in self.memories:
            if role in memory.holds:
                return memory
        raise NnccError(f"target {self.name}: no memory holds {role} tiles (set `holds` on a memory)")

    @property
    def memory_names(self) -> tuple[str, ...]:
        return tuple(memory.name for memory in self.memories)


# --------------------------------------------------------------------------------------------
# Loading


def preset_names() -> list[str]:
    """Names of the TOML presets shipped in `nncc.runtime.targets`."""
    folder = resources.files("nncc.runtime.targets")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_target(name_or_path: str, overrides: Iterable[str] = ()) -> Target:
    """Load a preset by name or a TOML file by path, apply `KEY=VALUE` overrides and validate."""
    source, text = _read_source(name_or_path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise NnccError(f"{source}: invalid TOML: {error}") from None
    overrides = list(overrides)
    if not overrides:
        return target_from_dict(raw, source)
    try:
        return target_from_dict(apply_overrides(raw, overrides, "--target-set"), f"--target-set on {source}")
    except NnccError:
        target_from_dict(raw, source)  # a mistake of the file itself is reported as the file's
        raise


def _read_source(name_or_path: str) -> tuple[str, str]:
    if name_or_path == REFERENCE_TARGET:
        raise NnccError(
            "target 'reference' is numpy execution of the nn IR, handled by the compiler; "
            "it has no machine description"
        )
    path = Path(name_or_path)
    looks_like_path = path.suffix == ".toml" or "/" in name_or_path or "\\" in name_or_path
    if not looks_like_path and name_or_path in preset_names():
        resource = resources.files("nncc.runtime.targets") / f"{name_or_path}.toml"
        return f"{name_or_path}.toml", resource.read_text()
    if looks_like_path or path.is_file():
        try:
            return str(path), path.read_text(encoding="utf-8")
        except OSError as error:
            raise NnccError(f"{path}: cannot read target file: {error.strerror}") from None
        except UnicodeDecodeError as error:
            raise NnccError(f"{path}: target file is not UTF-8 text (byte {error.start}); "
                            "TOML files are UTF-8") from None
    available = ", ".join(preset_names() + [REFERENCE_TARGET])
    raise NnccError(f"unknown target {name_or_path!r}; available: {available}")


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str], source: str) -> dict[str, Any]:
    """Return a copy of `raw` with each ``dotted.key=value`` applied.

    Memories are addressed by name: ``memory.AM.size_bytes=524288``.
    """
    raw = copy.deepcopy(raw)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key.strip():
            raise NnccError(f"{source}: bad override {override!r}: expected KEY=VALUE")
        _set_dotted(raw, key.strip(), _parse_value(text.strip()), source)
    return raw


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_dotted(raw: dict[str, Any], key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    table: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(table, list):  # [[memory]]: pick the entry by name
            matches = [entry for entry in table if entry.get("name") == part]
            if not matches:
                raise NnccError(f"{source}: override {key}: no entry named {part!r}")
            table = matches[0]
        elif isinstance(table, dict):
            if part not in table:
                if parts[0] == "core" and i == 1 and part in UNIT_ROLES:
                    table[part] = {}
                else:
                    raise NnccError(f"{source}: override {key}: unknown key {'.'.join(parts[: i + 1])}")
            table = table[part]
        else:
            raise NnccError(f"{source}: override {key}: {'.'.join(parts[:i])} is not a table")
    if isinstance(table, list):
        raise NnccError(f"{source}: override {key}: {'.'.join(parts[:-1])} is a list of tables; set a key of "
                        f"one entry, e.g. {'.'.join(parts)}.size_bytes=VALUE")
    if not isinstance(table, dict):
        raise NnccError(f"{source}: override {key}: {'.'.join(parts[:-1])} is not a table")
    table[parts[-1]] = value


# --------------------------------------------------------------------------------------------
# Validation


_TOP_KEYS = {"name", "description", "clock_ghz", "cores", "core", "memory", "dma", "dram", "barrier_cycles"}
_KERNEL_KEYS = {"kernel_rows", "fma_latency", "vector_registers", "kernel_fill_drain", "load_store_units",
                "broadcast_memory", "broadcast_stage_cycles"}
"""Optional keys of a vector unit: the micro-kernel rules of its matmul (all or none)."""
_KERNEL_EXTRA_KEYS = {"kernel_call_cycles", "load_store_registers"}
"""Optional keys of a micro-kernel unit, each with a default (0 cycles per call; 1 register per
load/store)."""
_UNIT_KEYS = {
    "vector": {"kind", "lanes", "macs_per_lane", "pipeline_depth", "mac_energy_pj", "op_energy_pj"} | _KERNEL_KEYS
              | _KERNEL_EXTRA_KEYS,
    "matrix": {"kind", "rows", "cols", "pipeline_depth", "mac_energy_pj", "op_energy_pj"},
}


def target_from_dict(raw: dict[str, Any], source: str = "target") -> Target:
    """Validate a TOML-shaped dict and build the frozen `Target`."""
    reader = _Reader(source)
    reader.keys(raw, _TOP_KEYS, "", required=_TOP_KEYS - {"description", "barrier_cycles"})
    name = reader.string(raw, "name", "")
    if not NAME_PATTERN.fullmatch(name):
        raise reader.fail("name", f"{name!r} names program files: use letters, digits and _ . + - only")
    description = reader.string(raw, "description", "", allow_empty=True) if "description" in raw else ""
    cores = reader.integer(raw, "cores", "", minimum=1, maximum=MAX_CORES)
    clock = reader.number(raw, "clock_ghz", "", positive=True, maximum=MAX_CLOCK_GHZ)
    units = _read_units(reader, raw["core"])
    memories = tuple(_read_memory(reader, entry, i) for i, entry in enumerate(_list(reader, raw["memory"], "memory")))
    names = [m.name for m in memories]
    for dup in {n for n in names if names.count(n) > 1}:
        raise NnccError(f"{source}: memory.{dup}: duplicate memory name")
    if "DRAM" in names:
        raise NnccError(f"{source}: memory.DRAM: the name DRAM is reserved for [dram]")
    check_on_chip_total(memories, cores, source)
    target = Target(
        name=name,
        description=description,
        clock_ghz=clock,
        cores=cores,
        units=units,
        memories=memories,
        dma=_read_dma(reader, raw["dma"]),
        dram=_read_dram(reader, raw["dram"]),
        raw=copy.deepcopy(raw),
        barrier_cycles=reader.integer(raw, "barrier_cycles", "", minimum=0, default=0, maximum=MAX_CYCLES),
    )
    for unit in units.values():
        if unit.broadcast_memory and unit.broadcast_memory not in names:
            raise reader.fail(f"core.{unit.role}.broadcast_memory", f"{unit.broadcast_memory!r} is not a memory")
    return target


def check_on_chip_total(memories: tuple[Memory, ...], cores: int, source: str) -> None:
    """Refuse a machine whose on-chip memories (one instance per core unless shared) the
    simulator cannot hold: `cores=100000` must be an error, not an exhausted host."""
    total = sum(m.size_bytes * (1 if m.shared else cores) for m in memories)
    if total > MAX_ON_CHIP_BYTES:
        raise NnccError(f"{source}: {total / 2**30:.1f} GiB of on-chip memory in all ({cores} cores); "
                        f"the simulator holds at most {MAX_ON_CHIP_BYTES // 2**30} GiB")


def target_to_dict(target: Target) -> dict[str, Any]:
    """The resolved TOML table of `target` (overrides included), for embedding in a program."""
    return copy.deepcopy(target.raw)


def _list(reader: _Reader, value: Any, key: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        raise NnccError(f"{reader.source}: {key}: expected one or more [[{key}]] tables")
    return value


def _read_units(reader: _Reader, table: Any) -> dict[str, ComputeUnit]:
    reader.table(table, "core")
    reader.keys(table, set(UNIT_ROLES), "core.", required={"main"})
    return {role: _read_unit(reader, table[role], role) for role in UNIT_ROLES if role in table}


def _read_unit(reader: _Reader, table: Any, role: str) -> ComputeUnit:
    where = f"core.{role}."
    reader.table(table, where[:-1])
    kind = reader.string(table, "kind", where)
    if kind not in UNIT_KINDS:
        raise NnccError(f"{reader.source}: {where}kind: {kind!r} is not one of {', '.join(UNIT_KINDS)}")
    required = _UNIT_KEYS[kind] - _KERNEL_KEYS - _KERNEL_EXTRA_KEYS
    reader.keys(table, _UNIT_KEYS[kind], where, required=required)
    kernel = [key for key in sorted(_KERNEL_KEYS) if key in table]
    if kernel and len(kernel) != len(_KERNEL_KEYS):
        missing = sorted(_KERNEL_KEYS - set(kernel))[0]
        raise reader.fail(f"{where}{missing}", "missing (the micro-kernel keys come all together)")
    is_vector = kind == "vector"
    unit = ComputeUnit(
        role=role,
        kind=kind,
        lanes=reader.integer(table, "lanes", where, minimum=1, maximum=MAX_UNIT_SIZE) if is_vector else 0,
        macs_per_lane=reader.integer(table, "macs_per_lane", where, minimum=1, maximum=MAX_UNIT_SIZE) if is_vector else 0,
        rows=0 if is_vector else reader.integer(table, "rows", where, minimum=1, maximum=MAX_UNIT_SIZE),
        cols=0 if is_vector else reader.integer(table, "cols", where, minimum=1, maximum=MAX_UNIT_SIZE),
        pipeline_depth=reader.integer(table, "pipeline_depth", where, minimum=0, maximum=MAX_CYCLES),
        mac_energy_pj=reader.number(table, "mac_energy_pj", where, maximum=MAX_ENERGY_PJ),
        op_energy_pj=reader.number(table, "op_energy_pj", where, maximum=MAX_ENERGY_PJ),
    )
    if not kernel:
        return unit
    registers = reader.integer(table, "vector_registers", where, minimum=3, maximum=MAX_UNIT_SIZE)
    rows = reader.integer(table, "kernel_rows", where, minimum=0, maximum=registers - 2)
    if not rows:  # kernel_rows = 0 turns the rule off (a what-if: --target-set core.main.kernel_rows=0)
        return unit
    memory = table["broadcast_memory"]
    if not isinstance(memory, str):
        raise reader.fail(f"{where}broadcast_memory", f"expected a memory name, got {memory!r}")
    return dataclasses.replace(
        unit, kernel_rows=rows, vector_registers=registers, broadcast_memory=memory,
        fma_latency=reader.integer(table, "fma_latency", where, minimum=1, maximum=MAX_CYCLES),
        kernel_fill_drain=reader.integer(table, "kernel_fill_drain", where, minimum=0, maximum=MAX_CYCLES),
        load_store_units=reader.integer(table, "load_store_units", where, minimum=1, maximum=MAX_UNIT_SIZE),
        broadcast_stage_cycles=reader.integer(table, "broadcast_stage_cycles", where, minimum=0, maximum=MAX_CYCLES),
        kernel_call_cycles=reader.integer(table, "kernel_call_cycles", where, minimum=0, maximum=MAX_CYCLES)
        if "kernel_call_cycles" in table else 0,
        load_store_registers=reader.integer(table, "load_store_registers", where, minimum=1, maximum=MAX_UNIT_SIZE)
        if "load_store_registers" in table else 1,
    )


_MEMORY_KEYS = {
    "name", "size_bytes", "word_bytes", "banks", "bandwidth_bytes_per_cycle", "latency_cycles",
    "read_energy_pj", "write_energy_pj", "shared", "holds",
}  # fmt: skip
TILE_ROLES = ("input", "weight", "output")


def _read_memory(reader: _Reader, table: dict[str, Any], index: int) -> Memory:
    name = table.get("name")
    where = f"memory.{name}." if isinstance(name, str) else f"memory[{index}]."
    reader.keys(table, _MEMORY_KEYS, where, required=_MEMORY_KEYS - {"holds"})
    memory = Memory(
        name=reader.string(table, "name", where),
        size_bytes=reader.integer(table, "size_bytes", where, minimum=4, maximum=MAX_ON_CHIP_BYTES),
        word_bytes=reader.integer(table, "word_bytes", where, minimum=4, maximum=MAX_ON_CHIP_BYTES),
        banks=reader.integer(table, "banks", where, minimum=1),
        bandwidth_bytes_per_cycle=reader.number(table, "bandwidth_bytes_per_cycle", where, positive=True,
                                                maximum=MAX_BANDWIDTH),
        latency_cycles=reader.integer(table, "latency_cycles", where, minimum=0, maximum=MAX_CYCLES),
        read_energy_pj=reader.number(table, "read_energy_pj", where, maximum=MAX_ENERGY_PJ),
        write_energy_pj=reader.number(table, "write_energy_pj", where, maximum=MAX_ENERGY_PJ),
        shared=reader.boolean(table, "shared", where),
        holds=_read_holds(reader, table, where),
    )
    if not memory.name.isidentifier():
        raise NnccError(f"{reader.source}: {where}name: {memory.name!r} is not an identifier")
    if memory.word_bytes % 4:
        raise NnccError(f"{reader.source}: {where}word_bytes: {memory.word_bytes} is not a multiple of 4 (fp32)")
    if memory.size_bytes % memory.word_bytes:
        raise NnccError(f"{reader.source}: {where}size_bytes: {memory.size_bytes} is not a multiple of word_bytes")
    return memory


def _read_holds(reader: _Reader, table: dict[str, Any], where: str) -> tuple[str, ...]:
    holds = table.get("holds", [])
    if not isinstance(holds, list) or any(h not in TILE_ROLES for h in holds):
        raise NnccError(f"{reader.source}: {where}holds: {holds!r} must be a list drawn from "
                        f"{', '.join(TILE_ROLES)}")
    return tuple(holds)


def _read_dma(reader: _Reader, table: Any) -> Dma:
    reader.table(table, "dma")
    keys = {"channels", "bandwidth_bytes_per_cycle", "latency_cycles"}
    reader.keys(table, keys | {"broadcast", "launch_cycles"}, "dma.", required=keys)
    return Dma(
        broadcast=reader.boolean(table, "broadcast", "dma.") if "broadcast" in table else True,
        launch_cycles=reader.integer(table, "launch_cycles", "dma.", minimum=0, maximum=MAX_CYCLES)
        if "launch_cycles" in table else 0,
        channels=reader.integer(table, "channels", "dma.", minimum=1, maximum=MAX_CORES),
        bandwidth_bytes_per_cycle=reader.number(table, "bandwidth_bytes_per_cycle", "dma.", positive=True,
                                                maximum=MAX_BANDWIDTH),
        latency_cycles=reader.integer(table, "latency_cycles", "dma.", minimum=0, maximum=MAX_CYCLES),
    )


def _read_dram(reader: _Reader, table: Any) -> Dram:
    reader.table(table, "dram")
    required = {"size_bytes", "bandwidth_gbps", "latency_ns", "energy_pj_per_byte"}
    optional = {"row_buffer_bytes", "activation_energy_pj", "banks", "burst_bytes", "read_burst_energy_pj",
                "write_burst_energy_pj", "burst_timing", "sustained_fraction", "run_cycles"}
    reader.keys(table, required | optional, "dram.", required=required)
    dram = Dram(
        size_bytes=reader.integer(table, "size_bytes", "dram.", minimum=4, maximum=MAX_DRAM_BYTES),
        bandwidth_gbps=reader.number(table, "bandwidth_gbps", "dram.", positive=True, maximum=MAX_BANDWIDTH),
        latency_ns=reader.number(table, "latency_ns", "dram.", maximum=MAX_CYCLES),
        energy_pj_per_byte=reader.number(table, "energy_pj_per_byte", "dram.", maximum=MAX_ENERGY_PJ),
        row_buffer_bytes=reader.integer(table, "row_buffer_bytes", "dram.", minimum=0, default=0,
                                        maximum=MAX_DRAM_BYTES),
        activation_energy_pj=reader.number(table, "activation_energy_pj", "dram.", default=0.0,
                                           maximum=MAX_ENERGY_PJ),
        banks=reader.integer(table, "banks", "dram.", minimum=1, default=1, maximum=MAX_DRAM_BANKS),
        burst_bytes=reader.integer(table, "burst_bytes", "dram.", minimum=4, default=64, maximum=MAX_DRAM_BYTES),
        read_burst_energy_pj=reader.number(table, "read_burst_energy_pj", "dram.", default=0.0,
                                           maximum=MAX_ENERGY_PJ),
        write_burst_energy_pj=reader.number(table, "write_burst_energy_pj", "dram.", default=0.0,
                                            maximum=MAX_ENERGY_PJ),
        burst_timing=reader.boolean(table, "burst_timing", "dram.") if "burst_timing" in table else False,
        sustained_fraction=reader.number(table, "sustained_fraction", "dram.", positive=True, default=1.0,
                                         maximum=1.0),
        run_cycles=reader.integer(table, "run_cycles", "dram.", minimum=0, default=0, maximum=MAX_CYCLES),
    )
    if dram.burst_bytes % 4:
        raise reader.fail("dram.burst_bytes", f"{dram.burst_bytes} is not a multiple of 4 (fp32)")
    if dram.row_buffer_bytes % dram.burst_bytes:
        raise reader.fail("dram.row_buffer_bytes", f"{dram.row_buffer_bytes} is not a multiple of "
                          f"dram.burst_bytes ({dram.burst_bytes}): a burst lies in one row")
    return dram


@dataclass
class _Reader:
    """Typed field access whose errors name the file and the dotted key."""

    source: str

    def fail(self, key: str, reason: str) -> NnccError:
        return NnccError(f"{self.source}: {key}: {reason}")

    def table(self, value: Any, key: str) -> None:
        if not isinstance(value, dict):
            raise self.fail(key, "expected a table")

    def keys(self, table: dict[str, Any], allowed: set[str], where: str, required: set[str] | None = None) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(f"{where}{key}", "unknown key")
        for key in sorted(allowed if required is None else required):
            if key not in table:
                raise self.fail(f"{where}{key}", "missing")

    def string(self, table: dict[str, Any], key: str, where: str, allow_empty: bool = False) -> str:
        value = table[key]
        if not isinstance(value, str) or not (value or allow_empty):
            raise self.fail(f"{where}{key}", f"expected a {'' if allow_empty else 'non-empty '}string, got {value!r}")
        return value

    def boolean(self, table: dict[str, Any], key: str, where: str) -> bool:
        value = table[key]
        if not isinstance(value, bool):
            raise self.fail(f"{where}{key}", f"expected true or false, got {value!r}")
        return value

    def integer(self, table: dict[str, Any], key: str, where: str, minimum: int, default: int | None = None,
                maximum: int | None = None) -> int:
        if key not in table and default is not None:
            return default
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{where}{key}", f"expected an integer, got {value!r}")
        if value < minimum:
            raise self.fail(f"{where}{key}", f"{value} is impossible (must be >= {minimum})")
        if maximum is not None and value > maximum:
            raise self.fail(f"{where}{key}", f"{value} is more than the simulator supports (at most {maximum})")
        return value

    def number(self, table: dict[str, Any], key: str, where: str, positive: bool = False,
               default: float | None = None, maximum: float | None = None) -> float:
        if key not in table and default is not None:
            return default
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(f"{where}{key}", f"expected a number, got {value!r}")
        if value < 0 or (positive and value == 0):
            raise self.fail(f"{where}{key}", f"{value} is impossible (must be {'> 0' if positive else '>= 0'})")
        if maximum is not None and value > maximum:
            raise self.fail(f"{where}{key}", f"{value} is more than the simulator supports (at most {maximum:g})")
        return float(value)


__all__ = [
    "ComputeUnit",
    "Dma",
    "Dram",
    "Memory",
    "Target",
    "load_target",
    "preset_names",
    "target_from_dict",
    "target_to_dict",
]
