"""The Prefect layer of the report: `report_sweep` writes the report and browsers and returns paths;
the sweep publishes two artifacts of its own, a narrow grid table and the markdown report with its plots
embedded and links that open from the UI's http page; `browse_cell` writes a cell's page, or skips."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from sae_core.config import load_config
from sae_core.naming import Cell
from sae_core.report.render import png_data_uri, ui_markdown
from tasks.progress import artifact_key, readable_number
from tests.report.test_report_data import fabricate_cell, fabricate_sweep
from tests.test_encoding import planted_elements

PAYLOAD = (
    "<script>alert(1)</script> <img src=x onerror=alert(1)> ![x](http://127.0.0.1:9/x.png) "
    "[click](javascript:alert(1)) `tick` a | b **bold**\nnext line"
)

DATA_URI = re.compile(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")


def test_sweep_publishes_one_table_and_one_markdown_report(prefect_harness, prefect_client, tmp_path):
    from prefect import flow

    from tasks.report import browse_cell, publish_grid, publish_report, report_sweep

    sweep = fabricate_sweep(tmp_path, name="taskdemo")
    cfg = load_config(
        "demo",
        overrides={
            "name": "taskdemo",
            "data_root": str(tmp_path),
            "grid.l1_coefficients": [0.01, 0.0001],
            "grid.expansion_factors": [2, 4],
            "upload.repo_id": "someone/saes",
        },
    )
    outcomes = [
        {"cell": "4x_0.01_sampling", "status": "completed", "upload": {"status": "committed",
         "files": ["browser/4x_0.01_sampling/browser.html"]}},
        {"cell": "4x_0.0001_sampling", "status": "failed", "error": f"RuntimeError: boom {PAYLOAD}"},
    ]  # fmt: skip

    @flow
    def wrapper() -> tuple[dict, str, str, str]:
        result = report_sweep(str(sweep), cfg)
        page = browse_cell(str(sweep / "4x_0.01_sampling"))
        skipped = browse_cell(str(sweep / "2x_0.0001_nosampling"))  # trained, not analysed
        from tasks.report import hub_browser_links

        publish_grid(cfg)
        publish_report(cfg, outcomes, None, hub_browser_links(cfg, outcomes))
        from prefect.runtime import flow_run

        return result, page, skipped, flow_run.id

    result, page, skipped, run_id = wrapper()
    for key in ("report_md", "report_html", "tables_json"):
        assert Path(result[key]).is_file()
    assert set(result["browsers"]) == {
        "2x_0.0001_sampling", "2x_0.01_nosampling", "2x_0.01_sampling",
        "4x_0.0001_nosampling", "4x_0.01_nosampling", "4x_0.01_sampling",
    }  # fmt: skip
    assert page == str(sweep / "4x_0.01_sampling" / "browser.html")
    assert skipped == ""

    # Listed through the API: this flow run's artifacts are the grid, the report and a progress bar.
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    listed = prefect_client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
    )
    kinds = sorted((a.type, a.key) for a in listed)
    assert kinds == [
        ("markdown", "report-taskdemo"),
        ("progress", "report-progress-taskdemo"),
        ("table", "grid-taskdemo"),
    ]
    by_key = {a.key: a for a in listed}

    grid = by_key["grid-taskdemo"]
    rows = grid.data if isinstance(grid.data, list) else __import__("json").loads(grid.data)
    assert len(rows) == 4 and len(rows[0]) == 7  # was 11 columns, with the reason in every row
    assert max(len(str(v)) for row in rows for v in row.values()) <= 25
    assert sum(max(len(k), *(len(str(r[k])) for r in rows)) for k in rows[0]) <= 90  # characters wide
    assert grid.description.count("no API key") == 1 and "skipped [1]" in str(rows)

    report = by_key["report-taskdemo"].data
    assert "file://" not in report
    images = DATA_URI.findall(report)
    assert len(images) >= 3 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert len(report) < 1_000_000
    assert "(http://127.0.0.1:8765/runs/taskdemo/report/report.html)" in report
    assert "(http://127.0.0.1:8765/runs/taskdemo/4x_0.01_sampling/browser.html)" in report
    assert "https://huggingface.co/someone/saes/blob/main/browser/4x_0.01_sampling/browser.html" in report
    assert "`4x_0.0001_sampling` failed: RuntimeError\\: boom" in report
    # An error message can quote corpus or LLM text: rendered, the payload in it is text, nothing live.
    live, text = planted_elements(report)
    assert live == [] and "failed: RuntimeError: boom " + " ".join(PAYLOAD.split()) in text
    # the study's tables in the report's order (dead tables name their threshold and token set after " — ")
    titles = [line.split(" — ")[0] for line in report.splitlines() if line.startswith("## ")]
    assert titles[:5] == [
        "## Dead neurons % without resampling",
        "## Dead neurons % with resampling",
        "## Dead neuron delta, percentage points (without − with)",
        "## Monosemanticity % without resampling",
        "## Monosemanticity % with resampling",
    ]  # the study's tables, in the report's order


def test_ui_markdown_embeds_until_the_budget_then_links(tmp_path):
    from matplotlib.figure import Figure

    report = tmp_path / "runs" / "s" / "report"
    report.mkdir(parents=True)
    fig = Figure(figsize=(12, 6))
    fig.add_subplot().plot([0, 1], [1, 0])
    fig.savefig(report / "a.png", dpi=110)
    size = len(png_data_uri(report / "a.png"))
    text = "![one](a.png) ![two](a.png) [b](../8x_0.01_sampling/browser.html) [w](https://e.org/x)"
    out = ui_markdown(text, report, tmp_path, "http://h:1/", budget=size + 10)
    assert out.count("data:image/png") == 1 and "[two](http://h:1/runs/s/report/a.png)" in out
    assert "[b](http://h:1/runs/s/8x_0.01_sampling/browser.html)" in out and "[w](https://e.org/x)" in out
    assert size < 100_000  # shrunk: 1320 px wide → 900, a palette


def test_artifact_keys_keep_lambda_readable():
    assert readable_number(0.0001) == "1e-4" and readable_number(0.00025) == "25e-5"
    assert readable_number(1e-05) == "1e-5" and readable_number(3.0) == "3"
    assert artifact_key("train", "demo", "8x-0.0001-sampling") == "train-demo-8x-1e-4-sampling"
    assert artifact_key("labels", "8x_0.01_nosampling") == "labels-8x-1e-2-nosampling"


def test_grid_table_names_a_skipped_reason_once(tmp_path):
    from tasks.summary import grid_table

    for strategy in ("nosampling", "sampling"):
        fabricate_cell(tmp_path / "runs" / "g", Cell(2, 0.01, strategy), labels="skipped")
    cfg = load_config(
        "demo",
        overrides={"name": "g", "data_root": str(tmp_path), "grid.l1_coefficients": [0.01, 0.001],
                   "grid.expansion_factors": [2]},
    )  # fmt: skip
    rows, notes = grid_table(cfg)
    assert rows[0]["monosemantic %"] == "skipped [1] / skipped [1]"
    assert rows[1]["monosemantic %"] == "missing / missing"
    assert notes == ["[1] labelling skipped: no API key in OPENAI_API_KEY"]
