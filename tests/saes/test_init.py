"""`training.init`: the tied start (W_enc = W_decᵀ · scale, unit-norm decoder rows), the study's untied
Gaussians kept bit for bit under `seed`, the choice reaching every trained SAE and the resume identity."""

from __future__ import annotations

import math

import pytest
import torch

from sae_core.config import TrainingConfig, load_config
from sae_core.saes.relu import SparseAutoencoder
from sae_core.training.checkpoint import config_hash, resume_identity
from sae_core.training.data import InMemoryData
from sae_core.training.trainer import train_sae

pytestmark = pytest.mark.usefixtures("single_thread")


def test_tied_init_is_the_scaled_transpose_of_unit_norm_decoder_rows():
    sae = SparseAutoencoder(16, 64, seed=3, init="tied", encoder_norm=0.25)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-6)
    assert torch.equal(sae.W_enc, sae.W_dec.t() * 0.25)
    assert sae.W_enc.is_contiguous()
    assert not sae.b_enc.any() and not sae.b_dec.any()
    again = SparseAutoencoder(16, 64, seed=3, init="tied", encoder_norm=0.25)
    assert torch.equal(again.W_dec, sae.W_dec)


def test_seed_init_is_the_studys_untied_gaussians_bit_for_bit():
    gen = torch.Generator().manual_seed(42)
    w_enc = torch.randn(64, 512, generator=gen) / math.sqrt(64)
    w_dec = torch.randn(512, 64, generator=gen) / math.sqrt(512)
    for sae in (SparseAutoencoder(64, 512, seed=42), SparseAutoencoder(64, 512, seed=42, init="seed")):
        assert torch.equal(sae.W_enc, w_enc) and torch.equal(sae.W_dec, w_dec)


def test_bad_init_settings_name_the_field():
    with pytest.raises(ValueError, match=r"training\.init"):
        SparseAutoencoder(4, 8, init="xavier")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"training\.init_encoder_norm"):
        SparseAutoencoder(4, 8, init="tied", encoder_norm=0.0)


def test_from_state_dict_restores_the_weights_whatever_the_init():
    tied = SparseAutoencoder(8, 32, seed=1, init="tied")
    loaded = SparseAutoencoder.from_state_dict(tied.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(tied.parameters(), loaded.parameters(), strict=True))


def _one_tiny_step(init: str | None) -> SparseAutoencoder:
    """`train_sae` for one step at a learning rate too small to move the weights visibly."""
    x = torch.randn(512, 8, generator=torch.Generator().manual_seed(0))
    keys = {"init": init} if init else {}
    cfg = TrainingConfig(
        lr=1e-9, batch_size=256, epochs=None, max_tokens=256, val_tokens=256, device="cpu", **keys,
        normalize_activations="none",  # the trained parameters themselves (a normalised run is folded)
    )  # fmt: skip
    sae, _ = train_sae(InMemoryData(x), 32, cfg, l1=0.01, strategy="nosampling")
    return sae


def test_train_sae_builds_the_configured_init_and_defaults_to_tied():
    assert TrainingConfig().init == "tied"
    default = _one_tiny_step(None)
    assert torch.allclose(default.W_enc, default.W_dec.t() * TrainingConfig().init_encoder_norm, atol=1e-6)
    seed = _one_tiny_step("seed")
    assert not torch.allclose(seed.W_enc, seed.W_dec.t() * seed.W_enc.norm(dim=0), atol=1e-2)


def test_presets_seed_keeps_the_studys_init_and_demo_the_default():
    assert load_config("seed").training.init == "seed"
    assert load_config("demo").training.init == "tied"


def test_the_resume_identity_tells_the_inits_apart():
    def chash(**keys: object) -> str:
        training = TrainingConfig(**keys).model_dump(mode="json")
        return config_hash(resume_identity(training, {"cell": "x"}, 8, "data"))

    assert len({chash(init="seed"), chash(init="tied"), chash(init="tied", init_encoder_norm=0.5)}) == 3
