"""What the report says about the tokens behind its figures: the rows each store leaves out (one line per
store, per rule with its definition), and the cells whose explained variance is suspect — negative, or
jumping against a neighbouring cell — with the rows that carry it (analysis.json's `error_carriers`),
and the cells whose error is mostly a constant offset (`error_mean_share`).

Neighbouring cells: the same architecture, strategy and expansion factor at adjacent sparsity settings
(λ for relu, k for topk/batchtopk, the L0 coefficient for jumprelu, in sorted order), or the same
architecture, strategy and sparsity at adjacent expansion factors. A jump: their EVs differ by more
than `JUMP_EV`, or the cell with the larger L0 has an EV lower by more than `AGAINST_L0_EV` (more
active latents reconstruct at least as well unless a few rows decide the figure, as sinks did on
SmolLM2: −2.8 beside 0.6 at similar L0).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from sae_core.report.cells import CellData
from sae_core.rundir import Analysis

JUMP_EV = 0.5
"""|ΔEV| between neighbouring cells above which the pair is flagged whatever their L0."""
AGAINST_L0_EV = 0.05
"""EV drop, from the neighbour with the smaller L0 to the one with the larger, above which it is flagged."""
CARRIERS_SHOWN = 3
MEAN_OFFSET_SHARE = 0.25
"""Share of Σ‖x − x̂‖² in the error's mean (analysis.json's `error_mean_share`) above which a cell is
flagged: its reconstruction is off by a constant, the decoder bias far from the data's mean."""

NEIGHBOURS = (
    "neighbouring cells share architecture, strategy and expansion at adjacent sparsity settings, or "
    "architecture, strategy and sparsity at adjacent expansions"
)
JUMP = (
    f"a jump is |ΔEV| > {JUMP_EV} between neighbours, or an EV lower by > {AGAINST_L0_EV} in the "
    "neighbour with the larger L0"
)


def left_out_lines(cells: list[CellData]) -> list[str]:
    """One line per store the cells were analysed on: rows left out of each split, per rule."""
    by_store: dict[str, dict[str, Any]] = {}
    for c in cells:
        if c.analysis is not None and c.analysis.left_out:
            by_store.setdefault(str(c.analysis.store), c.analysis.left_out)
    lines = []
    for store, splits in sorted(by_store.items()):
        rules: dict[str, str] = {}
        for info in splits.values():
            rules.update(info.get("definitions") or {})
        if not rules:
            lines.append(f"Store `{store}`: no rows left out (every token of every split is read).")
            continue
        names = list(splits)
        per_rule = {r: "/".join(f"{splits[s]['left_out'].get(r, 0):,}" for s in names) for r in rules}
        counts = "; ".join(f"{rule} {per_rule[rule]} ({text})" for rule, text in rules.items())
        totals = "/".join(f"{splits[s]['rows_in_split']:,}" for s in names)
        lines.append(
            f"Store `{store}`: rows left out of every figure, {'/'.join(names)} splits "
            f"(of {totals} rows): {counts}."
        )
    return lines


def ev_flags(cells: list[CellData]) -> list[str]:
    """One line per flagged cell: why (negative EV, jump against which neighbour) and its carriers."""
    ev = {c.cell.name: _number(c.analysis, "explained_variance") for c in cells}
    l0 = {c.cell.name: _number(c.analysis, "l0") for c in cells}
    reasons: dict[str, list[str]] = {}
    for c in cells:
        value = ev[c.cell.name]
        if value is not None and value < 0:
            reasons.setdefault(c.cell.name, []).append(f"negative EV {value:.3f}")
        offset = _number(c.analysis, "error_mean_share")
        if offset is not None and offset > MEAN_OFFSET_SHARE:
            reasons.setdefault(c.cell.name, []).append(
                f"{_pct(offset)} of Σ‖x − x̂‖² is a constant offset (the mean of x − x̂ over the tokens): "
                "the decoder bias is far from the data's mean (`training.b_dec_init: mean` starts it there)"
            )
    for a, b in _neighbour_pairs(cells):
        ea, eb = ev[a.cell.name], ev[b.cell.name]
        if ea is None or eb is None:
            continue
        la, lb = l0[a.cell.name], l0[b.cell.name]
        against = la is not None and lb is not None and (ea - eb) * (la - lb) < 0
        if abs(ea - eb) > JUMP_EV or (against and abs(ea - eb) > AGAINST_L0_EV):
            lower, higher = (a, b) if ea < eb else (b, a)
            why = (
                f"EV {ev[lower.cell.name]:.3f} against {ev[higher.cell.name]:.3f} in neighbour "
                f"{higher.cell.name}" + (" at a smaller L0" if against else "")
            )
            reasons.setdefault(lower.cell.name, []).append(why)
    by_name = {c.cell.name: c for c in cells}
    return [f"{name}: {'; '.join(why)}. {carriers_text(by_name[name])}" for name, why in reasons.items()]


def carriers_text(cell: CellData) -> str:
    carriers = (cell.analysis.error_carriers if cell.analysis is not None else None) or {}
    rows = carriers.get("rows") or []
    if not rows:
        return "Its analysis.json names no error carriers (analysed before they were recorded)."
    shown = ", ".join(
        f"doc {r['doc_id']} pos {r['pos']} {r.get('token', r['token_id'])!r} norm {r['norm']:.4g} "
        f"({_pct(r.get('share_of_error'))} of Σ‖x − x̂‖², {_pct(r.get('share_of_variance'))} of the variance)"
        for r in rows[:CARRIERS_SHOWN]
    )
    without = carriers.get("explained_variance_without")
    rest = "" if without is None else f"; EV without the top {len(rows)} rows {without:.3f}"
    return f"Rows carrying it: {shown}{rest}."


def _neighbour_pairs(cells: list[CellData]) -> list[tuple[CellData, CellData]]:
    pairs: list[tuple[CellData, CellData]] = []
    present = [c for c in cells if c.analysis is not None]
    for along, fixed in ((_sparsity, lambda c: c.cell.expansion), (lambda c: c.cell.expansion, _sparsity)):
        pairs += _adjacent(present, along, fixed)
    return pairs


def _adjacent(
    cells: list[CellData], along: Callable[[CellData], float], fixed: Callable[[CellData], float]
) -> list[tuple[CellData, CellData]]:
    groups: dict[tuple[Any, ...], list[CellData]] = {}
    for c in cells:
        groups.setdefault((c.cell.architecture, c.cell.strategy, fixed(c)), []).append(c)
    out = []
    for members in groups.values():
        out += list(itertools.pairwise(sorted(members, key=along)))
    return out


def _sparsity(c: CellData) -> float:
    cell = c.cell
    if cell.k is not None:
        return float(cell.k)
    if cell.l0 is not None:
        return float(cell.l0)
    return float(cell.l1)


def _number(analysis: Analysis | None, key: str) -> float | None:
    value = getattr(analysis, key, None) if analysis is not None else None
    return float(value) if isinstance(value, int | float) else None


def _pct(value: Any) -> str:
    return "?" if not isinstance(value, int | float) else f"{100 * value:.1f} %"
