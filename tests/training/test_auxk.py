"""AuxK (Gao et al.): the loss reads only the top-k_aux dead latents, decodes them without the bias, and
in training it revives latents forced dead, which without it never fire again (their gradient is 0)."""

from __future__ import annotations

import pytest
import torch

from sae_core.saes.auxk import auxk_loss, auxk_weight
from sae_core.saes.batchtopk import BatchTopKSAE
from sae_core.saes.relu import normalize_decoder, project_decoder_grad
from sae_core.saes.topk import TopKSAE
from tests.fixtures_sae import superposition

pytestmark = pytest.mark.usefixtures("single_thread")


def test_auxk_loss_reconstructs_the_error_from_the_top_dead_pre_activations():
    gen = torch.Generator().manual_seed(0)
    pre = torch.randn(6, 10, generator=gen)
    err = torch.randn(6, 4, generator=gen)
    w_dec = torch.randn(10, 4, generator=gen)
    dead = torch.tensor([True, False, True, True, False, False, True, False, False, False])
    # by hand: per token the 2 largest pre-activations among latents 0, 2, 3, 6 — negative ones too
    acts = torch.zeros_like(pre)
    for b in range(6):
        idx = [i for i in (0, 2, 3, 6)]
        top = sorted(idx, key=lambda i: float(pre[b, i]), reverse=True)[:2]
        acts[b, top] = pre[b, top]
    expected = (acts @ w_dec - err).pow(2).mean()
    assert float(auxk_loss(pre, err, w_dec, dead, 2)) == pytest.approx(float(expected), rel=1e-6)
    # fewer dead latents than k_aux: all of them are used
    all_dead = (torch.where(dead, pre, 0.0) @ w_dec - err).pow(2).mean()
    assert float(auxk_loss(pre, err, w_dec, dead, 50)) == pytest.approx(float(all_dead), rel=1e-6)
    assert float(auxk_loss(pre, err, w_dec, torch.zeros(10, dtype=torch.bool), 2)) == 0.0
    with pytest.raises(ValueError, match="auxk_k"):
        auxk_loss(pre, err, w_dec, dead, 0)


def test_auxk_gradient_reaches_the_dead_latents_encoders_only():
    sae = TopKSAE(8, 32, k=3, seed=0, auxk_coefficient=1.0)
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    dead = torch.arange(32) >= 24
    with torch.no_grad():
        sae.b_enc[dead] = -50.0  # never in the top 3
    pre = sae.pre_activation(x)
    term, coefficient = sae.extra_loss(pre, sae.train_activate(pre), torch.randn(16, 8), dead)
    assert coefficient == 1.0
    term.backward()
    assert (sae.b_enc.grad[~dead] == 0).all() and (sae.b_enc.grad[dead] != 0).any()
    col = sae.W_enc.grad.abs().sum(dim=0)
    assert (col[~dead] == 0).all() and (col[dead] > 0).any()


def _train_with_forced_dead(
    cls: type[TopKSAE], auxk: bool, steps: int = 300, window: int = 20
) -> tuple[int, int]:
    """Latents 0..23 of 64 start with b_enc = −3 (never in the top k); returns (forced latents, other
    latents) that fired in the last `window` steps. The dead mask is the trainer's window rule."""
    x, _ = superposition(8192, d=16, k=32)
    sae = cls(16, 64, k=4, seed=0, init="tied")
    forced = torch.arange(64) < 24
    with torch.no_grad():
        sae.b_enc[forced] = -3.0
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    last_fired = torch.zeros(64, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    for step in range(1, steps + 1):
        batch = x[torch.randint(0, len(x), (256,), generator=gen)]
        dead = last_fired <= step - 1 - window if auxk and step > window else None
        stats = sae.step_grads(batch, dead=dead)
        project_decoder_grad(sae)
        opt.step()
        normalize_decoder(sae)
        sae.after_step()
        last_fired = torch.where(stats.fired, step, last_fired)
    alive = last_fired > steps - window
    return int(alive[forced].sum()), int(alive[~forced].sum())


@pytest.mark.parametrize("cls", [TopKSAE, BatchTopKSAE])
def test_auxk_revives_latents_forced_dead(cls):
    without = _train_with_forced_dead(cls, auxk=False)
    assert without[0] == 0  # no AuxK: a latent outside the top k gets no gradient and stays dead
    revived, _ = _train_with_forced_dead(cls, auxk=True)
    assert revived >= 12, f"AuxK revived only {revived} of 24 forced-dead latents"


def _trained_topk(strategy: str, **options) -> TopKSAE:
    """A TopK SAE trained by the Trainer at the `TrainingConfig` defaults (batch 4096, lr 1e-4, …) for
    20 steps on 16k superposition tokens, some latents forced dead at step 0."""
    from sae_core.config import TrainingConfig
    from sae_core.training.data import InMemoryData
    from sae_core.training.trainer import Trainer

    x, _ = superposition(16_384, d=16, k=32)
    sae = TopKSAE(16, 64, k=4, seed=0, init="tied", **options)
    with torch.no_grad():
        sae.b_enc[:24] = -3.0
    cfg = TrainingConfig(max_tokens=20 * 4096, device="cpu")
    Trainer(sae, InMemoryData(x), cfg, l1=0.0, strategy=strategy, device=torch.device("cpu")).run()
    return sae


def test_auxk_at_the_training_defaults_acts():
    """Its window defaults to 10M tokens capped at a tenth of the run, so a default `auxk` cell differs
    from `nosampling` (it was bit-identical when the window was `training.resample_every` steps)."""
    auxk, plain = _trained_topk("auxk"), _trained_topk("nosampling")
    assert not torch.equal(auxk.b_enc[:24], plain.b_enc[:24])
    assert (auxk.b_enc[:24] - plain.b_enc[:24]).abs().max() > 1e-3


def test_an_auxk_window_not_shorter_than_the_run_is_refused():
    from sae_core.errors import TrainingError

    with pytest.raises(TrainingError, match=r"^saes\.topk\.auxk_dead_tokens: a window of 81920 tokens"):
        _trained_topk("auxk", auxk_dead_tokens=20 * 4096)
    _trained_topk("nosampling", auxk_dead_tokens=20 * 4096)  # only the auxk strategy reads it


def test_auxk_variance_weighting_is_gaos_ratio_of_the_two_terms():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, generator=gen) * 3
    err = torch.randn(32, 8, generator=gen) * 0.1
    ratio = (x - x.mean(0)).pow(2).mean() / (err - err.mean(0)).pow(2).mean()
    assert float(auxk_weight(x, err, 5, 4, "variance", False)) == pytest.approx(float(ratio), rel=1e-5)
    assert float(auxk_weight(x, err, 5, 4, "mse", False)) == 1.0
    assert float(auxk_weight(x, err, 2, 4, "mse", True)) == 0.5  # sparsify's min(n_dead / k_aux, 1)
    assert float(auxk_weight(x, err, 9, 4, "mse", True)) == 1.0
