"""tasks.label through Prefect (one test harness per session) against the fake OpenAI-compatible server:
retries and where they stop, failures recorded, the rate, the cache across runs and processes, skips,
and the key never leaking into files, logs, task parameters or artifacts."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from prefect import flow

from sae_core.config import load_config
from tasks.label import label_cell
from tests.fixtures_llm import answer, error, hang, write_analysis

KEY = "sk-flow-test-9d2e7b1c4a6f8e0d3b5a"
CELL = "8x_0.0001_sampling"
FEATURES = {
    11: ("top", "tokA"),  # 429 with Retry-After, then fine
    12: ("top", "tokB"),  # 500, 503, then fine
    13: ("top", "tokC"),  # hangs past the timeout, then fine
    14: ("top", "tokD"),  # empty content, no Label: line, invalid JSON, then POLYSEMANTIC
    21: ("bottom", "tokE"),  # 401: no retry
    22: ("bottom", "tokF"),  # 500 for ever: failed after the last retry
    23: ("bottom", "tokG"),  # fine
}
MAX_RETRIES = 3


def _cfg(data_root: Path, url: str | None, **extra: object):
    overrides = {
        "data_root": str(data_root),
        "labeling.base_url": url,
        "labeling.model": "test-model",
        "labeling.max_retries": MAX_RETRIES,
        "labeling.retry_base_delay_s": 0.01,
        "labeling.timeout_s": 0.5,
        "labeling.concurrency": 2,
        "labeling.examples_per_prompt": 5,
        "labeling.structured_output": False,
        **extra,
    }
    return load_config("demo", overrides=overrides)


@flow(name="label-test")
def _label_flow(run_dir: str, cfg_dict: dict) -> dict:
    from sae_core.config import validate_config

    return label_cell(run_dir, validate_config(cfg_dict))


def _script_failures(fake) -> None:
    fake.script("tokA", error(429, "slow down", {"Retry-After": "0.4"}))
    fake.script("tokB", error(500, "boom"), error(503, "busy"))
    fake.script("tokC", hang(3.0))
    fake.script(
        "tokD",
        answer(""),
        answer("I am not sure what this is."),
        answer('{"label": "x'),
        answer("Label: POLYSEMANTIC"),
    )
    fake.script("tokE", error(401, "bad key"))
    fake.script("tokF", *[error(500, "down")] * 10)


@pytest.fixture
def labelled(label_prefect, fake_llm, tmp_path, monkeypatch, caplog):
    """One labelled cell with every kind of failure scripted; returns what the tests inspect."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    run = write_analysis(tmp_path / "runs" / "sweep" / CELL, FEATURES, n_top=6, n_quantile=2)
    cfg = _cfg(tmp_path / "data", fake_llm.url)
    _script_failures(fake_llm)
    summary = _label_flow(str(run), cfg.model_dump(mode="json"))
    return {"run": run, "cfg": cfg, "summary": summary, "requests": list(fake_llm.requests), "tmp": tmp_path}


