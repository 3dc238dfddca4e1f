"""Resampling in the TopK family: a revived latent must beat the k-th largest pre-activation of its token
(BatchTopK: k per token on average) to fire. relu's recipe (encoder column 0.05–0.2 × the mean alive norm)
never gets it there, so it stays dead; `resample_encoder: entry` sizes the column so that its
pre-activation on the input it was resampled from is just above that input's k-th largest."""

from __future__ import annotations

import pytest
import torch

from sae_core.config import TrainingConfig
from sae_core.saes.batchtopk import BatchTopKSAE
from sae_core.saes.topk import TopKSAE
from sae_core.training.data import InMemoryData
from sae_core.training.resample import entry_pre_activation, resample_dead
from sae_core.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("single_thread")

FORCED = 8
"""Latents 0–7 start with b_enc = −100: they cannot fire before the first resampling."""


def _one_resampling(architecture: type[TopKSAE], resample_encoder: str, superposition_data) -> Trainer:
    """80 steps, one resampling event at step 40 (the only check before the end), then 40 steps."""
    x_train, x_val, _ = superposition_data
    cfg = TrainingConfig(
        lr=1e-3, batch_size=256, epochs=None, max_tokens=256 * 80, seed=0, resample_every=40,
        resample_pool_tokens=4096, resample_enc_scale=0.05, log_every=20, val_every=10**6, device="cpu",
    )  # fmt: skip
    sae = architecture(16, 64, k=4, seed=0, init="tied", resample_encoder=resample_encoder)
    with torch.no_grad():
        sae.b_enc[:FORCED] = -100.0
    trainer = Trainer(
        sae, InMemoryData(x_train[:20_480], x_val), cfg, l1=0.0, strategy="sampling",
        device=torch.device("cpu"),
    )  # fmt: skip
    metrics = trainer.run()
    assert [e["step"] for e in metrics["resample_events"]] == [40]
    assert metrics["resample_events"][0]["neurons"] >= FORCED
    return trainer


def _revived_share(trainer: Trainer) -> float:
    """Of the forced-dead latents (all reset at step 40), the share that fired in a step after it."""
    return float((trainer.state.last_fired[:FORCED] > 40).float().mean())


def _kept_on_own_input(architecture: type[TopKSAE], match_entry: bool, superposition_data) -> float:
    """One `resample_dead` of the forced-dead latents of a briefly trained SAE: the share of them that is
    among the k largest pre-activations of the input it was resampled from."""
    trainer = _one_resampling(architecture, "scaled", superposition_data)  # trained, a checked optimizer
    sae, pool = trainer.sae, superposition_data[0][20_480:28_672]
    dead = torch.zeros(sae.d_hidden, dtype=torch.bool)
    dead[:FORCED] = True
    resample_dead(
        sae, None, dead, pool, enc_scale=0.05, bias_low=-0.01, generator=torch.Generator().manual_seed(0),
        match_entry=match_entry,
    )  # fmt: skip
    with torch.no_grad():
        own = pool - sae.b_dec
        rows = (sae.W_dec[:FORCED] @ (own / own.norm(dim=1, keepdim=True)).T).argmax(dim=1)
        kept = sae.pre_activation(pool[rows]).topk(sae.k_value, dim=1).indices
    return float((kept == torch.arange(FORCED)[:, None]).any(dim=1).float().mean())


@pytest.mark.parametrize("architecture", [TopKSAE, BatchTopKSAE])
def test_entry_sized_latents_enter_the_top_k_of_their_input(architecture, superposition_data):
    # a majority, not all: two revived latents that both read one input can push each other out
    assert _kept_on_own_input(architecture, True, superposition_data) > 0.5


@pytest.mark.parametrize("architecture", [TopKSAE, BatchTopKSAE])
def test_relu_recipe_leaves_them_out_of_the_top_k(architecture, superposition_data):
    # the old behaviour: `saes.<arch>.resample_encoder: scaled` (BatchTopK's default)
    assert _kept_on_own_input(architecture, False, superposition_data) == 0.0


def test_entry_sized_batchtopk_latents_fire_in_the_next_steps(superposition_data):
    # trained on: every forced-dead latent takes part of the batch's budget after the reset
    assert _revived_share(_one_resampling(BatchTopKSAE, "entry", superposition_data)) > 0.5


def test_relu_recipe_leaves_resampled_batchtopk_latents_dead(superposition_data):
    assert _revived_share(_one_resampling(BatchTopKSAE, "scaled", superposition_data)) == 0.0


def test_entry_level_is_halfway_between_the_kth_and_the_k_minus_1th_alive_pre_activations():
    sae = TopKSAE(8, 32, k=3, seed=0)
    x = torch.randn(5, 8)
    alive = torch.ones(32, dtype=torch.bool)
    alive[:4] = False
    largest = sae.pre_activation(x)[:, 4:].sort(dim=1, descending=True).values
    expected = (largest[:, 1] + largest[:, 2]) / 2
    torch.testing.assert_close(entry_pre_activation(sae, x, alive), expected)
    assert not entry_pre_activation(sae, x, torch.zeros(32, dtype=torch.bool)).any()


def test_resample_encoder_is_checked():
    with pytest.raises(ValueError, match="resample_encoder"):
        TopKSAE(8, 32, k=3, resample_encoder="big")
