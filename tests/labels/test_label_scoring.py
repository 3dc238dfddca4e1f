"""Detection and fuzzing scores by delphi's conventions, against the local OpenAI-compatible server
with answers whose score is known (perfect, random, always-yes), repair turns, the once-per-run
`response_format` refusal, and labeller health."""

from __future__ import annotations

import json
import random
import re
import threading

import pandas as pd
import pytest

from sae_core.labels import (
    SchemaSupport,
    ScoreCounts,
    ScoringWindow,
    health_flags,
    load_scoring_windows,
    make_client,
    score_explanation,
    scoring_items,
)
from sae_core.labels.client import label_feature
from sae_core.labels.prompt import LabelExample
from tests.fixtures_llm import (
    answer,
    error,
    perfect_picks,
    scoring_requests,
    write_analysis,
    write_scoring_windows,
)

KEY = "sk-scoring-test-5b8e2d7c1a9f3e6b0d4c"


def _client(fake_llm):
    return make_client(KEY, fake_llm.url, 5.0)


def _windows(tmp_path, n: int = 40) -> list[ScoringWindow]:
    run = write_scoring_windows(tmp_path / "run", {7: "tokZ"}, n_active=n, n_quiet=n)
    windows = load_scoring_windows(run)
    assert isinstance(windows, dict)
    return windows[7]


def _matches(picks: list[int]) -> str:
    return "Matches: " + (", ".join(map(str, picks)) or "none")


def _n_excerpts(body: dict) -> int:
    user = next(m["content"] for m in body["messages"] if m["content"].startswith("Explanation:"))
    return sum(1 for line in user.splitlines() if line[:1].isdigit())


def _score(fake_llm, scorer: str, windows, **kw) -> ScoreCounts:
    items = scoring_items(scorer, windows, seed="7")  # type: ignore[arg-type]
    return score_explanation(
        _client(fake_llm), "m", scorer, "the token tokZ", items, batch=10, use_json_schema=False, **kw
    )


@pytest.mark.parametrize("scorer", ["detection", "fuzzing"])
def test_known_answers_give_known_balanced_accuracy(fake_llm, tmp_path, scorer: str) -> None:
    windows = _windows(tmp_path)
    fake_llm.respond("tokZ", lambda body, n: answer(_matches(perfect_picks(body))))
    perfect = _score(fake_llm, scorer, windows)
    assert perfect.balanced_accuracy == 1.0 and perfect.failed == 0
    assert perfect.tp == 40 and perfect.tn == 40 and perfect.requests == 8

    rng = random.Random(0)
    fake_llm.respond(
        "tokZ", lambda body, n: answer(_matches([i for i in range(1, 11) if rng.random() < 0.5]))
    )
    guess = _score(fake_llm, scorer, windows)
    assert guess.balanced_accuracy is not None and abs(guess.balanced_accuracy - 0.5) < 0.15

    fake_llm.respond("tokZ", lambda body, n: answer(_matches(list(range(1, _n_excerpts(body) + 1)))))
    yes = _score(fake_llm, scorer, windows)
    assert yes.balanced_accuracy == 0.5 and (yes.tp, yes.fp, yes.tn, yes.fn) == (40, 40, 0, 0)


def test_fuzzing_highlights_firing_tokens_and_borrowed_positions(tmp_path) -> None:
    items = scoring_items("fuzzing", _windows(tmp_path, n=5), seed="7")
    assert sum(i.truth for i in items) == 5 and len(items) == 10
    assert all("**" in i.text for i in items)  # non-activating windows are highlighted too
    assert all(bool(re.search(r"\*\* ?tokZ\*\*", i.text)) == i.truth for i in items)
    detection = scoring_items("detection", _windows(tmp_path, n=5), seed="7")
    assert not any("**" in i.text for i in detection)


def test_an_answer_without_matches_gets_one_repair_turn_then_counts_as_failed(fake_llm, tmp_path) -> None:
    windows = _windows(tmp_path, n=5)

    def repaired(body: dict, n: int):
        last = body["messages"][-1]["content"]
        if "had no final line of the form `Matches:" in last:
            return answer(_matches(perfect_picks(body)))
        return answer("These look related to the explanation.")

    fake_llm.respond("tokZ", repaired)
    counts = _score(fake_llm, "detection", windows)
    assert counts.balanced_accuracy == 1.0 and counts.repairs == 1 and counts.requests == 2
    second = scoring_requests(fake_llm)[1].body
    assert second["messages"][-2] == {
        "role": "assistant",
        "content": "These look related to the explanation.",
    }

    fake_llm.reset()
    fake_llm.respond("tokZ", lambda body, n: answer("I cannot tell."))
    never = _score(fake_llm, "detection", windows)
    assert never.requests == 2 and never.failed == 10 and never.tp + never.tn + never.fp + never.fn == 0
    assert never.balanced_accuracy == 0.0  # failed predictions count as wrong, not dropped


