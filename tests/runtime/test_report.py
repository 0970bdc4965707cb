"""The report has docs/design.md's schema; check compares outputs; the trace is Chrome JSON."""

from pathlib import Path

import numpy as np
import pytest

from nncc.runtime.interpreter import run
from nncc.runtime.program_file import load
from nncc.runtime.report import build_report, compare_outputs, trace_events
from nncc.support.errors import NnccError

EXAMPLES = Path(__file__).parents[2] / "examples" / "programs"


def test_report_schema_and_values():
    result = run(load(EXAMPLES / "gemm_2core.s"))
    report = build_report(result, check={"passed": True, "max_abs_err": 0.0, "max_rel_err": 0.0})
    assert set(report) >= {"target", "mode", "cycles", "macs", "mac_utilization", "dram", "onchip", "energy_pj", "layers", "check"}
    assert (report["target"], report["mode"], report["cycles"], report["macs"]) == ("vector", "inference", 2473, 65536)  # tests/runtime/test_examples.py traces it
    assert report["dram"] == {"read_bytes": 4096 + 8192, "write_bytes": 8192}
    assert report["onchip"]["SM"] == {"read_bytes": 4 * 2048, "write_bytes": 4 * 2048}
    assert set(report["energy_pj"]) == {"dram", "onchip", "compute", "total"}
    (layer,) = report["layers"]
    assert layer.items() >= {
        "name": "fc", "op": "fused.gemm", "onnx_nodes": ["Gemm_0"], "phase": "forward", "cycles": 2473, "macs": 65536,
        "mac_utilization": 65536 / (2473 * 192), "dram_read_bytes": 12288, "dram_write_bytes": 8192,
        "instructions": 13,
    }.items()  # fmt: skip
    # DRAM (vector: 32 banks of 8 KiB rows, 64-byte bursts): the program's 0x5000 bytes are pages 0, 1
    # and 2, i.e. banks 0, 1, 2, row 0: 3 activations; A and B (inputs) read once, C (output) written once
    row_buffer = {"read_bursts": 12288 // 64, "write_bursts": 8192 // 64, "hits": 320 - 3, "misses": 3,
                  "hit_rate": 317 / 320}
    energy = {"activation": 3 * 3736.8, "read": 192 * 2880.0, "write": 128 * 2476.8, "transfer": 0.0}
    roles = {"input": {"read_bytes": 12288, "write_bytes": 0}, "weight": {"read_bytes": 0, "write_bytes": 0},
             "output": {"read_bytes": 0, "write_bytes": 8192}, "intermediate": {"read_bytes": 0, "write_bytes": 0}}
    for row in (report, layer):
        assert row["dram_row_buffer"] == row_buffer and row["dram_bytes_by_role"] == roles
        assert row["dram_energy_pj"] == pytest.approx({**energy, "total": sum(energy.values())})
    assert report["energy_pj"]["dram"] == pytest.approx(sum(energy.values()))
    assert report["engines"]["core0.main"]["busy_cycles"] == 2 * 675 + 3 * 62  # tests/runtime/test_examples.py


def test_compare_outputs():
    want = {"y": np.array([1.0, -200.0])}
    assert compare_outputs({"y": np.array([1.0, -200.0])}, want)["passed"]
    check = compare_outputs({"y": np.array([1.0, -200.1])}, want)  # 0.1 > 1e-4 * 200
    assert not check["passed"] and check["max_abs_err"] == pytest.approx(0.1)
    assert check["max_rel_err"] == pytest.approx(0.1 / 200)
    assert not compare_outputs({"y": np.array([np.nan, -200.0])}, want)["passed"]
    with pytest.raises(NnccError, match="shape"):
        compare_outputs({"y": np.zeros(3)}, want)


def test_trace_has_one_track_per_engine_and_overlap():
    result = run(load(EXAMPLES / "gemm_2core.s"), trace=True)
    events = trace_events(result)["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert sorted(names.values()) == ["core0.main", "core1.main", "dma0", "dma1", "dma2", "dma3"]
    spans = [e for e in events if e["ph"] == "X"]
    assert len(spans) == 13
    # DMA/compute overlap: core 1's first matmul runs while channel 0 is still loading
    by_track = {names[e["tid"]]: [] for e in spans}
    for e in spans:
        by_track[names[e["tid"]]].append((e["ts"], e["ts"] + e["dur"]))
    matmul = by_track["core1.main"][0]
    assert any(start < matmul[1] and matmul[0] < end for start, end in by_track["dma0"])
