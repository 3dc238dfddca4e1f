"""Dead-neuron resampling: it revives exactly the dead neurons, from the pool, with the recipe's scales,
zeroes their Adam moments and nothing else; `nosampling` never resamples."""

from __future__ import annotations

import pytest
import torch

from sae_core.config import TrainingConfig
from sae_core.saes.relu import SparseAutoencoder, fused_step_grads, normalize_decoder
from sae_core.training.data import InMemoryData
from sae_core.training.resample import resample_dead
from sae_core.training.trainer import TrainCallback, Trainer


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


class _KeepDead(TrainCallback):
    """After every resampling, pushes the eight forced-dead neurons' bias back down: reset, never fire."""

    def __init__(self) -> None:
        self.trainer: Trainer | None = None

    def on_resample(self, step, neurons):
        with torch.no_grad():
            self.trainer.sae.b_enc[:8] = -100.0


def test_resampled_neurons_that_stay_dead_are_counted_dead(superposition_data):
    # 130 steps, a check every 40: the last reset (step 120) falls inside the final window. The old code
    # recorded a reset as a firing, so those eight read "alive" at the end although they never fired.
    x_train, x_val, _ = superposition_data
    cfg = TrainingConfig(
        lr=3e-3, batch_size=256, epochs=None, max_tokens=256 * 130, l1_scaling="sum", seed=0,
        resample_every=40, resample_pool_tokens=4096, log_every=10, val_every=10**6, device="cpu",
    )  # fmt: skip
    sae = SparseAutoencoder(16, 64, seed=0)
    with torch.no_grad():
        sae.b_enc[:8] = -100.0
    keep = _KeepDead()
    trainer = Trainer(
        sae, InMemoryData(x_train[:20_000], x_val), cfg, l1=0.02, strategy="sampling",
        device=torch.device("cpu"), callbacks=[keep],
    )  # fmt: skip
    keep.trainer = trainer
    metrics = trainer.run()
    # a reset neuron still gets a full window: the eight are reset again at every check, not earlier
    events = metrics["resample_events"]
    assert [e["step"] for e in events] == [40, 80, 120] and all(e["neurons"] >= 8 for e in events)
    assert int((trainer.state.last_fired[:8] > 0).sum()) == 0
    assert metrics["training_dead_fraction"] >= 8 / 64
    windows = [r for r in trainer.state.log_rows if r["kind"] == "train" and r["step"] > 120]
    assert windows and all(r["window_dead_fraction"] >= 8 / 64 for r in windows)


def _weakly_firing_trainer(criterion: str, superposition_data) -> Trainer:
    """Neurons 0–7 fire on every token at 0.03: alive by "> 0", dead by the 0.07 threshold. The learning
    rate is ~0, so only resampling can change their weights."""
    x_train, x_val, _ = superposition_data
    cfg = TrainingConfig(
        lr=1e-12, batch_size=256, epochs=None, max_tokens=256 * 50, l1_scaling="sum", seed=0,
        resample_every=40, resample_pool_tokens=4096, log_every=10, val_every=10**6, device="cpu",
        resample_criterion=criterion,
    )  # fmt: skip
    sae = SparseAutoencoder(16, 64, seed=0)
    with torch.no_grad():
        sae.W_enc[:, :8] = 0.0
        sae.b_enc[:8] = 0.03
    return Trainer(
        sae, InMemoryData(x_train[:20_000], x_val), cfg, l1=0.0, strategy="sampling",
        device=torch.device("cpu"), dead_threshold=0.07,
    )  # fmt: skip


def test_threshold_criterion_resamples_features_that_never_exceed_the_threshold(superposition_data):
    plain = _weakly_firing_trainer("never_fired", superposition_data)
    before = plain.sae.W_dec[:8].detach().clone()
    before = before / before.norm(dim=1, keepdim=True)  # every step renormalises the decoder rows
    plain.run()
    torch.testing.assert_close(plain.sae.W_dec[:8], before, atol=1e-6, rtol=0)  # "fired": left alone
    assert plain.state.last_exceeded is None

    strict = _weakly_firing_trainer("threshold", superposition_data)
    strict.run()
    assert strict.state.resample_events[0]["neurons"] >= 8
    moved = (strict.sae.W_dec[:8] - before).norm(dim=1)
    assert (moved > 0.1).all(), "every weakly firing neuron was resampled"


def test_with_replacement_draws_each_neuron_independently():
    # one input takes essentially all the loss²: with replacement every dead neuron gets it; without,
    # only one can, and the others get distinct directions
    def directions(replacement: bool) -> torch.Tensor:
        sae = SparseAutoencoder(8, 16, seed=0)
        pool = torch.randn(1000, 8) * 0.01
        pool[123] = torch.full((8,), 50.0)
        dead = torch.zeros(16, dtype=torch.bool)
        dead[:4] = True
        resample_dead(
            sae, None, dead, pool, enc_scale=0.2, bias_low=-0.01,
            generator=torch.Generator().manual_seed(0), replacement=replacement,
        )  # fmt: skip
        return sae.W_dec[:4].detach()

    target = torch.full((8,), 8**-0.5)
    with_repl = directions(True)
    assert all(torch.allclose(row, target, atol=1e-3) for row in with_repl)
    without = directions(False)
    assert sum(torch.allclose(row, target, atol=1e-3) for row in without) == 1


def test_resampled_jumprelu_latents_get_a_threshold_that_lets_them_fire_and_fresh_moments():
    from sae_core.saes.jumprelu import JumpReLUSAE

    sae = JumpReLUSAE(16, 64, l0_coefficient=1e-2, threshold_init=1e-3, seed=0, init="tied")
    opt = torch.optim.Adam(sae.optimizer_groups(1e-3))
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        sae.step_grads(torch.randn(128, 16, generator=gen))
        opt.step()
    dead = torch.zeros(64, dtype=torch.bool)
    dead[[3, 10, 40]] = True
    with torch.no_grad():
        sae.threshold[dead] = 50.0  # a threshold no input reaches: the latent cannot fire
    before = sae.threshold.detach().clone()
    moments = {k: opt.state[sae.threshold][k].clone() for k in ("exp_avg", "exp_avg_sq")}
    pool = torch.randn(4096, 16, generator=gen)
    resample_dead(sae, opt, dead, pool, enc_scale=0.2, bias_low=-0.01, generator=gen)
    assert torch.equal(sae.threshold[~dead], before[~dead])
    assert (sae.threshold[dead] <= 1e-3).all() and (sae.threshold[dead] >= 0).all()
    for key, old in moments.items():
        new = opt.state[sae.threshold][key]
        assert not new[dead].any() and torch.equal(new[~dead], old[~dead])
    # each revived latent fires on the input it was drawn from (the one its decoder row points along)
    centred = pool - sae.b_dec
    drawn = (sae.W_dec[dead] @ (centred / centred.norm(dim=1, keepdim=True)).T).argmax(dim=1)
    with torch.no_grad():
        assert (sae.encode(pool[drawn])[torch.arange(3), dead.nonzero().flatten()] > 0).all()