def test_retries_failures_rate_and_cache(labelled, fake_llm, label_prefect, monkeypatch, caplog) -> None:
    run, summary, reqs = labelled["run"], labelled["summary"], labelled["requests"]
    # A feature that fails for good is one line (status, endpoint, what to do), not a traceback: the
    # probe saw 24 tracebacks for an endpoint answering 500. (The fixture's flow ran in setup.)
    records = caplog.get_records("setup")
    assert not [r.getMessage()[:200] for r in records if r.exc_info]
    failed_lines = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    assert len(failed_lines) == 2, failed_lines  # tokE (401) and tokF (500 for ever)
    five_hundred = next(m for m in failed_lines if "HTTP 500" in m)
    assert f"HTTP 500 from {fake_llm.url}" in five_hundred and "re-run" in five_hundred
    count = {marker: sum(r.marker == marker for r in reqs) for _, marker in FEATURES.values()}
    assert count == {
        "tokA": 2,
        "tokB": 3,
        "tokC": 2,
        "tokD": 4,
        "tokE": 1,  # 401: no retry
        "tokF": MAX_RETRIES + 1,  # stops after the last retry
        "tokG": 1,
    }
    a_first, a_second = (r for r in reqs if r.marker == "tokA")
    assert a_second.started - a_first.finished >= 0.4  # Retry-After honoured
    assert fake_llm.max_in_flight <= 2  # labeling.concurrency
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in reqs)

    df = pd.read_parquet(run / "labels.parquet").set_index("feature_id")
    assert df.loc[11, "label"] == "the token tokA" and df.loc[11, "attempts"] == 2
    assert df.loc[12, "attempts"] == 3 and df.loc[13, "attempts"] == 2
    assert bool(df.loc[14, "polysemantic"]) and df.loc[14, "label"] == "POLYSEMANTIC"
    assert df.loc[21, "status"] == "failed" and df.loc[21, "attempts"] == 1 and "401" in df.loc[21, "error"]
    assert df.loc[22, "status"] == "failed" and df.loc[22, "attempts"] == MAX_RETRIES + 1
    assert "500" in df.loc[22, "error"]
    assert set(df["group"]) == {"top", "bottom"} and (df["model"] == "test-model").all()
    assert df["examples_hash"].str.len().eq(16).all()

    # the rate: top 4 labelled, 1 polysemantic; bottom 1 labelled (23), 2 failed
    assert (summary["labelled"], summary["polysemantic"], summary["failed"]) == (5, 1, 2)
    assert summary["monosemanticity_rate"] == pytest.approx(1 - 1 / 5)
    assert summary["rate_top"] == pytest.approx(0.75) and summary["rate_bottom"] == 1.0
    assert summary["skipped_reason"] is None and summary["prompt_version"]
    assert json.loads((run / "labels.json").read_text()) == summary

    # second run in the same process: only the failed features are asked again
    fake_llm.reset()
    again = _label_flow(str(run), labelled["cfg"].model_dump(mode="json"))
    assert {r.marker for r in fake_llm.requests} == {"tokE", "tokF"}
    assert again["cached"] == 5 and again["labelled"] == 7 and again["failed"] == 0


def test_second_process_sends_no_repeated_request_and_key_never_leaks(
    labelled, fake_llm, label_prefect, caplog
) -> None:
    run, cfg = labelled["run"], labelled["cfg"]
    fake_llm.reset()
    fake_llm.script("tokE", error(401, "still bad"))
    fake_llm.script("tokF", *[error(500, "down")] * 10)
    env = {
        **os.environ,
        "OPENAI_API_KEY": KEY,
        "PREFECT_API_URL": label_prefect.api_url,
        "PREFECT_HOME": str(label_prefect.home),
    }
    sets = [
        f"data_root={cfg.data_root}",
        f"labeling.base_url={cfg.labeling.base_url}",
        "labeling.model=test-model",
        f"labeling.max_retries={MAX_RETRIES}",
        "labeling.retry_base_delay_s=0.01",
        "labeling.structured_output=false",
        "labeling.examples_per_prompt=5",
    ]
    args = [sys.executable, "-m", "flows.cli", "label", "--run", str(run)]
    for item in sets:
        args += ["--set", item]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    # a new process: answered features come from the cache, only the failed ones are asked again
    assert {r.marker for r in fake_llm.requests} == {"tokE", "tokF"}
    assert "monosemanticity rate 0.800" in done.stdout

    # the key never leaks: files of the run, the cache, PREFECT_HOME, the API's database
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs reach the API's database before it is searched
    roots = [labelled["tmp"], label_prefect.home]
    files = [p for root in roots for p in Path(root).rglob("*") if p.is_file()]
    if label_prefect.db_path is not None:
        files += [p for p in label_prefect.db_path.parent.glob(label_prefect.db_path.name + "*")]
    assert any(p.name == "labels.parquet" for p in files) and len(files) > 5
    leaks = [p for p in files if KEY.encode() in p.read_bytes() or KEY[:12].encode() in p.read_bytes()]
    assert leaks == []
    assert label_prefect.db_path is not None and label_prefect.db_path.is_file()
    assert KEY not in caplog.text and KEY not in done.stdout + done.stderr
    # the API: task runs (parameters are recorded as inputs), logs, artifacts
    stored = _api_dump()
    assert "label-8x-0.0001-sampling-f11" in stored  # the dump really holds our task runs
    assert KEY not in stored and KEY[:12] not in stored


def _api_dump() -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs()
        logs = client.read_logs()
        artifacts = client.read_artifacts()
    return "\n".join(x.model_dump_json() for x in [*runs, *logs, *artifacts])