def test_response_format_refusal_costs_one_request_across_threads(fake_llm) -> None:
    def refuse_schema(body: dict, n: int):
        if body.get("response_format"):
            return error(400, "response_format is not supported by this server")
        return None

    examples = {m: [LabelExample(f"went to **{m}** on day {i}", 9.0 - i) for i in range(3)] for m in "PQRSTU"}
    for marker in examples:
        fake_llm.respond(marker, refuse_schema)
    support = SchemaSupport()
    client = _client(fake_llm)
    results = {}

    def run(marker: str) -> None:
        results[marker] = label_feature(client, "m", examples[marker], schema_support=support)

    threads = [threading.Thread(target=run, args=(m,)) for m in examples]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(bool(r.body.get("response_format")) for r in fake_llm.requests) == 1
    assert len(fake_llm.requests) == len(examples) + 1 and support.known is False
    assert all(r.label == f"the token {m}" and not r.structured for m, r in results.items())


def test_health_flags_copies_shared_and_long_labels() -> None:
    long = "-".join(["word"] * 60)
    outcomes = {
        1: {"status": "ok", "label": "The word Washington.", "explanation": "The word Washington."},
        2: {"status": "ok", "label": "the token a", "explanation": "the token a"},
        3: {"status": "ok", "label": "the token a", "explanation": "the token a"},
        4: {"status": "ok", "label": "the token a", "explanation": "the token a"},
        5: {"status": "ok", "label": long, "explanation": long},
        6: {"status": "ok", "label": "POLYSEMANTIC", "polysemantic": True, "explanation": None},
        7: {"status": "ok", "label": "POLYSEMANTIC", "polysemantic": True, "explanation": None},
        8: {"status": "ok", "label": "POLYSEMANTIC", "polysemantic": True, "explanation": None},
        9: {"status": "failed"},
    }
    assert health_flags(outcomes, max_chars=80) == {
        1: ["copy"],
        2: ["shared"],
        3: ["shared"],
        4: ["shared"],
        5: ["too_long"],
    }


# ---------------------------------------------------------------------------------------------
# Through the labelling stage (Prefect)


def _cfg(tmp_path, url: str, **extra: object):
    from sae_core.config import load_config

    overrides = {
        "data_root": str(tmp_path / "data"),
        "labeling.base_url": url,
        "labeling.model": "scoring-test-model",
        "labeling.max_retries": 1,
        "labeling.retry_base_delay_s": 0.01,
        "labeling.timeout_s": 2.0,
        "labeling.concurrency": 3,
        "labeling.examples_per_prompt": 5,
        **extra,
    }
    return load_config("demo", overrides=overrides)


def _label(run, cfg) -> dict:
    from prefect import flow

    from tasks.label import label_cell

    @flow(name="label-scoring-test")
    def label_flow() -> dict:
        return label_cell(str(run), cfg)

    return label_flow()


