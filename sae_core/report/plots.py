"""The report's plots (matplotlib, PNG, no display needed): each returns None when it has no data.

Figures are built with `matplotlib.figure.Figure` rather than pyplot, so nothing global (a backend, an
open-figure registry) is touched and the report can be built from any thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq
from matplotlib.figure import Figure

from sae_core.io import atomic_write_bytes
from sae_core.naming import format_l1
from sae_core.rundir import RunDir

if TYPE_CHECKING:
    from sae_core.report.cells import CellData

log = logging.getLogger(__name__)

PLOT_STEPS = 5


@dataclass(frozen=True)
class Plot:
    file: str
    title: str


def make_plots(
    cells: list[CellData], tables: dict[str, Any], out: Path, progress: Callable[[int], None]
) -> list[Plot]:
    """Draw every plot that has data into `out`; return them in report order. The study's dead % and
    frontier plots are by λ: relu cells only (the architectures have their own, `report.frontier`)."""
    study = [c for c in cells if c.cell.architecture == "relu"]
    makers = [
        (
            "dead_vs_expansion.png",
            "Dead % vs expansion, per λ and strategy",
            lambda: _dead_vs_expansion(study, tables),
        ),
        ("frontier.png", "Sparsity vs fidelity: L0 vs explained variance", lambda: _frontier(study)),
        ("loss_curves.png", "Training loss (× = resampling event)", lambda: _loss_curves(cells)),
        (
            "density.png",
            "Feature density histograms (log10 firing rate, alive features)",
            lambda: _density(cells),
        ),
    ]
    plots = []
    for i, (file, title, make) in enumerate(makers, start=1):
        fig = make()
        if fig is not None:
            _save(fig, out / file)
            plots.append(Plot(file, title))
        progress(i)
    plots += _copy_correlation_heatmaps(cells, out)
    progress(PLOT_STEPS)
    return plots


def _save(fig: Figure, path: Path) -> None:
    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def _style(strategy: str) -> dict[str, Any]:
    return {"linestyle": "-", "marker": "o"} if strategy == "sampling" else {"linestyle": "--", "marker": "s"}


def _dead_vs_expansion(cells: list[CellData], tables: dict[str, Any]) -> Figure | None:
    from sae_core.report.cells import dead_pct, dead_pct_caption

    series: dict[tuple[float, str], list[tuple[int, float]]] = {}
    for data in cells:
        value = dead_pct(data).value
        if value is not None:
            series.setdefault((data.cell.l1, data.cell.strategy), []).append((data.cell.expansion, value))
    if not series:
        return None
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    colors = _colors(sorted({k[0] for k in series}, reverse=True))
    for (l1, strategy), points in sorted(series.items()):
        xs, ys = zip(*sorted(points), strict=True)
        ax.plot(xs, ys, color=colors[l1], label=f"λ={format_l1(l1)} {strategy}", **_style(strategy))
    for strategy in ("nosampling", "sampling"):
        table = tables.get(f"dead_pct_{strategy}")
        if not table or not table["published"]:
            continue
        for i, l1 in enumerate(table["rows"]):
            pts = [
                (c, p) for c, p in zip(table["columns"], table["published"][i], strict=True) if p is not None
            ]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(
                    xs,
                    ys,
                    color=colors.get(l1, "grey"),
                    alpha=0.35,
                    linewidth=3,
                    label=f"study λ={format_l1(l1)} {strategy}",
                    **_style(strategy),
                )
    ax.set_xscale("log", base=2)
    ticks = sorted({c.cell.expansion for c in cells})
    ax.set_xticks(ticks, [f"{e}x" for e in ticks])
    ax.minorticks_off()
    ax.set_xlabel("expansion factor")
    ax.set_ylabel(dead_pct_caption(cells))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return fig


def _frontier(cells: list[CellData]) -> Figure | None:
    from sae_core.report.cells import figure_from

    points = []
    for data in cells:
        l0 = figure_from(data, "analysis.json", "l0").value
        ev = figure_from(data, "analysis.json", "explained_variance").value
        if l0 is not None and ev is not None:
            points.append((data.cell, l0, ev))
    return frontier_figure(points) if points else None


def frontier_figure(points: list[tuple[Any, float, float]]) -> Figure:
    """L0 vs explained variance, one marker per (cell, l0, ev), each labelled with its expansion where
    the label overlaps no other label or marker."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(7, 4.2))
    FigureCanvasAgg(fig)  # a renderer, to measure the labels
    ax = fig.add_subplot()
    colors = _colors(sorted({c.l1 for c, _, _ in points}, reverse=True))
    for cell, l0, ev in points:
        ax.scatter([l0], [ev], color=colors[cell.l1], marker=_style(cell.strategy)["marker"], s=40)
    for l1, color in colors.items():
        ax.scatter([], [], color=color, label=f"λ={format_l1(l1)}")
    ax.scatter([], [], color="k", marker="o", label="sampling")
    ax.scatter([], [], color="k", marker="s", label="nosampling")
    l0s = [l0 for _, l0, _ in points]
    if all(l0 > 0 for l0 in l0s):
        ax.set_xscale("log")
        # Matplotlib labels only powers of ten on a log axis: a range inside one decade got one or two.
        ax.set_xlim(min(l0s) / 1.25, max(l0s) * 1.25)
        ticks = log_ticks(min(l0s) / 1.25, max(l0s) * 1.25)
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel("L0 (active features per token)")
    ax.set_ylabel("explained variance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _place_labels(fig, ax, [(f"{cell.expansion}x", l0, ev) for cell, l0, ev in points])
    return fig


# Label positions tried around a marker, in points: right, left, above, below, then further out.
_OFFSETS = [(5, 2), (-5, 2), (0, 7), (0, -7), (5, -8), (-5, -8), (5, 10), (-5, 10), (12, 2), (-12, 2)]


def _place_labels(fig: Figure, ax: Any, labels: list[tuple[str, float, float]]) -> None:
    """Annotate each point at the first offset whose box overlaps no placed label and no other marker;
    a label that fits nowhere is left out (its marker stays; its twin's label names the expansion)."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    marker_boxes = [_box_around(ax.transData.transform((x, y)), 4.0) for _, x, y in labels]
    placed: list[Any] = []
    for i, (text, x, y) in enumerate(labels):
        for dx, dy in _OFFSETS:
            note = ax.annotate(
                text,
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=7,
                ha="left" if dx > 0 else "right" if dx < 0 else "center",
                va="bottom" if dy >= 0 else "top",
            )
            box = note.get_window_extent(renderer)
            others = [b for j, b in enumerate(marker_boxes) if j != i]
            if not any(box.overlaps(b) for b in [*placed, *others]) and _inside(box, ax, renderer):
                placed.append(box)
                break
            note.remove()


def _box_around(center: Any, half: float) -> Any:
    from matplotlib.transforms import Bbox

    return Bbox.from_extents(center[0] - half, center[1] - half, center[0] + half, center[1] + half)


def _inside(box: Any, ax: Any, renderer: Any) -> bool:
    frame = ax.get_window_extent(renderer)
    return frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1


def log_ticks(low: float, high: float, at_least: int = 4) -> list[float]:
    """Readable ticks for a log axis from `low` to `high`: 1-2-5 per decade, or a denser 1-1.5-2-3-5-7
    when that gives fewer than `at_least`."""
    for mantissas in ((1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [
            float(f"{m * 10.0**k:.6g}")
            for k in range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
            for m in mantissas
            if low <= m * 10.0**k <= high
        ]
        if len(ticks) >= at_least:
            break
    step = -(-len(ticks) // 8)  # at most 8 labels
    return ticks[::step]


def _read_log(data: CellData) -> Any:
    path = RunDir(data.path).train_log
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
        if not {"step", "kind", "loss"} <= set(table.column_names):
            log.warning("report: %s lacks step/kind/loss columns, no loss curve", path)
            return None
        wanted = [c for c in ("step", "kind", "loss", "neurons_resampled") if c in table.column_names]
        return table.select(wanted).to_pandas()
    except Exception as exc:  # a corrupt or foreign file must not sink the whole report
        log.warning("report: cannot read %s: %s", path, exc)
        return None


def _loss_curves(cells: list[CellData]) -> Figure | None:
    logs = [(d, df) for d in cells if (df := _read_log(d)) is not None and len(df)]
    if not logs:
        return None
    expansions = sorted({d.cell.expansion for d, _ in logs})
    fig = Figure(figsize=(4.2 * min(len(expansions), 4), 3.6 * ((len(expansions) + 3) // 4)))
    # relu cells by λ largest first (the study's colours), then the others by name
    order = sorted({(d.cell.architecture != "relu", -d.cell.l1, d.cell.sparsity_label) for d, _ in logs})
    colors = _colors([label for _, _, label in order])
    axes = {
        e: fig.add_subplot((len(expansions) + 3) // 4, min(len(expansions), 4), i + 1)
        for i, e in enumerate(expansions)
    }
    for data, df in logs:
        ax = axes[data.cell.expansion]
        train = df[df["kind"] == "train"].sort_values("step")
        style = {
            "linestyle": _style(data.cell.strategy)["linestyle"],
            "color": colors[data.cell.sparsity_label],
        }
        name = (
            f"λ={format_l1(data.cell.l1)}" if data.cell.architecture == "relu" else data.cell.sparsity_label
        )
        ax.plot(
            train["step"],
            train["loss"],
            label=f"{name} {data.cell.strategy}",
            linewidth=1,
            **style,
        )
        steps = _resample_steps(data, df)
        if len(steps) and len(train):
            ys = np.interp(steps, train["step"].to_numpy(float), train["loss"].to_numpy(float))
            ax.scatter(steps, ys, marker="x", color="k", s=30, zorder=3)
    for e, ax in axes.items():
        ax.set_title(f"{e}x", fontsize=9)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[expansions[0]].set_ylabel("training loss")
    fig.tight_layout()
    return fig


def _resample_steps(data: CellData, df: Any) -> np.ndarray:
    """Steps at which resampling revived neurons (checks that found none dead are not marked)."""
    if "neurons_resampled" in df.columns:
        rows = df[(df["kind"] == "resample") & (df["neurons_resampled"].fillna(0) > 0)]
        if len(rows):
            return rows["step"].to_numpy(float)
    events = data.metrics.resample_events if data.metrics else None
    if events is None:
        return np.array([])
    return np.array([e.step for e in events if (e.neurons or 0) > 0 and e.step is not None], dtype=float)


def _density(cells: list[CellData]) -> Figure | None:
    densities = []
    for data in cells:
        path = data.path / "features" / "feature_stats.parquet"
        if not path.is_file():
            continue
        try:
            table = pq.read_table(path, columns=["density", "dead"])
        except Exception as exc:  # see _read_log
            log.warning("report: cannot read %s: %s", path, exc)
            continue
        density = table.column("density").to_numpy(zero_copy_only=False).astype(float)
        dead = table.column("dead").to_numpy(zero_copy_only=False).astype(bool)
        densities.append((data.cell, density[(~dead) & (density > 0)], int(dead.sum()), len(dead)))
    if not densities:
        return None
    # One set of bins for every cell, so that the panels compare at a glance.
    logs = [np.log10(alive) for _, alive, _, _ in densities if len(alive)]
    low = min((x.min() for x in logs), default=-6.0)
    high = max((x.max() for x in logs), default=0.0)
    bins = np.linspace(low, high if high > low else low + 1.0, 41)
    ncols = min(len(densities), 4)
    nrows = (len(densities) + ncols - 1) // ncols
    fig = Figure(figsize=(3.4 * ncols, 2.6 * nrows))
    for i, (cell, alive, dead_count, total) in enumerate(densities):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        if len(alive):
            ax.hist(np.log10(alive), bins=bins.tolist(), color="#4477aa")
        ax.set_xlim(bins[0], bins[-1])
        ax.set_title(f"{cell.name}\n{dead_count}/{total} dead", fontsize=8)
        ax.set_xlabel("log10 density", fontsize=7)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def _copy_correlation_heatmaps(cells: list[CellData], out: Path) -> list[Plot]:
    plots = []
    for data in cells:
        source = data.path / "features" / "correlation.png"
        if source.is_file():
            file = f"correlation_{data.cell.name}.png"
            atomic_write_bytes(out / file, source.read_bytes())
            plots.append(Plot(file, f"Feature correlation heatmap (selected features): {data.cell.name}"))
    return plots


def _colors(values: list[Any]) -> dict[Any, str]:
    palette = ["#cc3311", "#0077bb", "#009988", "#ee7733", "#33bbee", "#aa3377", "#bbbbbb"]
    return {v: palette[i % len(palette)] for i, v in enumerate(values)}
