"""`nncc-bench` at small sizes: every part runs, prints its tables and writes consistent figures."""

from __future__ import annotations

import json

import pytest

from nncc.compiler import bench


def test_table_aligns_numbers_right_and_text_left():
    text = bench.table(["name", "value"], [["a", 1.5], ["long name", 1234]], "title")
    lines = text.splitlines()
    assert lines[0] == "title"
    assert lines[1].startswith("name") and lines[1].endswith("value")
    assert lines[3] == "a           1.50"
    assert lines[4] == "long name  1,234"


@pytest.mark.big_memory
def test_vgg_part(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert bench.main(["--only", "vgg", "--resolution", "32", "--fc-batch", "4", "--width", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "(a) VGG-16 inference on vector" in text and "86.6" in text and "93.2" in text
    figures = json.loads(out.read_text())["vgg"]
    # 13 convs, some in fused chains (a row per chain: "features.0+features.2+features.4")
    convs = [name for row in figures["conv"] for name in row["name"].split("+")]
    assert {f"features.{i}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)} <= set(convs)
    assert len(figures["fc"]) == 3 and len(figures["fc_batch1"]) == 3
    for row in figures["conv"] + figures["fc"] + figures["fc_batch1"]:
        assert row["predicted_cycles"] == row["cycles"]
        assert 0 < row["efficiency"] <= 100 and 0 < row["of_bound"] <= 100
    assert figures["fc"][0]["macs"] == 4 * 512 * 4096
    # the width mapping forced on every conv: never better than the chosen mapping by more than
    # the chooser's 1 % tolerance (it would have been chosen)
    assert [row["name"].split()[0] for row in figures["width"]] == [f"features.{i}" for i, *_ in bench.VGG16_CONVS]
    alone = [row for row in figures["width"] if " (in " not in row["name"]]  # a conv not in a fused chain
    assert alone and all(row["width"] is None or 0 < row["width"] <= row["channels"] * 1.01 + 1e-9 for row in alone)


def test_kernel_part_reproduces_the_published_micro_kernel(tmp_path, capsys):
    out = tmp_path / "k.json"
    assert bench.main(["--only", "kernel", "--quick", "--json", str(out)]) == 0
    assert "(m) vector timing model vs the FT-M7032" in capsys.readouterr().out
    figures = json.loads(out.read_text())["kernel"]
    # one 6x3-vector call: 6k FMA cycles + 26 fill/drain (its 18 c stores inside) + 7 (the call)
    assert [row["cycles"] for row in figures["micro_kernel"]] == [6 * k + 26 + 7 for k in (64, 512, 1024)]
    assert all(abs(row["efficiency"] - row["paper"]) <= 1 for row in figures["micro_kernel"])
    for row in figures["single_core"] + figures["scaling"]:
        assert row["predicted_cycles"] == row["cycles"] and 0 < row["efficiency"] <= 100
    scaling = [row["efficiency"] for row in figures["scaling"]]
    assert scaling == sorted(scaling, reverse=True)  # more cores, lower efficiency at small k
    # the library's schedule (outputs checked inside): the shorter K_A, the more fill/drain per MAC
    # with the paper's 6x3 calls, as measured (91.4 / 94.3 / 95.5 %); nncc's wider calls never lose
    library = figures["library"]
    assert [row["ka"] for row in library] == [128, 256, 512]
    assert [row["efficiency"] for row in library] == sorted(row["efficiency"] for row in library)
    assert all(row["efficiency_nncc_calls"] >= row["efficiency"] for row in library)
    # on more cores (each with its own columns, sharing the DRAM bus) never better
    for ka in (128, 512):
        per_cores = [row["efficiency"] for row in figures["library_scaling"] if row["ka"] == ka]
        assert len(per_cores) == 3 and per_cores == sorted(per_cores, reverse=True)


@pytest.mark.big_memory
def test_scan_and_resnet_parts(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert bench.main(["--only", "scan", "--only", "resnet", "--scan-resolution", "32", "--resnet-resolution", "32",
                       "--resnet-targets", "edge", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "(b) mobilenet_v2 on edge" in text and "(b) resnet50 on edge" in text and "(c) ResNet-50" in text
    figures = json.loads(out.read_text())
    for model in figures["scan"]["models"].values():
        totals = model["total_bytes"]
        # each order gets its own tiles (cycles first, then bytes within 5 %): Scan is not forced
        # below naive on every model, but never far above it
        assert totals["scan"] <= 1.05 * totals["naive"]
        assert sum(layer["scan"] for layer in model["layers"]) == totals["scan"]
        # the TSP path (Scan's tiles) is kept only where it moves fewer bytes than Scan's walk
        assert totals["tsp"] <= totals["scan"]
        assert sum(layer["tsp"] for layer in model["layers"]) == totals["tsp"]
        assert all(layer["tsp"] <= layer["scan"] for layer in model["layers"])
    edge = figures["resnet"]["targets"]["edge"]
    assert edge["instructions"] > 0 and edge["compile_s"] > 0 and edge["sim_s"] > 0


def test_zoo_part_checks_every_target_against_onnxruntime(tmp_path, capsys):
    out = tmp_path / "z.json"
    assert bench.main(["--only", "zoo", "--zoo-resolution", "32", "--zoo-models", "squeezenet1_1",
                       "--json", str(out)]) == 0
    assert "(d) the zoo" in capsys.readouterr().out
    figures = json.loads(out.read_text())["zoo"]
    runs = figures["models"]["squeezenet1_1"]
    assert sorted(runs) == ["edge", "fusion", "vector"] and figures["all_passed"]
    assert all(run["passed"] and run["max_rel_err"] <= 1e-4 and run["cycles"] > 0 for run in runs.values())


@pytest.mark.big_memory
def test_train_part(tmp_path, capsys):
    out = tmp_path / "t.json"
    assert bench.main(["--only", "train", "--train-resolution", "32", "--train-fc-batch", "2",
                       "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "(n) VGG-16 training on vector" in text and "69.6" in text and "82.0" in text
    figures = json.loads(out.read_text())["train"]
    phases = [row["phase"] for row in figures["conv"]]
    # every conv forward and backward-filter; backward-data of all but the first (its input is the image)
    assert phases.count("forward") == phases.count("backward-filter") == 13 and phases.count("backward-data") == 12
    assert sorted(row["phase"] for row in figures["fc"]) == sorted(
        ["forward"] * 3 + ["backward-filter"] * 3 + ["backward-data"] * 2)
    for row in figures["conv"] + figures["fc"]:
        assert row["efficiency"] == pytest.approx(100 * row["macs"] / (row["cycles"] * 192))
        assert 0 < row["efficiency"] <= 100 and 0 < row["of_bound"] <= 100
    fc1 = [row for row in figures["fc"] if row["node"] == "classifier.fc1"]
    assert all(row["macs"] == 2 * 4096 * 4096 for row in fc1)  # each phase: batch x 4096 x 4096


def test_train_layers_part(tmp_path, capsys):
    """--train-layers: each VGG-16 conv shape and ResNet-50's 1x1 convs trained alone (conv1_1
    without backward-data), the classifier; the efficiencies are the rows' MACs over their cycles."""
    out = tmp_path / "t.json"
    assert bench.main(["--only", "train", "--train-layers", "--train-resolution", "32", "--train-fc-batch", "2",
                       "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "VGG-16's conv layers trained alone" in text and "69.6" in text and "82.0" in text
    figures = json.loads(out.read_text())["train"]
    rows = figures["vgg"]
    assert [row["count"] for row in rows if row["phase"] == "forward"] == [1, 1, 1, 1, 1, 2, 1, 2, 3]
    assert [row["phase"] for row in rows].count("backward-data") == 8
    conv3_2 = [row for row in rows if row["node"] == "conv3_2, conv3_3"]
    assert all(row["macs"] == 2 * 256 * 256 * 9 * 8 * 8 for row in conv3_2)  # each phase: batch x C x O x 9 x 8 x 8
    assert figures["vgg_overall"] == pytest.approx(100 * sum(r["macs"] * r["count"] for r in rows) /
                                                   (192 * sum(r["cycles"] * r["count"] for r in rows)))
    pointwise = figures["resnet50_pointwise"]
    assert len(pointwise) == 3 * len(bench.RESNET_POINTWISE)
    assert all(row["macs"] == 2 * 256 * 512 * 4 * 4 for row in pointwise if row["node"] == "layer2 shortcut")
    assert len(figures["fc"]) == 8 and 0 < figures["fc_overall"] <= 100


def test_bad_resolution_is_one_line(capsys):
    assert bench.main(["--only", "vgg", "--resolution", "50"]) == 2
    assert "multiple of 32" in capsys.readouterr().err
    assert bench.main(["--only", "zoo", "--zoo-models", "alexnet"]) == 2
    assert "unknown model 'alexnet'" in capsys.readouterr().err


def test_two_outputs_on_one_file_are_refused_before_any_work(tmp_path, capsys):
    same = tmp_path / "out.png"
    assert bench.main(["--only", "bn", "--bn-plot", str(same), "--json", str(same)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--bn-plot" in err and "give each output its own file" in err
    assert not same.exists()


def test_fused_and_bound_parts(tmp_path, capsys):
    """(k): the fused VGG head moves fewer DRAM bytes than its layers, never fewer than the
    compulsory traffic; (l): no 1x1 layer below the I/O lower bound of its matrix product."""
    out = tmp_path / "fused.json"
    assert bench.main(["--only", "fused", "--only", "bound", "--fused-resolution", "32", "--fused-buffers", "370688",
                       "--scan-resolution", "32", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    (entry,) = data["fused"]["buffers"].values()
    compulsory = data["fused"]["compulsory_bytes"]
    assert compulsory <= entry["fused"]["dram_bytes"] < entry["layers"]["dram_bytes"]
    assert entry["fused"]["groups"]
    layers = data["bound"]["layers"]
    assert layers and all(x["bound_bytes"] <= x["dram_bytes"] for x in layers)
    assert data["bound"]["worst"] == max(x["dram_bytes"] / x["bound_bytes"] for x in layers)
    single = data["bound"]["single"]  # issue 11's single layers (scaled down): never below their compulsory bytes
    assert len(single) == 4 and all(x[objective]["dram_bytes"] >= x["compulsory_bytes"]
                                    for x in single for objective in ("cycles", "dram"))
    assert "(k) VGG-16" in capsys.readouterr().out
