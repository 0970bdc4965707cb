"""nncc for accelerator targets: programs written, run, checked; the isa stage as IR; errors."""

import json
import math

import numpy as np
import pytest

from nncc.compiler import opt
from nncc.compiler.cli import main as nncc_main
from nncc.runtime import cli as run_cli
from nncc.runtime.assembler import assemble, disassemble
from nncc.runtime.program_file import load


def nncc(capsys, *argv):
    code = nncc_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("target", ["vector", "fusion", "edge"])
def test_compile_run_check_on_every_target(capsys, small_model_path, tmp_path, target):
    report = tmp_path / "r.json"
    code, out, err = nncc(capsys, small_model_path, f"--target={target}", "--check", "--report", report,
                          "--program", tmp_path / "prog", "-S", "--outputs", tmp_path / "out.npz")
    assert code == 0, err
    assert "check passed" in out
    data = json.loads(report.read_text())
    assert data["target"] == target and data["check"]["passed"]
    assert data["cycles"] > 0 and data["macs"] == 8 * 8 * 8 * 27 + 10 * 200
    assert data["dram"]["read_bytes"] > 0
    # Both written programs (binary and assembly: weight symbols like "conv1.weight.bn#03421"
    # quoted) run the same under nncc-run.
    np.savez(tmp_path / "in.npz", x=np.random.default_rng(0).standard_normal((1, 3, 16, 16), dtype=np.float32))
    text = (tmp_path / "prog.s").read_text()
    assert '.symbol weight "conv1.weight.bn#03421" ' in text
    assert disassemble(assemble(text)) == text  # the compiler's assembly is canonical
    for suffix in (".nnbin", ".s"):
        assert run_cli.main([str(tmp_path / f"prog{suffix}"), "--inputs", str(tmp_path / "in.npz"),
                             "--outputs", str(tmp_path / "again.npz")]) == 0, capsys.readouterr().err
        capsys.readouterr()
        np.testing.assert_array_equal(np.load(tmp_path / "again.npz")["y"].reshape(1, 10),
                                      np.load(tmp_path / "out.npz")["y"])


def test_default_program_names_and_summary(capsys, small_model_path):
    code, out, err = nncc(capsys, small_model_path, "--target=edge")
    assert code == 0, err
    assert (small_model_path.parent / "small.edge.nnbin").exists()
    assert not (small_model_path.parent / "small.edge.s").exists()  # assembly only when asked
    assert out.startswith("nncc: small.onnx -> small.edge.nnbin: ")
    code, out, err = nncc(capsys, small_model_path, "--target=edge", "--emit-asm")
    assert code == 0, err
    assert (small_model_path.parent / "small.edge.s").exists()
    assert out.startswith("nncc: small.onnx -> small.edge.nnbin, small.edge.s: ")


def test_target_set_reaches_the_program(capsys, small_model_path, tmp_path):
    cycles = []
    for bandwidth in ("42.6", "1.0"):
        report = tmp_path / f"r{bandwidth}.json"
        code, _, err = nncc(capsys, small_model_path, "--target=vector", "--target-set",
                            f"dram.bandwidth_gbps={bandwidth}", "--report", report, "--program", tmp_path / "p")
        assert code == 0, err
        cycles.append(json.loads(report.read_text())["cycles"])
        assert load(tmp_path / "p.nnbin").target.dram.bandwidth_gbps == float(bandwidth)
    assert cycles[1] > 2 * cycles[0]  # the same program starves on a 1 GB/s DRAM


