"""The λ warm-up (`training.l1_warmup_fraction`): its value per step, 0 meaning the study's constant λ,
the warmed-up λ reaching the fused step, and a run resumed inside the warm-up following it bit for bit."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from sae_core.config import TrainingConfig, load_config
from sae_core.naming import Cell
from sae_core.saes.relu import SparseAutoencoder
from sae_core.training import TrainCallback, Trainer, train_cell
from sae_core.training.checkpoint import CHECKPOINT_NAME
from sae_core.training.data import InMemoryData
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


def test_zero_is_the_studys_constant_lambda_and_the_seed_preset_keeps_it():
    assert {_trainer(l1_warmup_fraction=0).l1_at(s) for s in range(100)} == {0.5}
    assert load_config("seed").training.l1_warmup_fraction == 0
    assert TrainingConfig().l1_warmup_fraction == 0.05


def test_the_warmup_ramps_linearly_over_its_fraction_of_the_steps():
    t = _trainer(l1_warmup_fraction=0.1)  # 10 of 100 steps
    assert [t.l1_at(s) for s in (0, 4, 9, 10, 99)] == pytest.approx([0.05, 0.25, 0.5, 0.5, 0.5])


def test_the_warmed_up_lambda_reaches_the_step():
    """The first step's L1 term (loss − MSE) carries λ/N with the warm-up, λ without."""

    class FirstL1Term(TrainCallback):
        value: float | None = None

        def on_log(self, step, metrics):
            if self.value is None:
                self.value = metrics["loss"] - metrics["mse"]

    terms = {}
    for fraction in (0.0, 0.1):
        t = _trainer(l1_warmup_fraction=fraction, log_every=1)
        t.callbacks.append(seen := FirstL1Term())
        t.run()
        terms[fraction] = seen.value
    assert terms[0.1] == pytest.approx(terms[0.0] / 10, rel=1e-4)


class _Kill(TrainCallback):
    def on_checkpoint(self, step, path):
        if step == 25:
            raise KeyboardInterrupt


def test_resume_inside_the_warmup_equals_uninterrupted(sae_store, tmp_path):
    cfg = small_config(l1_warmup_fraction=0.5)  # ~40 of ~80 steps: the kill at 25 falls inside it
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
