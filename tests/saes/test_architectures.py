"""The SAE architectures beside the study's relu: TopK keeps exactly k per token, BatchTopK k·B per batch
in training and its estimated threshold at inference, JumpReLU zeroes below its thresholds and trains
them through its straight-through estimators; shared init, decoder-norm handling and state dicts."""

from __future__ import annotations

import inspect

import pytest
import torch

from sae_core.architectures import SPECS
from sae_core.config.architectures import ARCHITECTURE_NAMES, BatchTopKConfig, JumpReLUConfig, TopKConfig
from sae_core.config.architectures import STRATEGIES_BY_ARCHITECTURE as config_strategies
from sae_core.saes.batchtopk import BatchTopKSAE
from sae_core.saes.jumprelu import JumpReLUSAE
from sae_core.saes.registry import ARCHITECTURES, STRATEGIES_BY_ARCHITECTURE, build_sae
from sae_core.saes.relu import SparseAutoencoder, normalize_decoder, project_decoder_grad
from sae_core.saes.topk import TopKSAE

pytestmark = pytest.mark.usefixtures("single_thread")

D, M = 16, 64


def _x(n: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed)) * 2


def _options(name: str) -> dict:
    return {"k": 5} if SPECS[name].sparsity.field == "k" else {}


def test_every_architecture_starts_from_relus_weights_for_the_same_seed():
    relu = SparseAutoencoder(D, M, seed=3, init="tied", encoder_norm=0.2)
    for name in ARCHITECTURE_NAMES:
        sae = build_sae(name, D, M, seed=3, init="tied", encoder_norm=0.2, **_options(name))
        assert sae.architecture == name
        for key in ("W_enc", "b_enc", "W_dec", "b_dec"):
            assert torch.equal(getattr(sae, key), getattr(relu, key)), (name, key)


