"""A demo sweep with a relu and two topk cells (nosampling, auxk) through Prefect: every cell trains,
exports, is analysed and appears in the report; the study's λ tables keep the relu cells only."""

from __future__ import annotations

import pytest

from sae_core.config import load_config
from sae_core.naming import Cell
from tasks.paths import run_dir, sweep_dir

pytestmark = pytest.mark.slow


def test_a_sweep_with_two_architectures_runs_every_stage(prefect_client, tiny_sweep_factory, tmp_path):
    from flows.sweep import sae_sweep

    overrides = {
        **tiny_sweep_factory(tmp_path / "data"),
        "grid.architectures": ["relu", "topk"],
        "grid.strategies": ["nosampling", "auxk"],
        "grid.k_values": [4],
    }
    cfg = load_config("demo", None, overrides)
    cells = [
        Cell(2, 0.01, "nosampling"),
        Cell(2, 0.0, "nosampling", "topk", k=4),
        Cell(2, 0.0, "auxk", "topk", k=4),
    ]
    state = sae_sweep(preset="demo", overrides=overrides, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["failed"] == [] and set(summary["cells"]) == {c.name for c in cells}
    for cell in cells:
        out = run_dir(cfg, cell)
        assert (out / cell.weights_filename).is_file() and (out / "analysis.json").is_file()
    report = (sweep_dir(cfg) / "report" / "report.md").read_text()
    assert "2x_topk4_auxk" in report  # the per-cell table lists every cell
    # the study's λ tables hold the relu cells only: no λ = 0 row (a topk cell has no λ)
    assert not [line for line in report.splitlines() if line.startswith("| 0.0 |")]
