"""Exports: the SAELens `standard` export loads in SAELens with identical encode/decode; `load_run`,
`weights_path`; the `sae-sweep train` command end to end."""

from __future__ import annotations

import pytest
import torch

from flows.cli import main
from sae_core.errors import TrainingError
from sae_core.io import read_json
from sae_core.saes.export import (
    SAELENS_SPARSITY,
    export_saelens,
    firing_frequency,
    load_run,
    load_saelens_export,
    weights_path,
)
from sae_core.saes.relu import SparseAutoencoder

pytestmark = pytest.mark.usefixtures("single_thread")

MANIFEST = {"model": {"name": "gpt2", "layer": 6, "num_layers": 12}, "data": {"context_length": 1024}}


def _trained_looking_sae() -> SparseAutoencoder:
    sae = SparseAutoencoder(32, 128, seed=7)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.2)
        sae.b_dec.normal_()
    return sae


def test_saelens_loads_the_export_with_identical_encode_and_decode(tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    sae = _trained_looking_sae()
    export_saelens(sae, tmp_path / "saelens", MANIFEST, l1_coefficient=1e-4)
    cfg = read_json(tmp_path / "saelens" / "cfg.json")
    assert cfg["architecture"] == "standard" and cfg["d_in"] == 32 and cfg["d_sae"] == 128
    assert cfg["metadata"]["hook_name"] == "blocks.6.hook_resid_pre"
    assert cfg["metadata"]["model_name"] == "gpt2" and cfg["metadata"]["context_size"] == 1024

    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "saelens"), device="cpu")
    assert type(theirs).__name__ == "StandardSAE"
    # Read as a ≥ 6.0 cfg: the metadata survives the load (a cfg without `sae_lens_version` lost it).
    assert theirs.cfg.metadata.hook_name == "blocks.6.hook_resid_pre"
    assert theirs.cfg.metadata.model_from_pretrained_kwargs == {"center_writing_weights": False}
    assert theirs.cfg.metadata.l1_coefficient == 1e-4
    x = torch.randn(50, 32) * 3
    with torch.no_grad():
        h_ours, h_theirs = sae.encode(x), theirs.encode(x)
        assert torch.allclose(h_ours, h_theirs, rtol=0, atol=1e-6)
        assert torch.allclose(sae.decode(h_ours), theirs.decode(h_ours), rtol=0, atol=1e-6)
        assert (h_ours > 0).equal(h_theirs > 0)
    round_trip = load_saelens_export(tmp_path / "saelens")
    for key, value in sae.state_dict().items():
        assert torch.equal(round_trip.state_dict()[key], value)


def test_sparsity_file_and_final_stats_as_saelens_writes_them(tmp_path):
    """`sparsity.safetensors` (key `sparsity`, log10 of the firing frequency + 1e-10, as SAELens' trainer)
    and the metadata `l0` / `num_dead_features` of SAELens ≥ 6.47; SAELens loads the folder."""
    from safetensors.torch import load_file

    sae_lens = pytest.importorskip("sae_lens")
    sae = _trained_looking_sae()
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
