"""λ and learning-rate schedules (`training.l1_warmup_steps`, `lr_warmup_steps`, `lr_decay_steps`): their
values per step, 0 meaning the study's constants, their effect on the fused step, and a resumed run
following them bit for bit."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from sae_core.checkpoint import CHECKPOINT_NAME
from sae_core.config import TrainingConfig
from sae_core.naming import Cell
from sae_core.sae import SparseAutoencoder
from sae_core.train import TrainCallback, Trainer, train_cell
from sae_core.train_data import InMemoryData
from tests.fixtures_sae import small_config

pytestmark = pytest.mark.usefixtures("single_thread")

CELL = Cell(4, 0.02, "sampling")


def _trainer(**keys: object) -> Trainer:
    x = torch.randn(1000, 8, generator=torch.Generator().manual_seed(0))
    cfg = TrainingConfig(batch_size=10, epochs=1, device="cpu", lr=1e-3, **keys)  # 100 steps
    return Trainer(
        SparseAutoencoder(8, 16, seed=0), InMemoryData(x), cfg, l1=0.5, strategy="nosampling",
        device=torch.device("cpu"),
    )  # fmt: skip


def test_no_schedule_is_the_studys_constant_lambda_and_lr():
    t = _trainer()
    assert t.cfg.l1_warmup_steps == t.cfg.lr_warmup_steps == t.cfg.lr_decay_steps == 0
    assert {t.l1_at(s) for s in range(100)} == {0.5}
    assert {t.lr_at(s) for s in range(100)} == {1e-3}


def test_warmups_ramp_linearly_and_the_decay_reaches_zero_at_the_end():
    t = _trainer(l1_warmup_steps=10, lr_warmup_steps=4, lr_decay_steps=20)
    assert [t.l1_at(s) for s in (0, 4, 9, 10, 99)] == pytest.approx([0.05, 0.25, 0.5, 0.5, 0.5])
    assert [t.lr_at(s) for s in (0, 1, 3, 4, 79)] == pytest.approx([2.5e-4, 5e-4, 1e-3, 1e-3, 1e-3])
    assert [t.lr_at(s) for s in (80, 90, 99)] == pytest.approx([1e-3, 5e-4, 5e-5])


def test_the_warmed_up_lambda_reaches_the_step():
    """With λ ramped from 0 the first step's loss carries λ/N, not λ (the L1 term is visible in it)."""

    class FirstL1Term(TrainCallback):
        value: float | None = None

        def on_log(self, step, metrics):
            if self.value is None:
                self.value = metrics["loss"] - metrics["mse"]

    terms = {}
    for warm in (0, 10):
        t = _trainer(l1_warmup_steps=warm, log_every=1)
        t.callbacks.append(seen := FirstL1Term())
        t.run()
        terms[warm] = seen.value
    assert terms[10] == pytest.approx(terms[0] / 10, rel=1e-4)


class _Kill(TrainCallback):
    def on_checkpoint(self, step, path):
        if step == 50:
            raise KeyboardInterrupt


def test_resume_inside_the_schedules_equals_uninterrupted(sae_store, tmp_path):
    cfg = small_config(l1_warmup_steps=60, lr_warmup_steps=30, lr_decay_steps=40)
    train_cell(sae_store, CELL, cfg, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train_cell(sae_store, CELL, cfg, tmp_path / "killed", callbacks=[_Kill()])
    assert (tmp_path / "killed" / CHECKPOINT_NAME).exists()
    train_cell(sae_store, CELL, cfg, tmp_path / "killed")
    a = torch.load(tmp_path / "whole" / CELL.weights_filename)
    b = torch.load(tmp_path / "killed" / CELL.weights_filename)
    assert all(torch.equal(a[k], b[k]) for k in a)
    log_a = pd.read_parquet(tmp_path / "whole" / "train_log.parquet")
    pd.testing.assert_frame_equal(log_a, pd.read_parquet(tmp_path / "killed" / "train_log.parquet"))
    lr = log_a.loc[log_a.kind == "train", "lr"].to_numpy()
    assert lr[0] < cfg.training.lr and lr.max() == pytest.approx(cfg.training.lr) and lr[-1] < lr.max()
