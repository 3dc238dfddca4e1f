"""The sweep report: the study's tables (rows λ, columns expansion) and plots from our own cells.

`build_report(sweep_dir, cfg)` reads every cell directory of a sweep (`runs/<sweep>/<cell>/`, files as
docs/architecture.md fixes them) and writes `runs/<sweep>/report/` with `report.md`, a self-contained
`report.html` (plots embedded as base64), `tables.json` and the PNGs. A cell or file that is absent
(a failed or skipped stage) shows as "missing" or "skipped (reason)" — never as zero.
For the `seed` preset the published numbers (`sae_core/report/published.json`) stand beside ours.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from sae_core.config import SweepConfig
from sae_core.dead_figures import TRAINING_CAPTION, dead_caption, dead_token_set, training_dead_fraction
from sae_core.errors import ReportError
from sae_core.io import atomic_write_json, atomic_write_text
from sae_core.naming import Cell, grid_cells
from sae_core.progress import Progress, no_progress
from sae_core.version import code_version

log = logging.getLogger(__name__)

REPORT_DIRNAME = "report"


@dataclass(frozen=True)
class Entry:
    """One table value: a number, or None with the reason it is absent (`missing`, `skipped (…)`)."""

    value: float | None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "note": self.note}


@dataclass
class CellData:
    """What one cell directory holds; a file that is absent or unreadable is None plus a note."""

    cell: Cell
    path: Path
    exists: bool
    metrics: dict[str, Any] | None = None
    analysis: dict[str, Any] | None = None
    labels: dict[str, Any] | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def missing(self, what: str) -> Entry:
        if not self.exists:
            return Entry(None, "missing (cell not run)")
        return Entry(None, self.notes.get(what, f"missing ({what})"))


# ---------------------------------------------------------------------------------------------
# Reading cells


def load_published() -> dict[str, Any]:
    """The study's published tables, with their source (`sae_core/report/published.json`)."""
    return json.loads((resources.files("sae_core.report") / "published.json").read_text())


def collect_cells(sweep_dir: str | Path, cfg: SweepConfig | None = None) -> list[CellData]:
    """The cells of `cfg.grid` (those without a directory reported missing); without a config, every
    cell directory found under `sweep_dir`. Cells left from an earlier, different grid of the same
    sweep are not part of a config's report."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise ReportError(f"sweep_dir: no such directory {str(root)!r}")
    found: dict[Cell, Path] = {}
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name != REPORT_DIRNAME:
            try:
                found[Cell.parse(child.name)] = child
            except ValueError:
                log.debug("report: %s is not a cell directory, ignored", child)
    expected = set(grid_cells(cfg.grid)) if cfg is not None else set()
    if not found and not expected:
        raise ReportError(f"sweep_dir: no cell directories (like 8x_0.0001_sampling) in {str(root)!r}")
    cells = []
    for cell in sorted(expected if cfg is not None else set(found)):
        path = found.get(cell, root / cell.name)
        data = CellData(cell, path, exists=path.is_dir())
        if data.exists:
            data.metrics = _read_json(path / "metrics.json", "metrics.json", data.notes)
            data.analysis = _read_json(path / "analysis.json", "analysis.json", data.notes)
            data.labels = _read_json(path / "labels.json", "labels.json", data.notes)
        cells.append(data)
    return cells


def _read_json(path: Path, what: str, notes: dict[str, str]) -> dict[str, Any] | None:
    if not path.is_file():
        notes[what] = f"missing (no {what})"
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("report: cannot read %s: %s", path, exc)
        notes[what] = f"missing (unreadable {what})"
        return None
    if not isinstance(value, dict):
        notes[what] = f"missing ({what} is not an object)"
        return None
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


# ---------------------------------------------------------------------------------------------
# Per-cell metrics: each returns an Entry (a value, or why there is none)


def _from(data: CellData, source: str, *keys: str, scale: float = 1.0) -> Entry:
    doc = {"analysis.json": data.analysis, "metrics.json": data.metrics}[source]
    if doc is None:
        return data.missing(source)
    value: Any = doc
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    number = _number(value)
    if number is None:
        return Entry(None, f"missing ({'.'.join(keys)} absent)")
    return Entry(number * scale)


def dead_pct(data: CellData) -> Entry:
    return _from(data, "analysis.json", "dead_fraction", scale=100.0)


def training_dead_pct(data: CellData) -> Entry:
    """metrics.json's training-window figure (an old run's `dead_fraction_train` only where it was not
    wrong, see `dead_figures`); analysis.json's copy when metrics.json is gone."""
    if data.metrics is None:
        copied = (data.analysis or {}).get("dead_split") is not None  # written by the corrected code
        if copied:
            fallback = _from(data, "analysis.json", "training_dead_fraction", scale=100.0)
            if fallback.value is not None:
                return fallback
        return data.missing("metrics.json")
    value, why = training_dead_fraction(data.metrics)
    return Entry(100.0 * value) if value is not None else Entry(None, why)


