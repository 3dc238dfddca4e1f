"""The `frontier` preset end to end, cut short (issue 13 item 8): the five architectures with the strategies
each takes, through the real Prefect flow on the tiny model; every cell trains, the report compares the
architectures, and every cell's SAELens export loads in SAELens with our encode and decode."""

from __future__ import annotations

import json

import pytest
import torch

from sae_core.architectures import SPECS
from sae_core.config import load_config, preset_names
from sae_core.naming import grid_cells
from sae_core.report.frontier import FRONTIER_PLOTS
from sae_core.report.render import ARCHITECTURES_TITLE
from tasks.paths import run_dir, sweep_dir

pytestmark = pytest.mark.slow

SHORT = {
    "grid.expansion_factors": [2],
    "grid.l1_coefficients": [0.01],
    "grid.k_values": [4],
    "grid.l0_coefficients": [0.01],
    # sampling runs resampling on every architecture, auxk the TopK family's loss: 8 cells
    "grid.strategies": ["sampling", "auxk"],
}


def test_frontier_preset_is_shipped_with_every_architecture():
    cfg = load_config("frontier")
    assert "frontier" in preset_names()
    assert cfg.grid.architectures == ["relu", "topk", "batchtopk", "jumprelu", "matryoshka"]
    assert set(cfg.grid.architectures) == set(SPECS)
    assert cfg.grid.strategies == ["nosampling", "sampling", "auxk"]
    demo = load_config("demo")
    # the demo's model, corpus and extraction: its activation store is the demo's
    for section in ("model", "data", "extraction"):
        assert getattr(cfg, section) == getattr(demo, section), section
    names = [c.name for c in grid_cells(cfg.grid)]
    assert len(names) == 26 and "4x_matryoshka48_auxk" in names and "4x_topk16_auxk" in names
    assert "4x_jumprelu0.001_sampling" in names


def test_frontier_short_run_trains_reports_and_exports_every_architecture(
    prefect_client, tiny_sweep_factory, tmp_path
):
    sae_lens = pytest.importorskip("sae_lens", reason="SAELens is the `interop` extra")
    from flows.sweep import sae_sweep
    from sae_core.saes.export import load_run
    from sae_core.store import ActivationStore
    from tasks.upload import planned_files

    overrides = {**tiny_sweep_factory(tmp_path / "data"), **SHORT}
    cfg = load_config("frontier", None, overrides)
    cells = grid_cells(cfg.grid)
    assert sorted(c.name for c in cells) == sorted(
        ["2x_0.01_sampling", "2x_jumprelu0.01_sampling"]
        + [f"2x_{a}4_{s}" for a in ("topk", "batchtopk", "matryoshka") for s in ("sampling", "auxk")]
    )
    assert "model_weights_2x_topk4_auxk.pth" in {c.weights_filename for c in cells}
    state = sae_sweep(preset="frontier", overrides=overrides, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["failed"] == [] and set(summary["cells"]) == {c.name for c in cells}

    (store_path,) = (tmp_path / "data" / "activations").iterdir()
    x = ActivationStore.open(store_path).sample(64, split="test", seed=1)
    for cell in cells:
        out = run_dir(cfg, cell)
        ours, metrics = load_run(out)
        assert ours.architecture == cell.architecture and metrics["completed"], cell.name
        assert (out / "analysis.json").is_file() and (out / "browser.html").is_file(), cell.name
        # what the Hub upload would push: the study's file naming extended, one folder per cell
        files = planned_files(out, cell)
        assert {cell.weights_filename, f"saelens/{cell.name}/cfg.json", f"browser/{cell.name}/browser.html",
                f"metrics/{cell.name}/analysis.json"} <= set(files), cell.name  # fmt: skip
        theirs = sae_lens.SAE.load_from_disk(str(out / "saelens"), device="cpu")
        with torch.no_grad():
            h_ours, h_theirs = ours.encode(x), theirs.encode(x)
            assert (h_ours != 0).equal(h_theirs != 0), cell.name
            assert torch.allclose(h_ours, h_theirs, rtol=0, atol=1e-4), cell.name
            assert torch.allclose(ours.decode(h_ours), theirs.decode(h_ours), rtol=0, atol=1e-4), cell.name

    report = sweep_dir(cfg) / "report"
    doc = json.loads((report / "tables.json").read_text())
    arch = doc["architectures"]
    rows = arch["tables"]["dead_pct_by_architecture"]["rows"]
    assert [r["architecture"] for r in rows] == ["relu", "topk", "batchtopk", "jumprelu", "matryoshka"]
    assert {r["architecture"] for r in doc["cells"]} == set(SPECS)
    md = (report / "report.md").read_text()
    assert f"## {ARCHITECTURES_TITLE}" in md
    for file, _, _ in FRONTIER_PLOTS:
        assert (report / file).is_file() and f"]({file})" in md