@pytest.mark.slow
def test_scores_rates_and_health_in_labels_files(label_prefect, fake_llm, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    features = {1: ("top", "tokP"), 2: ("top", "tokQ"), 3: ("bottom", "tokR")}
    run = write_analysis(tmp_path / "8x_0.0001_sampling", features)
    write_scoring_windows(run, {f: m for f, (_, m) in features.items()}, n_active=6, n_quiet=6)

    def refuse_schema(body: dict, n: int):
        if body.get("response_format"):
            return error(400, "Unsupported parameter: response_format")
        return None

    def polysemantic(body: dict, n: int):
        if body.get("response_format") or body["messages"][-1]["content"].startswith("Explanation:"):
            return refuse_schema(body, n)
        return answer("Nothing in common.\nLabel: POLYSEMANTIC: the token tokR")

    for _, marker in features.values():
        fake_llm.respond(marker, refuse_schema)
    fake_llm.respond("tokR", polysemantic)
    cfg = _cfg(tmp_path, fake_llm.url, **{"labeling.detection": True, "labeling.fuzzing": True})
    summary = _label(run, cfg)
    assert sum(bool(r.body.get("response_format")) for r in fake_llm.requests) == 1  # once per run
    df = pd.read_parquet(run / "labels.parquet")
    assert df["detection_balanced_accuracy"].tolist() == [1.0, 1.0, 1.0]
    assert df["fuzzing_balanced_accuracy"].tolist() == [1.0, 1.0, 1.0]
    assert df["detection_tp"].tolist() == [6, 6, 6] and df["detection_failed"].tolist() == [0, 0, 0]
    assert summary["scores"]["monosemantic"] == {
        "features": 2, "detection": 1.0, "detection_features": 2, "fuzzing": 1.0, "fuzzing_features": 2,
    }  # fmt: skip
    assert summary["scores"]["polysemantic"]["detection_features"] == 1  # scored on its closest explanation
    assert summary["health"]["flagged"] == 0 and summary["health"]["distinct_labels"] == 2
    assert json.loads((run / "labels.json").read_text())["scoring"]["scorers"] == ["detection", "fuzzing"]


@pytest.mark.slow
def test_a_labeller_copying_the_worked_example_is_flagged(
    label_prefect, fake_llm, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    features = {i: ("top" if i < 4 else "bottom", f"tok{chr(64 + i)}x") for i in range(1, 7)}
    run = write_analysis(tmp_path / "8x_0.0001_sampling", features)
    copied = "Every marked token is the word Washington.\nLabel: the word Washington"
    for i, (_, marker) in features.items():
        text = copied if i < 6 else "Label: " + "-".join(["hyphenated"] * 30)
        fake_llm.script(marker, answer(text))
    summary = _label(run, _cfg(tmp_path, fake_llm.url, **{"labeling.structured_output": False}))
    assert summary["monosemanticity_rate"] != 1.0 and summary["monosemanticity_rate"] is None
    assert summary["monosemanticity_rate_conservative"] == 0.0
    health = summary["health"]
    assert (health["copies"], health["shared"], health["too_long"], health["flagged"]) == (5, 5, 1, 6)
    assert health["distinct_labels"] == 2 and health["shared_labels"] == {"the word washington": 5}
    df = pd.read_parquet(run / "labels.parquet")
    assert df.loc[df["feature_id"] == 1, "health"].item() == "copy,shared"


def test_the_report_shows_scores_by_verdict_and_health_beside_the_rate(tmp_path) -> None:
    from sae_core.labels import health_summary, labels_frame, monosemanticity
    from sae_core.naming import Cell
    from sae_core.report.cells import CellData
    from sae_core.report.label_scores import HEAD, label_rows

    def row(fid: int, label: str, poly: bool, det: float | None, health: str | None = None) -> dict:
        return {
            "feature_id": fid, "group": "top", "label": label, "polysemantic": poly, "status": "ok",
            "explanation": label, "health": health, "detection_balanced_accuracy": det,
            "fuzzing_balanced_accuracy": det,
        }  # fmt: skip

    rows = [
        row(1, "the token a", False, 0.9),
        row(2, "the token b", False, 0.7),
        row(3, "POLYSEMANTIC", True, 0.55),
        row(4, "the word Washington", False, 0.5, "copy"),
    ]
    summary = monosemanticity(labels_frame(rows))
    summary["health"] = health_summary(rows, max_chars=80)
    assert summary["monosemanticity_rate"] == pytest.approx(2 / 3)  # the copy is not counted labelled
    assert summary["monosemanticity_rate_conservative"] == pytest.approx(2 / 4)  # ... and counts as failed
    assert summary["scores"]["monosemantic"]["detection"] == pytest.approx(0.8)
    cell = CellData(Cell(8, 0.0001, "sampling"), tmp_path, exists=True, labels=summary)
    (table,) = label_rows([cell])
    shown = dict(zip(HEAD, table, strict=True))
    assert shown["rate (n)"] == "67% (3)" and shown["conservative"] == "50%"
    assert shown["detection mono (n)"] == "0.80 (2)" and shown["detection poly (n)"] == "0.55 (1)"
    assert shown["distinct labels"] == "3 / 3" and shown["copies"] == "1"
    skipped = CellData(Cell(8, 0.01, "sampling"), tmp_path, exists=True, labels={"skipped_reason": "no key"})
    assert label_rows([skipped]) == []


def test_a_random_sample_is_its_own_group_beside_the_studys(tmp_path) -> None:
    from sae_core.labels import labels_frame, monosemanticity
    from sae_core.naming import Cell
    from sae_core.report.cells import CellData
    from sae_core.report.label_scores import label_rows

    def row(fid: int, group: str, poly: bool, det: float) -> dict:
        return {
            "feature_id": fid, "group": group, "label": "x" if not poly else "POLYSEMANTIC",
            "polysemantic": poly, "status": "ok", "detection_balanced_accuracy": det,
        }  # fmt: skip

    rows = [row(1, "top", False, 0.9), row(2, "bottom", False, 0.8), row(3, "sample", True, 0.6)]
    rows.append(row(4, "sample", False, 0.7))
    summary = monosemanticity(labels_frame(rows))
    assert summary["monosemanticity_rate"] == 1.0 and summary["labelled"] == 2  # the study's 2 only
    assert summary["rate_sample"] == 0.5 and summary["groups"]["sample"]["labelled"] == 2
    assert summary["scores_sample"]["polysemantic"]["detection"] == pytest.approx(0.6)
    cell = CellData(Cell(8, 0.0001, "sampling"), tmp_path, exists=True, labels=summary)
    study, sample = label_rows([cell])
    assert sample[0] == "8x_0.0001_sampling (random sample)" and sample[1] == "50% (2)"
    assert study[1] == "100% (2)" and sample[3] == "0.70 (1)"
