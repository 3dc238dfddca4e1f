"""Exports: the SAELens `standard` export loads in SAELens with identical encode/decode; `load_run`,
`weights_path`; the `sae-sweep train` command end to end."""

from __future__ import annotations

import pytest
import torch

from flows.cli import main
from sae_core.errors import TrainingError
from sae_core.io import read_json
from sae_core.saes.export import export_saelens, load_run, load_saelens_export, weights_path
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
    x = torch.randn(50, 32) * 3
    with torch.no_grad():
        h_ours, h_theirs = sae.encode(x), theirs.encode(x)
        assert torch.allclose(h_ours, h_theirs, rtol=0, atol=1e-6)
        assert torch.allclose(sae.decode(h_ours), theirs.decode(h_ours), rtol=0, atol=1e-6)
        assert (h_ours > 0).equal(h_theirs > 0)
    round_trip = load_saelens_export(tmp_path / "saelens")
    for key, value in sae.state_dict().items():
        assert torch.equal(round_trip.state_dict()[key], value)


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
    assert "model_weights_2x_0.02_sampling.pth" in capsys.readouterr().out


def test_cli_train_bad_input_is_one_line(sae_store, tmp_path, capsys):
    args = ["train", "--activations", str(sae_store), "--l1", "-1", "--out", str(tmp_path / "x")]
    assert main(args) == 2
    assert "l1: must be >= 0 (got -1.0)" in capsys.readouterr().err
    args = ["train", "--activations", str(sae_store), "--out", str(tmp_path / "y"),
            "--set", "training.resample_every=100000"]  # fmt: skip
    assert main(args) == 2
    assert "training.resample_every: 100000" in capsys.readouterr().err
