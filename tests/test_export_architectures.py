"""Every architecture exports as a SAELens folder that SAELens loads with identical encode/decode: topk as
SAELens `topk` with its k, batchtopk and jumprelu as `jumprelu` with thresholds; the relu export is
unchanged (its own tests in test_export.py); `.pth` files and `load_run` for every architecture."""

from __future__ import annotations

import pytest
import torch

from sae_core.io import atomic_write_json, read_json
from sae_core.saes.batchtopk import BatchTopKSAE
from sae_core.saes.export import (
    SAELENS_SPARSITY,
    export_saelens,
    firing_frequency,
    fold_input_scale,
    load_run,
    load_saelens_export,
    save_pth,
)
from sae_core.saes.jumprelu import JumpReLUSAE
from sae_core.saes.registry import load_any as load_run_pth
from sae_core.saes.relu import SparseAutoencoder
from sae_core.saes.topk import TopKSAE

pytestmark = pytest.mark.usefixtures("single_thread")

MANIFEST = {"model": {"name": "gpt2", "layer": 6, "num_layers": 12}, "data": {"context_length": 1024}}
D, M = 32, 128


def _x(n: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed)) * 3


def _trained_looking(name: str):
    gen = torch.Generator().manual_seed(4)
    if name == "topk":
        sae = TopKSAE(D, M, k=7, seed=7)
    elif name == "batchtopk":
        sae = BatchTopKSAE(D, M, k=7, seed=7)
    else:
        sae = JumpReLUSAE(D, M, seed=7)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(M, generator=gen) * 0.2)
        sae.b_dec.copy_(torch.randn(D, generator=gen))
        if name == "jumprelu":
            sae.threshold.copy_(torch.rand(M, generator=gen))  # a different threshold per latent
    if name == "batchtopk":
        for seed in range(3):
            sae.training_loss(_x(seed=seed))  # estimates the inference threshold
    return sae