def test_topk_keeps_exactly_the_k_largest_pre_activations_of_each_token():
    sae = TopKSAE(D, M, k=5, seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # every pre-activation positive: the ReLU after top-k zeroes none
    x = _x()
    pre = sae.pre_activation(x)
    x_hat, h = sae(x)
    assert h.shape == (40, M) and x_hat.shape == (40, D)
    assert ((h > 0).sum(dim=1) == 5).all()
    kth = pre.topk(5, dim=1).values[:, -1:]
    assert torch.equal(h, torch.where(pre >= kth, pre, 0.0))
    assert torch.allclose(x_hat, h @ sae.W_dec + sae.b_dec, atol=1e-6)


def test_topk_applies_the_relu_after_the_top_k():
    sae = TopKSAE(D, M, k=5, seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(-100.0)  # every pre-activation negative: the top 5 are kept, then zeroed
    assert (sae.encode(_x()) == 0).all()


def test_topk_gradients_reach_only_the_latents_some_token_kept():
    sae = TopKSAE(D, M, k=2, seed=0)
    x = _x(4)
    stats = sae.step_grads(x, full_stats=True)
    kept = (sae.encode(x) > 0).any(dim=0)
    col_grad = sae.W_enc.grad.abs().sum(dim=0)
    assert (col_grad[~kept] == 0).all() and (col_grad[kept] > 0).all()
    assert (sae.b_enc.grad[~kept] == 0).all()
    assert sae.b_dec.grad.abs().sum() > 0
    assert float(stats.l0) <= 2 and stats.fired.equal(kept)
    assert float(stats.l1) == 0.0  # no dead mask: no AuxK term


def test_batchtopk_keeps_exactly_k_times_batch_in_training_and_its_threshold_at_inference():
    sae = BatchTopKSAE(D, M, k=3, seed=0, threshold_decay=0.5)
    with torch.no_grad():
        sae.b_enc.fill_(10.0)
    with pytest.raises(ValueError, match="topk_threshold"):
        sae.encode(_x())  # no threshold before training
    x = _x(20)
    parts = sae.training_loss(x)
    per_token = (parts.h > 0).sum(dim=1)
    assert int((parts.h > 0).sum()) == 3 * 20
    assert per_token.min() != per_token.max()  # tokens share the budget unevenly: not per-token top-k
    first = float(parts.h.detach()[parts.h > 0].min())
    assert float(sae.topk_threshold) == pytest.approx(first)  # the first batch sets θ
    second = sae.training_loss(_x(20, seed=1)).h.detach()
    expected = 0.5 * first + 0.5 * float(second[second > 0].min())
    assert float(sae.topk_threshold) == pytest.approx(expected, rel=1e-6)  # then a running mean
    xi = _x(7, seed=2)
    pre = sae.pre_activation(xi)
    assert torch.equal(sae.encode(xi), torch.where(pre > expected, pre, 0.0))


def test_batchtopk_threshold_is_in_its_state_dict():
    sae = BatchTopKSAE(D, M, k=3, seed=0)
    sae.training_loss(_x())
    loaded = BatchTopKSAE.from_state_dict(sae.state_dict())
    assert float(loaded.topk_threshold) == float(sae.topk_threshold) > 0
    assert int(loaded.k) == 3
    assert torch.equal(loaded.encode(_x(5)), sae.encode(_x(5)))


def test_jumprelu_zeroes_pre_activations_at_or_below_each_latents_threshold():
    sae = JumpReLUSAE(D, M, seed=0)
    with torch.no_grad():
        sae.threshold.copy_(torch.linspace(0.0, 1.0, M))
    x = _x()
    pre = sae.pre_activation(x)
    h = sae.encode(x)
    assert torch.equal(h, torch.where(pre > sae.threshold, pre, 0.0))
    assert (h[(pre > 0) & (pre <= sae.threshold)] == 0).all()
    assert torch.equal(sae.train_activate(pre), h)  # training's forward is the same function


def test_jumprelu_threshold_learns_through_the_straight_through_estimator():
    eps = 0.5
    sae = JumpReLUSAE(D, M, seed=0, bandwidth=eps, threshold_init=0.3, l0_coefficient=0.0)
    x = _x()
    pre = sae.pre_activation(x).detach()
    h = sae.train_activate(sae.pre_activation(x))
    g = torch.randn_like(h)
    (h * g).sum().backward()
    window = ((pre - 0.3).abs() < eps / 2).float() / eps
    assert torch.allclose(sae.threshold.grad, -(0.3 * window * g).sum(dim=0), atol=1e-5)
    # the pre-activations get the exact JumpReLU gradient: g where pre > θ
    enc_grad = x.t() @ (g * (pre > 0.3))
    assert torch.allclose(sae.W_enc.grad, enc_grad, atol=1e-4)


@pytest.mark.parametrize("form", ["step", "tanh"])
def test_jumprelu_l0_penalty_forms(form):
    sae = JumpReLUSAE(D, M, seed=0, bandwidth=0.5, threshold_init=0.3, sparsity_loss=form, l0_coefficient=1.0)
    x = _x()
    pre = sae.pre_activation(x)
    h = sae.train_activate(pre)
    term, coefficient = sae.extra_loss(pre, h, x.new_zeros(x.shape), None)
    assert coefficient == 1.0
    if form == "step":
        assert float(term.detach()) == pytest.approx(float((pre > 0.3).sum(dim=1).float().mean()))
    else:
        assert float(term.detach()) == pytest.approx(
            float(torch.tanh(4.0 * h.detach() * sae.W_dec.norm(dim=1).detach()).sum(dim=1).mean()), rel=1e-5
        )
    term.backward()
    assert sae.threshold.grad.abs().sum() > 0  # both train θ
    # the step's STE gives the encoder nothing; tanh is smooth in h and trains it
    enc_grad = sae.W_enc.grad
    assert (enc_grad is not None and bool(enc_grad.abs().sum() > 0)) == (form == "tanh")


def test_jumprelu_threshold_stays_non_negative_after_a_step():
    sae = JumpReLUSAE(D, M, seed=0)
    with torch.no_grad():
        sae.threshold[:3] = -0.2
    sae.after_step()
    assert (sae.threshold >= 0).all() and (sae.threshold[3:] == 1e-3).all()


@pytest.mark.parametrize("name", [n for n in ARCHITECTURE_NAMES if n != "relu"])
def test_decoder_rows_stay_unit_norm_under_the_trainers_constraint(name):
    """The trainer's decoder handling (gradient projection, renormalisation) works unchanged on every
    architecture: the rows' gradients lose their radial part and the rows stay unit norm."""
    sae = build_sae(name, D, M, seed=0, init="tied", **_options(name))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for step in range(5):
        sae.step_grads(_x(seed=step), dead=torch.ones(M, dtype=torch.bool) if "topk" in name else None)
        project_decoder_grad(sae)
        radial = (sae.W_dec.grad * sae.W_dec).sum(dim=1)
        assert radial.abs().max() < 1e-6
        opt.step()
        normalize_decoder(sae)
        sae.after_step()
        assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(M), atol=1e-6)


@pytest.mark.parametrize("name", ARCHITECTURE_NAMES)
def test_state_dict_round_trip_gives_identical_outputs(name, tmp_path):
    from sae_core.saes.registry import load_sae

    sae = build_sae(name, D, M, seed=1, **_options(name))
    if name in ("batchtopk", "matryoshka"):  # their inference threshold is estimated in training
        sae.training_loss(_x())
    torch.save(sae.state_dict(), tmp_path / "w.pth")
    loaded = load_sae(tmp_path / "w.pth", name)
    assert type(loaded) is type(sae)
    x = _x(9, seed=5)
    assert torch.equal(loaded(x)[0], sae(x)[0])


@pytest.mark.parametrize("name", ["topk", "batchtopk"])
def test_topk_family_training_never_reads_k_from_its_buffer(name):
    """`training.capture` needs a step with no host sync: the step takes k as a Python int. With the `k`
    buffer swapped for a meta tensor (whose value cannot be read) the Trainer still trains, and its
    weights equal, bit for bit, those of the same run with the real buffer."""
    from sae_core.config import TrainingConfig
    from sae_core.training import InMemoryData, Trainer
    from sae_core.training.architectures import build_sae as build_cell_sae

    cfg = TrainingConfig(
        lr=1e-3, batch_size=16, epochs=None, max_tokens=16 * 30, seed=0, resample_every=10,
        resample_pool_tokens=1024, log_every=5, val_every=10**9, val_tokens=64, checkpoint_every=10**9,
    )  # fmt: skip
    data = InMemoryData(_x(1200, seed=7), _x(64, seed=8))
    trainers = []
    for _ in range(2):
        sae = build_cell_sae(D, M, cfg, name, k=5)
        trainers.append(Trainer(sae, data, cfg, l1=0.0, strategy="sampling", device=torch.device("cpu")))
    with torch.no_grad():
        trainers[1].sae.k = torch.empty((), dtype=torch.int64, device="meta")
    batches = data.batches(16, 0, 0)
    for t in trainers:
        t.start()
    for _ in range(30):  # two resamplings (the entry recipe reads k too) and six log steps
        x = next(batches)
        for t in trainers:
            t.train_step(x)
    assert trainers[1].state.resample_events == trainers[0].state.resample_events
    for key in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(trainers[1].sae, key), getattr(trainers[0].sae, key)), key


