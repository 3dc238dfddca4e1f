"""The device check (benchmarks/gpu/check.sh) runs end to end in its CPU smoke version, so that the
script a GPU session runs first cannot rot between the sessions that have a device."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
    assert figures["extract"]["tokens"] > 0
    assert figures["extract"]["ours_tok_s"] > 0 and figures["extract"]["study_tok_s"] > 0
    assert figures["analyze"]["tokens"] > 0 and figures["analyze"]["tok_s"] > 0
    hours = figures["projection_hours"]
    trained = [v for k, v in hours.items() if k.startswith("train_")]
    assert hours["train_eager_b32_h"] > 0 and hours["train_packed4_b32_h"] > 0
    assert hours["grid_best_h"] >= min(trained)
    log = (tmp_path / "check.log").read_text()
    assert "cuda tests: skipped (--cpu)" in log and "projected seed grid" in log
