"""The study's grid tables (rows λ, largest first; columns expansion) and one row per cell, from the
report's `CellData`; the published numbers beside ours when asked."""

from __future__ import annotations

from typing import Any

from sae_core.report.cells import (
    CELL_METRICS,
    CellData,
    Entry,
    dead_pct,
    monosemanticity_conservative_pct,
    monosemanticity_pct,
)

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