def dead_pct_caption(cells: list[CellData]) -> str:
    """The analysis dead % title with the threshold and token set the cells' analysis.json name, e.g.
    `dead % (>0.07, all tokens)`; `mixed` when cells disagree."""
    analysed = [c.analysis for c in cells if c.analysis is not None]
    thresholds = {_number(a.get("dead_threshold")) for a in analysed}
    sets = {dead_token_set(a) for a in analysed}
    threshold = thresholds.pop() if len(thresholds) == 1 else None
    token_set = sets.pop() if len(sets) == 1 else ("mixed" if sets else None)
    return dead_caption(threshold, token_set)


def ce_recovered(data: CellData) -> Entry:
    if data.analysis is None:
        return data.missing("analysis.json")
    if data.analysis.get("ce_loss") is None:
        note = data.analysis.get("ce_loss_note")
        return Entry(None, f"skipped ({note})" if note else "skipped")
    return _from(data, "analysis.json", "ce_loss", "recovered")


def monosemanticity_pct(data: CellData) -> Entry:
    labels = data.labels
    if labels is None:
        return data.missing("labels.json")
    if labels.get("skipped_reason"):
        return Entry(None, f"skipped ({labels['skipped_reason']})")
    rate = _number(labels.get("monosemanticity_rate"))
    if rate is None:
        failed = labels.get("failed")
        return Entry(None, f"failed ({failed} labels failed)" if failed else "missing (no rate)")
    return Entry(rate * 100.0)


def monosemanticity_conservative_pct(data: CellData) -> Entry:
    """The rate counting failed labels as polysemantic; from the counts when labels.json predates the key."""
    plain = monosemanticity_pct(data)
    labels = data.labels
    if labels is None or labels.get("skipped_reason"):
        return plain
    rate = _number(labels.get("monosemanticity_rate_conservative"))
    if rate is None:
        labelled, poly, failed = (_number(labels.get(k)) for k in ("labelled", "polysemantic", "failed"))
        if labelled is None or poly is None or failed is None or labelled + failed == 0:
            return plain if plain.value is None else Entry(None, "missing (no conservative rate)")
        rate = 1.0 - (poly + failed) / (labelled + failed)
    return Entry(rate * 100.0)


def resample_count(data: CellData) -> Entry:
    """Resampling checks that revived at least one neuron (a check finding none dead is not counted)."""
    events = _events(data)
    return events if isinstance(events, Entry) else Entry(float(sum(1 for e in events if e["neurons"] > 0)))


def neurons_resampled(data: CellData) -> Entry:
    events = _events(data)
    return events if isinstance(events, Entry) else Entry(float(sum(e["neurons"] for e in events)))


def _events(data: CellData) -> list[dict[str, Any]] | Entry:
    if data.metrics is None:
        return data.missing("metrics.json")
    events = data.metrics.get("resample_events")
    if not isinstance(events, list):
        return Entry(None, "missing (resample_events absent)")
    return [
        {"step": e.get("step"), "neurons": int(e.get("neurons") or 0)} for e in events if isinstance(e, dict)
    ]


CELL_METRICS: dict[str, tuple[str, Any, str]] = {
    # key: (column title, how to read it, number format)
    # the dead_pct title is completed per report with its threshold and token set (`dead_pct_caption`)
    "dead_pct": ("dead % (analysis)", dead_pct, "{:.1f}%"),
    "training_dead_pct": (TRAINING_CAPTION, training_dead_pct, "{:.1f}%"),
    "l0": ("L0", lambda d: _from(d, "analysis.json", "l0"), "{:.1f}"),
    "explained_variance": (
        "explained var.",
        lambda d: _from(d, "analysis.json", "explained_variance"),
        "{:.3f}",
    ),
    "ce_recovered": ("CE loss recovered", ce_recovered, "{:.3f}"),
    "monosemanticity_pct": ("monosemantic %", monosemanticity_pct, "{:.0f}%"),
    "monosemanticity_conservative_pct": (
        "monosemantic % (failed = polysemantic)",
        monosemanticity_conservative_pct,
        "{:.0f}%",
    ),
    "tokens_trained": ("tokens trained", lambda d: _from(d, "metrics.json", "tokens_trained"), "{:,.0f}"),
    "wall_time_s": ("wall time (s)", lambda d: _from(d, "metrics.json", "wall_time_s"), "{:,.1f}"),
    "resample_events": ("resamplings", resample_count, "{:.0f}"),
    "neurons_resampled": ("neurons resampled", neurons_resampled, "{:,.0f}"),
}


def format_entry(entry: Entry, fmt: str) -> str:
    return fmt.format(entry.value) if entry.value is not None else (entry.note or "missing")


# ---------------------------------------------------------------------------------------------
# The study's grid tables: rows λ (largest first, as the blog), columns expansion


