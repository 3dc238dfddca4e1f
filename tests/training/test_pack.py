"""Packed training (`grid.pack`): a packed cell equals the same cell trained alone, bit for bit on a CPU
(weights, metrics.json, train_log, resampling events); a partly done pack trains only its missing cells;
a killed pack resumes every cell from its own checkpoint to the uninterrupted result; the memory plan
splits a pack over its budget and logs the split; `training.capture` is refused on a CPU."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from sae_core.config import TrainingConfig
from sae_core.errors import TrainingError
from sae_core.io import read_json
from sae_core.naming import Cell
from sae_core.training import InMemoryData, TrainCallback, Trainer, pack_enabled, train_cell, train_pack
from sae_core.training.architectures import build_sae
from sae_core.training.checkpoint import CHECKPOINT_NAME
from sae_core.training.pack_memory import cell_bytes, evaluation_bytes, split_pack
from tests.fixtures_sae import small_config

pytestmark = pytest.mark.usefixtures("single_thread")

# Two relu widths and strategies and a TopK cell: a mixed pack.
CELLS = [
    Cell(2, 0.02, "sampling"),
    Cell(4, 0.01, "nosampling"),
    Cell(4, 0.02, "sampling"),
    Cell(2, 0.0, "nosampling", "topk", k=4),
]
TIMING = ("wall_time_s", "tokens_per_s")  # wall-clock figures: the only keys allowed to differ


def _dirs(root: Path) -> dict[str, Path]:
    return {c.name: root / c.name for c in CELLS}


@pytest.fixture(scope="module")
def solo(sae_store, tmp_path_factory) -> Path:
    """Every cell of CELLS trained alone (`train_cell`), the reference."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("solo")
    for cell in CELLS:
        train_cell(sae_store, cell, small_config(), root / cell.name)
    return root


def assert_same_run(a: Path, b: Path, cell: Cell) -> None:
    wa, wb = torch.load(a / cell.weights_filename), torch.load(b / cell.weights_filename)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), f"{cell.name}: {key} differs"
    ma, mb = read_json(a / "metrics.json"), read_json(b / "metrics.json")
    for key in TIMING:
        ma.pop(key), mb.pop(key)
    assert ma == mb
    pd.testing.assert_frame_equal(
        pd.read_parquet(a / "train_log.parquet"), pd.read_parquet(b / "train_log.parquet")
    )
    for name in ("sae_weights.safetensors", "sparsity.safetensors"):
        assert (a / "saelens" / name).read_bytes() == (b / "saelens" / name).read_bytes()


class _Starts(TrainCallback):
    def __init__(self, log: list, name: str) -> None:
        self.log, self.name = log, name

    def on_start(self, total_steps, info):
        self.log.append((self.name, info["resumed_from"]))


def test_packed_cells_equal_the_same_cells_trained_alone(sae_store, solo, tmp_path):
    results = train_pack(sae_store, CELLS, small_config(), _dirs(tmp_path))
    assert set(results) == {c.name for c in CELLS}
    for cell in CELLS:
        assert_same_run(solo / cell.name, tmp_path / cell.name, cell)
        assert not (tmp_path / cell.name / CHECKPOINT_NAME).exists()
    resampled = read_json(tmp_path / CELLS[0].name / "metrics.json")["resample_events"]
    assert [e["step"] for e in resampled] == [20, 40, 60]  # resampling happened, per cell


def test_a_partly_done_pack_trains_only_its_missing_cells(sae_store, solo, tmp_path):
    done = CELLS[1]
    train_cell(sae_store, done, small_config(), tmp_path / done.name)
    before = (tmp_path / done.name / "metrics.json").stat().st_mtime_ns
    starts: list = []
    callbacks = {c.name: [_Starts(starts, c.name)] for c in CELLS}
    results = train_pack(sae_store, CELLS, small_config(), _dirs(tmp_path), callbacks=callbacks)
    assert sorted(n for n, _ in starts) == sorted(c.name for c in CELLS if c != done)
    assert (tmp_path / done.name / "metrics.json").stat().st_mtime_ns == before
    assert results[done.name]["completed"] is True
    for cell in CELLS:
        assert_same_run(solo / cell.name, tmp_path / cell.name, cell)


KILL_SCRIPT = """
import os, signal, sys
import torch
from pathlib import Path
from tests.fixtures_sae import small_config
from tests.training.test_pack import CELLS, _dirs
from sae_core.training import TrainCallback, train_pack

torch.set_num_threads(1)

class KillAt(TrainCallback):
    def on_checkpoint(self, step, path):
        if step == 50:  # SIGKILL: no exception handler, no cleanup, as a killed worker
            os.kill(os.getpid(), signal.SIGKILL)

first = CELLS[0].name
train_pack(sys.argv[1], CELLS, small_config(), _dirs(Path(sys.argv[2])), callbacks={first: [KillAt()]})
"""


