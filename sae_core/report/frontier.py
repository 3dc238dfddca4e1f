"""The sparsity/fidelity frontier across architectures (issue 13): L0 against explained variance and
against CE loss recovered, one curve per architecture × strategy (its cells sorted by L0), one panel
per width, L0 on a log axis. Drawn only when the sweep has a cell other than the study's relu.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from sae_core.architectures import SPECS
from sae_core.io import atomic_write_bytes
from sae_core.report.cells import CellData, ce_recovered, figure_from
from sae_core.report.compare import ARCHITECTURE_ORDER, STRATEGY_ORDER, compares_architectures
from sae_core.report.plots import Plot, log_ticks

_TITLE = "Sparsity vs fidelity by architecture: L0 vs "
FRONTIER_PLOTS = (
    ("frontier_explained_variance.png", "explained variance", _TITLE + "explained variance"),
    ("frontier_ce_recovered.png", "CE loss recovered", _TITLE + "CE loss recovered"),
)
"""(file, y-axis label, title) of each frontier plot."""

_COLORS = {name: s.color for name, s in SPECS.items()}
"""Each architecture's colour, from the registry (`sae_core.architectures`)."""
_STYLES = {
    "nosampling": {"linestyle": "--", "marker": "s"},
    "sampling": {"linestyle": "-", "marker": "o"},
    "auxk": {"linestyle": ":", "marker": "^"},
}


def frontier_points(
    cells: list[CellData], metric: str
) -> dict[int, dict[tuple[str, str], list[tuple[float, float]]]]:
    """width → (architecture, strategy) → [(L0, metric)] sorted by L0; cells lacking either are left out.
    `metric`: `explained variance` or `CE loss recovered`."""
    out: dict[int, dict[tuple[str, str], list[tuple[float, float]]]] = {}
    for data in cells:
        l0 = figure_from(data, "analysis.json", "l0").value
        if metric == "explained variance":
            y = figure_from(data, "analysis.json", "explained_variance").value
        else:
            y = ce_recovered(data).value
        if l0 is None or y is None:
            continue
        key = (data.cell.architecture, data.cell.strategy)
        out.setdefault(data.cell.expansion, {}).setdefault(key, []).append((l0, y))
    for curves in out.values():
        for points in curves.values():
            points.sort()
    return out


def frontier_plots(cells: list[CellData], out: Path) -> list[Plot]:
    """Write the frontier PNGs that have data into `out`; none for a relu-only sweep."""
    if not compares_architectures(cells):
        return []
    plots = []
    for file, ylabel, title in FRONTIER_PLOTS:
        points = frontier_points(cells, ylabel)
        if points:
            buffer = BytesIO()
            frontier_curves(points, ylabel).savefig(buffer, format="png", dpi=110, bbox_inches="tight")
            atomic_write_bytes(out / file, buffer.getvalue())
            plots.append(Plot(file, title))
    return plots


def _order(key: tuple[str, str]) -> tuple[int, int]:
    return ARCHITECTURE_ORDER.index(key[0]), STRATEGY_ORDER.index(key[1])


def frontier_curves(
    points: dict[int, dict[tuple[str, str], list[tuple[float, float]]]], ylabel: str
) -> Figure:
    """One panel per width; colour = architecture, line and marker = strategy."""
    widths = sorted(points)
    fig = Figure(figsize=(5.6 * min(len(widths), 2), 4.0 * ((len(widths) + 1) // 2)))
    for i, width in enumerate(widths):
        ax: Any = fig.add_subplot((len(widths) + 1) // 2, min(len(widths), 2), i + 1)
        for key in sorted(points[width], key=_order):
            xs, ys = zip(*points[width][key], strict=True)
            ax.plot(
                xs,
                ys,
                color=_COLORS[key[0]],
                label=f"{key[0]} {key[1]}",
                linewidth=1.2,
                markersize=5,
                **_STYLES[key[1]],
            )
        l0s = [x for curve in points[width].values() for x, _ in curve]
        if all(x > 0 for x in l0s):
            low, high = min(l0s) / 1.25, max(l0s) * 1.25
            ax.set_xscale("log")
            ax.set_xlim(low, high)
            ticks = log_ticks(low, high)
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
        ax.set_title(f"{width}x", fontsize=9)
        ax.set_xlabel("L0 (active features per token, log)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig
