"""The grid at a glance, read back from the run dirs: for the UI's table artifact and the model card.

Read from disk (not from task results) so that it is the same whether cells ran in this process or on
a GPU pool, and so that a missing or skipped stage shows as such — never as a zero.
"""

from __future__ import annotations

import logging
from typing import Any

from sae_core.config import SweepConfig
from sae_core.naming import Cell, format_l1, grid_cells
from sae_core.report import sparsity_text
from sae_core.rundir import (
    RunDir,
    RunFileError,
    dead_caption,
    dead_token_set,
    read_analysis,
    read_labels,
    read_metrics,
    training_dead_fraction,
)
from tasks.paths import run_dir

MISSING = "missing"
log = logging.getLogger(__name__)


def _load(reader: Any, run: RunDir) -> Any:
    """A run file through its `sae_core.rundir` reader; an unreadable one shows as missing (logged)."""
    try:
        return reader(run)
    except RunFileError as exc:
        log.warning("grid table: %s", exc)
        return None


def cell_summary(cfg: SweepConfig, cell: Cell) -> dict[str, Any]:
    """What the run dir says about one cell: the figures the grid table shows, None when absent."""
    out = run_dir(cfg, cell)
    run = RunDir(out)
    metrics = _load(read_metrics, run)
    analysis = _load(read_analysis, run)
    labels = _load(read_labels, run)
    return {
        "cell": cell.name,
        "run_dir": str(out),
        "trained": bool(metrics is not None and metrics.completed),
        "analysed": analysis is not None,
        "dead_fraction": analysis.dead_fraction if analysis else None,
        "dead_caption": dead_caption(analysis.dead_threshold, dead_token_set(analysis)) if analysis else None,
        "training_dead_fraction": training_dead_fraction(metrics)[0],
        "l0": analysis.l0 if analysis else None,
        "explained_variance": analysis.explained_variance if analysis else None,
        "monosemanticity_rate": labels.monosemanticity_rate if labels else None,
        "monosemanticity_rate_conservative": labels.monosemanticity_rate_conservative if labels else None,
        "labels_skipped": labels.skipped_reason if labels else None,
    }


NOT_IN_GRID = "—"


def _pct(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.1f}"


def _num(value: float | None, digits: int = 3) -> str:
    return MISSING if value is None else f"{value:.{digits}g}"


class _Footnotes:
    """A reason (why labelling was skipped) shown once under the table; cells carry `skipped [n]`."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def mark(self, reason: str) -> str:
        if reason not in self.reasons:
            self.reasons.append(reason)
        return f"skipped [{self.reasons.index(reason) + 1}]"

    def lines(self) -> list[str]:
        return [f"[{i}] labelling skipped: {reason}" for i, reason in enumerate(self.reasons, 1)]


def _mono(summary: dict[str, Any] | None, notes: _Footnotes) -> str:
    """The rate, then in parentheses the conservative rate (failed labels counted polysemantic)."""
    if summary is None:
        return NOT_IN_GRID
    if summary["monosemanticity_rate"] is not None:
        conservative = summary.get("monosemanticity_rate_conservative")
        shown = f"{100 * summary['monosemanticity_rate']:.0f}"
        return shown if conservative is None else f"{shown} ({100 * conservative:.0f})"
    if summary["labels_skipped"]:
        return notes.mark(str(summary["labels_skipped"]))
    return MISSING


def _pair(plain: dict[str, Any] | None, resampled: dict[str, Any] | None, show: Any) -> str:
    """`without / with resampling` in one column (a strategy not in the grid shows —): half the width."""
    return " / ".join(NOT_IN_GRID if s is None else show(s) for s in (plain, resampled))


def _joined(summaries: list[dict[str, Any] | None], show: Any) -> str:
    """The values of one row's strategies in one column, `nosampling / sampling / auxk`."""
    return " / ".join(NOT_IN_GRID if s is None else show(s) for s in summaries)


def _compares_architectures(cfg: SweepConfig) -> bool:
    return cfg.grid.architectures != ["relu"]


def _table_strategies(cfg: SweepConfig) -> list[str]:
    """The strategies each value of an architectures grid lists: the study's two, then auxk if run."""
    return ["nosampling", "sampling", *(["auxk"] if "auxk" in cfg.grid.strategies else [])]


