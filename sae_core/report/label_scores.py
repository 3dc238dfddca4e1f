"""The report's label table: per cell, the monosemanticity rate beside the detection and fuzzing scores
of the features labelled monosemantic and polysemantic, and the labeller's health — each figure with
the number of features it rests on. A rate with no calibration beside it is not evidence (an outside
audit of delphi found humans scoring 58 % where it said 84 %); a labeller that copies its worked
example scores a perfect rate.

Every string here is composed from numbers and cell names; labels themselves are not shown.
"""

from __future__ import annotations

from typing import Any

from sae_core.report.cells import CellData

TITLE = "Labels: rate, scores and labeller health"
INTRO = (
    "Rate: 1 − polysemantic / labelled over labels not flagged by the health check; conservative: failed "
    "and flagged features counted polysemantic. Detection and fuzzing: mean class-balanced accuracy "
    "(0.5 = chance) over held-out windows (activating windows spread over activation quantiles, random "
    "windows where the feature never fires; failed predictions counted wrong), of the unflagged features "
    "labelled monosemantic (mono) and polysemantic (poly, scored on their closest explanation); n = "
    "features each mean rests on. Health: distinct labels / monosemantic labels; flagged = copies of a "
    "worked example, one label shared by many features, or over the character limit."
)
HEAD = [
    "cell",
    "rate (n)",
    "conservative",
    "detection mono (n)",
    "detection poly (n)",
    "fuzzing mono (n)",
    "fuzzing poly (n)",
    "distinct labels",
    "copies",
    "shared",
    "too long",
    "failed",
]


def _pct(value: Any) -> str:
    return f"{100 * value:.0f}%" if isinstance(value, int | float) else "n/a"


def _score(scores: dict[str, Any], verdict: str, scorer: str) -> str:
    entry = scores.get(verdict) or {}
    value, n = entry.get(scorer), entry.get(f"{scorer}_features", 0)
    return f"{value:.2f} ({n})" if isinstance(value, int | float) else f"n/a ({n})"


def label_rows(cells: list[CellData]) -> list[list[str]]:
    """One row per cell whose labels.json has labels (skipped or absent cells are left out: the per-cell
    table already says why), and one for its random sample (labeling.scope: sample; health is the
    cell's, shown on the first row)."""
    rows = []
    for data in cells:
        labels = data.labels
        if labels is None or labels.skipped_reason or "labelled" not in labels.model_fields_set:
            continue
        health = labels.health or {}
        main = {
            "monosemanticity_rate": labels.monosemanticity_rate,
            "monosemanticity_rate_conservative": labels.monosemanticity_rate_conservative,
            "scores": labels.scores,
            "failed": labels.failed,
        }
        rows.append(_row(data.cell.name, main, "scores", labels.labelled or 0, health))
        sample = (labels.groups or {}).get("sample")
        if isinstance(sample, dict):  # labeling.scope: sample, its own row
            figures = {
                "monosemanticity_rate": labels.rate_sample,
                "monosemanticity_rate_conservative": labels.rate_sample_conservative,
                "scores_sample": labels.scores_sample,
                "failed": sample.get("failed"),
            }
            row = _row(
                f"{data.cell.name} (random sample)", figures, "scores_sample", sample.get("labelled", 0), {}
            )
            rows.append(row)
    return rows


def _row(
    name: str, labels: dict[str, Any], scores_key: str, counted: Any, health: dict[str, Any]
) -> list[str]:
    found = labels.get(scores_key)
    scores: dict[str, Any] = found if isinstance(found, dict) else {}
    return [
        name,
        f"{_pct(labels.get('monosemanticity_rate'))} ({counted})",
        _pct(labels.get("monosemanticity_rate_conservative")),
        _score(scores, "monosemantic", "detection"),
        _score(scores, "polysemantic", "detection"),
        _score(scores, "monosemantic", "fuzzing"),
        _score(scores, "polysemantic", "fuzzing"),
        f"{health.get('distinct_labels', 'n/a')} / {health.get('monosemantic_labels', 'n/a')}",
        str(health.get("copies", "n/a")),
        str(health.get("shared", "n/a")),
        str(health.get("too_long", "n/a")),
        str(labels.get("failed", "n/a")),
    ]
