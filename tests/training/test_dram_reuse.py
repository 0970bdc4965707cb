"""DRAM reuse by liveness (compiler/codegen/dram_plan.py) in training: the step with its
intermediates' DRAM reused computes the very same numbers as with every tensor in its own DRAM
(the activations saved for backward live until their backward reader), in less DRAM."""

import json

import numpy as np
import pytest

from nncc.compiler.cli import main
from nncc.compiler.codegen.dram_plan import DramPlan

pytest.importorskip("torch")


def step(tmp_path, capsys, model, label: str) -> tuple[dict, dict]:
    report, outputs = tmp_path / f"{label}.json", tmp_path / f"{label}.npz"
    code = main([str(model), "--train", "--target=vector", "--steps", "2", "--momentum", "0.9", "--run",
                 "--report", str(report), "--outputs", str(outputs), "--program", str(tmp_path / label)])
    assert code == 0, capsys.readouterr()
    with np.load(outputs) as data:
        return json.loads(report.read_text()), {name: data[name] for name in data}


@pytest.mark.parametrize("name", ["se", "cat"])
def test_reuse_changes_no_number(name, tmp_path, capsys, model_file, monkeypatch):
    model = model_file(name)
    reused, reused_outputs = step(tmp_path, capsys, model, "reused")
    monkeypatch.setattr(DramPlan, "release", lambda self, position: None)  # every tensor keeps its DRAM
    apart, apart_outputs = step(tmp_path, capsys, model, "apart")
    assert reused["dram_size_bytes"] < apart["dram_size_bytes"] <= reused["dram_without_reuse_bytes"]
    assert reused["cycles"] == apart["cycles"]
    assert reused_outputs.keys() == apart_outputs.keys()
    for key, value in reused_outputs.items():
        assert np.array_equal(value, apart_outputs[key]), key