def test_a_killed_pack_resumes_every_cell_from_its_own_checkpoint(sae_store, solo, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(sae_store), str(tmp_path)],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr
    # The first cell had written its step-50 checkpoint when the process died, the others their step 25.
    for cell in CELLS:
        assert (tmp_path / cell.name / CHECKPOINT_NAME).is_file()
        assert not (tmp_path / cell.name / "metrics.json").exists()
    starts: list = []
    callbacks = {c.name: [_Starts(starts, c.name)] for c in CELLS}
    train_pack(sae_store, CELLS, small_config(), _dirs(tmp_path), callbacks=callbacks)
    assert dict(starts) == {c.name: 50 if c == CELLS[0] else 25 for c in CELLS}
    for cell in CELLS:
        assert_same_run(solo / cell.name, tmp_path / cell.name, cell)


def test_the_memory_plan_splits_a_pack_over_its_budget_and_logs_it(sae_store, solo, tmp_path, caplog):
    sizes = [cell_bytes(16, 16 * c.expansion, 256, c.architecture, 1024) for c in CELLS]
    # Room for the largest cell and a bit (+ one evaluation): the two 4x relu cells cannot share a pack.
    budget_gb = (max(sizes) + min(sizes) + evaluation_bytes(64, 1024)) / 2**30
    cfg = small_config()
    cfg = cfg.model_copy(update={"grid": cfg.grid.model_copy(update={"pack_memory_gb": budget_gb})})
    with caplog.at_level(logging.INFO, logger="sae_core.training.pack"):
        train_pack(sae_store, CELLS, cfg, _dirs(tmp_path))
    plans = [r.getMessage() for r in caplog.records if "pack memory plan" in r.getMessage()]
    assert len(plans) == 1 and "split into" in plans[0] and "grid.pack_memory_gb" in plans[0], plans
    for cell in CELLS:
        assert_same_run(solo / cell.name, tmp_path / cell.name, cell)


def test_split_pack_first_fit_in_grid_order():
    assert split_pack(["a", "b", "c", "d"], [6, 5, 4, 1], 10) == [["a", "c"], ["b", "d"]]
    assert split_pack(["a", "b"], [3, 4], 10) == [["a", "b"]]
    assert split_pack(["huge", "b"], [50, 4], 10) == [["huge"], ["b"]]  # alone over budget: its own pack


def test_cell_bytes_grows_with_width_and_batch():
    small = cell_bytes(768, 768 * 4, 32, "relu", 16384)
    assert cell_bytes(768, 768 * 8, 32, "relu", 16384) > small
    assert cell_bytes(768, 768 * 4, 4096, "relu", 16384) > small
    # parameters, gradients and two Adam moments at least
    assert small >= 4 * 4 * 2 * 768 * 768 * 4


def test_pack_default_follows_the_device():
    cfg = small_config()  # training.device: cpu
    assert cfg.grid.pack == "auto" and not pack_enabled(cfg)
    forced = cfg.model_copy(update={"grid": cfg.grid.model_copy(update={"pack": "device"})})
    assert pack_enabled(forced)


def test_on_the_pool_auto_packs_for_the_pools_gpus_not_the_sweeps_device():
    """The sweep of a `placement: pool` runs on a CPU worker; its cells train on the gpu pool's device."""
    from sae_core.training import pool_pack_enabled

    cfg = small_config()
    assert [
        pool_pack_enabled(cfg.model_copy(update={"training": cfg.training.model_copy(update={"device": d})}))
        for d in ("auto", "cuda", "cuda:1", "cpu", "mps")
    ] == [True, True, True, False, False]
    off = cfg.model_copy(update={"grid": cfg.grid.model_copy(update={"pack": "none"})})
    assert not pool_pack_enabled(off)


def test_capture_on_a_cpu_is_a_config_error_naming_the_field():
    cfg = TrainingConfig(batch_size=32, epochs=None, max_tokens=320, device="cpu", capture=True)
    x = torch.randn(512, 16)
    with pytest.raises(TrainingError, match=r"training\.capture.*cpu"):
        Trainer(
            build_sae(16, 32, cfg),
            InMemoryData(x),
            cfg,
            l1=0.01,
            strategy="nosampling",
            device=torch.device("cpu"),
        )
