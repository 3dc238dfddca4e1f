"""The SAELens export read the way the ecosystem reads it: TransformerLens loads the model with the
export's `model_from_pretrained_kwargs`, and its hook must carry exactly the rows our extraction stored.

`HookedTransformer.from_pretrained` converts the weights of a given HF model (`hf_model=`), but looks the
architecture's config up by its official name ("gpt2"); offline, that lookup is served from a Hub cache
folder holding the tiny model's own config (with GPT-2's `n_ctx` key), passed as `cache_dir`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sae_core.io import read_json
from sae_core.saes.export import export_saelens
from sae_core.saes.relu import SparseAutoencoder
from sae_core.store import ActivationStore

pytestmark = pytest.mark.usefixtures("single_thread")


def _hub_cache_for(model_dir: Path, official_name: str, root: Path) -> Path:
    """A Hub cache in which `official_name` resolves to the config of `model_dir`."""
    repo = root / ("models--" + official_name.replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    config = json.loads((model_dir / "config.json").read_text())
    config.setdefault("n_ctx", config["n_positions"])
    (snapshot / "config.json").write_text(json.dumps(config))
    return root


def _hooked(model_dir: Path, cache_root: Path, hf_model: Any = None, **kwargs: Any) -> Any:
    tl = pytest.importorskip("transformer_lens", reason="transformer_lens comes with the interop extra")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    official = tl.loading_from_pretrained.get_official_model_name("gpt2")
    cache = cache_root / "hub"
    if not cache.exists():
        _hub_cache_for(model_dir, official, cache)
    return tl.HookedTransformer.from_pretrained(
        "gpt2",
        hf_model=hf_model if hf_model is not None else AutoModelForCausalLM.from_pretrained(str(model_dir)),
        tokenizer=AutoTokenizer.from_pretrained(str(model_dir)),
        device="cpu",
        cache_dir=str(cache),
        **kwargs,
    )


def _stored_rows(store: ActivationStore, split: str, docs: set[int]) -> dict[int, dict[int, np.ndarray]]:
    out: dict[int, dict[int, np.ndarray]] = {d: {} for d in docs}
    for batch in store.iter_rows(split, batch_size=4096):
        for i in np.flatnonzero(np.isin(batch.doc_id, list(docs))):
            out[int(batch.doc_id[i])][int(batch.pos[i])] = batch.acts[i].numpy()
    return out


def test_transformer_lens_hook_with_export_kwargs_equals_stored_rows(tiny_gpt2, tiny_store, tmp_path):
    """Old behaviour: `model_from_pretrained_kwargs: {}` loads with `center_writing_weights=True`, whose
    `hook_resid_pre` is each token's stream minus its mean: asserted to differ below."""
    store = ActivationStore.open(tiny_store)
    export_saelens(
        SparseAutoencoder(store.d_model, 2 * store.d_model, seed=0), tmp_path / "sae", store.manifest
    )
    meta = read_json(tmp_path / "sae" / "cfg.json")["metadata"]
    assert meta["model_from_pretrained_kwargs"] == {"center_writing_weights": False}
    assert meta["hook_name"] == f"blocks.{store.manifest['model']['layer']}.hook_resid_pre"

    docs = store.documents("test")
    chosen = sorted(docs, key=lambda d: -len(docs[d]))[:3]
    stored = _stored_rows(store, "test", set(chosen))
    model = _hooked(tiny_gpt2, tmp_path, **meta["model_from_pretrained_kwargs"])
    default = _hooked(tiny_gpt2, tmp_path)  # what `{}` gave: TransformerLens' processing defaults
    compared = 0
    for doc in chosen:
        ids = torch.from_numpy(docs[doc].astype(np.int64))[None]
        _, cache = model.run_with_cache(ids, names_filter=meta["hook_name"])
        _, cache_default = default.run_with_cache(ids, names_filter=meta["hook_name"])
        positions = sorted(stored[doc])
        assert positions, f"document {doc} has no stored rows"
        rows = torch.from_numpy(np.stack([stored[doc][p] for p in positions]))
        hook = cache[meta["hook_name"]][0, positions]
        hook_default = cache_default[meta["hook_name"]][0, positions]
        # Stored in float16: equal up to its rounding (half an ulp, 2^-11 relative).
        tol = rows.abs() * 2**-10 + 1e-6
        assert ((hook - rows).abs() <= tol).all()
        assert not ((hook_default - rows).abs() <= tol).all()
        compared += len(positions)
    assert compared >= 30


def test_final_layer_hook_with_the_exports_kwargs_equals_hidden_states(tiny_gpt2, tmp_path):
    """Past the last block HF returns the final norm's output: TransformerLens' `unembed.hook_in`, equal to
    it only without `fold_ln`, which the export then asks for (checked with a non-trivial final norm;
    the old hook, `ln_final.hook_normalized`, is taken before the norm's weight and bias)."""
    from transformers import AutoModelForCausalLM

    hf_model = AutoModelForCausalLM.from_pretrained(str(tiny_gpt2))
    with torch.no_grad():
        hf_model.transformer.ln_f.weight.normal_(1.0, 0.3, generator=torch.Generator().manual_seed(0))
        hf_model.transformer.ln_f.bias.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(1))
    layers = hf_model.config.n_layer
    manifest = {"model": {"name": "gpt2", "layer": layers, "num_layers": layers}}
    export_saelens(SparseAutoencoder(32, 64, seed=0), tmp_path / "sae", manifest)
    meta = read_json(tmp_path / "sae" / "cfg.json")["metadata"]
    assert meta["hook_name"] == "unembed.hook_in"
    assert meta["model_from_pretrained_kwargs"] == {"center_writing_weights": False, "fold_ln": False}
    ids = torch.arange(5, 45)[None]
    expected = hf_model(ids, output_hidden_states=True).hidden_states[layers]
    model = _hooked(tiny_gpt2, tmp_path, hf_model=hf_model, **meta["model_from_pretrained_kwargs"])
    _, cache = model.run_with_cache(ids, names_filter=meta["hook_name"])
    torch.testing.assert_close(cache[meta["hook_name"]], expected, rtol=1e-5, atol=1e-5)
    _, cache = model.run_with_cache(ids, names_filter="ln_final.hook_normalized")
    assert not torch.allclose(cache["ln_final.hook_normalized"], expected, rtol=1e-3, atol=1e-3)
