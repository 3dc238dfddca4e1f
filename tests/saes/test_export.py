"""Exports, for every architecture: a SAELens folder that SAELens loads with identical encode/decode (relu
as `standard`, topk as `topk` with its k, batchtopk, jumprelu and matryoshka as `jumprelu` with
thresholds), `.pth` files and `load_run`, the normalisation folded into what is released; relu's SAELens
metadata and sparsity file; `weights_path`; the `sae-sweep train` command end to end."""

from __future__ import annotations

import pytest
import torch

from flows.cli import main
from sae_core.architectures import SPECS
from sae_core.errors import TrainingError
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
    weights_path,
)
from sae_core.saes.registry import build_sae
from sae_core.saes.registry import load_any as load_run_pth

pytestmark = pytest.mark.usefixtures("single_thread")

MANIFEST = {"model": {"name": "gpt2", "layer": 6, "num_layers": 12}, "data": {"context_length": 1024}}
D, M = 32, 128

EXPECTED = {
    "relu": ("standard", "StandardSAE"),
    "topk": ("topk", "TopKSAE"),
    "batchtopk": ("jumprelu", "JumpReLUSAE"),
    "jumprelu": ("jumprelu", "JumpReLUSAE"),
    "matryoshka": ("jumprelu", "JumpReLUSAE"),
}
"""Our architecture → (SAELens's architecture in cfg.json, the class SAELens loads it as)."""


def test_every_architecture_has_an_expected_saelens_form():
    assert set(EXPECTED) == set(SPECS)


def _x(n: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed)) * 3


def _trained_looking(name: str):
    """An SAE of `name` whose biases (and JumpReLU's thresholds, the TopK family's inference threshold)
    are not at their initial values, so that an export dropping or mis-mapping one shows."""
    gen = torch.Generator().manual_seed(4)
    sae = build_sae(name, D, M, seed=7, **({"k": 7} if SPECS[name].sparsity.field == "k" else {}))
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(M, generator=gen) * 0.2)
        sae.b_dec.copy_(torch.randn(D, generator=gen))
        if name == "jumprelu":
            sae.threshold.copy_(torch.rand(M, generator=gen))  # a different threshold per latent
    if hasattr(sae, "topk_threshold"):
        for seed in range(3):
            sae.training_loss(_x(seed=seed))  # estimates the inference threshold
    return sae


def test_relus_saelens_metadata_survives_the_load(tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    export_saelens(_trained_looking("relu"), tmp_path / "saelens", MANIFEST, l1_coefficient=1e-4)
    cfg = read_json(tmp_path / "saelens" / "cfg.json")
    assert cfg["architecture"] == "standard" and cfg["d_in"] == D and cfg["d_sae"] == M
    assert cfg["metadata"]["hook_name"] == "blocks.6.hook_resid_pre"
    assert cfg["metadata"]["model_name"] == "gpt2" and cfg["metadata"]["context_size"] == 1024
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "saelens"), device="cpu")
    # Read as a ≥ 6.0 cfg: the metadata survives the load (a cfg without `sae_lens_version` lost it).
    assert theirs.cfg.metadata.hook_name == "blocks.6.hook_resid_pre"
    assert theirs.cfg.metadata.model_from_pretrained_kwargs == {"center_writing_weights": False}
    assert theirs.cfg.metadata.l1_coefficient == 1e-4


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
    assert back.architecture == {"standard": "relu"}.get(architecture, architecture)
    assert torch.equal(back.encode(x), sae.encode(x))
    if name == "relu":  # the study's four tensors, bit for bit
        for key, value in sae.state_dict().items():
            assert torch.equal(back.state_dict()[key], value)


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


@pytest.mark.parametrize("name", list(EXPECTED))
def test_a_folded_export_on_raw_activations_is_the_trained_sae_on_normalised_ones(name, tmp_path):
    """An SAE trained on x·s (`training.normalize_activations`) is released with s folded in: on raw x its
    `.pth` and its SAELens export give the latents of x·s and the reconstruction ÷ s, and SAELens loads
    the export with the same encode and decode."""
    s = 7.5
    trained = _trained_looking(name)
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


