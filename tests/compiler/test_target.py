"""Target loading: presets, user files, overrides, and one-line errors naming file and key."""

import re

import pytest

from nncc.runtime.target import load_target, preset_names, target_from_dict, target_to_dict
from nncc.support.errors import NnccError


def test_presets_are_shipped():
    assert preset_names() == ["edge", "fusion", "vector"]


def test_vector_preset_matches_published_ft_m7002_family_figures():
    target = load_target("vector")
    assert target.cores == 4
    assert target.main.lanes == 16 and target.main.macs_per_lane == 3
    # 2 cores x 16 lanes x 3 FMAC x 2 flop x 1 GHz = 192 GFLOPS ~ "200 GFLOPS" for FT-M7002
    assert 2 * target.main.macs_per_cycle * 2 * target.clock_ghz == 192
    assert target.memory("AM").size_bytes == 768 * 1024 and not target.memory("AM").shared
    assert target.memory("SM").size_bytes == 64 * 1024
    assert target.memory("GSM").shared


def test_vector_preset_has_the_ft_m7032_kernel_rules():
    target = load_target("vector")
    unit = target.main
    assert unit.micro_kernel and (unit.kernel_rows, unit.fma_latency, unit.vector_registers) == (6, 6, 64)
    assert (unit.kernel_fill_drain, unit.load_store_units, unit.broadcast_memory) == (26, 2, "SM")
    assert target.memory("AM").bandwidth_bytes_per_cycle == 2 * 16 * 4  # two vector loads/stores per cycle
    assert target.dram.burst_timing and target.dram.sustained_fraction == 0.8 and not target.dma.broadcast
    assert not load_target("vector", ["core.main.kernel_rows=0"]).main.micro_kernel  # the rule off: a what-if
    assert not load_target("edge").main.micro_kernel and load_target("edge").dma.broadcast


def test_edge_buffer_has_64k_entries_and_dram_row_model():
    target = load_target("edge")
    buffer = target.memory("BUF")
    assert buffer.size_bytes // buffer.word_bytes == 65536
    assert target.dram.row_buffer_bytes > 0 and target.dram.activation_energy_pj > 0


def test_fusion_has_matrix_and_pre_post_units():
    target = load_target("fusion")
    assert target.main.kind == "matrix" and target.mac_units == 32 * 32
    assert target.units["pre"].kind == "vector" and target.units["post"].kind == "vector"


def test_overrides_change_fields_and_survive_the_raw_table():
    target = load_target("vector", ["dram.bandwidth_gbps=25.6", "memory.AM.size_bytes=524288", "cores=2"])
    assert target.dram.bandwidth_gbps == 25.6
    assert target.memory("AM").size_bytes == 524288
    assert target.cores == 2
    rebuilt = target_from_dict(target_to_dict(target))
    assert rebuilt == target


def test_user_file_by_path(tmp_path):
    text = (tmp_path / "x.toml")
    from importlib import resources

    base = (resources.files("nncc.runtime.targets") / "edge.toml").read_text()
    text.write_text(base.replace('name = "edge"', 'name = "mine"'))
    assert load_target(str(text)).name == "mine"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["dram.bandwidth=3"], "edge.toml: dram.bandwidth: unknown key"),
        (["memory.XX.size_bytes=3"], "no entry named 'XX'"),
        (["cores=0"], "edge.toml: cores: 0 is impossible"),
        (["dram.bandwidth_gbps=-1"], "edge.toml: dram.bandwidth_gbps: -1 is impossible"),
        (["core.main.kind=\"gpu\""], "core.main.kind: 'gpu' is not one of vector, matrix"),
        (["memory.BUF.size_bytes=\"big\""], "memory.BUF.size_bytes: expected an integer"),
        (["memory.BUF.word_bytes=6"], "memory.BUF.word_bytes: 6 is not a multiple of 4"),
        (["dma.extra=1"], "edge.toml: dma.extra: unknown key"),
        (["nonsense"], "bad override 'nonsense'"),
        (["core.main.kernel_rows=6"], "edge.toml: core.main.kernel_rows: unknown key"),  # a matrix unit
        (["dram.sustained_fraction=1.5"], "dram.sustained_fraction: 1.5 is more than the simulator supports"),
    ],
)
def test_bad_values_raise_one_line_errors_naming_file_and_key(overrides, message):
    with pytest.raises(NnccError, match=re.escape(message)) as info:
        load_target("edge", overrides)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["core.main.broadcast_memory=\"XM\""], "core.main.broadcast_memory: 'XM' is not a memory"),
        (["core.main.kernel_rows=63"], "core.main.kernel_rows: 63 is more than the simulator supports"),
        (["dma.broadcast=2"], "dma.broadcast: expected true or false"),
    ],
)
def test_bad_kernel_rules_are_named(overrides, message):
    with pytest.raises(NnccError, match=re.escape(f"vector.toml: {message}")):
        load_target("vector", overrides)


def test_kernel_rules_come_all_together(tmp_path):
    from importlib import resources

    base = (resources.files("nncc.runtime.targets") / "vector.toml").read_text()
    partial = tmp_path / "partial.toml"
    partial.write_text(base.replace("fma_latency = 6", ""))
    with pytest.raises(NnccError, match=r"partial.toml: core.main.fma_latency: missing \(the micro-kernel keys"):
        load_target(str(partial))


def test_missing_field_is_named(tmp_path):
    from importlib import resources

    base = (resources.files("nncc.runtime.targets") / "edge.toml").read_text()
    path = tmp_path / "broken.toml"
    path.write_text(base.replace("latency_ns = 50.0\n", ""))
    with pytest.raises(NnccError, match=r"broken.toml: dram.latency_ns: missing"):
        load_target(str(path))


def test_unknown_name_lists_presets():
    with pytest.raises(NnccError, match="unknown target 'tpu'; available: edge, fusion, vector, reference"):
        load_target("tpu")


def test_reference_is_not_a_machine():
    with pytest.raises(NnccError, match="handled by the compiler"):
        load_target("reference")


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(NnccError, match="cannot read target file"):
        load_target(str(tmp_path / "none.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("name = = 3")
    with pytest.raises(NnccError, match="bad.toml: invalid TOML"):
        load_target(str(bad))


def test_docs_cover_every_preset():
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "targets.md").read_text()
    for name in preset_names():
        assert f"## `{name}`" in text
