"""Dead-neuron resampling: it revives exactly the dead neurons, from the pool, with the recipe's scales,
zeroes their Adam moments and nothing else; `nosampling` never resamples."""

from __future__ import annotations

import pytest
import torch

from sae_core.config import TrainingConfig
from sae_core.saes.relu import SparseAutoencoder, fused_step_grads, normalize_decoder
from sae_core.training.data import InMemoryData
from sae_core.training.resample import resample_dead
from sae_core.training.trainer import Trainer


def _trained_with_adam_state(seed: int = 0):
    sae = SparseAutoencoder(16, 64, seed=seed)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    for _ in range(3):
        fused_step_grads(sae, torch.randn(128, 16), 0.01, "sum")
        opt.step()
        normalize_decoder(sae)
    return sae, opt


pytestmark = pytest.mark.usefixtures("single_thread")


def test_resample_touches_only_dead_neurons_and_their_adam_state():
    sae, opt = _trained_with_adam_state()
    dead = torch.zeros(64, dtype=torch.bool)
    dead[[3, 10, 40]] = True
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    moments = {
        n: {k: opt.state[p][k].clone() for k in ("exp_avg", "exp_avg_sq")} for n, p in sae.named_parameters()
    }
    pool = torch.randn(4096, 16)
    alive_norm = sae.W_enc[:, ~dead].norm(dim=0).mean()
    n = resample_dead(
        sae, opt, dead, pool, enc_scale=0.2, bias_low=-0.01, generator=torch.Generator().manual_seed(1)
    )
    assert n == 3
    after = sae.state_dict()
    # untouched rows/columns are bit-identical, weights and Adam moments alike
    assert torch.equal(after["W_enc"][:, ~dead], before["W_enc"][:, ~dead])
    assert torch.equal(after["W_dec"][~dead], before["W_dec"][~dead])
    assert torch.equal(after["b_enc"][~dead], before["b_enc"][~dead])
    assert torch.equal(after["b_dec"], before["b_dec"])
    for name, param in sae.named_parameters():
        for key in ("exp_avg", "exp_avg_sq"):
            new, old = opt.state[param][key], moments[name][key]
            if name == "W_enc":
                assert not new[:, dead].any() and torch.equal(new[:, ~dead], old[:, ~dead])
            elif name == "b_dec":
                assert torch.equal(new, old)
            else:
                assert not new[dead].any() and torch.equal(new[~dead], old[~dead])
    # the recipe: decoder row = a normalised pool input minus b_dec, encoder = same × alive norm × scale
    dirs = after["W_dec"][dead]
    torch.testing.assert_close(dirs.norm(dim=1), torch.ones(3))
    candidates = pool - sae.b_dec
    candidates = candidates / candidates.norm(dim=1, keepdim=True)
    assert (dirs @ candidates.T).max(dim=1).values.min() > 0.9999
    torch.testing.assert_close(after["W_enc"][:, dead], dirs.T * alive_norm * 0.2)
    assert ((after["b_enc"][dead] <= 0) & (after["b_enc"][dead] >= -0.01)).all()


def test_inputs_drawn_in_proportion_to_squared_loss():
    sae = SparseAutoencoder(8, 16, seed=0)
    pool = torch.zeros(1000, 8)
    pool[123] = torch.full((8,), 50.0)  # reconstructs terribly: takes essentially all the probability
    dead = torch.zeros(16, dtype=torch.bool)
    dead[0] = True
    resample_dead(
        sae, None, dead, pool, enc_scale=0.2, bias_low=-0.01, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(sae.W_dec[0], torch.full((8,), 8**-0.5))


def _forced_dead_trainer(strategy: str, superposition_data):
    x_train, x_val, _ = superposition_data
    cfg = TrainingConfig(
        lr=3e-3, batch_size=256, epochs=None, max_tokens=256 * 120, l1_scaling="sum", seed=0,
        resample_every=40, resample_pool_tokens=4096, log_every=20, val_every=10**6, device="cpu",
    )  # fmt: skip
    sae = SparseAutoencoder(16, 64, seed=0)
    with torch.no_grad():
        sae.b_enc[:8] = -100.0  # these eight can never fire
    return Trainer(
        sae,
        InMemoryData(x_train[:20_000], x_val),
        cfg,
        l1=0.02,
        strategy=strategy,
        device=torch.device("cpu"),
    )


def test_sampling_revives_forced_dead_neurons(superposition_data):
    trainer = _forced_dead_trainer("sampling", superposition_data)
    metrics = trainer.run()
    first = metrics["resample_events"][0]
    assert first["step"] == 40 and first["neurons"] >= 8
    _, h = trainer.sae(superposition_data[1])
    assert (h[:, :8] > 0).any(dim=0).all(), "every forced-dead neuron fires after resampling"


def test_nosampling_never_resamples(superposition_data):
    trainer = _forced_dead_trainer("nosampling", superposition_data)
    metrics = trainer.run()
    assert metrics["resample_events"] == []
    assert not any(row["kind"] == "resample" for row in trainer.state.log_rows)
    _, h = trainer.sae(superposition_data[1])
    assert not (h[:, :8] > 0).any()


def test_stop_resampling_after_a_fraction_of_training(superposition_data):
    cfg = TrainingConfig(
        lr=1e-3, batch_size=256, epochs=None, max_tokens=256 * 50, resample_every=10,
        stop_resampling_after=0.5, resample_pool_tokens=1024, log_every=25, device="cpu",
    )  # fmt: skip
    trainer = Trainer(
        SparseAutoencoder(16, 32, seed=0), InMemoryData(superposition_data[0][:8192]), cfg, l1=0.01,
        strategy="sampling", device=torch.device("cpu"),
    )  # fmt: skip
    assert [e["step"] for e in trainer.run()["resample_events"]] == [10, 20]


def test_b_dec_starts_at_the_mean_or_the_geometric_median():
    from sae_core.training.data import geometric_median

    data = torch.randn(4000, 8) + 3.0
    data[:40] += 1000.0  # 1 % far outliers: they drag the mean, not the median
    for kind in ("mean", "geometric_median"):
        cfg = TrainingConfig(
            batch_size=256, epochs=1, b_dec_init=kind, resample_pool_tokens=4096, device="cpu"
        )
        trainer = Trainer(
            SparseAutoencoder(8, 16), InMemoryData(data), cfg, l1=0.0, strategy="nosampling",
            device=torch.device("cpu"),
        )  # fmt: skip
        trainer.init_b_dec()
        expected = data.mean(dim=0) if kind == "mean" else geometric_median(data)
        torch.testing.assert_close(trainer.sae.b_dec, expected, rtol=1e-3, atol=1e-3)
    assert (geometric_median(data) - 3.0).abs().max() < 0.2
