"""The report and browser on the real stages' output: a tiny GPT-2's store, two trained cells, the real
analysis, labels written by the real labelling writer (no LLM), a third grid cell never run."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest

from sae_core.naming import Cell
from sae_core.report.browser import write_browser
from sae_core.report.build import build_report


@pytest.fixture(scope="module")
def real_sweep(tiny_store, tiny_store_config, tmp_path_factory):
    from sae_core.analysis.driver import analyze_run
    from sae_core.labels import labels_frame, monosemanticity, write_labels
    from sae_core.training import train_cell

    cfg = tiny_store_config.model_copy(deep=True)
    cfg.name = "pipe"
    cfg.data_root = str(tmp_path_factory.mktemp("pipe_root"))
    cfg.grid.expansion_factors = [2, 4]
    cfg.grid.l1_coefficients = [0.001]
    cfg.training.max_tokens = 6_000
    cfg.training.batch_size = 256
    cfg.training.resample_every = 8
    cfg.training.log_every = 2
    cfg.training.val_every = 10
    cfg.training.checkpoint_every = 1_000
    # 24 steps: the study's Gaussian encoder makes features exceed analysis.dead_threshold (0.07) on this
    # tiny model from the start; the tied init's 0.1-norm encoder needs more steps than this fixture takes.
    cfg.training.init = "seed"
    cfg.analysis.top_k_features = 3
    cfg.analysis.examples_per_feature = 4
    cfg.analysis.quantile_examples = 2
    cfg.analysis.min_activations = 2
    cfg.analysis.ce_loss_documents = 4
    sweep = tmp_path_factory.mktemp("pipe_root") / "runs" / cfg.name
    for cell in (Cell(2, 0.001, "nosampling"), Cell(2, 0.001, "sampling")):
        run = sweep / cell.name
        train_cell(tiny_store, cell, cfg, run)
        analyze_run(tiny_store, run, cfg)
    selected = json.loads((sweep / "2x_0.001_sampling" / "features" / "selected.json").read_text())
    rows = [
        {"feature_id": fid, "group": group, "label": "POLYSEMANTIC" if i == 0 else f"label {fid}",
         "reasoning": "written by the test", "polysemantic": i == 0, "model": "none", "prompt_version": "t",
         "attempts": 1, "status": "ok", "error": None, "examples_hash": "x", "detection_accuracy": None}
        for group in ("top", "bottom") for i, fid in enumerate(selected[group])
    ]  # fmt: skip
    summary = monosemanticity(labels_frame(rows))
    write_labels(sweep / "2x_0.001_sampling", rows, {**summary, "skipped_reason": None})
    return sweep, cfg


@pytest.mark.slow
def test_report_tables_equal_the_real_analysis(real_sweep):
    sweep, cfg = real_sweep
    out = build_report(sweep, cfg)
    doc = json.loads((out / "tables.json").read_text())
    rows = {r["cell"]: r for r in doc["cells"]}
    assert set(rows) == {
        "2x_0.001_nosampling",
        "2x_0.001_sampling",
        "4x_0.001_nosampling",
        "4x_0.001_sampling",
    }
    for name in ("2x_0.001_nosampling", "2x_0.001_sampling"):
        analysis = json.loads((sweep / name / "analysis.json").read_text())
        metrics = json.loads((sweep / name / "metrics.json").read_text())
        assert rows[name]["dead_pct"] == pytest.approx(100 * analysis["dead_fraction"])
        assert rows[name]["l0"] == pytest.approx(analysis["l0"])
        assert rows[name]["explained_variance"] == pytest.approx(analysis["explained_variance"])
        if analysis["ce_loss"] is not None:
            assert rows[name]["ce_recovered"] == pytest.approx(analysis["ce_loss"]["recovered"])
        else:
            assert rows[name]["notes"]["ce_recovered"].startswith("skipped")
        assert rows[name]["tokens_trained"] == metrics["tokens_trained"]
    labels = json.loads((sweep / "2x_0.001_sampling" / "labels.json").read_text())
    assert rows["2x_0.001_sampling"]["monosemanticity_pct"] == pytest.approx(
        100 * labels["monosemanticity_rate"]
    )
    assert rows["2x_0.001_nosampling"]["notes"]["monosemanticity_pct"] == "missing (no labels.json)"
    assert rows["4x_0.001_sampling"]["notes"]["dead_pct"] == "missing (cell not run)"
    dead = doc["grid_tables"]["dead_pct_sampling"]
    assert dead["values"][0] == [pytest.approx(rows["2x_0.001_sampling"]["dead_pct"]), None]
    assert {"loss_curves.png", "frontier.png", "density.png"} <= {f["file"] for f in doc["figures"]}


@pytest.mark.slow
def test_browser_shows_the_real_examples(real_sweep):
    sweep, _ = real_sweep
    run = sweep / "2x_0.001_sampling"
    page = write_browser(run)
    raw = re.search(r'id="sae-data">(.*?)</script>', page.read_text(), re.S).group(1)
    data = json.loads(raw)
    stats = pq.read_table(run / "features" / "feature_stats.parquet").to_pandas()
    assert data["f"]["id"] == stats["feature_id"].tolist()
    assert data["f"]["count"] == stats["count"].tolist()
    examples = pq.read_table(run / "features" / "examples.parquet").to_pandas()
    assert len(examples) > 0
    for _, row in examples.iterrows():
        shown = [
            e
            for e in data["examples"][str(row["feature_id"])]
            if e["k"] == row["kind"] and e["r"] == row["rank"]
        ]
        assert len(shown) == 1
        assert shown[0]["t"][shown[0]["m"]] == row["token"]  # the marked token is the activating one
        assert shown[0]["a"] == pytest.approx(row["activation"], rel=1e-4)
    labels = pq.read_table(run / "labels.parquet").to_pandas()
    assert {int(k) for k in data["labels"]} == set(labels["feature_id"].tolist())
    correlation = json.loads((run / "features" / "correlation.json").read_text())
    assert set(data["corr"]) == {str(i) for i in correlation["ids"]}
