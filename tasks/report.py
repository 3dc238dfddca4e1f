"""The report stage as Prefect tasks, and the sweep's two artifacts.

Thin wrappers over `sae_core.report.build_report` and `sae_core.report.browser.write_browser`. The report is
cheap and reads whatever the cells hold now, so it is never cached: every sweep run rebuilds it.

A sweep publishes exactly two artifacts of its own (beside one progress artifact per running stage or
cell, and the label stage's table per labelled cell): `grid-<sweep>`, a table of the grid, and
`report-<sweep>`, the report as markdown with its plots embedded and links that open from the UI's http
page (the Hub, or `sae-sweep serve`; a `file://` link does not).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from sae_core.config import SweepConfig
from sae_core.encoding import markdown_text
from sae_core.naming import Cell
from sae_core.report import (
    BROWSER_INPUTS,
    REPORT_DIRNAME,
    build_report,
    ui_markdown,
    write_browser,
    write_browsers,
)
from sae_core.serve import SERVE_URL_ENV, serve_base_url
from tasks.paths import data_root, sweep_dir
from tasks.progress import PrefectProgress, artifact_key, run_logger
from tasks.summary import grid_legend, grid_table, markdown_table

HUB = "https://huggingface.co"


def _browse_name() -> str:
    name = Path(task_run.parameters["run_dir"]).name
    try:
        return f"browse-{Cell.parse(name).task_name}"
    except ValueError:
        return f"browse-{name}"


@task(name="report", task_run_name="report-{cfg.name}", cache_policy=NO_CACHE)
def report_sweep(sweep_dir: str, cfg: SweepConfig) -> dict[str, Any]:
    """Write every analysed cell's browser (where stale), then `<sweep_dir>/report/`; the flow publishes
    it (`publish_report`), with the cells' outcomes."""
    logger = run_logger()
    start = time.perf_counter()
    browsers = write_browsers(sweep_dir)
    progress = PrefectProgress(artifact_key("report-progress", cfg.name), f"report {cfg.name}")
    out = build_report(sweep_dir, cfg, progress=progress)
    html_path, md_path = out / "report.html", out / "report.md"
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
    analysis, so that a cell whose analysis was skipped still uploads its other files. The report
    artifact links the page (no artifact of its own: a `file://` link would not open from the UI)."""
    if not (Path(run_dir) / BROWSER_INPUTS[0]).is_file():
        run_logger().warning("browser for %s skipped: no %s", run_dir, BROWSER_INPUTS[0])
        return ""
    return str(write_browser(run_dir))


# ---------------------------------------------------------------------------------------------
# The sweep's artifacts


def publish_grid(cfg: SweepConfig) -> None:
    """`grid-<sweep>`: one row per (λ, expansion); each reason a stage was skipped once, below."""
    rows, notes = grid_table(cfg)
    description = f"Sweep {cfg.name}. {grid_legend(cfg)}"
    if notes:
        description += "\n\n" + "\n\n".join(notes)
    create_table_artifact(rows, key=artifact_key("grid", cfg.name), description=description)


def hub_browser_links(cfg: SweepConfig, outcomes: list[dict[str, Any]]) -> dict[str, str]:
    """cell → its browser's page on the Hub, for the cells this run uploaded (or found up to date)."""
    links = {}
    for outcome in outcomes:
        upload = outcome.get("upload") or {}
        files = upload.get("files") or []
        if cfg.upload.repo_id and upload.get("status") in {"committed", "unchanged"}:
            path = f"browser/{outcome['cell']}/browser.html"
            if path in files or upload.get("status") == "unchanged":
                links[outcome["cell"]] = f"{HUB}/{cfg.upload.repo_id}/blob/main/{path}"
    return links


def report_markdown(
    cfg: SweepConfig,
    outcomes: list[dict[str, Any]],
    report_error: str | None,
    hub_links: dict[str, str] | None = None,
) -> str:
    """The `report-<sweep>` artifact: how to open the report, each cell's status, then report.md with
    its plots embedded and its links served over http."""
    report_dir = sweep_dir(cfg) / REPORT_DIRNAME
    base = serve_base_url()
    root = data_root(cfg)
    failed = [o for o in outcomes if o["status"] != "completed"]
    lines = [f"# Sweep `{cfg.name}`", ""]
    md_path = report_dir / "report.md"
    if md_path.is_file() and report_error is None:
        html_url = base + (report_dir / "report.html").relative_to(root).as_posix()
        lines.append(
            f"**Open** [report.html]({html_url}) and the feature browsers below while "
            f"`sae-sweep serve` runs on this machine (it serves `{root}` read-only at {base}; set "
            f"`{SERVE_URL_ENV}` for another address)."
        )
    else:
        lines.append(f"**Report**: not written ({markdown_text(report_error or 'no report.md')}).")
    if hub_links:
        hub = " · ".join(f"[{cell}]({url})" for cell, url in sorted(hub_links.items()))
        lines += ["", f"**Feature browsers on the Hub** ({cfg.upload.repo_id}): {hub}"]
    done = len(outcomes) - len(failed)
    lines += ["", f"**Cells**: {done} of {len(outcomes)} completed."]
    # An error message can quote corpus text or an LLM's answer (a malformed label, an HTTP body).
    lines += [f"- `{o['cell']}` {o['status']}: {markdown_text(o.get('error'))}" for o in failed]
    lines.append("")
    if md_path.is_file() and report_error is None:
        body = md_path.read_text()
        body = body.split("\n", 1)[1] if body.startswith("# ") else body  # our heading replaces it
        lines.append(ui_markdown(body, report_dir, root, base))
    else:
        rows, notes = grid_table(cfg)
        lines.append(grid_legend(cfg) + "\n\n" + markdown_table(rows, notes))
    return "\n".join(lines)


def publish_report(
    cfg: SweepConfig,
    outcomes: list[dict[str, Any]],
    report_error: str | None,
    hub_links: dict[str, str] | None = None,
) -> None:
    create_markdown_artifact(
        report_markdown(cfg, outcomes, report_error, hub_links),
        key=artifact_key("report", cfg.name),
        description=f"Sweep {cfg.name}: the report (tables, plots, links), each cell's status",
    )
