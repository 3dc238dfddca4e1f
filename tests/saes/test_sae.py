"""The SAE itself: the study's parametrisation and init, both L1 scalings, the fused step's gradients,
and the decoder constraint."""

from __future__ import annotations

import math

import pytest
import torch

from sae_core.saes.relu import (
    SparseAutoencoder,
    autograd_step_grads,
    fused_step_grads,
    normalize_decoder,
    project_decoder_grad,
    sae_loss,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_parameters_have_the_study_keys_shapes_and_init():
    sae = SparseAutoencoder(64, 512, seed=42)
    state = sae.state_dict()
    assert list(state) == ["W_enc", "b_enc", "W_dec", "b_dec"]
    assert [tuple(v.shape) for v in state.values()] == [(64, 512), (512,), (512, 64), (64,)]
    assert all(v.dtype == torch.float32 for v in state.values())
    assert sae.W_enc.std().item() == pytest.approx(1 / math.sqrt(64), rel=0.05)
    assert sae.W_dec.std().item() == pytest.approx(1 / math.sqrt(512), rel=0.05)
    assert not sae.b_enc.any() and not sae.b_dec.any()
    assert torch.equal(SparseAutoencoder(64, 512, seed=42).W_enc, sae.W_enc)


def test_forward_is_relu_encoder_and_affine_decoder():
    sae = SparseAutoencoder(8, 32, seed=0)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    x = torch.randn(5, 8)
    x_hat, h = sae(x)
    expected_h = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
    torch.testing.assert_close(h, expected_h)
    torch.testing.assert_close(x_hat, expected_h @ sae.W_dec + sae.b_dec)


def test_l1_scalings_seed_averages_over_features_and_sum_sums():
    x = torch.randn(10, 4)
    h = torch.rand(10, 40)
    seed = sae_loss(x, x, h, 1.0, "seed")
    total = sae_loss(x, x, h, 1.0, "sum")
    assert seed.l1.item() == pytest.approx(torch.nn.functional.l1_loss(h, torch.zeros_like(h)).item())
    assert total.l1.item() == pytest.approx(h.sum(dim=1).mean().item())
    assert total.l1.item() == pytest.approx(seed.l1.item() * 40)
    assert seed.mse.item() == 0.0


@pytest.mark.parametrize("scaling", ["seed", "sum"])
def test_fused_gradients_equal_autograd(scaling):
    sae = SparseAutoencoder(24, 96, seed=3)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(0, 0.3)
    x = torch.randn(64, 24)
    ref = autograd_step_grads(sae, x, 0.05, scaling, full_stats=True)
    ref_grads = {n: p.grad.clone() for n, p in sae.named_parameters()}
    got = fused_step_grads(sae, x, 0.05, scaling, full_stats=True)
    for name, param in sae.named_parameters():
        torch.testing.assert_close(param.grad, ref_grads[name], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.loss, ref.loss)
    torch.testing.assert_close(got.l0, ref.l0)
    torch.testing.assert_close(got.explained_variance, ref.explained_variance)
    assert torch.equal(got.fired, ref.fired)


def test_parallel_gradient_removed_and_rows_renormalised():
    sae = SparseAutoencoder(16, 64, seed=1)
    normalize_decoder(sae)
    fused_step_grads(sae, torch.randn(32, 16), 0.01, "sum")
    assert (sae.W_dec.grad * sae.W_dec).sum(dim=1).abs().max() > 1e-4
    project_decoder_grad(sae)
    assert (sae.W_dec.grad * sae.W_dec).sum(dim=1).abs().max() < 1e-6
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    normalize_decoder(sae)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(64))


def test_pth_round_trip(tmp_path):
    from sae_core.saes.export import save_pth

    sae = SparseAutoencoder(8, 16, seed=5)
    path = save_pth(sae, tmp_path / "model_weights_2x_0.01_sampling.pth")
    loaded = SparseAutoencoder.from_pth(path)
    for key, value in sae.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"W_enc", "b_enc", "W_dec", "b_dec"}
