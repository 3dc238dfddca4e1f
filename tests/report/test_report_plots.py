"""The L0-vs-explained-variance plot: readable ticks on its log axis, cell labels that do not overlap.
The figure is saved to test-artifacts/ to look at."""

from __future__ import annotations

from pathlib import Path

from sae_core.naming import Cell
from sae_core.report.plots import frontier_figure, log_ticks

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# A demo-like grid: L0 within one decade, each sampling cell a hair away from its nosampling twin.
POINTS = {
    (2, 0.01, "nosampling"): (14.2, 0.71),
    (2, 0.01, "sampling"): (14.9, 0.715),
    (4, 0.01, "nosampling"): (17.1, 0.76),
    (4, 0.01, "sampling"): (17.4, 0.762),
    (2, 0.001, "nosampling"): (48.0, 0.90),
    (2, 0.001, "sampling"): (52.0, 0.905),
    (4, 0.001, "nosampling"): (61.0, 0.93),
    (4, 0.001, "sampling"): (66.0, 0.931),
}


def test_frontier_ticks_and_labels_are_readable():
    """Matplotlib labelled two ticks (10^1 and 10^2 at the edges) and the labels sat on each other."""
    fig = frontier_figure([(Cell(e, l1, s), l0, ev) for (e, l1, s), (l0, ev) in POINTS.items()])
    ARTIFACTS.mkdir(exist_ok=True)
    fig.savefig(ARTIFACTS / "frontier.png", dpi=110, bbox_inches="tight")
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    shown = [t for t in ax.get_xticklabels() if t.get_text() and low <= t.get_position()[0] <= high]
    assert len(shown) >= 4, [t.get_text() for t in shown]
    renderer = fig.canvas.get_renderer()
    boxes = [a.get_window_extent(renderer) for a in ax.texts]
    assert len(boxes) >= 6  # nearly every cell labelled
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_log_ticks_are_dense_enough_in_any_range():
    assert log_ticks(11, 82) == [15.0, 20.0, 30.0, 50.0, 70.0]
    assert log_ticks(3, 300) == [5.0, 10.0, 20.0, 50.0, 100.0, 200.0]
    assert len(log_ticks(40, 60)) >= 3
    assert len(log_ticks(0.5, 5000)) <= 9
