"""Bad input to the extraction fails early with one error naming the field and the value."""

from __future__ import annotations

import json

import pytest
import torch

from sae_core.config import ConfigError
from sae_core.errors import StoreError
from sae_core.extraction.extract import extract_activations, store_path


@pytest.fixture
def cfg(tiny_store_config, tmp_path):
    out = tiny_store_config.model_copy(deep=True)
    out.data_root = str(tmp_path / "data")
    out.data.num_documents = 12
    return out


def test_unknown_local_model_directory(cfg, tmp_path):
    cfg.model.name = str(tmp_path / "no-such-model")
    with pytest.raises(ConfigError, match=r"model\.name: cannot load .*no-such-model.*not a local directory"):
        extract_activations(cfg)


def test_unknown_hub_model_offline_says_the_network_was_needed(cfg):
    cfg.model.name = "nobody-here/no-such-model"
    with pytest.raises(ConfigError, match=r"model\.name: .*nobody-here/no-such-model.*network is off"):
        extract_activations(cfg)


def test_unknown_dataset_offline(cfg):
    cfg.data.dataset = "nobody-here/no-such-dataset"
    cfg.data.data_files = None
    with pytest.raises(ConfigError, match=r"data\.dataset: .*nobody-here/no-such-dataset.*network is off"):
        extract_activations(cfg)


def test_missing_data_file(cfg, tmp_path):
    cfg.data.data_files = str(tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError, match=r"data\.data_files: .*missing\.jsonl"):
        extract_activations(cfg)


@pytest.mark.parametrize("streaming", [True, False])
def test_malformed_jsonl_is_named_malformed_not_offline(cfg, tmp_path, streaming):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "broken\n{"text": "x"}\n')
    cfg.data.data_files = str(bad)
    cfg.data.streaming = streaming
    with pytest.raises(ConfigError) as caught:
        extract_activations(cfg)
    message = str(caught.value)
    assert message.startswith(f"data.data_files: {str(bad)!r} is malformed (ArrowInvalid: JSON parse")
    assert "network" not in message and "\n" not in message


def test_layer_beyond_the_model(cfg):
    cfg.model.layer = 3
    with pytest.raises(ConfigError, match=r"model\.layer: .* has 2 layers.*\(got 3\)"):
        extract_activations(cfg)
    assert not (store_path(cfg) / "manifest.json").exists()


def test_context_longer_than_the_model_takes(cfg):
    cfg.data.context_length = 512
    with pytest.raises(ConfigError, match=r"data\.context_length: .* at most 128 .*\(got 512\)"):
        extract_activations(cfg)


def test_missing_text_column(cfg):
    cfg.data.text_column = "body"
    with pytest.raises(ConfigError, match=r"data\.text_column: .* no column 'body' \(columns: text\)"):
        extract_activations(cfg)


def test_empty_dataset(cfg, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("".join(json.dumps({"text": ""}) + "\n" for _ in range(3)))
    cfg.data.data_files = str(empty)
    with pytest.raises(
        ConfigError, match=r"data\.dataset: .* yielded no tokens \(3 documents read, 3 empty\)"
    ):
        extract_activations(cfg)


def _broken_model(tiny_gpt2, tmp_path, edit):
    from transformers import AutoTokenizer, GPT2Model

    model = GPT2Model.from_pretrained(str(tiny_gpt2))
    with torch.no_grad():
        edit(model.wte.weight)
    out = tmp_path / "broken"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(tiny_gpt2)).save_pretrained(out)
    return out


def test_nan_activations_name_the_document(cfg, tiny_gpt2, tiny_texts, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_gpt2))
    ids = [set(tokenizer(t, truncation=True, max_length=128)["input_ids"]) for t in tiny_texts[:12]]
    token = next(iter(ids[7] - set().union(*ids[:7], *ids[8:])))  # a token only document 7 has

    def poison(weight):
        weight[token] = float("nan")

    cfg.model.name = str(_broken_model(tiny_gpt2, tmp_path, poison))
    with pytest.raises(StoreError, match=r"NaN or Inf in document doc_id=7\b"):
        extract_activations(cfg)
    assert not (store_path(cfg) / "manifest.json").exists()
    assert not list(store_path(cfg).glob("part-*.parquet"))


def test_float16_overflow_is_detected(cfg, tiny_gpt2, tmp_path):
    cfg.model.name = str(_broken_model(tiny_gpt2, tmp_path, lambda w: w.mul_(1e7)))
    with pytest.raises(StoreError, match=r"overflows float16 .*use float32"):
        extract_activations(cfg)
