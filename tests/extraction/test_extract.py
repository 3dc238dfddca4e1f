"""Extraction: the stored activations are the model's hidden_states[L]; early stop; bucketed batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sae_core.extraction.extract import (
    LayerReader,
    extract_activations,
    length_batches,
    store_key,
    store_path,
)
from sae_core.store import ActivationStore


def _assert_matches_model(store: ActivationStore, model_dir, layer: int, docs_per_split: int = 6) -> None:
    """Each document's stored rows equal hidden_states[layer] of that document run alone, unpadded."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir)).eval()
    checked = 0
    for split in ("train", "val", "test"):
        rows = next(store.iter_rows(split, batch_size=10**7, drop_first_token=False), None)
        if rows is None:
            continue
        for doc, tokens in list(store.documents(split).items())[:docs_per_split]:
            ids = torch.from_numpy(tokens.astype(np.int64))[None]
            with torch.inference_mode():
                ref = model(input_ids=ids, output_hidden_states=True).hidden_states[layer][0]
            mine = rows.acts[torch.from_numpy(rows.doc_id == doc)]
            # Every position but the rows the store leaves out (the prepended BOS, special tokens, sinks).
            left_out = set(store.left_out_positions(split).get(doc, np.empty(0)).tolist())
            kept = [p for p in range(len(tokens)) if p not in left_out]
            assert rows.pos[rows.doc_id == doc].tolist() == kept
            scale = float(ref.abs().max())
            torch.testing.assert_close(mine, ref[kept], rtol=2e-3, atol=2e-3 * scale)
            checked += 1
    assert checked >= 10


def test_tiny_store_equals_unpadded_single_document_forward(tiny_store, tiny_gpt2, tiny_store_config):
    store = ActivationStore.open(tiny_store)
    manifest = store.manifest
    assert len(manifest["shards"]) >= 3 and store.store_dtype == "float16"
    assert manifest["model"]["layer"] == 1 and manifest["model"]["num_layers"] == 2
    assert "entering block 1" in manifest["model"]["layer_meaning"]
    assert manifest["model"]["d_model"] == 32 and store.tokenizer_path == str(tiny_gpt2)
    assert manifest["data"]["num_documents"] is None and manifest["data"]["context_length"] == 128
    assert manifest["num_documents"] == 150 and manifest["drop_first_token"] is True
    assert all(len(s["sha256"]) == 64 for s in manifest["shards"])
    assert manifest["num_tokens"] == sum(s["rows"] for s in manifest["shards"])
    _assert_matches_model(store, tiny_gpt2, layer=1)
    # Truncation at the context length; every document starts at pos 0.
    docs = store.documents("train")
    assert max(len(t) for t in docs.values()) == 128
    assert tiny_store == store_path(tiny_store_config) and store_key(tiny_store_config) in str(tiny_store)


def test_complete_store_is_reused(tiny_store, tiny_store_config):
    before = (tiny_store / "manifest.json").stat().st_mtime_ns
    calls = []
    assert extract_activations(tiny_store_config, lambda *a: calls.append(a)) == tiny_store
    assert calls == [] and (tiny_store / "manifest.json").stat().st_mtime_ns == before


def test_store_key_ignores_device_batch_size_and_threads_only(tiny_store_config):
    key = store_key(tiny_store_config)
    same = tiny_store_config.model_copy(deep=True)
    same.extraction.batch_tokens = 999
    same.extraction.num_threads = 1
    same.model.device = "auto"
    assert store_key(same) == key
    other = tiny_store_config.model_copy(deep=True)
    other.extraction.store_dtype = "float32"
    assert store_key(other) != key


def _tiny_model(kind: str, vocab: int):
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaModel

    torch.manual_seed(0)
    if kind == "bert":
        config = BertConfig(
            vocab_size=vocab,
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
        )
        return BertModel(config).eval()
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    return LlamaModel(config).eval()