def test_isa_stage_round_trips_through_nncc_opt(capsys, small_model_path, tmp_path):
    fused = tmp_path / "m.fused.mlir"
    assert nncc(capsys, small_model_path, "--emit=fused", "-o", fused)[0] == 0
    lowered = tmp_path / "m.isa.mlir"
    pipeline = ("partition-cores{target=edge},tile-layers{target=edge tile-order=naive},double-buffer,"
                "lower-to-isa{target=edge tile-order=naive}")
    assert opt.main([str(fused), "-p", pipeline, "-o", str(lowered)]) == 0
    text = lowered.read_text()
    assert "func.func @program()" in text and "isa.matmul" in text and 'name = "edge"' in text
    assert opt.main([str(lowered), "-o", str(tmp_path / "again.mlir")]) == 0
    capsys.readouterr()
    # The same program as nncc's own --emit=isa.
    code, emitted, _ = nncc(capsys, small_model_path, "--emit=isa", "--target=edge", "--tile-order=naive")
    assert code == 0
    body = lambda ir: ir[ir.index("func.func @program"):]  # noqa: E731
    assert body(emitted).strip() == body(text).strip()


@pytest.mark.parametrize("argv, fragment", [
    (["--target=nosuch"], "nosuch"),
    (["--target=vector", "--target-set", "dram.nonsense=1"], "dram.nonsense"),
    (["--target=reference", "--target-set", "cores=2"], "--target-set needs an accelerator target"),
])
def test_bad_targets_are_one_line_errors(capsys, small_model_path, argv, fragment):
    code, _, err = nncc(capsys, small_model_path, *argv)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1


def test_layer_that_cannot_fit_names_the_layer_and_memory(capsys, small_model_path, tmp_path):
    code, _, err = nncc(capsys, small_model_path, "--target=vector", "--target-set", "memory.AM.size_bytes=256",
                        "--program", tmp_path / "p")
    assert code == 2
    assert "layer" in err and "AM" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("target", ["vector", "fusion", "edge"])
def test_fused_gemm_with_bias_residual_and_relu(capsys, make_model, write_model, tmp_path, target):
    from onnx import helper

    rng = np.random.default_rng(3)
    model = make_model(
        [helper.make_node("Gemm", ["a", "W", "b"], ["g"], name="fc", transB=1),
         helper.make_node("Add", ["g", "r"], ["s"], name="add"),
         helper.make_node("Relu", ["s"], ["y"], name="relu")],
        [("a", [5, 24]), ("r", [5, 40])], [("y", [5, 40])],
        [("W", rng.standard_normal((40, 24)).astype(np.float32)), ("b", rng.standard_normal(40).astype(np.float32))])
    path = write_model(model)
    code, out, err = nncc(capsys, path, f"--target={target}", "--check", "--program", tmp_path / "p",
                          "--print-ir-after=fuse-epilogues")
    assert code == 0, err
    assert "fused.gemm %a, %W, %b residual %r" in err and "act relu" in err
    assert "check passed" in out


def test_direct_lowering_and_the_isa_ir_give_the_same_program(capsys, small_model_path, tmp_path):
    """Without IR dumps nncc lowers without building isa ops; with them it goes through the IR."""
    assert nncc(capsys, small_model_path, "--target=vector", "--program", tmp_path / "direct", "-S")[0] == 0
    code, _, err = nncc(capsys, small_model_path, "--target=vector", "--program", tmp_path / "via_ir", "-S",
                        "--print-ir-after=lower-to-isa")
    assert code == 0 and "IR Dump After lower-to-isa" in err and "isa.matmul" in err
    direct, via_ir = load(tmp_path / "direct.nnbin"), load(tmp_path / "via_ir.nnbin")
    assert direct.instructions == via_ir.instructions
    assert direct.symbols == via_ir.symbols and direct.dram_bytes == via_ir.dram_bytes
    assert (tmp_path / "direct.s").read_text() == (tmp_path / "via_ir.s").read_text()


def test_stages_tile_and_vector_are_printable_and_consumed(capsys, small_model_path, tmp_path):
    code, tiled, err = nncc(capsys, small_model_path, "--emit=tile", "--target=vector")
    assert code == 0, err
    assert "tile.cores = 4 : i64" in tiled and "tile.nest" in tiled and "tile.for %oc[%toc]" in tiled
    code, vector, _ = nncc(capsys, small_model_path, "--emit=vector", "--target=vector")
    assert "tile.buffers = 2 : i64" in vector


