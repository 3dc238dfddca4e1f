"""The sweep report: the study's tables (rows λ, columns expansion) and plots from our own cells.

`build_report(sweep_dir, cfg)` reads every cell directory of a sweep (`runs/<sweep>/<cell>/`, files as
docs/architecture.md fixes them) and writes `runs/<sweep>/report/` with `report.md`, a self-contained
`report.html` (plots embedded as base64), `tables.json` and the PNGs. A cell or file that is absent
(a failed or skipped stage) shows as "missing" or "skipped (reason)" — never as zero.
For the `seed` preset the published numbers (`sae_core/report/published.json`) stand beside ours.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from sae_core.config import SweepConfig
from sae_core.io import atomic_write_json, atomic_write_text, check_writable
from sae_core.progress import Progress, no_progress
from sae_core.report.cells import (
    REPORT_DIRNAME,
    collect_cells,
    dead_pct_caption,
    load_published,
    store_provenance,
    unit_notes,
)
from sae_core.report.compare import compares_architectures, comparison_tables, computed_on, sparsity_text
from sae_core.report.tables import cell_rows, grid_tables
from sae_core.report.token_checks import ev_flags, left_out_lines
from sae_core.version import code_version

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Building the report


def build_report(
    sweep_dir: str | Path,
    cfg: SweepConfig | None = None,
    *,
    compare_published: bool | None = None,
    progress: Progress | None = None,
) -> Path:
    """Write `<sweep_dir>/report/` (report.md, report.html, tables.json, PNGs); return that directory.

    `compare_published` None means: beside the published numbers when the sweep is the `seed` preset.
    """
    from sae_core.report import plots as report_plots  # matplotlib is imported only when a report is built
    from sae_core.report.frontier import frontier_plots
    from sae_core.report.render import render_html, render_markdown

    progress = progress or no_progress
    sweep_dir = Path(sweep_dir)
    cells = collect_cells(sweep_dir, cfg)
    name = cfg.name if cfg is not None else sweep_dir.name
    if compare_published is None:
        compare_published = name == "seed"
    published = load_published() if compare_published else None
    out = check_writable(sweep_dir / REPORT_DIRNAME)

    tables = grid_tables(cells, published)
    caption = dead_pct_caption(cells)
    for key, table in tables.items():
        if key.startswith("dead_pct"):
            table["title"] += f" — {caption}"
    rows = cell_rows(cells)
    steps = report_plots.PLOT_STEPS + 1
    progress(0, steps, {})
    figures = report_plots.make_plots(cells, tables, out, progress=lambda i: progress(i, steps, {}))
    architectures = None
    if compares_architectures(cells):  # a sweep of more than the study's relu: the comparison sections
        for row, data in zip(rows, cells, strict=True):
            row |= {"architecture": data.cell.architecture, "sparsity": sparsity_text(data.cell)}
        architectures = {
            "computed_on": computed_on(cells, caption),
            "tables": comparison_tables(cells, caption),
            "figures": [{"file": f.file, "title": f.title} for f in frontier_plots(cells, out)],
        }
    doc = {
        "sweep": name,
        "sweep_dir": str(sweep_dir),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "published_source": published["source"] if published else None,
        "dead_caption": caption,
        "provenance": store_provenance(cells),
        "unit_notes": unit_notes(cells),
        "left_out": left_out_lines(cells),
        "ev_flags": ev_flags(cells),
        "grid_tables": tables,
        "cells": rows,
        **({"architectures": architectures} if architectures else {}),
        "figures": [{"file": f.file, "title": f.title} for f in figures],
    }
    atomic_write_json(out / "tables.json", doc)
    atomic_write_text(out / "report.md", render_markdown(doc, cells, figures))
    atomic_write_text(out / "report.html", render_html(doc, cells, figures, out))
    progress(steps, steps, {})
    log.info("report: %d cells → %s", len(cells), out)
    return out
