"""Run reports (JSON, the format of docs/design.md) and Chrome trace-event files.

`build_report` is shared by `nncc-run` and the compiler's ``--run --report``::

    report = build_report(result, check=compare_outputs(result.outputs, expected))
    json.dumps(report)   # the CLIs write it through support/user_files (atomically)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nncc.runtime.interpreter import RunResult
from nncc.support.errors import NnccError


def build_report(result: RunResult, check: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The report dict: totals, per-memory bytes, energy, per-layer rows, optional check."""
    target = result.program.target
    report: dict[str, Any] = {
        "target": target.name,
        "mode": result.program.mode,
        "cycles": int(result.cycles),
        "macs": int(result.macs),
        "mac_utilization": result.mac_utilization,
        "dram": {"read_bytes": result.read_bytes.get("DRAM", 0), "write_bytes": result.write_bytes.get("DRAM", 0)},
        "dram_size_bytes": result.program.dram_bytes,  # the peak the program's DRAM allocation reached
        "onchip": {
            m.name: {"read_bytes": result.read_bytes.get(m.name, 0), "write_bytes": result.write_bytes.get(m.name, 0)}
            for m in target.memories
        },
        "energy_pj": result.energy_pj,
        "layers": [_layer_row(layer, target) for layer in result.layers],
        "instructions": result.instructions,
        "ops": result.ops,
        "dram_row_activations": result.dram_activations,
        **({"dram_without_reuse_bytes": plan["without_reuse_bytes"]}
           if (plan := getattr(result.program, "dram_plan", None)) else {}),
        **_dram_fields(result.dram, target),
        "seconds": result.cycles / (target.clock_ghz * 1e9),
        "engines": {
            name: {"busy_cycles": busy, "utilization": busy / result.cycles if result.cycles else 0.0}
            for name, busy in sorted(result.busy.items())
        },
    }
    if check is not None:
        report["check"] = dict(check)
    return report


def _dram_fields(counters, target) -> dict[str, Any]:
    """DRAM energy by kind, the row buffers' hits and misses, and bytes by role (runtime/dram.py)."""
    return {
        "dram_energy_pj": counters.energy_pj(target.dram),
        "dram_row_buffer": {"read_bursts": counters.read_bursts, "write_bursts": counters.write_bursts,
                            "hits": counters.hits, "misses": counters.activations,
                            "hit_rate": counters.hit_rate},
        "dram_bytes_by_role": {role: {"read_bytes": read, "write_bytes": written}
                               for role, (read, written) in counters.role_bytes.items()},
    }


def _layer_row(layer, target) -> dict[str, Any]:
    cycles = layer.cycles
    mac_units = target.mac_units
    return {
        "name": layer.name,
        "op": layer.op,
        "onnx_nodes": layer.onnx_nodes,
        "phase": layer.phase,
        "cycles": cycles,
        "macs": layer.macs,
        "mac_utilization": layer.macs / (cycles * mac_units) if cycles else 0.0,
        "dram_read_bytes": layer.dram_read_bytes,
        "dram_write_bytes": layer.dram_write_bytes,
        "instructions": layer.instructions,
        "dram_row_activations": layer.dram.activations,
        **_dram_fields(layer.dram, target),
    }


def compare_outputs(
    actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], tolerance: float = 1e-4
) -> dict[str, Any]:
    """The report's ``check``: passed when max |a - e| <= tolerance x max(1, max |e|) for every output."""
    max_abs = max_rel = 0.0
    passed = True
    for name, want in expected.items():
        if name not in actual:
            raise NnccError(f"expected output {name!r} is not an output of the program")
        got = np.asarray(actual[name], dtype=np.float64)
        want = np.asarray(want, dtype=np.float64)
        if got.shape != want.shape:
            raise NnccError(f"output {name}: shape {got.shape} differs from the expected {want.shape}")
        error = float(np.max(np.abs(got - want), initial=0.0))
        scale = float(np.max(np.abs(want), initial=0.0))
        max_abs = max(max_abs, error)
        max_rel = max(max_rel, error / scale if scale else error)
        passed &= bool(error <= tolerance * max(1.0, scale)) and bool(np.all(np.isfinite(got)))
    return {"passed": passed, "max_abs_err": max_abs, "max_rel_err": max_rel}


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in chunks (the report names exactly what was run)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def trace_events(result: RunResult) -> dict[str, Any]:
    """Chrome trace-event JSON (Perfetto, chrome://tracing): one track per engine, times in µs."""
    clock_mhz = result.program.target.clock_ghz * 1e3
    engines = sorted({event.engine for event in result.trace}, key=_engine_order)
    tid = {engine: i for i, engine in enumerate(engines)}
    events: list[dict[str, Any]] = [{"name": "process_name", "ph": "M", "pid": 0, "args": {"name": result.program.target.name}}]
    for engine in engines:
        events.append({"name": "thread_name", "ph": "M", "pid": 0, "tid": tid[engine], "args": {"name": engine}})
        events.append({"name": "thread_sort_index", "ph": "M", "pid": 0, "tid": tid[engine], "args": {"sort_index": tid[engine]}})
    for event in result.trace:
        events.append(
            {
                "name": event.mnemonic,
                "cat": event.layer or "program",
                "ph": "X",
                "pid": 0,
                "tid": tid[event.engine],
                "ts": event.start / clock_mhz,
                "dur": (event.end - event.start) / clock_mhz,
                "args": {"instruction": event.index, "layer": event.layer, "start_cycle": event.start, "end_cycle": event.end},
            }
        )
    return {"traceEvents": events, "displayTimeUnit": "ns"}


def _engine_order(engine: str) -> tuple[int, str]:
    return (1 if engine.startswith("dma") else 0, engine)