def test_topk_k_follows_a_loaded_state_dict():
    """The Python k is refreshed from the buffer `load_state_dict` writes (a checkpoint of another k)."""
    sae, other = TopKSAE(D, M, k=5, seed=0), TopKSAE(D, M, k=7, seed=1)
    sae.load_state_dict(other.state_dict())
    assert sae.k_value == 7 and isinstance(sae.k_value, int)
    with torch.no_grad():
        sae.b_enc.fill_(10.0)
    assert ((sae.encode(_x()) > 0).sum(dim=1) == 7).all()
    bad = {**other.state_dict(), "k": torch.tensor(M)}
    with pytest.raises(ValueError, match="k: must be an integer with 0 < k < d_hidden"):
        sae.load_state_dict(bad)


def test_config_sections_match_the_registry_and_the_constructors():
    assert set(ARCHITECTURE_NAMES) == set(ARCHITECTURES)
    assert config_strategies == STRATEGIES_BY_ARCHITECTURE  # config imports no stage: two copies, held equal
    for section, cls in (
        (TopKConfig, TopKSAE),
        (BatchTopKConfig, BatchTopKSAE),
        (JumpReLUConfig, JumpReLUSAE),
    ):
        params = inspect.signature(cls.__init__).parameters
        assert set(section.model_fields) <= set(params), cls
        for field, info in section.model_fields.items():
            assert info.description, f"{section.__name__}.{field} has no docstring"
            assert info.default == params[field].default, f"{section.__name__}.{field}: default differs"
        cls(D, M, **({"k": 4} if "TopK" in cls.__name__ else {}), **section().model_dump())