def test_skipped_without_endpoint_or_key(label_prefect, fake_llm, tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    run = write_analysis(tmp_path / CELL, {1: ("top", "tokA")})
    caplog.set_level(logging.INFO)
    summary = label_cell(str(run), _cfg(tmp_path, None))
    assert summary["skipped_reason"].startswith("no LLM endpoint or API key configured")
    assert "$OPENAI_API_KEY" in summary["skipped_reason"]
    assert summary["monosemanticity_rate"] is None and summary["labelled"] == 0
    assert json.loads((run / "labels.json").read_text())["skipped_reason"] == summary["skipped_reason"]
    assert not (run / "labels.parquet").exists() and fake_llm.requests == []
    assert sum("labels skipped" in r.getMessage() for r in caplog.records) == 1

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    disabled = label_cell(str(run), _cfg(tmp_path, fake_llm.url, **{"labeling.enabled": False}))
    assert disabled["skipped_reason"] == "labeling.enabled is false" and fake_llm.requests == []


def test_labels_the_real_analysis_output(
    label_prefect, fake_llm, synthetic_store_factory, tmp_path, monkeypatch
):
    """The analysis stage's own files (not fabricated ones) go through labelling unchanged."""
    import numpy as np
    import torch

    from sae_core.analysis.driver import analyze_run
    from sae_core.saes.relu import SparseAutoencoder

    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 30, size=40)
    doc_ids = np.repeat(np.arange(40), lengths).astype(np.int32)
    store = synthetic_store_factory(
        rng.normal(size=(len(doc_ids), 8)).astype(np.float32),
        doc_ids,
        token_ids=rng.integers(0, 50, size=len(doc_ids)).astype(np.int32),
        splits=np.where(doc_ids % 2 == 0, "test", "train"),
    )
    sae = SparseAutoencoder(8, 16, seed=1)
    with torch.no_grad():
        sae.b_enc.fill_(-0.3)
    run = tmp_path / "2x_0.01_nosampling"
    run.mkdir()
    torch.save(sae.state_dict(), run / "model_weights_2x_0.01_nosampling.pth")
    overrides = {
        "analysis.top_k_features": 3,
        "analysis.ce_loss_documents": 0,
        "analysis.examples_per_feature": 6,
    }
    overrides |= {"labeling.scoring_activating": 6, "labeling.scoring_non_activating": 4}
    overrides |= {"labeling.scoring_window": 6, "labeling.scoring_quantiles": 3}
    overrides |= {"labeling.scope": "sample", "labeling.sample_size": 2}
    analysis = analyze_run(
        store.path, run, load_config("demo", overrides={"training.device": "cpu", **overrides})
    )
    selected = json.loads((run / "features" / "selected.json").read_text())
    # Held-out scoring windows: activating ones fire at their sampled token and never overlap a shown
    # context; non-activating ones fire nowhere; each window lies inside one document.
    windows = pd.read_parquet(run / "features" / "scoring_examples.parquet")
    shown = pd.read_parquet(run / "features" / "examples.parquet")
    active, quiet = windows[windows["kind"] == "activating"], windows[windows["kind"] == "non_activating"]
    assert (
        len(active) > 0
        and len(quiet) > 0
        and set(windows["feature_id"]) <= {*selected["top"], *selected["bottom"], *selected["sample"]}
    )
    for row in active.itertuples():
        assert row.firing[row.pos - row.start] and row.activation > 0.07
        near = shown[(shown["feature_id"] == row.feature_id) & (shown["doc_id"] == row.doc_id)]
        assert ((near["pos"] - row.pos).abs() >= 6).all()
    assert not any(any(f) for f in quiet["firing"]) and (windows["tokens"].map(len) <= 6).all()
    assert analysis["scoring_examples"]["window_tokens"] == 6

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    summary = _label_flow(str(run), _cfg(tmp_path / "data", fake_llm.url).model_dump(mode="json"))
    df = pd.read_parquet(run / "labels.parquet")
    # scope=sample: 2 random eligible features beyond top and bottom, a group of their own
    assert len(selected["sample"]) == 2 and not set(selected["sample"]) & set(
        selected["top"] + selected["bottom"]
    )
    assert set(selected["sample"]) <= set(windows["feature_id"])
    correlation = json.loads((run / "features" / "correlation.json").read_text())
    assert correlation["ids"] == selected["top"] + selected["bottom"]  # the sample stays out of it
    expected = [(f, "top") for f in selected["top"]] + [(f, "bottom") for f in selected["bottom"]]
    expected += [(f, "sample") for f in selected["sample"]]
    assert sorted(zip(df["feature_id"], df["group"], strict=True)) == sorted(expected)
    assert (df["status"] == "ok").all() and df["label"].str.startswith("the token").all()
    assert summary["labelled"] == len(expected) - 2 and summary["monosemanticity_rate"] == 1.0
    assert summary["groups"]["sample"]["labelled"] == 2 and summary["rate_sample"] == 1.0


