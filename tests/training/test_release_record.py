"""`saelens/training_config.json` (issue 23 item 1): a released SAE says how it was trained — the tokens
actually trained, the optimisation, the sparsity with its units, the strategy's settings, the data
source and its first document's hash, the model, layer and residual stream, BOS handling, the
normalisation and the versions — read from a real extraction of the tiny GPT-2 and a real training."""

from __future__ import annotations

import pytest

from sae_core.io import read_json
from sae_core.naming import Cell
from sae_core.training import train_cell
from sae_core.training.release_record import TRAINING_CONFIG_NAME
from tests.fixtures_sae import small_config

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize(
    "cell",
    [Cell(2, 0.01, "sampling"), Cell(2, 0.0, "auxk", "topk", k=4)],
    ids=lambda c: c.name,
)
def test_training_config_json_says_how_the_release_was_trained(cell, tiny_store, tmp_path):
    cfg = small_config(
        epochs=1, max_tokens=2048, l1_warmup_fraction=0.25, b_dec_init="mean", resample_every=4
    )
    out = tmp_path / cell.name
    metrics = train_cell(tiny_store, cell, cfg, out)
    record = read_json(out / "saelens" / TRAINING_CONFIG_NAME)
    manifest = read_json(tiny_store / "manifest.json")

    assert record["cell"] == cell.name and record["architecture"] == cell.architecture
    assert record["d_in"] == metrics["d_in"] and record["d_sae"] == 2 * metrics["d_in"]
    # what was trained, not what was asked: the budget's 2,048 tokens, in whole batches of 256
    assert record["tokens_trained"] == metrics["tokens_trained"] == 2048 and record["steps"] == 8
    assert record["optimisation"]["lr"] == cfg.training.lr and record["optimisation"]["batch_size"] == 256
    assert record["optimisation"]["b_dec_init"] == "mean" and record["optimisation"]["seed"] == 0
    assert record["training_settings"] == metrics["training"]

    sparsity = record["sparsity"]
    if cell.architecture == "relu":
        assert sparsity["parameter"] == "l1" and sparsity["value"] == 0.01
        assert sparsity["l1_scaling"] == "sum" and sparsity["units"]
        assert record["schedule"] == {
            "lr": "constant",
            "sparsity": "linear warm-up over the first 0.25 of the steps",
            "sparsity_warmup_steps": 2,
        }
        assert record["strategy"]["settings"]["resample_every"] == cfg.training.resample_every
        assert record["architecture_settings"] == {}
    else:
        assert sparsity["parameter"] == "k" and sparsity["value"] == 4
        assert record["schedule"]["sparsity"] == "constant"
        auxk = record["strategy"]["settings"]
        assert auxk and all(key.startswith("auxk") for key in auxk)
        assert auxk["auxk_coefficient"] == cfg.saes.topk.auxk_coefficient

    # the data and the stream: enough to extract the same activations again
    assert record["data"]["source"] == manifest["source"]
    assert record["data"]["source"]["first_document_sha256"]
    assert record["data"]["context_length"] == manifest["data"]["context_length"]
    assert record["model"]["layer"] == manifest["model"]["layer"]
    stream = record["residual_stream"]
    assert stream["huggingface"] == f"hidden_states[{manifest['model']['layer']}]"
    assert stream["transformer_lens_hook"].startswith("blocks.")
    assert stream["transformer_lens_from_pretrained_kwargs"]["center_writing_weights"] is False
    assert record["tokens_left_out"]["bos"] == manifest.get("bos")
    assert record["tokens_left_out"]["drop_first_token"] == manifest["drop_first_token"]

    assert record["activation_normalization"] == metrics["normalization"]  # the demo preset normalises
    assert record["weights_take"].startswith("raw activations")
    versions = record["versions"]
    assert versions["training"]["torch"] and "sae-lens" in versions["training"]
    assert versions["extraction"] == manifest["versions"]
    assert versions["sae-sweep"]["code_version"] == metrics["code_version"]
    git = versions["sae-sweep"]["git"]
    assert git is None or len(git["commit"]) == 40
