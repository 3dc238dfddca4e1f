"""The label stage spends one request per direction: a near-duplicate feature (selected.json's
`duplicate_of`) shares its representative's label, recorded with a note, and is not counted twice."""

from __future__ import annotations

import json

import pandas as pd

from sae_core.config import load_config
from tests.fixtures_llm import write_analysis

KEY = "sk-dup-test-3c1f0a9e"


def test_near_duplicate_shares_its_representatives_label(
    label_prefect, fake_llm, tmp_path, monkeypatch, caplog
):
    from prefect import flow

    from tasks.label import label_cell

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    run = write_analysis(
        tmp_path / "8x_0.0001_sampling", {1: ("top", "tokP"), 2: ("top", "tokQ"), 3: ("bottom", "tokR")}
    )
    selected = json.loads((run / "features" / "selected.json").read_text())
    selected["duplicate_of"] = {"2": 1}
    (run / "features" / "selected.json").write_text(json.dumps(selected))
    cfg = load_config(
        "demo",
        overrides={"data_root": str(tmp_path / "data"), "labeling.base_url": fake_llm.url,
                   "labeling.model": "test-model", "labeling.structured_output": False},
    )  # fmt: skip

    @flow
    def wrapper() -> dict:
        return label_cell(str(run), cfg)

    summary = wrapper()
    asked = {r.marker for r in fake_llm.requests}
    assert asked == {"tokP", "tokR"}  # was: a request for feature 2 too
    df = pd.read_parquet(run / "labels.parquet").set_index("feature_id")
    assert df.loc[2, "status"] == "duplicate" and df.loc[2, "label"] == df.loc[1, "label"]
    assert "near-duplicate of feature 1" in df.loc[2, "error"] and df.loc[2, "attempts"] == 0
    assert summary["labelled"] == 2  # the shared label is not counted twice in the rate
