"""The grid at a glance, read back from the run dirs: for the UI's table artifact and the model card.

Read from disk (not from task results) so that it is the same whether cells ran in this process or on
a GPU pool, and so that a missing or skipped stage shows as such — never as a zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sae_core.config import SweepConfig
from sae_core.dead_figures import dead_caption, dead_token_set, training_dead_fraction
from sae_core.io import read_json
from sae_core.naming import Cell, grid_cells
from tasks.common import run_dir

MISSING = "missing"
CONSERVATIVE = "monosemanticity_rate_conservative"


def _load(path: Path) -> dict[str, Any] | None:
    try:
        return read_json(path) if path.is_file() else None
    except (OSError, ValueError):
        return None


def cell_summary(cfg: SweepConfig, cell: Cell) -> dict[str, Any]:
    """What the run dir says about one cell: the figures the grid table shows, None when absent."""
    out = run_dir(cfg, cell)
    metrics = _load(out / "metrics.json") or {}
    analysis = _load(out / "analysis.json") or {}
    labels = _load(out / "labels.json") or {}
    mono = labels.get("monosemanticity_rate")
    return {
        "cell": cell.name,
        "run_dir": str(out),
        "trained": bool(metrics.get("completed")),
        "analysed": bool(analysis),
        "dead_fraction": analysis.get("dead_fraction"),
        "dead_caption": dead_caption(analysis.get("dead_threshold"), dead_token_set(analysis))
        if analysis
        else None,
        "training_dead_fraction": training_dead_fraction(metrics)[0],
        "l0": analysis.get("l0"),
        "explained_variance": analysis.get("explained_variance"),
        "monosemanticity_rate": mono,
        "monosemanticity_rate_conservative": labels.get("monosemanticity_rate_conservative"),
        "labels_skipped": labels.get("skipped_reason"),
    }


def _pct(value: float | None) -> str:
    return MISSING if value is None else f"{round(100 * value, 1)}%"


def _num(value: float | None, digits: int = 3) -> str:
    return MISSING if value is None else f"{value:.{digits}g}"


def _mono(summary: dict[str, Any] | None, key: str = "monosemanticity_rate") -> str:
    if summary is None:
        return MISSING
    if summary[key] is not None:
        return f"{100 * summary[key]:.0f}%"
    if summary["labels_skipped"]:
        return "skipped"
    return MISSING


def grid_rows(cfg: SweepConfig) -> list[dict[str, str]]:
    """One row per (λ, expansion), as the study's tables: dead % without/with resampling and their
    delta, L0, explained variance and monosemanticity per strategy. The dead columns are titled with
    the threshold and token set of `cfg.analysis` (`dead % (>0.07, all tokens)`), which the analyses
    recorded in analysis.json."""
    by_key = {(c.l1, c.expansion, c.strategy): cell_summary(cfg, c) for c in grid_cells(cfg.grid)}
    acfg = cfg.analysis
    dead = dead_caption(acfg.dead_threshold, "all" if acfg.dead_split == "all" else acfg.split)
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
                    "λ": str(float(l1)),
                    "expansion": f"{exp}x",
                    f"{dead}, no resampling": _pct(dead_plain),
                    f"{dead}, resampling": _pct(dead_res),
                    "Δ dead (no − with), points": MISSING if delta is None else f"{round(100 * delta, 1)}",
                    "L0 (no resampling)": _num(plain["l0"] if plain else None),
                    "L0 (resampling)": _num(resampled["l0"] if resampled else None),
                    "explained var (no resampling)": _num(plain["explained_variance"] if plain else None),
                    "explained var (resampling)": _num(
                        resampled["explained_variance"] if resampled else None
                    ),
                    "monosemanticity (no resampling)": _mono(plain),
                    "monosemanticity (resampling)": _mono(resampled),
                    # failed labels counted polysemantic: the lower bound beside the rate
                    "monosemanticity, failed = polysemantic (no resampling)": _mono(plain, CONSERVATIVE),
                    "monosemanticity, failed = polysemantic (resampling)": _mono(resampled, CONSERVATIVE),
                }
            )
    return rows


def markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(no cells)\n"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(row[h]) for h in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"
