"""The report's architecture comparison (issue 13): present when a sweep trains more than the study's
ReLU-L1 SAE. Tables of dead % and monosemanticity by architecture, sparsity, strategy and width, and
the sentences that say what each figure was computed on. The study's own tables stay relu-only.
"""

from __future__ import annotations

from typing import Any

from sae_core.architectures import SPECS, STRATEGY_NAMES
from sae_core.config.architectures import STRATEGIES_BY_ARCHITECTURE
from sae_core.naming import Cell, format_l1
from sae_core.report.cells import (
    NEVER_FIRED_CAPTION,
    CellData,
    Entry,
    dead_pct,
    monosemanticity_pct,
    never_fired_pct,
)

ARCHITECTURE_ORDER = tuple(SPECS)
"""The registry's order (`sae_core.architectures`)."""
STRATEGY_ORDER = STRATEGY_NAMES

SPARSITY_NAMES = {name: s.sparsity.label for name, s in SPECS.items()}
"""What each architecture's sparsity parameter is called in the report."""

NOT_FOR_ARCHITECTURE = "n/a"
"""A strategy the architecture does not take (`auxk` is for the TopK family only)."""


def compares_architectures(cells: list[CellData]) -> bool:
    """The comparison sections appear when any cell is not the study's relu."""
    return any(c.cell.architecture != "relu" for c in cells)


def sparsity_value(cell: Cell) -> float:
    """The cell's sparsity parameter as a number (λ, k or the L0 coefficient)."""
    return cell.sparsity_value


def sparsity_text(cell: Cell) -> str:
    """`λ=0.01`, `k=32`, `L0 coeff=0.001`."""
    sparsity = cell.spec.sparsity
    value = getattr(cell, sparsity.field)
    return f"{sparsity.label}={value if sparsity.integer else format_l1(value)}"


def _arch_key(cell: Cell) -> tuple[int, float]:
    # sparsest first: penalties (relu's λ: the study's order) largest first, k smallest first
    order = ARCHITECTURE_ORDER.index(cell.architecture)
    value = sparsity_value(cell)
    return order, -value if cell.spec.sparsity.larger_is_sparser else value


def _by_sparsity_table(cells: list[CellData], title: str, reader: Any) -> dict[str, Any]:
    """Rows: architecture and sparsity (denser last within an architecture); columns: width × strategy."""
    widths = sorted({c.cell.expansion for c in cells})
    strategies = [s for s in STRATEGY_ORDER if any(c.cell.strategy == s for c in cells)]
    columns = [(w, s) for w in widths for s in strategies]
    by_key = {
        (c.cell.architecture, sparsity_value(c.cell), c.cell.expansion, c.cell.strategy): c for c in cells
    }
    row_cells = sorted({_row_cell(c.cell) for c in cells}, key=_arch_key)
    values, notes = [], []
    for rc in row_cells:
        entries = []
        for width, strategy in columns:
            data = by_key.get((rc.architecture, sparsity_value(rc), width, strategy))
            if strategy not in STRATEGIES_BY_ARCHITECTURE[rc.architecture]:
                entries.append(Entry(None, NOT_FOR_ARCHITECTURE))
            elif data is None:
                entries.append(Entry(None, "missing (not in grid)"))
            else:
                entries.append(reader(data))
        values.append([e.value for e in entries])
        notes.append([e.note for e in entries])
    return {
        "title": title,
        "rows": [{"architecture": rc.architecture, "sparsity": sparsity_text(rc)} for rc in row_cells],
        "columns": [{"expansion": w, "strategy": s} for w, s in columns],
        "values": values,
        "notes": notes,
    }


def _row_cell(cell: Cell) -> Cell:
    """The cell's row identity: architecture and sparsity (width and strategy fixed to one value)."""
    return Cell(
        1, cell.l1, STRATEGIES_BY_ARCHITECTURE[cell.architecture][0], cell.architecture, cell.k, cell.l0
    )


def comparison_tables(cells: list[CellData], dead_caption: str) -> dict[str, dict[str, Any]]:
    """The architecture sections' tables (empty for a relu-only sweep): never-fired % — the dead
    figure that compares across architectures — and dead % above the threshold always, monosemanticity
    when at least one cell has a rate (labelled). An absolute threshold judges L1-shrunk ReLU
    activations and unshrunk TopK/JumpReLU ones alike, so only never-fired (no activation > 0 on the
    same tokens) is free of shrinkage."""
    if not compares_architectures(cells):
        return {}
    tables = {
        "never_fired_pct_by_architecture": _by_sparsity_table(
            cells,
            f"Dead by architecture, strategy and width: {NEVER_FIRED_CAPTION} — the comparable figure "
            "(independent of the threshold and of L1 shrinkage)",
            never_fired_pct,
        ),
        "dead_pct_by_architecture": _by_sparsity_table(
            cells,
            f"Dead % by architecture, strategy and width — {dead_caption} (confounded across "
            "architectures: the threshold is absolute and ReLU's activations are L1-shrunk)",
            dead_pct,
        ),
    }
    if any(monosemanticity_pct(c).value is not None for c in cells):
        tables["monosemanticity_pct_by_architecture"] = _by_sparsity_table(
            cells, "Monosemanticity % by architecture, strategy and width", monosemanticity_pct
        )
    return tables


def computed_on(cells: list[CellData], dead_caption: str) -> str:
    """One paragraph naming the token sets behind L0, explained variance, CE loss recovered, dead % and
    monosemantic % (read from the cells' analysis.json and labels.json)."""
    analyses = [c.analysis for c in cells if c.analysis is not None]
    splits = sorted({a.split for a in analyses if a.split})
    tokens = sorted({a.tokens_analyzed for a in analyses if a.tokens_analyzed is not None})
    ce = [a.ce_loss for a in analyses if a.ce_loss is not None]
    docs = sorted({x.documents for x in ce if x.documents is not None})
    ce_tokens = sorted({x.tokens for x in ce if x.tokens is not None})
    split = "/".join(splits) or "analysis"
    return (
        f"L0 (mean active features per token) and explained variance: on the {split} split "
        f"({_counts(tokens)} tokens per cell). CE loss recovered: the language model's next-token loss with "
        f"the SAE's reconstruction spliced in, on {_counts(docs)} {split} documents ({_counts(ce_tokens)} "
        f"tokens); (zero-ablation − SAE) / (zero-ablation − clean). "
        f"{dead_caption}: see the opening paragraph; across architectures compare {NEVER_FIRED_CAPTION}, "
        "which does not depend on the threshold or on shrinkage. "
        "Monosemantic %: of the labelled selected features (top and bottom by selectivity), "
        "1 − polysemantic / labelled. "
        f"Sparsity parameter: {_sparsity_sentence()}. "
        "n/a: a strategy the architecture does not take (auxk is for "
        f"{' and '.join(a for a, s in STRATEGIES_BY_ARCHITECTURE.items() if 'auxk' in s)} only)."
    )


def _sparsity_sentence() -> str:
    """`λ (relu: the L1 penalty coefficient), k (topk/batchtopk: active latents per token), …`."""
    by_label: dict[str, list[str]] = {}
    units: dict[str, str] = {}
    for name, spec in SPECS.items():
        by_label.setdefault(spec.sparsity.label, []).append(name)
        units[spec.sparsity.label] = spec.sparsity.units
    return ", ".join(f"{label} ({'/'.join(archs)}: {units[label]})" for label, archs in by_label.items())


def _counts(values: list[int]) -> str:
    if not values:
        return "?"
    return f"{values[0]:,}" if len(values) == 1 else f"{values[0]:,}–{values[-1]:,}"