def test_key_from_a_prefect_secret_block(label_prefect, fake_llm, tmp_path, monkeypatch) -> None:
    from prefect.blocks.system import Secret

    block_key = "sk-from-secret-block-0123456789"  # not KEY: blocks live in the API's database
    Secret(value=block_key).save("label-test-key", overwrite=True)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("SAE_SWEEP_ALLOWED_KEY_BLOCKS", "label-test-key,no-such-block")
    run = write_analysis(tmp_path / CELL, {1: ("top", "tokS")})
    cfg = _cfg(tmp_path / "data", None, **{"labeling.api_key_secret_block": "label-test-key"})
    cfg = cfg.model_copy(update={"labeling": cfg.labeling.model_copy(update={"base_url": fake_llm.url})})
    summary = _label_flow(str(run), cfg.model_dump(mode="json"))
    assert summary["labelled"] == 1
    assert [r.headers["authorization"] for r in fake_llm.requests] == [f"Bearer {block_key}"]
    missing = _cfg(tmp_path / "data", None, **{"labeling.api_key_secret_block": "no-such-block"})
    assert "no-such-block" in label_cell(str(run), missing)["skipped_reason"]


LONG = "names of places in travel sentences, mostly capitals, but other towns and some rivers too"
VERDICTS = {
    31: ("top", "tokH"),  # text answer "POLYSEMANTIC (no shared theme)": polysemantic
    32: ("top", "tokI"),  # JSON polysemantic=true with a descriptive label: polysemantic
    33: ("top", "tokJ"),  # a 15-word label at temperature 0, then a 500, then repaired
    34: ("bottom", "tokK"),  # a 15-word label whatever it is told: failed
    35: ("bottom", "tokL"),  # fine
}


def _told_what_was_wrong(body: dict) -> bool:
    last = body["messages"][-1]
    return last["role"] == "user" and "Your label had 15 words; give 2–8 words" in last["content"]


