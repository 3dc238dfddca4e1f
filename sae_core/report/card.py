"""The Hub repo's model card: one row per SAE with the figures a researcher compares releases by, and how
to load one, before the study's grid table.

Every figure says what it was computed on: L0, explained variance, never-fired and dead % on the
analysis's held-out split (the dead % with its threshold and units), CE loss recovered on the
analysis's documents, the monosemanticity rate over the labelled features and the detection / fuzzing
balanced accuracy of the features labelled monosemantic, each with the number of features it rests on.
"""

from __future__ import annotations

from typing import Any

from sae_core.architectures import SPECS
from sae_core.report.cells import (
    CellData,
    Entry,
    ce_recovered,
    dead_pct,
    dead_pct_caption,
    figure_from,
    format_entry,
    monosemanticity_conservative_pct,
    monosemanticity_pct,
    never_fired_pct,
)

CARD_COLUMNS = (
    "SAE (folder)",
    "architecture",
    "width",
    "sparsity",
    "strategy",
    "L0",
    "explained var.",
    "CE loss recovered",
    "never fired %",
    "dead %",
    "monosemantic % (conservative)",
    "detection / fuzzing (monosemantic)",
)


def _sparsity(data: CellData) -> str:
    spec = SPECS[data.cell.architecture].sparsity
    value = getattr(data.cell, spec.field)
    return f"{spec.label} = {value:g}" if isinstance(value, int | float) else f"{spec.label} = {value}"


def _width(data: CellData) -> str:
    d_hidden = data.metrics.d_hidden if data.metrics is not None else None
    return f"{d_hidden:,} ({data.cell.expansion}x)" if d_hidden else f"{data.cell.expansion}x"


def _scores(data: CellData) -> str:
    labels = data.labels
    if labels is None or labels.skipped_reason or not labels.scores:
        return "n/a"
    entry = labels.scores.get("monosemantic") or {}
    parts = []
    for scorer in ("detection", "fuzzing"):
        value = entry.get(scorer)
        parts.append(f"{value:.2f}" if isinstance(value, int | float) else "n/a")
    counts = {entry.get(f"{s}_features", 0) for s in ("detection", "fuzzing")}
    count = f"{counts.pop()} features" if len(counts) == 1 else "features differ"
    return f"{' / '.join(parts)} ({count})"


def _mono(data: CellData) -> str:
    plain, conservative = monosemanticity_pct(data), monosemanticity_conservative_pct(data)
    if plain.value is None:
        # the reason is said once under the table (`card_notes`), not in every row
        return "skipped" if (plain.note or "").startswith("skipped") else format_entry(plain, "{:.1f}")
    labelled = data.labels.labelled if data.labels is not None else None
    rest = f" ({conservative.value:.1f})" if conservative.value is not None else ""
    return f"{plain.value:.1f}{rest}, of {labelled} labelled" if labelled else f"{plain.value:.1f}{rest}"


_STRATEGY_ORDER = {"nosampling": 0, "sampling": 1, "auxk": 2}


def _order(data: CellData) -> tuple[Any, ...]:
    """Registry order of architectures, then width, sparsity value and strategy."""
    cell = data.cell
    spec = SPECS[cell.architecture].sparsity
    value = getattr(cell, spec.field)
    return (
        list(SPECS).index(cell.architecture),
        cell.expansion,
        value,
        _STRATEGY_ORDER.get(cell.strategy, 9),
    )


def card_rows(cells: list[CellData]) -> list[dict[str, str]]:
    """One row per trained cell (cells not run yet are left out: the grid table below lists them)."""
    rows = []
    for data in sorted(cells, key=_order):
        if data.metrics is None:
            continue
        figures: dict[str, Entry] = {
            "L0": figure_from(data, "analysis.json", "l0"),
            "explained var.": figure_from(data, "analysis.json", "explained_variance"),
            "CE loss recovered": ce_recovered(data),
            "never fired %": never_fired_pct(data),
            "dead %": dead_pct(data),
        }
        formats = {"L0": "{:.1f}", "explained var.": "{:.4f}", "CE loss recovered": "{:.4f}"}
        row = {
            "SAE (folder)": f"`saelens/{data.cell.name}/`",
            "architecture": data.cell.architecture,
            "width": _width(data),
            "sparsity": _sparsity(data),
            "strategy": data.cell.strategy,
        }
        row |= {key: format_entry(entry, formats.get(key, "{:.1f}")) for key, entry in figures.items()}
        row["monosemantic % (conservative)"] = _mono(data)
        row["detection / fuzzing (monosemantic)"] = _scores(data)
        rows.append(row)
    return rows


def card_notes(cells: list[CellData]) -> list[str]:
    """Why labels were skipped, once per distinct reason (the rows say `skipped`)."""
    reasons: dict[str, list[str]] = {}
    for data in cells:
        if data.metrics is None:
            continue
        rate = monosemanticity_pct(data)
        if rate.value is None and (rate.note or "").startswith("skipped"):
            reasons.setdefault(rate.note or "", []).append(data.cell.name)
    return [
        f"Labels {note} for {len(names)} of the SAEs." if len(names) > 1 else f"Labels {note} for {names[0]}."
        for note, names in reasons.items()
    ]


def card_legend(cells: list[CellData]) -> str:
    """What the columns were computed on, in words."""
    split = next((c.analysis.split for c in cells if c.analysis is not None and c.analysis.split), "test")
    return (
        f"L0, explained variance, never fired % (no activation > 0) and {dead_pct_caption(cells)} on the "
        f"held-out `{split}` split (the dead threshold in the units the analysis names); CE loss "
        "recovered = (CE with the residual zeroed − CE with the SAE spliced in) / (zeroed − clean) on the "
        "analysis's documents; "
        "monosemantic % = 1 − polysemantic / labelled (in parentheses, failed or flagged labels counted "
        "polysemantic); detection / fuzzing = mean class-balanced accuracy of the features labelled "
        "monosemantic, on held-out examples (n/a: not scored)."
    )


def loading_snippet(repo_id: str | None, cell_name: str) -> str:
    """How to load one SAE with SAELens and the study's `.pth` with torch."""
    repo = repo_id or "<repo_id>"
    return (
        "```python\n"
        "from huggingface_hub import snapshot_download\n"
        "from sae_lens import SAE\n\n"
        f'path = snapshot_download("{repo}", allow_patterns=["saelens/{cell_name}/*"])\n'
        f'sae = SAE.load_from_disk(f"{{path}}/saelens/{cell_name}", device="cpu")\n'
        "latents = sae.encode(activations)  # activations: the residual stream "
        "training_config.json names\n"
        "```\n"
    )