GRID_TABLES: dict[str, tuple[str, str | None, Any]] = {
    # key: (title, strategy, per-cell reader); the delta is derived from the other two
    "dead_pct_nosampling": ("Dead neurons % without resampling", "nosampling", dead_pct),
    "dead_pct_sampling": ("Dead neurons % with resampling", "sampling", dead_pct),
    "dead_pct_delta": ("Dead neuron delta, percentage points (without − with)", None, None),
    "monosemanticity_pct_nosampling": (
        "Monosemanticity % without resampling",
        "nosampling",
        monosemanticity_pct,
    ),
    "monosemanticity_pct_sampling": ("Monosemanticity % with resampling", "sampling", monosemanticity_pct),
    "monosemanticity_conservative_pct_nosampling": (
        "Monosemanticity % without resampling, failed labels counted polysemantic",
        "nosampling",
        monosemanticity_conservative_pct,
    ),
    "monosemanticity_conservative_pct_sampling": (
        "Monosemanticity % with resampling, failed labels counted polysemantic",
        "sampling",
        monosemanticity_conservative_pct,
    ),
}


def grid_tables(cells: list[CellData], published: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The study's five tables from our cells, and the conservative monosemanticity (failed labels
    counted polysemantic) beside them; `published` (or None) adds the blog's values beside. Relu cells
    only: the other architectures have no λ (theirs would all sit in a λ = 0 row)."""
    cells = [c for c in cells if c.cell.architecture == "relu"]
    rows = sorted({c.cell.l1 for c in cells}, reverse=True)
    cols = sorted({c.cell.expansion for c in cells})
    by_key = {(c.cell.l1, c.cell.expansion, c.cell.strategy): c for c in cells}
    strategies = {c.cell.strategy for c in cells}
    tables: dict[str, dict[str, Any]] = {}
    for key, (title, strategy, reader) in GRID_TABLES.items():
        if strategy is None:
            if not {"sampling", "nosampling"} <= strategies:
                continue
            entries = [
                [_delta(by_key.get((l1, e, "nosampling")), by_key.get((l1, e, "sampling"))) for e in cols]
                for l1 in rows
            ]
        else:
            if strategy not in strategies:
                continue
            entries = [[_entry(by_key.get((l1, e, strategy)), reader) for e in cols] for l1 in rows]
        tables[key] = {
            "title": title,
            "rows": rows,
            "columns": cols,
            "values": [[x.value for x in row] for row in entries],
            "notes": [[x.note for x in row] for row in entries],
            "published": _published_grid(published, key, rows, cols) if published else None,
        }
    return tables


def _entry(data: CellData | None, reader: Any) -> Entry:
    return Entry(None, "missing (not in grid)") if data is None else reader(data)


def _delta(without: CellData | None, with_: CellData | None) -> Entry:
    a, b = _entry(without, dead_pct), _entry(with_, dead_pct)
    if a.value is None or b.value is None:
        return Entry(None, "missing")
    return Entry(a.value - b.value)


def _published_grid(published: dict[str, Any], key: str, rows: list[float], cols: list[int]) -> list:
    table = published["tables"].get(key)
    if table is None:
        return [[None for _ in cols] for _ in rows]
    p_rows, p_cols = [float(r) for r in published["rows"]], [int(c) for c in published["columns"]]
    return [
        [table[p_rows.index(l1)][p_cols.index(e)] if l1 in p_rows and e in p_cols else None for e in cols]
        for l1 in rows
    ]


def cell_rows(cells: list[CellData]) -> list[dict[str, Any]]:
    """One JSON-able row per cell: its name, coordinates, each metric's value and absent-value notes."""
    out = []
    for data in cells:
        row: dict[str, Any] = {"cell": data.cell.name, **data.cell.to_dict()}
        notes = {}
        for key, (_, reader, _) in CELL_METRICS.items():
            entry = reader(data)
            row[key] = entry.value
            if entry.note:
                notes[key] = entry.note
        row["notes"] = notes
        out.append(row)
    return out


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
    from sae_core.report.render import render_html, render_markdown

    progress = progress or no_progress
    sweep_dir = Path(sweep_dir)
    cells = collect_cells(sweep_dir, cfg)
    name = cfg.name if cfg is not None else sweep_dir.name
    if compare_published is None:
        compare_published = name == "seed"
    published = load_published() if compare_published else None
    out = sweep_dir / REPORT_DIRNAME
    out.mkdir(parents=True, exist_ok=True)

    tables = grid_tables(cells, published)
    caption = dead_pct_caption(cells)
    for key, table in tables.items():
        if key.startswith("dead_pct"):
            table["title"] += f" — {caption}"
    rows = cell_rows(cells)
    steps = report_plots.PLOT_STEPS + 1
    progress(0, steps, {})
    figures = report_plots.make_plots(cells, tables, out, progress=lambda i: progress(i, steps, {}))
    doc = {
        "sweep": name,
        "sweep_dir": str(sweep_dir),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "published_source": published["source"] if published else None,
        "dead_caption": caption,
        "grid_tables": tables,
        "cells": rows,
        "figures": [{"file": f.file, "title": f.title} for f in figures],
    }
    atomic_write_json(out / "tables.json", doc)
    atomic_write_text(out / "report.md", render_markdown(doc, cells, figures))
    atomic_write_text(out / "report.html", render_html(doc, cells, figures, out))
    progress(steps, steps, {})
    log.info("report: %d cells → %s", len(cells), out)
    return out
