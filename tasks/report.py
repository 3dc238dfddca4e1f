"""The report stage as Prefect tasks: the sweep report (published as artifacts) and a cell's browser.

Thin wrappers over `sae_core.report.build_report` and `sae_core.report.browser.write_browser`. The report is
cheap and reads whatever the cells hold now, so it is never cached: every sweep run rebuilds it.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from sae_core.config import SweepConfig
from sae_core.naming import Cell
from sae_core.report import BROWSER_INPUTS, CELL_METRICS, build_report, write_browser, write_browsers
from tasks.common import PrefectProgress, artifact_key, run_logger


def _browse_name() -> str:
    name = Path(task_run.parameters["run_dir"]).name
    try:
        return f"browse-{Cell.parse(name).task_name}"
    except ValueError:
        return f"browse-{name}"


@task(name="report", task_run_name="report-{cfg.name}", cache_policy=NO_CACHE)
def report_sweep(sweep_dir: str, cfg: SweepConfig) -> dict[str, Any]:
    """Write every analysed cell's browser (where stale), then `<sweep_dir>/report/`; publish the report
    as a markdown artifact, the per-cell figures as a table artifact and a link to report.html."""
    logger = run_logger()
    start = time.perf_counter()
    browsers = write_browsers(sweep_dir)
    progress = PrefectProgress(artifact_key("report-progress", cfg.name), f"report {cfg.name}")
    out = build_report(sweep_dir, cfg, progress=progress)
    html_path, md_path = out / "report.html", out / "report.md"
    create_markdown_artifact(
        markdown=artifact_markdown(md_path.read_text(), out),
        key=artifact_key("sweep-report", cfg.name),
        description=f"Sweep {cfg.name}: the study's tables from this run",
    )
    tables = json.loads((out / "tables.json").read_text())
    create_table_artifact(
        table=table_rows(tables["cells"], tables.get("dead_caption")),
        key=artifact_key("sweep-cells", cfg.name),
        description=f"Sweep {cfg.name}: one row per cell ('missing'/'skipped' where a stage did not run)",
    )
    create_link_artifact(
        link=html_path.resolve().as_uri(),
        link_text=f"report.html ({cfg.name})",
        key=artifact_key("sweep-report-html", cfg.name),
        description=f"Sweep {cfg.name}: the self-contained HTML report",
    )
    seconds = time.perf_counter() - start
    logger.info("report for %s: %s (%d feature browsers)", cfg.name, html_path, len(browsers))
    return {
        "report_dir": str(out),
        "report_md": str(md_path),
        "report_html": str(html_path),
        "tables_json": str(out / "tables.json"),
        "browsers": {cell: str(path) for cell, path in browsers.items()},
        "work_s": seconds,
    }


@task(name="browse", task_run_name=_browse_name, cache_policy=NO_CACHE)
def browse_cell(run_dir: str) -> str:
    """Write `run_dir/browser.html` and return its path; "" (with one log line) when the cell has no
    analysis, so that a cell whose analysis was skipped still uploads its other files."""
    if not (Path(run_dir) / BROWSER_INPUTS[0]).is_file():
        run_logger().warning("browser for %s skipped: no %s", run_dir, BROWSER_INPUTS[0])
        return ""
    page = write_browser(run_dir)
    create_link_artifact(
        link=page.resolve().as_uri(),
        link_text=f"feature browser {Path(run_dir).name}",
        key=artifact_key("browser", Path(run_dir).parent.name, Path(run_dir).name),
        description="Self-contained feature browser (open from disk)",
    )
    return str(page)


def artifact_markdown(markdown: str, report_dir: Path) -> str:
    """report.md for the Prefect UI: relative images and links become file:// links it can follow."""
    base = report_dir.resolve()

    def absolute(match: re.Match[str]) -> str:
        return f"[{match.group(2)}]({(base / match.group(3)).resolve().as_uri()})"

    return re.sub(r"(!?)\[([^\]]*)\]\(((?!\w+:)[^)]+)\)", absolute, markdown)


def table_rows(cells: list[dict[str, Any]], dead_caption: str | None = None) -> list[dict[str, Any]]:
    """tables.json's cell rows flattened for a table artifact: an absent value shows its reason. The
    analysis dead % column takes `dead_caption` (tables.json's, naming its threshold and token set)."""
    rows = []
    for cell in cells:
        row: dict[str, Any] = {"cell": cell["cell"]}
        for key, (title, _, fmt) in CELL_METRICS.items():
            title = dead_caption if key == "dead_pct" and dead_caption else title
            value = cell.get(key)
            row[title] = fmt.format(value) if value is not None else cell["notes"].get(key, "missing")
        rows.append(row)
    return rows
