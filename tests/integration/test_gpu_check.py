"""The device check (benchmarks/gpu/check.sh) runs end to end in its CPU smoke version, so that the
script a GPU session runs first cannot rot between the sessions that have a device."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_check_script_cpu_smoke_writes_every_figure(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "WHEELS": str(tmp_path / "no-wheels")}
    run = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu" / "check.sh"), "--cpu"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert figures["mode"] == "cpu-smoke"
    assert set(figures["train"]) == {"4x", "8x"}
    for row in figures["train"].values():
        assert row["eager_b32"] > 0 and row["fp32_b4096"] > 0
        assert isinstance(row["captured_b32"], (float, str))
        for cells in (4, 16):  # packed rows measured (they printed "not built" before grid.pack)
            assert row[f"packed{cells}_b32"] > 0
            assert row[f"packed{cells}_b32_total"] == row[f"packed{cells}_b32"] * cells
        for arch in ("topk", "batchtopk"):  # eager here; captured on CUDA only
            assert row[f"{arch}_eager_b32"] > 0 and row[f"{arch}_captured_b32"] == "n/a: CUDA only"
    assert figures["extract"]["tokens"] > 0
    assert figures["extract"]["ours_tok_s"] > 0 and figures["extract"]["study_tok_s"] > 0
    # The deployed path: one pack of seed cells (one per width) through train_pack, then each analysed.
    pack = figures["deployed_pack"]
    assert pack["cells"] == ["4x_0.01_nosampling", "8x_0.01_sampling"]
    for name, cell in pack["per_cell"].items():
        assert cell["steps"] == pack["steps"] and cell["analysis_wall_s"] > 0, name
        assert cell["explained_variance"] is not None
    for width, fig in figures["analyze"].items():
        assert fig["cell"].startswith(width) and fig["tokens_read"] > 2 * fig["tokens"] > 0
        assert fig["tok_s"] > 0
    work = figures["seed_work"]  # the seed preset's figures, the smoke's two widths of its four
    assert len(work["cells"]) == 8 and len(work["cells_left_out"]) == 8
    assert work["steps"] == 20 * -(-work["train_tokens"] // 32)
    assert sorted(n for p in work["packs"] for n in p) == sorted(c["name"] for c in work["cells"])
    hours = figures["projection_hours"]
    trained = [v for k, v in hours.items() if k.startswith("train_")]
    assert hours["train_eager_b32_h"] > 0 and hours["train_packed_h"] > 0 and hours["analyze_h"] > 0
    assert "train_captured_b32_h" not in hours  # not measured off CUDA: left out, not guessed
    assert hours["grid_best_h"] == pytest.approx(min(trained) + hours["extract_h"] + hours["analyze_h"])
    log = (tmp_path / "check.log").read_text()
    assert "cuda tests: skipped (--cpu)" in log and "projected seed grid" in log
    assert "rates 4x:" in log and "deployed pack: 2 cells" in log