def test_topk_sparse_decode_equals_the_dense_decode_with_equal_gradients():
    """The training step decodes from the k active latents (`embedding_bag`); loss and every gradient
    equal the dense formulation's (the base class's step)."""
    from sae_core.saes.base import AutogradSae

    x = _x(64, seed=7)
    dead = torch.arange(M) % 3 == 0
    sparse, dense = TopKSAE(D, M, k=5, seed=2), TopKSAE(D, M, k=5, seed=2)
    with torch.no_grad():
        for sae in (sparse, dense):
            sae.b_dec.normal_(generator=torch.Generator().manual_seed(0))
    a = sparse.step_grads(x, dead=dead, full_stats=True)
    dense.zero_grad(set_to_none=False)
    parts = AutogradSae.training_loss(dense, x, dead)  # h from train_activate, dense h @ W_dec
    parts.loss.backward()
    assert torch.allclose(a.loss, parts.loss.detach(), atol=1e-6)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        torch.testing.assert_close(
            getattr(sparse, name).grad, getattr(dense, name).grad, atol=1e-6, rtol=1e-5
        )
    assert torch.equal(a.fired, (parts.h.detach() > 0).any(dim=0))


def _trained_l0(name: str, steps: int = 300, **options) -> float:
    from tests.fixtures_sae import superposition

    x, _ = superposition(8192, d=16, k=32)
    sae = build_sae(name, 16, 64, seed=0, init="tied", **options)
    opt = torch.optim.Adam(sae.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        sae.step_grads(x[torch.randint(0, len(x), (256,), generator=gen)])
        project_decoder_grad(sae)
        opt.step()
        normalize_decoder(sae)
        sae.after_step()
    with torch.no_grad():
        return float((sae.encode(x[:2000]) > 0).sum(dim=1).float().mean())


@pytest.mark.parametrize("form", ["step", "tanh"])
def test_jumprelu_l0_falls_as_its_coefficient_rises(form):
    """The thresholds learn through the STE: without the penalty almost every latent stays on; with it
    the L0 falls several-fold (~1.9 true features per token here)."""
    free = _trained_l0("jumprelu", l0_coefficient=0.0, sparsity_loss=form)
    penalised = _trained_l0("jumprelu", l0_coefficient=1e-2, sparsity_loss=form)
    assert free > 40 and penalised < free / 4, (free, penalised)


def _trainer_l0(l0_coefficient: float) -> float:
    """Held-out L0 of a `step`-form JumpReLU trained by the Trainer (its optimizer groups and its
    data-capped θ init) for 300 steps on superposition data (~1.9 true features per token)."""
    from sae_core.config import TrainingConfig
    from sae_core.training.data import InMemoryData
    from sae_core.training.trainer import Trainer
    from tests.fixtures_sae import superposition

    x, _ = superposition(18_000, d=16, k=32)
    sae = JumpReLUSAE(16, 64, l0_coefficient=l0_coefficient, sparsity_loss="step", seed=0, init="tied")
    cfg = TrainingConfig(lr=1e-3, batch_size=256, max_tokens=256 * 300, device="cpu", seed=0)
    Trainer(
        sae, InMemoryData(x[:16_000]), cfg, l1=0.0, strategy="nosampling", device=torch.device("cpu")
    ).run()
    with torch.no_grad():
        return float((sae.encode(x[16_000:]) > 0).sum(dim=1).float().mean())


def test_jumprelu_step_l0_falls_over_two_decades_of_its_coefficient():
    """At one learning rate for all, Adam moved each θ by ~lr a step whatever the L0 term's pull, and
    c = 1e-2 and 1e-1 gave nearly the same L0; θ's own learning rate (`threshold_lr_scale`) restores it."""
    l0 = [_trainer_l0(c) for c in (1e-3, 1e-2, 1e-1)]
    assert l0[0] > 1.3 * l0[1] and l0[1] > 1.3 * l0[2], l0


def test_jumprelu_threshold_init_is_capped_by_the_data():
    """A `threshold_init` above every pre-activation would start every latent dead; the cap at the
    0.9 quantile of each latent's pre-activations leaves each firing on ~10 % of the sample."""
    x = _x(2000)
    sae = JumpReLUSAE(D, M, threshold_init=1e3, seed=0, init="tied")
    assert not (sae.encode(x) > 0).any()
    sae.init_from_data(x)
    fired = (sae.encode(x) > 0).float().mean(dim=0)
    assert (fired > 0.05).all() and (fired < 0.15).all()
    small = JumpReLUSAE(D, M, threshold_init=1e-3, seed=0, init="tied")
    small.init_from_data(x)  # the paper's 0.001 is below every latent's 0.9 quantile: left as it is
    assert torch.equal(small.threshold, torch.full((M,), 1e-3))