def test_verdicts_repairs_and_the_conservative_rate(label_prefect, fake_llm, tmp_path, monkeypatch) -> None:
    from sae_core.naming import Cell, format_l1
    from tasks.paths import run_dir
    from tasks.summary import grid_rows

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    cfg = _cfg(tmp_path / "data", fake_llm.url, **{"labeling.structured_output": True})
    cell = Cell(2, 0.01, "sampling")  # a cell of the demo grid, for the grid table
    run = write_analysis(run_dir(cfg, cell), VERDICTS, n_top=6, n_quantile=2)
    long_json = json.dumps({"reasoning": "Mostly places.", "polysemantic": False, "label": LONG})
    fake_llm.script("tokH", answer("The marked tokens share nothing.\nLabel: POLYSEMANTIC (no shared theme)"))
    mixed = {"reasoning": "Nothing shared.", "polysemantic": True, "label": "names, numbers and brackets"}
    fake_llm.script("tokI", answer(json.dumps(mixed)))
    fake_llm.respond(
        "tokJ",
        lambda body, n: (
            error(500, "boom") if n == 1 else (None if _told_what_was_wrong(body) else answer(long_json))
        ),
    )
    fake_llm.respond("tokK", lambda body, n: answer(long_json))
    summary = _label_flow(str(run), cfg.model_dump(mode="json"))

    df = pd.read_parquet(run / "labels.parquet").set_index("feature_id")
    assert df.loc[[31, 32], "label"].tolist() == ["POLYSEMANTIC", "POLYSEMANTIC"]
    assert df.loc[[31, 32], "polysemantic"].tolist() == [True, True]
    assert "no shared theme" in df.loc[31, "reasoning"]  # the model's explanation is kept
    assert "names, numbers and brackets" in df.loc[32, "reasoning"]

    # tokJ: bad answer, then the repair turn (its 500 does not lose the conversation), then the label
    j = [r.body["messages"] for r in fake_llm.requests_for("tokJ")]
    assert len(j) == 3 and not _told_what_was_wrong({"messages": j[0]})
    assert j[1] == j[2] and j[1][: len(j[0])] == j[0]
    assert j[1][len(j[0])] == {"role": "assistant", "content": long_json}
    assert df.loc[33, "label"] == "the token tokJ" and df.loc[33, "attempts"] == 3
    assert not df.loc[33, "polysemantic"] and df.loc[33, "status"] == "ok"

    # tokK: one request per try (max_retries bounds the repairs), each telling it again; then failed
    k = [r.body["messages"] for r in fake_llm.requests_for("tokK")]
    assert len(k) == MAX_RETRIES + 1
    repair_turns = [sum(m["role"] == "assistant" for m in msgs[len(k[0]) :]) for msgs in k]
    assert repair_turns == list(range(MAX_RETRIES + 1)) and all(
        _told_what_was_wrong({"messages": m}) for m in k[1:]
    )
    assert df.loc[34, "status"] == "failed" and "15 words" in df.loc[34, "error"]

    # the rate leaves the failed feature out; the conservative rate counts it polysemantic
    assert (summary["labelled"], summary["polysemantic"], summary["failed"]) == (4, 2, 1)
    assert summary["monosemanticity_rate"] == pytest.approx(1 - 2 / 4)
    assert summary["monosemanticity_rate_conservative"] == pytest.approx(1 - 3 / 5)
    assert summary["rate_top_conservative"] == pytest.approx(1 - 2 / 3)
    assert summary["rate_bottom"] == 1.0 and summary["rate_bottom_conservative"] == pytest.approx(0.5)
    assert json.loads((run / "labels.json").read_text()) == summary

    row = next(r for r in grid_rows(cfg) if r["λ"] == format_l1(0.01) and r["exp."] == "2x")
    # without / with resampling; in parentheses the conservative rate (failed counted polysemantic)
    assert row["monosemantic %"] == "missing / 50 (40)"


PAYLOAD_LABELS = {
    31: ("top", "tokImg", "![x](http://127.0.0.1:9/x.png) image"),
    32: ("top", "tokLink", "[click](javascript:alert(1)) link"),
    33: ("top", "tokHtml", "<img src=x onerror=alert(1)> <script>alert(1)</script>"),
    34: ("bottom", "tokMd", "the `tick` | pipe | **bold** word"),
}


def test_payload_labels_are_inert_in_the_labels_artifact(label_prefect, fake_llm, tmp_path, monkeypatch):
    """Labels are an LLM's answer to corpus text: the table artifact (every string cell and the
    description, which the UI renders as Markdown) shows them as text, read back through the API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from tests.test_encoding import planted_elements

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    features = {fid: (group, marker) for fid, (group, marker, _) in PAYLOAD_LABELS.items()}
    run = write_analysis(tmp_path / CELL, features)
    for _, marker, label in PAYLOAD_LABELS.values():
        fake_llm.script(marker, answer(f"The marked tokens agree.\nLabel: {label}"))
    cfg = _cfg(tmp_path / "data", fake_llm.url, **{"labeling.model": "model ![m](http://127.0.0.1:9/m.png)"})
    state = _label_flow(str(run), cfg.model_dump(mode="json"), return_state=True)
    assert state.is_completed(), state.message
    stored = pd.read_parquet(run / "labels.parquet").set_index("feature_id")["label"].to_dict()
    assert stored == {fid: label for fid, (_, _, label) in PAYLOAD_LABELS.items()}  # kept as answered

    with get_client(sync_client=True) as client:
        listed = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    table = next(a for a in listed if a.type == "table")
    rows = table.data if isinstance(table.data, list) else json.loads(table.data)
    shown = {}
    for row in rows:
        for value in row.values():
            if isinstance(value, str):
                live, text = planted_elements(value)
                assert live == [], (value, live)
        shown[row["feature_id"]] = planted_elements(row["label"])[1].strip()
    assert shown == stored  # the same characters, rendered as text
    live, text = planted_elements(table.description or "")
    assert live == [] and "model ![m](http://127.0.0.1:9/m.png)" in text
