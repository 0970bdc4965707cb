"""One path: `nncc --target=T` and `nncc-bench` run every pass, lower-to-isa included, through the
pass manager, as nncc-opt does; lower-to-isa's isa ops are built only when the IR is printed."""

from __future__ import annotations

import pytest

from nncc.compiler import bench, pass_manager
from nncc.compiler.cli import main as nncc_main
from nncc.compiler.codegen import isa_module
from nncc.runtime.program_file import load


@pytest.fixture
def applied(monkeypatch):
    """The passes the pass manager applies, in order, and how many isa ops were built."""
    record = {"passes": [], "isa_ops": 0}
    apply_pass, op_from_instr = pass_manager.apply_pass, isa_module.op_from_instr

    def recording_apply(module_pass, ctx, module):
        record["passes"].append(module_pass)
        apply_pass(module_pass, ctx, module)

    def counting_op_from_instr(instruction):
        record["isa_ops"] += 1
        return op_from_instr(instruction)

    monkeypatch.setattr(pass_manager, "apply_pass", recording_apply)
    monkeypatch.setattr(isa_module, "op_from_instr", counting_op_from_instr)
    return record


def side_path_program(model_path, target_name: str, **lowering):
    """What `nncc --target` did before: the vector-stage module lowered by `lower_module` directly."""
    from nncc.compiler.codegen.lower import lower_module, pipeline_decisions
    from nncc.compiler.pipeline import Options, compile_model
    from nncc.compiler.registry import Registry
    from nncc.runtime.target import load_target

    options = Options(target_options=bench.target_options(target_name))
    compilation = compile_model(model_path, Registry.default(), options, until="vector")
    return lower_module(compilation.module, compilation.store, load_target(target_name), "scan",
                        **lowering, **pipeline_decisions(compilation.module))


@pytest.mark.parametrize("target", ["vector", "edge"])
def test_nncc_target_runs_lower_to_isa_through_the_pass_manager(capsys, applied, small_model_path, tmp_path,
                                                                 target):
    assert nncc_main([str(small_model_path), f"--target={target}", "--program", str(tmp_path / "p")]) == 0
    capsys.readouterr()
    names = [p.name for p in applied["passes"]]
    assert names[-6:] == ["partition-cores", "fuse-groups", "tile-layers", "dram-layout", "double-buffer", "lower-to-isa"]
    lowering = applied["passes"][-1]
    assert (lowering.target, lowering.tile_order, lowering.compare_orders) == (target, "scan", False)
    assert applied["isa_ops"] == 0  # nothing printed: the program is taken as the pass made it
    written = load(tmp_path / "p.nnbin")
    before = side_path_program(small_model_path, target)
    assert written.instructions == before.instructions
    assert written.symbols == before.symbols and written.dram_bytes == before.dram_bytes


def test_ir_dumps_build_the_isa_ops_and_give_the_same_program(capsys, applied, small_model_path, tmp_path):
    assert nncc_main([str(small_model_path), "--target=vector", "--program", str(tmp_path / "direct")]) == 0
    assert applied["isa_ops"] == 0
    assert nncc_main([str(small_model_path), "--target=vector", "--program", str(tmp_path / "dumped"),
                      "--print-ir-after=lower-to-isa"]) == 0
    err = capsys.readouterr().err
    direct, dumped = load(tmp_path / "direct.nnbin"), load(tmp_path / "dumped.nnbin")
    assert applied["isa_ops"] == len(dumped.instructions) == err.count("\n    isa.")
    assert "isa.deferred" not in err
    assert direct.instructions == dumped.instructions


def test_report_asks_lower_to_isa_for_the_naive_order_figures(capsys, applied, small_model_path, tmp_path):
    assert nncc_main([str(small_model_path), "--target=edge", "--program", str(tmp_path / "p"),
                      "--report", str(tmp_path / "r.json")]) == 0
    capsys.readouterr()
    assert applied["passes"][-1].name == "lower-to-isa" and applied["passes"][-1].compare_orders


def test_bench_lowers_through_the_same_passes(capsys, applied, small_model_path, tmp_path):
    """nncc-bench's tile order, objective and lower-to-isa options reach the passes, and its
    program is the one nncc writes with the same options."""
    from nncc.compiler.pipeline import Options, compile_model
    from nncc.compiler.registry import Registry

    fused = compile_model(small_model_path, Registry.default(), Options(), until="fused")
    program, result = bench.lower_and_run(fused, "edge", "naive", "dram", compare_orders=True)
    names = [p.name for p in applied["passes"]]
    assert names[-6:] == ["partition-cores", "fuse-groups", "tile-layers", "dram-layout", "double-buffer", "lower-to-isa"]
    tiling, lowering = applied["passes"][-4], applied["passes"][-1]
    assert (tiling.target, tiling.tile_order, tiling.tile_objective) == ("edge", "naive", "dram")
    assert lowering.compare_orders and applied["isa_ops"] == 0
    assert "tile.target" not in fused.module.attributes  # the fused compilation is left as it was
    assert result.cycles > 0
    assert nncc_main([str(small_model_path), "--target=edge", "--tile-order=naive", "--tile-objective=dram",
                      "--program", str(tmp_path / "p"), "--report", str(tmp_path / "r.json")]) == 0
    capsys.readouterr()
    assert load(tmp_path / "p.nnbin").instructions == program.instructions


def test_a_copy_of_a_deferred_module_says_its_program_is_gone(small_model_path):
    from nncc.compiler.pipeline import Options, compile_model
    from nncc.compiler.registry import Registry
    from nncc.support.errors import NnccError

    compilation = compile_model(small_model_path, Registry.default(), Options(), until="isa")
    assert isa_module.is_deferred(compilation.module)
    copy = compilation.module.clone()
    with pytest.raises(NnccError, match="program is not in memory"):
        isa_module.module_to_program(copy, compilation.store)
    assert isa_module.module_to_program(compilation.module, compilation.store).instructions
