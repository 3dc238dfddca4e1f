"""The UI's grid table and the Hub model card for a grid of several architectures: every cell shows (the
table read relu cells only, so a `frontier` sweep's grid artifact and model card left out 16 of its 20
cells), and the card names the other architectures' weight files."""

from __future__ import annotations

import json

from sae_core.config import load_config
from sae_core.naming import grid_cells
from tasks.paths import run_dir, sweep_dir
from tasks.summary import grid_legend, grid_table
from tasks.upload import model_card
from tests.report.test_report_data import fabricate_cell

GRID = {
    "grid.expansion_factors": [4],
    "grid.architectures": ["relu", "topk", "batchtopk", "jumprelu"],
    "grid.l1_coefficients": [0.01],
    "grid.k_values": [16, 48],
    "grid.l0_coefficients": [0.01],
    "grid.strategies": ["nosampling", "sampling", "auxk"],
}


def test_grid_table_has_a_row_per_architecture_sparsity_and_width(tmp_path):
    cfg = load_config("demo", overrides={"data_root": str(tmp_path), **GRID})
    for i, cell in enumerate(grid_cells(cfg.grid)):
        if cell.name != "4x_topk48_sampling":  # a cell that failed: its value reads missing
            fabricate_cell(sweep_dir(cfg), cell, seed=i)
    rows, _ = grid_table(cfg)
    assert [(r["SAE"], r["exp."]) for r in rows] == [
        ("λ=0.01", "4x"), ("topk k=16", "4x"), ("topk k=48", "4x"), ("batchtopk k=16", "4x"),
        ("batchtopk k=48", "4x"), ("jumprelu L0 coeff=0.01", "4x"),
    ]  # fmt: skip

    def dead(name: str) -> str:
        path = run_dir(cfg, next(c for c in grid_cells(cfg.grid) if c.name == name)) / "analysis.json"
        return f"{100 * json.loads(path.read_text())['dead_fraction']:.1f}"

    topk16 = rows[1]
    assert topk16["dead %"] == " / ".join(dead(f"4x_topk16_{s}") for s in ("nosampling", "sampling", "auxk"))
    assert rows[2]["dead %"].split(" / ")[1] == "missing"
    # relu and jumprelu take no auxk: their third value is —
    assert rows[0]["dead %"].endswith(" / —") and rows[5]["L0"].endswith(" / —")
    assert "nosampling / sampling / auxk" in grid_legend(cfg)


def test_model_card_names_every_architectures_weights_only_when_there_are_several(tmp_path):
    several = load_config("demo", overrides={"data_root": str(tmp_path), **GRID})
    card = model_card(several)
    assert "model_weights_8x_topk32_auxk.pth" in card and "jumprelu L0 coeff=0.01" in card
    study = load_config("demo", overrides={"data_root": str(tmp_path)})
    assert "topk" not in model_card(study)