def test_disabling_double_buffering_and_cores_costs_cycles(capsys, small_model_path, tmp_path):
    # double buffering on edge (on vector the tile search gives this model's layers one job per
    # core, with nothing to overlap), the cores on vector
    cycles = {}
    for label, target, flags in (("all", "vector", []), ("one-core", "vector", ["--disable-pass=partition-cores"]),
                                 ("edge", "edge", []), ("single-buffer", "edge", ["--disable-pass=double-buffer"])):
        report = tmp_path / f"{label}.json"
        code, _, err = nncc(capsys, small_model_path, f"--target={target}", "--check", "--report", report,
                            "--program", tmp_path / label, *flags)
        assert code == 0, err
        cycles[label] = json.loads(report.read_text())["cycles"]
    assert cycles["single-buffer"] > cycles["edge"]
    assert cycles["one-core"] > cycles["all"]
    one_core = load(tmp_path / "one-core.nnbin")
    assert {ins.core for ins in one_core.instructions if hasattr(ins, "core")} == {0}


def test_single_buffered_tiles_fill_the_memory(capsys, small_model_path, tmp_path):
    """Tiles get half the capacity when double buffered, all of it without: on edge with its
    buffer cut to 8 KiB the conv's tiles grow, the IR records it, and double-buffer then refuses them."""
    import re

    def tile_of(text):
        """The first conv nest's loop steps: output channels, input channels, rows, columns."""
        return tuple(int(re.search(rf"%{name}\[%t{name}\] = 0 to \d+ step (\d+)", text).group(1))
                     for name in ("oc", "ic", "oh", "ow"))

    target = ["--target=edge", "--target-set", "memory.BUF.size_bytes=8192"]
    code, double, err = nncc(capsys, small_model_path, "--emit=tile", *target)
    assert code == 0, err
    code, single, err = nncc(capsys, small_model_path, "--emit=tile", "--disable-pass=double-buffer", *target)
    assert code == 0, err
    assert "tile.sized_for = 1 : i64" in single and "tile.sized_for" not in double
    assert math.prod(tile_of(single)) > math.prod(tile_of(double))
    tiled = tmp_path / "single.tile.mlir"
    tiled.write_text(single)
    assert opt.main([str(tiled), "-p", "double-buffer"]) == 2
    assert "tiles were sized for one slot per buffer" in capsys.readouterr().err
    report = tmp_path / "r.json"
    code, _, err = nncc(capsys, small_model_path, "--check", "--report", report, "--program", tmp_path / "p",
                        "--disable-pass=double-buffer", *target)
    assert code == 0, err


def test_hand_edited_tile_sizes_are_followed(capsys, small_model_path, tmp_path):
    import re

    tiled = tmp_path / "m.tile.mlir"
    assert nncc(capsys, small_model_path, "--emit=tile", "--target=edge", "-o", tiled)[0] == 0
    # the conv's nest: one output row per tile (the row loop's step), all 8 columns
    text = re.sub(r"%oh\[%toh\] = 0 to 8 step \d+", "%oh[%toh] = 0 to 8 step 1", tiled.read_text(), count=1)
    text = re.sub(r"%ow\[%tow\] = 0 to 8 step \d+", "%ow[%tow] = 0 to 8 step 8", text, count=1)
    tiled.write_text(text)
    lowered = tmp_path / "m.isa.mlir"
    assert opt.main([str(tiled), "-p", "double-buffer,lower-to-isa{target=edge}", "-o", str(lowered)]) == 0
    capsys.readouterr()
    # One output row per tile: the conv's 8 output rows take 8 jobs of 3 matmuls each (one per
    # kernel row of the 3x3 kernel, k = 3 columns x 3 channels).
    conv_matmuls = lowered.read_text().split('isa.layer {name = "c"')[1].split("isa.layer")[0].count("isa.matmul")
    assert conv_matmuls == 8 * 3
    # a tile larger than its buffers: refused in one line naming the layer and the buffer
    text = text.replace("%ow[%tow] = 0 to 8 step 8", "%ow[%tow] = 0 to 99 step 99", 1)
    tiled.write_text(text)
    assert opt.main([str(tiled), "-p", "lower-to-isa{target=edge}"]) == 2
    err = capsys.readouterr().err
    assert "layer c:" in err and "do not fit the buffer" in err and len(err.strip().splitlines()) == 1