def _architecture_rows(cfg: SweepConfig, notes: _Footnotes) -> list[dict[str, str]]:
    """A grid with more than the study's relu: one row per architecture, sparsity and width; each value
    lists the strategies (`_table_strategies`), — where a strategy is not in the grid or not for the
    architecture (auxk is the TopK family's)."""
    strategies = _table_strategies(cfg)
    cells = grid_cells(cfg.grid)
    by_key = {(c.architecture, c.sparsity_label, c.expansion, c.strategy): c for c in cells}
    rows = []
    seen: set[tuple[str, str, int]] = set()
    for cell in cells:
        key = (cell.architecture, cell.sparsity_label, cell.expansion)
        if key in seen:
            continue
        seen.add(key)
        found = [by_key.get((*key, s)) for s in strategies]
        summaries = [None if c is None else cell_summary(cfg, c) for c in found]
        plain, resampled = summaries[0], summaries[1]
        dead_plain = plain["dead_fraction"] if plain else None
        dead_res = resampled["dead_fraction"] if resampled else None
        delta = None if dead_plain is None or dead_res is None else dead_plain - dead_res
        rows.append(
            {
                "SAE": sparsity_text(cell)
                if cell.architecture == "relu"
                else f"{cell.architecture} {sparsity_text(cell)}",
                "exp.": f"{cell.expansion}x",
                "dead %": _joined(summaries, lambda s: _pct(s["dead_fraction"])),
                "Δ dead, pp": _pct(delta) if plain and resampled else NOT_IN_GRID,
                "L0": _joined(summaries, lambda s: _num(s["l0"])),
                "explained var.": _joined(summaries, lambda s: _num(s["explained_variance"])),
                "monosemantic %": " / ".join(_mono(s, notes) for s in summaries),
            }
        )
    return rows


def grid_table(cfg: SweepConfig) -> tuple[list[dict[str, str]], list[str]]:
    """One row per (λ, expansion), as the study's tables, narrow enough for the UI at 1,600 px (7 short
    columns; each value a pair `without / with resampling`, said once in the artifact's description):
    dead %, its delta, L0, explained variance, monosemanticity % (in parentheses the conservative rate,
    failed labels counted polysemantic).
    Returns the rows and the footnotes (each reason a stage was skipped, once).
    A grid of several architectures has one row per architecture, sparsity and width instead, every
    cell in it (`_architecture_rows`)."""
    if _compares_architectures(cfg):
        notes = _Footnotes()
        return _architecture_rows(cfg, notes), notes.lines()
    relu = [c for c in grid_cells(cfg.grid) if c.architecture == "relu"]  # the study's table: relu cells
    by_key = {(c.l1, c.expansion, c.strategy): cell_summary(cfg, c) for c in relu}
    notes = _Footnotes()
    rows = []
    for l1 in cfg.grid.l1_coefficients:
        for exp in cfg.grid.expansion_factors:
            plain = by_key.get((float(l1), exp, "nosampling"))
            resampled = by_key.get((float(l1), exp, "sampling"))
            dead_plain = plain["dead_fraction"] if plain else None
            dead_res = resampled["dead_fraction"] if resampled else None
            delta = None if dead_plain is None or dead_res is None else dead_plain - dead_res
            rows.append(
                {
                    "λ": format_l1(l1),
                    "exp.": f"{exp}x",
                    "dead %": _pair(plain, resampled, lambda s: _pct(s["dead_fraction"])),
                    "Δ dead, pp": _pct(delta) if plain and resampled else NOT_IN_GRID,
                    "L0": _pair(plain, resampled, lambda s: _num(s["l0"])),
                    "explained var.": _pair(plain, resampled, lambda s: _num(s["explained_variance"])),
                    "monosemantic %": " / ".join(_mono(s, notes) for s in (plain, resampled)),
                }
            )
    return rows, notes.lines()


def grid_legend(cfg: SweepConfig) -> str:
    """What the grid table's short columns mean, the dead % titled with the threshold and token set the
    analyses were configured with (`dead % (>0.07, all tokens)`); shown beside the table wherever it goes."""
    acfg = cfg.analysis
    dead = dead_caption(acfg.dead_threshold, "all" if acfg.dead_split == "all" else acfg.split)
    if _compares_architectures(cfg):
        listed = " / ".join(_table_strategies(cfg))
        first = (
            f"One row per SAE (architecture and sparsity: λ, k or L0 coeff) and width; each value lists "
            f"**{listed}** (— = not in the grid, or not a strategy of that architecture). "
        )
    else:
        first = "Each value is a pair **without / with resampling** (— = not in the grid). "
    return (
        first + f"dead % = {dead}: features whose activation never exceeds analysis.dead_threshold on those "
        "tokens; Δ dead in percentage points; monosemantic % = 1 − polysemantic / labelled, in "
        "parentheses counting features whose labelling failed as polysemantic."
    )


def grid_rows(cfg: SweepConfig) -> list[dict[str, str]]:
    """The rows of `grid_table`."""
    return grid_table(cfg)[0]


def markdown_table(rows: list[dict[str, str]], notes: list[str] | None = None) -> str:
    if not rows:
        return "(no cells)\n"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(row[h]) for h in header) + " |" for row in rows]
    if notes:
        lines += [""] + [f"{note}  " for note in notes]
    return "\n".join(lines) + "\n"
