"""--plot of nncc and nncc-bench, and the figures' numbers (compiler/plots.py)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree

import pytest

from nncc.compiler import bench, cli, plots
from nncc.runtime.target import load_target, target_to_dict

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def model_path(small_model_path):
    return small_model_path  # conv -> BN -> ReLU -> max pool -> FC (tests/conftest.py)


def test_roofs_and_points_by_hand():
    edge = target_to_dict(load_target("edge"))  # 16x16 PEs; 12.8 GB/s at 0.2 GHz = 64 B/cycle
    assert plots.roofs(edge) == (256.0, 64.0)
    vector = target_to_dict(load_target("vector", ["cores=2"]))  # 2 cores x 16 lanes x 3 MACs
    assert plots.roofs(vector) == (96.0, pytest.approx(42.6))
    layers = [{"name": "conv", "op": "fused.conv2d", "macs": 1000, "cycles": 50, "dram_read_bytes": 150,
               "dram_write_bytes": 50},
              {"name": "pool", "op": "nn.max_pool", "macs": 0, "cycles": 10, "dram_read_bytes": 8,
               "dram_write_bytes": 8}]
    assert plots.roofline_points(layers) == [{"name": "conv", "op": "fused.conv2d", "intensity": 5.0,
                                              "macs_per_cycle": 20.0}]


def test_nncc_plot(model_path, tmp_path, capsys):
    report, png, svg = tmp_path / "r.json", tmp_path / "r.png", tmp_path / "r.svg"
    assert cli.main([str(model_path), "--target=edge", "--report", str(report), "--plot", str(png),
                     "--program", str(tmp_path / "p"), "-q"]) == 0
    assert png.read_bytes()[:8] == PNG
    assert cli.main([str(model_path), "--target=edge", "--plot", str(svg), "--program", str(tmp_path / "p"),
                     "-q"]) == 0  # --plot alone runs the program
    assert ElementTree.parse(svg).getroot().tag.endswith("svg")
    rows = json.loads(report.read_text())["layers"]
    assert [row["name"] for row in rows if row["macs"]] == [p["name"] for p in plots.roofline_points(rows)]
    capsys.readouterr()


@pytest.mark.parametrize("flags, message", [
    (["--target=edge", "--plot", "r.jpg"], "--plot r.jpg: the file name must end in .png, .svg, .pdf"),
    (["--target=reference", "--plot", "r.png"], "--plot needs an accelerator target"),
    (["--target=edge", "--emit=tile", "--plot", "r.png"], "--emit=tile stops after that stage: --plot"),
])
def test_nncc_plot_refused(model_path, tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)
    assert cli.main([str(model_path), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_nncc_plot_never_overwrites_the_model(model_path, tmp_path, capsys):
    link = tmp_path / "m.png"
    link.symlink_to(model_path)
    before = model_path.read_bytes()
    assert cli.main([str(model_path), "--target=edge", "--plot", str(link), "--program", str(tmp_path / "p")]) == 2
    assert "refusing to overwrite it" in capsys.readouterr().err
    assert model_path.read_bytes() == before


def test_bench_plot(tmp_path, capsys):
    assert bench.main(["--only", "resnet", "--resnet-resolution", "32", "--resnet-targets", "edge",
                       "--plot", str(tmp_path / "b.png"), "-q"]) == 0
    assert (tmp_path / "b.resnet-resnet50-edge.png").read_bytes()[:8] == PNG
    assert "nncc-bench: 1 plots in" in capsys.readouterr().out
    assert bench.main(["--only", "resnet", "--plot", str(tmp_path / "b.gif")]) == 2
    assert "--plot " in capsys.readouterr().err
