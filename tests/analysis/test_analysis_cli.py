"""`sae-sweep analyze`: writes the analysis of a run and prints its path last; bad input is one line."""

from __future__ import annotations

import json

import numpy as np
import torch

from flows.cli import main
from sae_core.saes.relu import SparseAutoencoder

CELL = "2x_0.01_nosampling"


def make_run(tmp_path, synthetic_store_factory):
    rng = np.random.default_rng(0)
    doc_ids = np.repeat(np.arange(30), 20)
    store = synthetic_store_factory(
        rng.normal(size=(600, 8)).astype(np.float32), doc_ids, splits=np.full(600, "test")
    )
    run = tmp_path / CELL
    run.mkdir()
    torch.save(SparseAutoencoder(8, 16, seed=0).state_dict(), run / f"model_weights_{CELL}.pth")
    return store.path, run


def test_analyze_command_writes_the_analysis(tmp_path, synthetic_store_factory, capsys):
    store, run = make_run(tmp_path, synthetic_store_factory)
    code = main(
        ["analyze", "--activations", str(store), "--run", str(run), "--set", "analysis.top_k_features=2",
         "--set", "training.device=cpu"]
    )  # fmt: skip
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert out[-1] == str(run / "analysis.json")
    summary = json.loads((run / "analysis.json").read_text())
    assert len(summary["selected"]["top"]) == 2
    assert out[0].startswith(f"{CELL}: 600 test tokens, dead ")


def test_analyze_command_reports_bad_input_in_one_line(tmp_path, synthetic_store_factory, capsys):
    store, run = make_run(tmp_path, synthetic_store_factory)
    code = main(["analyze", "--activations", str(store), "--run", str(tmp_path / "missing")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: run: no such run directory") and "\n" not in err
    code = main(["analyze", "--activations", str(store), "--run", str(run), "--set", "analysis.split=val"])
    assert code == 2
    assert "analysis.split" in capsys.readouterr().err
