"""Issue 20's end-to-end payload check: a corpus planted with markup and an endpoint that answers every
feature with a payload label, through the demo sweep (extract → train → analyse → label → report);
then every markdown artifact the Prefect UI shows, the markdown report, and the HTML report and
feature browser (in Chromium, where it is installed) must hold no live element and run no planted code.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pandas as pd
import pytest

from sae_core.config import load_config
from tests.fixtures_llm import _feature_user, answer
from tests.report.test_browser import CHROMIUM, Chromium
from tests.test_encoding import planted_elements

# What the corpus plants: each payload would, rendered raw, load a remote image, run a script or make a
# javascript: link (`pwned` is set by any planted code that runs).
CORPUS_PAYLOADS = [
    "<img src=x onerror=window.pwned=1>",
    "<script>window.pwned=1</script>",
    "![x](http://127.0.0.1:9/x.png)",
    "[click](javascript:window.pwned=1)",
    "**bold** `tick` a | b",
]
LABEL = "<img src=x onerror=window.pwned=1> ![x](http://127.0.0.1:9/l.png) [go](javascript:window.pwned=1)"
WORDS = "the parser reads a token from the file and writes its value to the stream".split()  # noqa: SIM905


def _payload_corpus(path: Path, n_docs: int = 60) -> Path:
    docs = []
    for i in range(n_docs):
        words = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(10))
        planted = " ".join(CORPUS_PAYLOADS[(i + j) % len(CORPUS_PAYLOADS)] for j in range(3))
        docs.append({"text": f"{words} {planted} {words}. {planted}"})
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def _answer_with_payload(body: dict, n: int):
    if _feature_user(body).startswith("Label:"):
        return None  # detection prompts: the fake server's default, plausible answer
    return answer(f"The marked tokens are markup.\nLabel: {LABEL}")


def _live_in_html(chromium: Chromium, page: Path, fragments: list[str]) -> list[str]:
    """Open `page` (at each fragment) and list what a payload made live there."""
    found = []
    for fragment in fragments or [""]:
        url = page.resolve().as_uri() + fragment
        chromium.send("Page.navigate", url="about:blank")
        chromium.wait_for("location.href === 'about:blank'")
        chromium.send("Page.navigate", url=url)
        chromium.wait_for(
            f"location.href.split('#')[0] === {json.dumps(url.split('#')[0])}"
            " && document.readyState === 'complete'",
            timeout=60,
        )
        time.sleep(0.3)  # a planted onerror fires after the failed load
        if fragment:  # a feature's panel: its label and examples, with the payloads as text
            chromium.wait_for("document.querySelector('#panel h2') !== null", timeout=30)
            assert "window.pwned" in chromium.js("document.getElementById('panel').innerText"), fragment
        found += chromium.js(
            "(() => { const live = [];"
            " if (window.pwned) live.push('planted code ran');"
            " document.querySelectorAll('img').forEach(i => {"
            "   if (!i.src.startsWith('data:')) live.push('img ' + i.src); });"
            " document.querySelectorAll('a').forEach(a => { if (a.href.startsWith('javascript:') ||"
            "   a.href.includes('127.0.0.1:9')) live.push('link ' + a.href); });"
            " document.querySelectorAll('*').forEach(e => { for (const at of e.attributes)"
            "   if (at.name.startsWith('on')) live.push(e.tagName + ' ' + at.name); });"
            " return live; })()"
        )
    return found


@pytest.mark.integration
def test_a_payload_corpus_and_payload_labels_leave_nothing_live(
    prefect_client, tiny_sweep_factory, fake_llm, tmp_path, monkeypatch
):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.sweep import sae_sweep

    monkeypatch.setenv("OPENAI_API_KEY", "sk-payload-test")
    fake_llm.respond("", _answer_with_payload)  # every feature's label prompt
    overrides = {
        **tiny_sweep_factory(tmp_path / "data"),
        "name": "payload",
        "data.dataset": "json",
        "data.data_files": str(_payload_corpus(tmp_path / "payload.jsonl")),
        "grid.strategies": ["nosampling"],
        # The tiny random GPT-2's residual stream is small: a weak penalty and a low threshold let
        # features fire and be selected, so that labels (and their payloads) exist to be shown.
        "grid.l1_coefficients": [0.0001],
        "analysis.dead_threshold": 0.001,
        "labeling.base_url": fake_llm.url,
        "labeling.model": "test-model",
        "labeling.structured_output": False,
        "labeling.retry_base_delay_s": 0.01,
    }
    cfg = load_config("demo", None, overrides)
    state = sae_sweep(preset="demo", overrides=overrides, return_state=True)
    assert state.is_completed(), state.message

    sweep_dir = Path(cfg.data_root) / "runs" / "payload"
    labels = pd.read_parquet(next(sweep_dir.glob("*/labels.parquet")))
    assert (labels.label == LABEL).sum() >= 2, "the payload label did not reach labels: nothing was checked"

    # The Prefect UI's markdown artifacts and every table cell, rendered as the UI's renderer would.
    flow_run_id = state.state_details.flow_run_id
    artifacts = prefect_client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )
    assert any(a.type == "markdown" for a in artifacts)
    shown = []
    for artifact in artifacts:
        # What the UI renders as Markdown: a markdown artifact, each cell of a table, a description.
        if artifact.type == "markdown":
            pieces = [str(artifact.data)]
        elif artifact.type == "table":
            rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
            pieces = [str(v) for row in rows for v in (row.values() if isinstance(row, dict) else row)]
        else:
            pieces = []
        for piece in [*pieces, artifact.description or ""]:
            live, text = planted_elements(piece)
            assert live == [], (artifact.key, piece)
            shown.append(text)
    assert "onerror=window.pwned=1" in " ".join(shown), "no artifact shows the payloads: nothing was checked"

    report_md = next(sweep_dir.rglob("report.md"))
    live, _ = planted_elements(report_md.read_text(encoding="utf-8"))
    own_plots = re.compile(r"<img \{'src': '[\w.-]+\.png'")  # the report's own figures, beside it
    assert [e for e in live if not own_plots.match(e)] == []

    if CHROMIUM is None:
        pytest.skip("Chromium is not installed: the HTML report and browser were checked as text only")
    pages = sorted(sweep_dir.rglob("*.html"))
    assert any(p.name == "browser.html" for p in pages)
    chromium = Chromium(tmp_path / "chromium-profile")
    try:
        for page in pages:
            fragments = [""]
            if page.name == "browser.html":
                fragments = [f"#f={i}" for i in labels.feature_id[:6]]
            assert _live_in_html(chromium, page, fragments) == [], page
    finally:
        chromium.close()