def test_sparsity_file_and_final_stats_as_saelens_writes_them(tmp_path):
    """`sparsity.safetensors` (key `sparsity`, log10 of the firing frequency + 1e-10, as SAELens' trainer)
    and the metadata `l0` / `num_dead_features` of SAELens ≥ 6.47; SAELens loads the folder."""
    from safetensors.torch import load_file

    sae_lens = pytest.importorskip("sae_lens")
    sae = _trained_looking("relu")
    with torch.no_grad():
        sae.b_enc[:5] = -1e3  # five features that can never fire
    x = torch.randn(3_000, 32, generator=torch.Generator().manual_seed(1))
    freq = firing_frequency(sae, x, chunk=700)
    expected = (sae.encode(x) > 0).double().mean(0)
    assert torch.allclose(freq.double(), expected, atol=1e-7) and (freq[:5] == 0).all()
    export_saelens(sae, tmp_path / "s", MANIFEST, frequency=freq, num_dead_features=7, sparsity_tokens=3_000)

    assert SAELENS_SPARSITY == sae_lens.constants.SPARSITY_FILENAME  # the name SAELens' loaders look for
    sparsity = load_file(str(tmp_path / "s" / SAELENS_SPARSITY))
    assert list(sparsity) == ["sparsity"] and sparsity["sparsity"].shape == (128,)
    assert sparsity["sparsity"].dtype == torch.float32
    assert torch.allclose(sparsity["sparsity"], torch.log10(freq + 1e-10))
    assert (sparsity["sparsity"][:5] == -10).all()
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "s"), device="cpu")
    assert theirs.cfg.metadata.l0 == pytest.approx(float(expected.sum()), rel=1e-6)
    assert theirs.cfg.metadata.num_dead_features == 7
    assert theirs.cfg.metadata.sparsity_tokens == 3_000
    with pytest.raises(TrainingError, match=r"frequency must have shape \(128,\)"):
        export_saelens(sae, tmp_path / "bad", MANIFEST, frequency=freq[:3])


def test_weights_path_needs_exactly_one_pth(tmp_path):
    with pytest.raises(TrainingError, match="expected one model_weights"):
        weights_path(tmp_path)
    with pytest.raises(TrainingError, match=r"no metrics\.json"):
        load_run(tmp_path)


def test_cli_train_writes_a_loadable_run(sae_store, tmp_path, capsys):
    out = tmp_path / "cli-run"
    args = ["train", "--activations", str(sae_store), "--expansion", "2", "--l1", "0.02", "--strategy",
            "sampling", "--out", str(out), "--set", "training.batch_size=256", "--set", "training.epochs=1",
            "--set", "training.resample_every=10", "--set", "training.device=cpu",
            "--set", "tracking.mode=disabled"]  # fmt: skip
    assert main(args) == 0
    sae, metrics = load_run(out)
    assert weights_path(out).name == "model_weights_2x_0.02_sampling.pth"
    assert sae.d_in == 16 and sae.d_hidden == 32 and metrics["completed"] is True
    meta = read_json(out / "saelens" / "cfg.json")["metadata"]
    assert meta["model_from_pretrained_kwargs"] == {"center_writing_weights": False}
    assert meta["l0"] == pytest.approx(metrics["final"]["l0"], rel=1e-5)
    assert meta["num_dead_features"] == round(
        metrics.get("training_dead_fraction", metrics.get("dead_fraction_train")) * 32
    )
    assert (out / "saelens" / "sparsity.safetensors").is_file()
    assert "model_weights_2x_0.02_sampling.pth" in capsys.readouterr().out


def test_cli_train_bad_input_is_one_line(sae_store, tmp_path, capsys):
    args = ["train", "--activations", str(sae_store), "--l1", "-1", "--out", str(tmp_path / "x")]
    assert main(args) == 2
    assert "l1: must be >= 0 (got -1.0)" in capsys.readouterr().err
    args = ["train", "--activations", str(sae_store), "--out", str(tmp_path / "y"),
            "--set", "training.resample_every=100000"]  # fmt: skip
    assert main(args) == 2
    assert "training.resample_every: 100000" in capsys.readouterr().err