def test_report_shows_dram_bytes_scan_saved(capsys, make_model, write_model, tmp_path):
    """Two stacked 1x1 convs on edge with tiles small enough that the order matters."""
    from onnx import helper

    rng = np.random.default_rng(5)
    model = make_model(
        [helper.make_node("Conv", ["x", "w1"], ["a"], name="pw1"),
         helper.make_node("Conv", ["a", "w2"], ["y"], name="pw2")],
        [("x", [1, 64, 32, 32])], [("y", [1, 128, 32, 32])],
        [("w1", rng.standard_normal((128, 64, 1, 1)).astype(np.float32)),
         ("w2", rng.standard_normal((128, 128, 1, 1)).astype(np.float32))])
    path = write_model(model)
    report = tmp_path / "r.json"
    code, _, err = nncc(capsys, path, "--target=edge", "--check", "--report", report, "--program", tmp_path / "p",
                        "--target-set", "memory.BUF.size_bytes=65536")
    assert code == 0, err
    data = json.loads(report.read_text())
    rows = [row for row in data["layers"] if "predicted_dram_bytes_naive_order" in row]
    assert len(rows) == 2
    for row in rows:
        scan = row["predicted_dram_read_bytes"] + row["predicted_dram_write_bytes"]
        assert scan == row["dram_read_bytes"] + row["dram_write_bytes"]  # the cost model is exact here
        assert row["predicted_dram_bytes_naive_order"] >= scan
    saved = sum(r["predicted_dram_bytes_naive_order"] - r["predicted_dram_read_bytes"] - r["predicted_dram_write_bytes"]
                for r in rows)
    assert data["scan_dram_bytes_saved"] == saved > 0


def test_pooling_tiles_are_in_the_tile_stage_and_followed(capsys, small_model_path, tmp_path):
    """tile-layers writes pooling (and depthwise) layers as nests whose loop steps are the
    channels, output rows and columns per tile; lower-to-isa follows a hand edit, and refuses a
    tile larger than its buffer in one line."""
    import re

    tiled = tmp_path / "m.tile.mlir"
    assert nncc(capsys, small_model_path, "--emit=tile", "--target=vector", "-o", tiled)[0] == 0
    text = tiled.read_text()
    assert "tile.pool max" in text and "pad -inf" in text
    rows = re.search(r"(%oh_?\d*\[%toh_?\d*\] = 0 to 5 step )5", text)  # the 8x5x5 output fits in one tile
    assert rows is not None
    tiled.write_text(text.replace(rows.group(0), rows.group(1) + "1"))
    lowered = tmp_path / "m.isa.mlir"
    assert opt.main([str(tiled), "-p", "double-buffer,lower-to-isa{target=vector}", "-o", str(lowered)]) == 0
    pool = lowered.read_text().split('isa.layer {name = "p"')[1].split("isa.layer")[0]
    assert pool.count("isa.vpool") == 5  # one per output row
    tiled.write_text(text.replace("memref<11x11x8xf32", "memref<3x11x8xf32", 1))
    capsys.readouterr()
    assert opt.main([str(tiled), "-p", "lower-to-isa{target=vector}"]) == 2
    err = capsys.readouterr().err
    assert "layer p: a load into buffer" in err and "do not fit the buffer" in err and len(err.strip().splitlines()) == 1
