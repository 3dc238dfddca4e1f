"""The Prefect layer of the report: `report_sweep` publishes the report as artifacts and returns paths;
`browse_cell` writes a cell's page, or skips a cell without analysis."""

from __future__ import annotations

from pathlib import Path

from sae_core.config import load_config
from sae_core.naming import Cell
from tasks.report import artifact_markdown, table_rows
from tests.test_report_data import fabricate_cell, fabricate_sweep


def test_report_task_publishes_artifacts(prefect_harness, prefect_client, tmp_path):
    from prefect import flow

    from tasks.report import browse_cell, report_sweep

    sweep = fabricate_sweep(tmp_path, name="taskdemo")
    cfg = load_config(
        "demo",
        overrides={"name": "taskdemo", "data_root": str(tmp_path), "grid.l1_coefficients": [0.01, 0.0001]},
    )

    @flow
    def wrapper() -> tuple[dict, str, str]:
        result = report_sweep(str(sweep), cfg)
        page = browse_cell(str(sweep / "4x_0.01_sampling"))
        skipped = browse_cell(str(sweep / "2x_0.0001_nosampling"))  # trained, not analysed
        return result, page, skipped

    result, page, skipped = wrapper()
    for key in ("report_md", "report_html", "tables_json"):
        assert Path(result[key]).is_file()
    assert set(result["browsers"]) == {
        "2x_0.0001_sampling", "2x_0.01_nosampling", "2x_0.01_sampling",
        "4x_0.0001_nosampling", "4x_0.01_nosampling", "4x_0.01_sampling",
    }  # fmt: skip
    assert all(Path(p).is_file() for p in result["browsers"].values())
    assert page == str(sweep / "4x_0.01_sampling" / "browser.html")
    assert skipped == ""

    artifacts = {a.key: a for a in prefect_client.read_artifacts() if a.key}
    report = artifacts["sweep-report-taskdemo"]
    assert "Dead neurons % without resampling" in report.data
    assert "missing (cell not run)" in report.data
    assert (sweep / "report" / "dead_vs_expansion.png").as_uri() in report.data
    table = artifacts["sweep-cells-taskdemo"]
    assert "4x_0.0001_sampling" in str(table.data)
    assert artifacts["sweep-report-html-taskdemo"].data.startswith("[report.html")
    assert "browser-taskdemo-4x-0-01-sampling" in artifacts


def test_artifact_markdown_makes_relative_links_absolute(tmp_path):
    text = "![plot](dead.png) [b](../8x_0.01_sampling/browser.html) [web](https://example.org/x)"
    out = artifact_markdown(text, tmp_path / "report")
    assert f"[plot]({(tmp_path / 'report' / 'dead.png').as_uri()})" in out
    assert f"[b]({(tmp_path / '8x_0.01_sampling' / 'browser.html').as_uri()})" in out
    assert "[web](https://example.org/x)" in out


def test_table_rows_show_reasons_not_zeros(tmp_path):
    fabricate_cell(tmp_path, Cell(2, 0.01, "sampling"), labels="skipped")
    from sae_core.report.build import cell_rows, collect_cells, dead_pct_caption

    cells = collect_cells(tmp_path)
    rows = table_rows(cell_rows(cells), dead_pct_caption(cells))
    assert rows[0]["monosemantic %"] == "skipped (no API key in OPENAI_API_KEY)"
    assert rows[0]["dead % (>0.07, test tokens)"].endswith("%")
    assert rows[0]["dead % (training window)"].endswith("%")