EXPECTED = {
    "topk": ("topk", "TopKSAE"),
    "batchtopk": ("jumprelu", "JumpReLUSAE"),
    "jumprelu": ("jumprelu", "JumpReLUSAE"),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_saelens_loads_each_architecture_with_identical_encode_and_decode(name, tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    sae = _trained_looking(name)
    out = export_saelens(
        sae, tmp_path / "saelens", MANIFEST, frequency=firing_frequency(sae, _x(500, seed=9))
    )
    cfg = read_json(out / "cfg.json")
    architecture, cls_name = EXPECTED[name]
    assert cfg["architecture"] == architecture and cfg["d_sae"] == M
    assert cfg["metadata"]["model_from_pretrained_kwargs"] == {"center_writing_weights": False}
    theirs = sae_lens.SAE.load_from_disk(str(out), device="cpu")
    assert type(theirs).__name__ == cls_name
    if name == "topk":
        assert theirs.cfg.k == 7 and cfg["k"] == 7
    x = _x(200, seed=3)
    with torch.no_grad():
        h_ours, h_theirs = sae.encode(x), theirs.encode(x)
        assert (h_ours > 0).sum() > 0 and (h_ours == 0).sum() > 0  # some latents on, some off
        assert (h_ours != 0).equal(h_theirs != 0)
        assert torch.allclose(h_ours, h_theirs, rtol=0, atol=1e-5)
        assert torch.allclose(sae.decode(h_ours), theirs.decode(h_ours), rtol=0, atol=1e-5)
    if name == "topk":
        assert ((h_theirs > 0).sum(dim=1) <= 7).all()
    assert (out / SAELENS_SPARSITY).is_file()
    # and back without SAELens: a batchtopk comes back as the jumprelu SAELens sees
    back = load_saelens_export(out)
    assert back.architecture == ("topk" if name == "topk" else "jumprelu")
    assert torch.equal(back.encode(x), sae.encode(x))


def test_batchtopk_exports_its_estimated_threshold_for_every_latent(tmp_path):
    from safetensors.torch import load_file

    sae = _trained_looking("batchtopk")
    export_saelens(sae, tmp_path / "s", MANIFEST)
    weights = load_file(str(tmp_path / "s" / "sae_weights.safetensors"))
    assert sorted(weights) == ["W_dec", "W_enc", "b_dec", "b_enc", "threshold"]  # SAELens' keys only
    assert torch.equal(weights["threshold"], torch.full((M,), float(sae.topk_threshold)))
    with pytest.raises(ValueError, match="topk_threshold: not estimated"):
        export_saelens(BatchTopKSAE(D, M, k=3, seed=0), tmp_path / "untrained")


def test_a_topk_export_saying_rescale_by_decoder_norm_is_refused(tmp_path):
    out = export_saelens(_trained_looking("topk"), tmp_path / "s", MANIFEST)
    cfg = read_json(out / "cfg.json")
    atomic_write_json(out / "cfg.json", {**cfg, "rescale_acts_by_decoder_norm": True})
    with pytest.raises(Exception, match="rescale_acts_by_decoder_norm must be false"):
        load_saelens_export(out)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_pth_and_load_run_for_every_architecture(name, tmp_path):
    sae = _trained_looking(name)
    save_pth(sae, tmp_path / "model_weights_8x_test.pth")
    state = torch.load(tmp_path / "model_weights_8x_test.pth", weights_only=True)
    if "k" in state:
        assert state["k"].dtype == torch.int64 and int(state["k"]) == 7
    atomic_write_json(tmp_path / "metrics.json", {"completed": True})
    loaded, metrics = load_run(tmp_path)
    assert type(loaded) is type(sae) and metrics == {"completed": True}
    assert torch.equal(loaded.encode(_x()), sae.encode(_x()))


def _any_trained_looking(name: str):
    if name != "relu":
        return _trained_looking(name)
    sae = SparseAutoencoder(D, M, seed=7)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.2, generator=torch.Generator().manual_seed(4))
        sae.b_dec.normal_(generator=torch.Generator().manual_seed(5))
    return sae


@pytest.mark.parametrize("name", ["relu", "topk", "batchtopk", "jumprelu"])
def test_a_folded_export_on_raw_activations_is_the_trained_sae_on_normalised_ones(name, tmp_path):
    """An SAE trained on x·s (`training.normalize_activations`) is released with s folded in: on raw x its
    `.pth` and its SAELens export give the latents of x·s and the reconstruction ÷ s, and SAELens loads
    the export with the same encode and decode."""
    s = 7.5
    trained = _any_trained_looking(name)
    folded = fold_input_scale(trained, s)
    assert folded is not trained and fold_input_scale(trained, 1.0) is trained
    raw = _x(300, seed=11) / s  # raw activations whose normalised form x·s is the scale trained on
    with torch.no_grad():
        h_trained = trained.encode(raw * s)
        assert (h_trained > 0).any() and (h_trained == 0).any()
        recon_trained = trained.decode(h_trained) / s
        save_pth(folded, tmp_path / "w.pth")
        export_saelens(folded, tmp_path / "saelens", MANIFEST)
        for released in (folded, load_run_pth(tmp_path / "w.pth"), load_saelens_export(tmp_path / "saelens")):
            h = released.encode(raw)
            assert (h != 0).equal(h_trained != 0)  # the same latents fire: thresholds and top k unchanged
            assert torch.allclose(h, h_trained, rtol=1e-5, atol=1e-5)
            assert torch.allclose(released.decode(h), recon_trained, rtol=1e-5, atol=1e-5)
        sae_lens = pytest.importorskip("sae_lens")
        theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "saelens"), device="cpu")
        h_theirs = theirs.encode(raw)
        assert (h_theirs != 0).equal(h_trained != 0)
        assert torch.allclose(h_theirs, h_trained, rtol=1e-5, atol=1e-5)
        assert torch.allclose(theirs.decode(h_theirs), recon_trained, rtol=1e-5, atol=1e-5)