@pytest.mark.parametrize("kind", ["gpt2", "llama", "bert"])
def test_layer_reader_stops_early_and_matches_hidden_states_with_padding(kind, tiny_gpt2):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(tiny_gpt2)).eval() if kind == "gpt2" else _tiny_model(kind, 400)
    n = model.config.num_hidden_layers
    lengths = [17, 11, 5]
    gen = torch.Generator().manual_seed(1)
    docs = [torch.randint(5, 400, (k,), generator=gen) for k in lengths]
    ids = torch.zeros(3, 17, dtype=torch.long)
    mask = torch.zeros(3, 17, dtype=torch.long)
    for i, doc in enumerate(docs):
        ids[i, : len(doc)] = doc
        mask[i, : len(doc)] = 1
    blocks = next(m for m in model.modules() if isinstance(m, torch.nn.ModuleList))
    for layer in range(n + 1):
        ran = []
        hooks = [
            b.register_forward_hook(lambda *a, i=i, ran=ran: ran.append(i)) for i, b in enumerate(blocks)
        ]
        reader = LayerReader(model, layer)
        got = reader(ids, mask)
        reader.close()
        for h in hooks:
            h.remove()
        assert ran == list(range(layer)), "blocks past the layer must not run"
        for i, doc in enumerate(docs):
            with torch.inference_mode():
                ref = model(input_ids=doc[None], output_hidden_states=True).hidden_states[layer][0]
            torch.testing.assert_close(got[i, : len(doc)], ref, rtol=1e-4, atol=1e-5)


def test_bert_extraction_matches_its_own_forward(tmp_path, tiny_gpt2, tiny_store_config):
    """An encoder (attention in both directions): padding must be masked out, not merely trailing."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_gpt2))
    model = _tiny_model("bert", len(tokenizer))
    model.save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    cfg = tiny_store_config.model_copy(deep=True)
    cfg.data_root = str(tmp_path / "data")
    cfg.model.name = str(tmp_path / "bert")
    cfg.model.layer = 2
    cfg.data.num_documents = 40
    cfg.extraction.store_dtype = "float32"
    store = ActivationStore.open(extract_activations(cfg))
    assert store.manifest["model"]["architecture"] == "BertModel"
    _assert_matches_model(store, tmp_path / "bert", layer=2)


def test_length_batches_respect_the_budget_and_keep_every_document():
    lengths = [5, 120, 33, 64, 64, 1, 300, 7]
    batches = length_batches(lengths, batch_tokens=128)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * longest <= 128
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded <= sum(lengths) / 0.75
    assert len(length_batches([100] * 10, batch_tokens=500)) == 2  # equal lengths fill the budget


def test_fused_gelu_gives_the_same_hidden_states(tiny_gpt2):
    from transformers import AutoModel

    from sae_core.extraction.extract import fuse_gelu

    reference = AutoModel.from_pretrained(str(tiny_gpt2)).eval()
    fused = AutoModel.from_pretrained(str(tiny_gpt2)).eval()
    assert fuse_gelu(fused) == 2 and fuse_gelu(fused) == 0
    ids = torch.randint(5, 400, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = reference(input_ids=ids, output_hidden_states=True).hidden_states
        got = fused(input_ids=ids, output_hidden_states=True).hidden_states
    for layer in range(3):
        torch.testing.assert_close(got[layer], want[layer], rtol=1e-5, atol=1e-6)


def test_num_threads_applies_during_extraction_and_is_restored(tmp_path, tiny_store_config):
    cfg = tiny_store_config.model_copy(deep=True)
    cfg.data_root = str(tmp_path)
    cfg.extraction.num_threads = 1
    original = torch.get_num_threads()
    torch.set_num_threads(2)
    seen: list[int] = []
    try:
        extract_activations(cfg, lambda *_: seen.append(torch.get_num_threads()))
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(original)


def test_extraction_reports_documents_out_of_a_known_total(tmp_path, tiny_store_config):
    """Progress came as tokens with no total, so the UI's progress artifact could show nothing."""
    cfg = tiny_store_config.model_copy(deep=True)
    cfg.data_root = str(tmp_path)
    cfg.data.num_documents = 30
    calls: list[tuple[int, int | None, dict]] = []
    extract_activations(cfg, lambda done, total, info: calls.append((done, total, info)))
    assert calls[0][1] == 30 and calls[0][0] > 0
    assert all(total for _, total, _ in calls) and "tok/s" in calls[0][2]
    done, total, info = calls[-1]
    manifest = ActivationStore.open(store_path(cfg)).manifest
    assert done == total == manifest["data"]["documents_read"] - manifest["data"]["documents_empty"]
    assert info["tokens"] == manifest["num_tokens"]
