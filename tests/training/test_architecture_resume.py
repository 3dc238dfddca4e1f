"""Resume for the architectures the auxk TopK test does not cover: a BatchTopK cell (its running inference
threshold) and JumpReLU cells (thresholds, both L0 penalty forms, the frontier preset's `tanh` among them)
killed after a checkpoint and resumed end bit-identical to an uninterrupted run, resampling included."""

from __future__ import annotations

import pytest
import torch

from sae_core.naming import Cell
from sae_core.training import TrainCallback, train_cell
from sae_core.training.checkpoint import CHECKPOINT_NAME
from tests.fixtures_sae import small_config

pytestmark = pytest.mark.usefixtures("single_thread")


class _Kill(TrainCallback):
    def on_checkpoint(self, step, path):
        if step == 25:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("cell", "sparsity_loss"),
    [
        (Cell(2, 0.0, "sampling", "batchtopk", k=4), None),
        (Cell(2, 0.0, "sampling", "jumprelu", l0=0.01), "step"),
        (Cell(2, 0.0, "sampling", "jumprelu", l0=0.01), "tanh"),
    ],
    ids=["batchtopk", "jumprelu-step", "jumprelu-tanh"],
)
def test_a_killed_cell_resumes_bit_identical(cell, sparsity_loss, sae_store, tmp_path):
    cfg = small_config(epochs=1)
    if sparsity_loss is not None:
        cfg = cfg.model_copy(
            update={"saes": cfg.saes.model_copy(update={"jumprelu": cfg.saes.jumprelu.model_copy(
                update={"sparsity_loss": sparsity_loss})})}
        )  # fmt: skip
    train_cell(sae_store, cell, cfg, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train_cell(sae_store, cell, cfg, tmp_path / "killed", callbacks=[_Kill()])
    assert (tmp_path / "killed" / CHECKPOINT_NAME).exists()
    train_cell(sae_store, cell, cfg, tmp_path / "killed")
    a = torch.load(tmp_path / "whole" / cell.weights_filename)
    b = torch.load(tmp_path / "killed" / cell.weights_filename)
    assert sorted(a) == sorted(b) and all(torch.equal(a[key], b[key]) for key in a)
