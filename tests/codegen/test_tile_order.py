"""`--tile-order=tsp` (compiler/codegen/tile_order.py): a conv's output tiles walked as an explicit
path (`order path [...]`) run correctly, move the DRAM bytes a hand count says, and the searched
path never moves more than Scan's serpentine walk."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nncc.compiler import opt
from nncc.compiler.cli import main as nncc_main


def conv_model(c: int, h: int, o: int, k: int, stride: int = 1) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """One conv with bias, `k`x`k` kernel, padding k // 2: (model, weight, bias)."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((o, c, k, k)) * 0.1).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    oh = (h + 2 * (k // 2) - k) // stride + 1
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[k, k], pads=[k // 2] * 4,
                            strides=[stride] * 2)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, h])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, o, oh, oh])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), w, b


def compile_report(tmp_path, model_or_ir, *flags) -> dict:
    report = tmp_path / "r.json"
    assert nncc_main([str(model_or_ir), "--target=edge", "--report", str(report), "--program",
                      str(tmp_path / "p"), *flags]) == 0
    return json.loads(report.read_text())


def conv_rows(report: dict) -> list[dict]:
    return [row for row in report["layers"] if "predicted_dram_bytes_naive_order" in row]


def test_a_hand_path_runs_and_moves_the_hand_counted_bytes(tmp_path):
    """A 1x1 conv (16 -> 512 channels, 32x32) on edge: its tile grid walked in a random order
    written by hand into the tile IR. Outputs equal numpy's; DRAM bytes equal a count of the
    blocks loaded with two slots per buffer, least recently used refilled."""
    model, w, b = conv_model(16, 32, 512, 1)
    onnx.save(model, tmp_path / "c.onnx")
    ir = tmp_path / "c.tile.mlir"
    assert nncc_main([str(tmp_path / "c.onnx"), "--target=edge", "--tile-order=tsp", "--emit=tile", "-o", str(ir)]) == 0
    text = ir.read_text()
    loop = re.search(r"tile\.for (.*) cores 1 order path \[([0-9, ]+)\]", text)
    dims = re.findall(r"%(\w+)\[%\w+\] = (\d+) to (\d+) step (\d+)", loop.group(1))
    assert [d[0] for d in dims] == ["n", "oh", "ow", "oc"]  # Scan's outer loop here: the spatial tiles
    assert re.search(r"tile\.for %ic\[%tic\] = 0 to 16 step 16 order serpentine", text)  # one input-channel tile
    ranges = [[(v, min(int(step), int(high) - v)) for v in range(int(low), int(high), int(step))]
              for _, low, high, step in dims]
    points = [()]
    for values in ranges:
        points = [p + (v,) for p in points for v in values]
    path = [int(i) for i in np.random.default_rng(1).permutation(len(points))]
    ir.write_text(text.replace(f"order path [{loop.group(2)}]", f"order path [{', '.join(map(str, path))}]"))

    x = np.random.default_rng(2).standard_normal((1, 16, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    report = compile_report(tmp_path, ir, "--tile-order=tsp", "--run", "--inputs", str(tmp_path / "in.npz"),
                            "--outputs", str(tmp_path / "out.npz"))
    expected = np.einsum("oc,nchw->nohw", w[:, :, 0, 0], x) + b[None, :, None, None]
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")["y"], expected, rtol=1e-4, atol=1e-4)

    moved, slots = 0, {"input": [], "weight": []}  # most recently used last
    for index in path:
        (_, _), (oh, toh), (ow, tow), (oc, toc) = points[index]
        for kind, key, nbytes in (("input", (oh, ow), 4 * 16 * toh * tow), ("weight", oc, 4 * (16 * toc + toc))):
            if key in slots[kind]:
                slots[kind].remove(key)
            else:
                moved += nbytes
                slots[kind] = slots[kind][-1:]
            slots[kind].append(key)
        moved += 4 * toc * toh * tow  # the output tile, stored once
    row, = report["layers"]
    assert row["dram_read_bytes"] + row["dram_write_bytes"] == moved
    assert row["predicted_dram_read_bytes"] == row["dram_read_bytes"] and row["predicted_cycles"] == row["cycles"]


@pytest.mark.parametrize("shape", [
    # (input channels, size, output channels, kernel, stride): Scan bytes, TSP bytes on edge
    (16, 32, 512, 1, 1),   # spatial tiles outside, two output-channel tiles: 2,197,504 both
    (128, 28, 128, 3, 1),  # four output-channel tiles, two input-channel tiles: 2,896,896 both
    (256, 14, 512, 3, 1),  # eight output-channel tiles, sixteen input-channel tiles: 6,582,784 both
    (64, 30, 96, 3, 2),    # fragmented edge tiles
])
def test_the_tsp_path_never_moves_more_than_scan(tmp_path, shape):
    model, _, _ = conv_model(*shape)
    onnx.save(model, tmp_path / "c.onnx")
    row, = conv_rows(compile_report(tmp_path, tmp_path / "c.onnx", "--tile-order=tsp"))
    tsp = row["predicted_dram_read_bytes"] + row["predicted_dram_write_bytes"]
    scan, naive = row["predicted_dram_bytes_serpentine_order"], row["predicted_dram_bytes_naive_order"]
    assert tsp <= scan <= naive, (shape, naive, scan, tsp)
    assert row["tsp_search_ms"] >= 0
    assert (row["predicted_dram_read_bytes"], row["predicted_cycles"]) == (row["dram_read_bytes"], row["cycles"])  # the path, timed


def test_a_recorded_tsp_order_refuses_another(capsys, tmp_path):
    model, _, _ = conv_model(16, 16, 64, 3)
    onnx.save(model, tmp_path / "c.onnx")
    ir = tmp_path / "c.tile.mlir"
    assert nncc_main([str(tmp_path / "c.onnx"), "--target=edge", "--tile-order=tsp", "--emit=tile", "-o", str(ir)]) == 0
    assert 'tile.order = "tsp"' in ir.read_text()
    capsys.readouterr()
    assert opt.main([str(ir), "-p", "double-buffer,lower-to-isa{tile-order=scan}"]) == 2
    err = capsys.readouterr().err
    assert 'lower-to-isa: option tile-order=scan differs from tile.order = "tsp" recorded in the module' in err
    assert len(err.strip().splitlines()) == 1
