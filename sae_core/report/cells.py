"""A sweep's cells as the report reads them back from disk (`CellData`), and each figure's reader: a value,
or the reason it is absent (`Entry`) — a missing or skipped stage never reads as zero."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from sae_core.config import SweepConfig
from sae_core.errors import ReportError
from sae_core.naming import Cell, grid_cells
from sae_core.rundir import (
    TRAINING_CAPTION,
    Analysis,
    Labels,
    Metrics,
    RunDir,
    RunFileError,
    dead_caption,
    dead_token_set,
    disagreement_text,
    parse,
    read_analysis,
    read_labels,
    read_metrics,
    training_dead_fraction,
    units_text,
)

log = logging.getLogger(__name__)

F = TypeVar("F", Metrics, Analysis, Labels)


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
    """What one cell directory holds, read through `sae_core.rundir`; a file that is absent or unreadable
    is None plus a note."""

    cell: Cell
    path: Path
    exists: bool
    metrics: Metrics | None = None
    analysis: Analysis | None = None
    labels: Labels | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A file's content given as a dict (a notebook, a test) is read through its model too.
        if isinstance(self.metrics, dict):
            self.metrics = parse(Metrics, self.metrics)
        if isinstance(self.analysis, dict):
            self.analysis = parse(Analysis, self.analysis)
        if isinstance(self.labels, dict):
            self.labels = parse(Labels, self.labels)

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
            run = RunDir(path)
            data.metrics = _read_run_file(read_metrics, run, run.metrics, data.notes)
            data.analysis = _read_run_file(read_analysis, run, run.analysis, data.notes)
            data.labels = _read_run_file(read_labels, run, run.labels, data.notes)
        cells.append(data)
    return cells


def store_provenance(cells: list[CellData]) -> list[dict[str, Any]]:
    """Per store the cells were trained on (metrics.json's `store`), what its manifest says it was read
    from: model, data source and library versions. A store written before manifests recorded the
    source has `source` None; one that is gone has `found` False."""
    stores = sorted({c.metrics.store for c in cells if c.metrics is not None and c.metrics.store})
    out = []
    for store in stores:
        manifest = _read_json(Path(store) / "manifest.json", "manifest.json", {})
        if manifest is None:
            out.append({"store": store, "found": False})
            continue
        model, data = manifest.get("model") or {}, manifest.get("data") or {}
        out.append(
            {
                "store": store,
                "found": True,
                "model": {k: model.get(k) for k in ("name", "revision", "layer", "dtype")},
                "dataset": data.get("dataset"),
                "split": data.get("split"),
                "num_documents": manifest.get("num_documents"),
                "source": manifest.get("source"),
                "versions": manifest.get("versions"),
                "code_version": manifest.get("code_version"),
            }
        )
    return out


def _read_run_file(
    reader: Callable[[RunDir], F | None], run: RunDir, path: Path, notes: dict[str, str]
) -> F | None:
    """A run file through its `sae_core.rundir` reader; absent or unreadable is None plus a note (the
    error's one line is logged: it names the file and what to do)."""
    what = path.name
    try:
        found = reader(run)
    except RunFileError as exc:
        log.warning("report: %s", exc)
        notes[what] = f"missing (unreadable {what})"
        return None
    if found is None:
        notes[what] = f"missing (no {what})"
    return found


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


def figure_from(data: CellData, source: str, *keys: str, scale: float = 1.0) -> Entry:
    doc: BaseModel | None = {"analysis.json": data.analysis, "metrics.json": data.metrics}[source]
    if doc is None:
        return data.missing(source)
    value: Any = doc
    for key in keys:
        if isinstance(value, BaseModel):
            value = getattr(value, key, None)
        else:
            value = value.get(key) if isinstance(value, dict) else None
    number = _number(value)
    if number is None:
        return Entry(None, f"missing ({'.'.join(keys)} absent)")
    return Entry(number * scale)


def dead_pct(data: CellData) -> Entry:
    return figure_from(data, "analysis.json", "dead_fraction", scale=100.0)


def training_dead_pct(data: CellData) -> Entry:
    """metrics.json's training-window figure (an old run's `dead_fraction_train` only where it was not
    wrong, see `dead_figures`); analysis.json's copy when metrics.json is gone."""
    if data.metrics is None:
        copied = data.analysis is not None and data.analysis.dead_split is not None  # the corrected code
        if copied:
            fallback = figure_from(data, "analysis.json", "training_dead_fraction", scale=100.0)
            if fallback.value is not None:
                return fallback
        return data.missing("metrics.json")
    value, why = training_dead_fraction(data.metrics)
    return Entry(100.0 * value) if value is not None else Entry(None, why)


def never_fired_pct(data: CellData) -> Entry:
    """No activation > 0 on the analysed tokens: free of the dead threshold's units and of L1 shrinkage."""
    return figure_from(data, "analysis.json", "never_fired_fraction", scale=100.0)


def below_threshold_only_pct(data: CellData) -> Entry:
    """Features that fire (> 0) but never above the dead threshold: the gap between the two dead %."""
    return figure_from(data, "analysis.json", "below_threshold_only_fraction", scale=100.0)


def firings_below_threshold_pct(data: CellData) -> Entry:
    """Of all positive activations on the analysed tokens, the share at or below the dead threshold."""
    return figure_from(data, "analysis.json", "firings_below_threshold_fraction", scale=100.0)


NEVER_FIRED_CAPTION = "never fired % (no activation > 0, analysed tokens)"


def unit_notes(cells: list[CellData]) -> list[str]:
    """The report's sentences on units: which scale the thresholds, L0 and activations are in, and per
    cell where never-fired and dead % disagree or the selection came up short, in words."""
    analysed = [(c, c.analysis) for c in cells if c.analysis is not None]
    if not analysed:
        return []
    scales = sorted({units_text(a.activation_units) for _, a in analysed})
    notes = [
        f"Units: the dead threshold, `analysis.min_activations` (firings above that threshold), every "
        f"activation value and explained variance are in the {' / '.join(scales)} (an analysis written "
        "before `activation_units` existed is read as raw). L0 counts latents with an activation > 0 per "
        f"token on the analysed tokens. {NEVER_FIRED_CAPTION}: no activation > 0 at all, whatever the "
        'threshold; "fires only ≤ threshold %": features that fire but never above it.'
    ]
    for data, analysis in analysed:
        said = disagreement_text(analysis)
        if said:
            notes.append(f"{data.cell.name}: {said}")
        shortfall = (analysis.selection or {}).get("shortfall")
        if shortfall:
            notes.append(f"{data.cell.name}: the selection holds {shortfall}.")
    return notes


def dead_pct_caption(cells: list[CellData]) -> str:
    """The analysis dead % title with the threshold and token set the cells' analysis.json name, e.g.
    `dead % (>0.07, all tokens)`; `mixed` when cells disagree."""
    analysed = [c.analysis for c in cells if c.analysis is not None]
    thresholds = {_number(a.dead_threshold) for a in analysed}
    sets = {dead_token_set(a) for a in analysed}
    threshold = thresholds.pop() if len(thresholds) == 1 else None
    token_set = sets.pop() if len(sets) == 1 else ("mixed" if sets else None)
    return dead_caption(threshold, token_set)


def ce_recovered(data: CellData) -> Entry:
    if data.analysis is None:
        return data.missing("analysis.json")
    if data.analysis.ce_loss is None:
        note = data.analysis.ce_loss_note
        return Entry(None, f"skipped ({note})" if note else "skipped")
    return figure_from(data, "analysis.json", "ce_loss", "recovered")


def monosemanticity_pct(data: CellData) -> Entry:
    labels = data.labels
    if labels is None:
        return data.missing("labels.json")
    if labels.skipped_reason:
        return Entry(None, f"skipped ({labels.skipped_reason})")
    rate = _number(labels.monosemanticity_rate)
    selection = labels.selection
    if rate is None and selection is not None and selection.selected == 0:
        return Entry(None, f"skipped (no feature selected: {selection.shortfall or 'none qualified'})")
    if rate is None:
        failed = labels.failed
        return Entry(None, f"failed ({failed} labels failed)" if failed else "missing (no rate)")
    return Entry(rate * 100.0)


def monosemanticity_conservative_pct(data: CellData) -> Entry:
    """The rate counting failed labels as polysemantic; from the counts when labels.json predates the key."""
    plain = monosemanticity_pct(data)
    labels = data.labels
    if labels is None or labels.skipped_reason:
        return plain
    rate = _number(labels.monosemanticity_rate_conservative)
    if rate is None:
        labelled, poly, failed = (_number(v) for v in (labels.labelled, labels.polysemantic, labels.failed))
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
    events = data.metrics.resample_events
    if events is None:
        return Entry(None, "missing (resample_events absent)")
    return [{"step": e.step, "neurons": int(e.neurons or 0)} for e in events]


CELL_METRICS: dict[str, tuple[str, Any, str]] = {
    # key: (column title, how to read it, number format)
    # the dead_pct title is completed per report with its threshold and token set (`dead_pct_caption`)
    "dead_pct": ("dead % (analysis)", dead_pct, "{:.1f}%"),
    "training_dead_pct": (TRAINING_CAPTION, training_dead_pct, "{:.1f}%"),
    "never_fired_pct": (NEVER_FIRED_CAPTION, never_fired_pct, "{:.1f}%"),
    "below_threshold_only_pct": ("fires only ≤ threshold %", below_threshold_only_pct, "{:.1f}%"),
    "firings_below_threshold_pct": ("firings ≤ threshold %", firings_below_threshold_pct, "{:.1f}%"),
    "l0": ("L0", lambda d: figure_from(d, "analysis.json", "l0"), "{:.1f}"),
    "explained_variance": (
        "explained var.",
        lambda d: figure_from(d, "analysis.json", "explained_variance"),
        "{:.3f}",
    ),
    "ce_recovered": ("CE loss recovered", ce_recovered, "{:.3f}"),
    "monosemanticity_pct": ("monosemantic %", monosemanticity_pct, "{:.0f}%"),
    "monosemanticity_conservative_pct": (
        "monosemantic % (failed = polysemantic)",
        monosemanticity_conservative_pct,
        "{:.0f}%",
    ),
    "tokens_trained": (
        "tokens trained",
        lambda d: figure_from(d, "metrics.json", "tokens_trained"),
        "{:,.0f}",
    ),
    "wall_time_s": ("wall time (s)", lambda d: figure_from(d, "metrics.json", "wall_time_s"), "{:,.1f}"),
    "resample_events": ("resamplings", resample_count, "{:.0f}"),
    "neurons_resampled": ("neurons resampled", neurons_resampled, "{:,.0f}"),
}


def format_entry(entry: Entry, fmt: str) -> str:
    return fmt.format(entry.value) if entry.value is not None else (entry.note or "missing")
