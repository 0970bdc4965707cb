"""The back end's decisions are recorded once in the module (passes/decisions.py): later passes
read them, follow hand edits, and refuse an option that differs in one line (exit 2)."""

from __future__ import annotations

import re

import pytest

from nncc.compiler import opt
from nncc.compiler.cli import main as nncc_main


def run(capsys, main, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def edge_tile_ir(capsys, small_model_path, tmp_path):
    """The model at the tile stage as `nncc --target=edge --emit=tile` writes it."""
    path = tmp_path / "m.tile.mlir"
    code, _, err = run(capsys, nncc_main, small_model_path, "--target=edge", "--emit=tile", "-o", path)
    assert code == 0, err
    return path


def program_body(ir: str) -> str:
    return ir[ir.index("func.func @program"):].strip()


def test_the_module_records_target_cores_order_and_objective(edge_tile_ir):
    text = edge_tile_ir.read_text()
    header = text[: text.index("\n")]
    assert re.search(r'tile\.target = \{name = "edge", .*cores = 1 : i64', header)
    assert 'tile.cores = 1 : i64' in header
    assert 'tile.order = "scan"' in header and 'tile.objective = "cycles"' in header


def test_a_later_pass_handed_another_target_refuses(capsys, edge_tile_ir, tmp_path):
    """The measured problem: this pipeline used to give a 1-core `vector` program, silently."""
    pipeline = "partition-cores{target=edge},tile-layers{target=edge},double-buffer,lower-to-isa{target=vector}"
    code, out, err = run(capsys, opt.main, edge_tile_ir, "-p", pipeline, "-o", tmp_path / "m.isa.mlir")
    assert code == 2 and out == ""
    assert err == ("nncc-opt: error: lower-to-isa: option target=vector differs from tile.target recorded in the "
                   "module (target edge); leave the option out to use it\n")
    assert not (tmp_path / "m.isa.mlir").exists()


@pytest.mark.parametrize("pipeline, message", [
    ("double-buffer,lower-to-isa{tile-order=naive}",
     'lower-to-isa: option tile-order=naive differs from tile.order = "scan" recorded in the module'),
    ("tile-layers{tile-objective=dram}",
     'tile-layers: option tile-objective=dram differs from tile.objective = "cycles" recorded in the module'),
    ("partition-cores{target=vector}",
     "partition-cores: option target=vector differs from tile.target recorded in the module (target edge)"),
    ('lower-to-isa{target=edge target-set="dram.bandwidth_gbps=1.0"}',
     "lower-to-isa: options target=edge target-set=dram.bandwidth_gbps=1.0 differ from tile.target recorded in "
     "the module (target edge with dram.bandwidth_gbps = 12.8, not 1.0); leave the options out to use it"),
])
def test_every_mismatch_is_one_line(capsys, edge_tile_ir, pipeline, message):
    code, _, err = run(capsys, opt.main, edge_tile_ir, "-p", pipeline)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_no_options_or_the_same_ones_give_nncc_s_program(capsys, small_model_path, edge_tile_ir):
    """`double-buffer,lower-to-isa` needs no option on a module nncc recorded; the same values
    as options are accepted; both give the program nncc itself emits."""
    code, emitted, err = run(capsys, nncc_main, small_model_path, "--target=edge", "--emit=isa")
    assert code == 0, err
    for pipeline in ("double-buffer,lower-to-isa",
                     "partition-cores{target=edge},tile-layers{target=edge tile-order=scan},double-buffer,"
                     "lower-to-isa{target=edge tile-order=scan tile-objective=cycles}"):
        code, lowered, err = run(capsys, opt.main, edge_tile_ir, "-p", pipeline)
        assert code == 0, err
        assert program_body(lowered) == program_body(emitted)
        assert "tile.target" not in lowered and 'isa.target = {name = "edge"' in lowered  # moved, not copied


def test_hand_edits_of_the_recorded_target_are_followed(capsys, edge_tile_ir):
    text = edge_tile_ir.read_text()
    assert "bandwidth_gbps = 1.280000e+01 : f64" in text
    edge_tile_ir.write_text(text.replace("bandwidth_gbps = 1.280000e+01 : f64", "bandwidth_gbps = 1.000000e+00 : f64"))
    code, lowered, err = run(capsys, opt.main, edge_tile_ir, "-p", "double-buffer,lower-to-isa")
    assert code == 0, err
    assert "bandwidth_gbps = 1.000000e+00 : f64" in lowered.split("\n")[0]  # isa.target: what the program runs on
    code, _, err = run(capsys, opt.main, edge_tile_ir, "-p", "lower-to-isa{target=edge}")
    assert code == 2 and "dram.bandwidth_gbps = 1.0, not 12.8" in err


def test_bad_hand_edits_are_one_line(capsys, edge_tile_ir):
    text = edge_tile_ir.read_text()
    edge_tile_ir.write_text(text.replace('tile.order = "scan"', 'tile.order = "zigzag"'))
    code, _, err = run(capsys, opt.main, edge_tile_ir, "-p", "lower-to-isa")
    assert code == 2 and "lower-to-isa: tile.order must be naive, scan or tsp, not 'zigzag'" in err
    edge_tile_ir.write_text(text.replace('tile.order = "scan"', "tile.order = 3 : i64"))
    code, _, err = run(capsys, opt.main, edge_tile_ir, "-p", "lower-to-isa")
    assert code == 2 and "module attribute tile.order must be a string" in err
    edge_tile_ir.write_text(text.replace("tile.cores = 1 : i64", "tile.cores = 4 : i64"))
    code, _, err = run(capsys, opt.main, edge_tile_ir, "-p", "partition-cores")
    assert code == 2 and "tile.cores = 4 recorded in the module, but target edge has 1 cores" in err
