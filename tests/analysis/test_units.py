"""Thresholds with their units (issue 22, item 3): a store whose activations are small in raw units
(norm ~0.25) makes the absolute dead threshold call live features dead. The analysis, labels.json and
the report must say which units the figures are in, say in words when never-fired and dead % disagree,
and give the selection's shortfall with counts and the reason — never an empty selection in silence.
Those are the raw-units run (`training.normalize_activations=none`); at the defaults (`expected_norm`,
item 1) the same store gives consistent dead %, L0 and a full selection, in normalised units."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from sae_core.analysis.driver import analyze_run
from sae_core.config import load_config
from sae_core.labels.files import write_labels
from sae_core.naming import Cell
from sae_core.report import build_report
from sae_core.store import write_store
from sae_core.training import train_cell

D, N, DOC_LEN = 16, 8_000, 40
CELL = Cell(4, 1e-3, "nosampling")


def small_store(path: Path) -> Path:
    """Sparse codes over 64 unit directions, scaled so that the mean ‖x‖ is 0.25."""
    gen = torch.Generator().manual_seed(0)
    directions = torch.randn(64, D, generator=gen)
    directions /= directions.norm(dim=1, keepdim=True)
    codes = (torch.rand(N, 64, generator=gen) < 0.2) * (torch.rand(N, 64, generator=gen) + 0.5)
    x = codes @ directions
    x *= 0.25 / x.norm(dim=1).mean()
    write_store(
        path, x.numpy(), np.repeat(np.arange(N // DOC_LEN), DOC_LEN), store_dtype="float32",
        model={"name": "synthetic", "layer": 1, "num_layers": 2, "d_model": D},
        data={"dataset": "synthetic-small-norm", "context_length": DOC_LEN},
    )  # fmt: skip
    return path


def config(**extra):
    overrides = {
        "training.lr": 3e-3, "training.batch_size": 256, "training.epochs": 2, "training.seed": 0,
        "training.log_every": 10, "training.val_every": 30, "training.val_tokens": 512,
        "training.checkpoint_every": 1000, "training.device": "cpu", "tracking.mode": "disabled",
        "grid.expansion_factors": [CELL.expansion], "grid.l1_coefficients": [CELL.l1],
        "grid.strategies": [CELL.strategy], "analysis.ce_loss_documents": 0, **extra,
    }  # fmt: skip
    return load_config(None, overrides=overrides)  # no preset: analysis at its defaults (0.07, 10, 25)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    root = tmp_path_factory.mktemp("units")
    store, cfg = small_store(root / "store"), config(**{"training.normalize_activations": "none"})
    run = root / "sweep" / CELL.name
    train_cell(store, CELL, cfg, run)
    return run, cfg, analyze_run(store, run, cfg)


def test_analysis_states_units_and_the_three_dead_readings(analysed):
    run, _, summary = analysed
    assert summary["activation_units"] == "raw"
    assert summary["units"]["dead_threshold"].startswith("raw")
    assert "test tokens" in summary["units"]["l0"] and summary["never_fired_split"] == "test"
    assert summary["l0"] > 1  # the SAE is alive: features fire > 0 on every token
    # The threshold, not the SAE, makes features dead: they fire but never above 0.07 raw.
    assert summary["below_threshold_only_count"] > 0
    assert summary["dead_count"] == summary["never_fired_count"] + summary["below_threshold_only_count"]
    assert summary["never_fired_fraction"] < summary["dead_fraction"]
    assert 0 < summary["firings_below_threshold_fraction"] <= 1
    assert summary["max_activation"] > 0
    selected = json.loads((run / "features" / "selected.json").read_text())
    assert selected["activation_units"] == "raw"


def test_a_short_selection_gives_its_counts_and_reason(analysed, caplog):
    run, _, summary = analysed
    selection = summary["selection"]
    assert selection["asked"] == 50  # 2 × top_k_features at the default 25
    assert selection["selected"] == len(summary["selected"]["top"]) + len(summary["selected"]["bottom"])
    assert selection["selected"] < selection["asked"]
    reason = selection["shortfall"]
    assert reason.startswith(f"{selection['selected']} of 50 asked: only {selection['eligible']} features")
    assert "> 0.07 (raw units" in reason and "≥ 10 test tokens" in reason
    assert "analysis.dead_threshold" in reason
    # labels.json (even a skipped labelling) carries the counts and the reason
    with caplog.at_level(logging.WARNING, logger="sae_core.labels.files"):
        write_labels(run, [], {"monosemanticity_rate": None, "skipped_reason": "labeling.enabled is false"})
    labels = json.loads((run / "labels.json").read_text())
    assert labels["selection"] == {
        "asked": 50,
        "selected": selection["selected"],
        "eligible": selection["eligible"],
        "shortfall": reason,
    }
    assert reason in caplog.text


def test_report_says_units_disagreement_and_shortfall_in_words(analysed):
    run, cfg, summary = analysed
    out = build_report(run.parent, cfg)
    md = (out / "report.md").read_text()
    assert "raw units of the stored activations" in md
    assert "never fired % (no activation > 0, analysed tokens)" in md
    assert f"{CELL.name}: {summary['below_threshold_only_count']:,} of 64 features" in md
    assert "count as dead only because of the threshold" in md
    assert f"the selection holds {summary['selection']['shortfall']}" in md
    row = json.loads((out / "tables.json").read_text())["cells"][0]
    assert row["never_fired_pct"] == pytest.approx(100 * summary["never_fired_fraction"])
    assert row["below_threshold_only_pct"] == pytest.approx(100 * summary["below_threshold_only_fraction"])


def test_an_empty_selection_reads_as_skipped_with_its_reason_not_as_missing(tmp_path):
    from sae_core.report.cells import CellData, monosemanticity_pct

    reason = "0 of 50 asked: only 0 features fire > 0.07 (raw units of the stored activations) on ≥ 10 …"
    labels = {"monosemanticity_rate": None, "skipped_reason": None, "labelled": 0, "failed": 0}
    labels["selection"] = {"asked": 50, "selected": 0, "eligible": 0, "shortfall": reason}
    entry = monosemanticity_pct(CellData(CELL, tmp_path, exists=True, labels=labels))
    assert entry.value is None and entry.note == f"skipped (no feature selected: {reason})"


@pytest.fixture(scope="module")
def analysed_at_defaults(tmp_path_factory):
    root = tmp_path_factory.mktemp("units-defaults")
    store, cfg = small_store(root / "store"), config()  # training.normalize_activations: expected_norm
    run = root / "sweep" / CELL.name
    metrics = train_cell(store, CELL, cfg, run)
    return run, cfg, metrics, analyze_run(store, run, cfg)


def test_at_the_defaults_the_small_scale_store_gives_consistent_dead_l0_and_a_full_selection(
    analysed_at_defaults,
):
    run, cfg, metrics, summary = analysed_at_defaults
    assert cfg.training.normalize_activations == "expected_norm"
    scale = metrics["normalization"]["scale"]
    assert scale == pytest.approx(D**0.5 / 0.25, rel=0.02)  # E‖x‖ = 0.25 → E‖x·s‖ = √16
    assert summary["activation_units"] == f"normalised (x·s, s={scale:.4g})"
    assert summary["units"]["dead_threshold"].startswith("normalised (x·s")
    assert summary["l0"] > 1
    # The threshold no longer makes live features dead: dead % is (nearly) never-fired %.
    assert summary["below_threshold_only_count"] <= 2
    assert summary["dead_fraction"] <= summary["never_fired_fraction"] + 2 / 64
    assert summary["dead_fraction"] < 0.25
    selection = summary["selection"]
    assert selection["selected"] > 0 and selection["eligible"] >= selection["selected"]
    assert selection["selected"] == min(selection["asked"], selection["eligible"])
    selected = json.loads((run / "features" / "selected.json").read_text())
    assert selected["activation_units"] == summary["activation_units"]
    md = (build_report(run.parent, cfg) / "report.md").read_text()
    assert f"normalised units (x·s, s={scale:.4g}: E‖x·s‖ = √d on the training split)" in md
