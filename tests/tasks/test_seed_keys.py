"""The `seed` preset's training and analysis cache keys are unchanged by `training.normalize_activations`
(issue 22 item 1): seed sets `none`, which is left out of the key dumps, so its keys are byte-identical
to the ones main computed before the field existed (hard-coded below, computed at 410c539 with the same
fixed code version, store manifest and data root)."""

from __future__ import annotations

import json

from sae_core.config import load_config
from sae_core.naming import Cell
from sae_core.training.checkpoint import config_hash
from sae_core.training.run_cell import cell_identity
from tasks import cache, paths

MAIN_KEYS = {
    "train": "train-72cf987f3b7cdfea949036e2e1224a99",
    "analyze": "analyze-d1315ab24b8c7995af4c4dfcdb323158",
    "extract": "extract-a7add7f5e9950a267dffcf4d9f774e39",
    "run_config_hash": "5b45840620aa9227",
}
"""Computed on main (410c539) by this file's `_keys`, before the field existed."""


def _keys(tmp_path, monkeypatch) -> dict[str, str]:
    monkeypatch.setattr(cache, "code_version", lambda: "fixed-code-version")
    store = tmp_path / "store"
    store.mkdir()
    manifest = {
        "format_version": 1, "num_tokens": 100, "d_model": 768, "store_dtype": "float16",
        "splits": {"train": {"tokens": 80, "first_tokens": 1}}, "split_rule": "hash",
        "row_group_tokens": 10, "drop_first_token": True,
        "shards": [{"file": "part-00000.parquet", "rows": 100, "sha256": "0" * 64}],
        "model": {"name": "gpt2", "layer": 6, "d_model": 768},
    }  # fmt: skip
    (store / "manifest.json").write_text(json.dumps(manifest))
    cfg = paths.with_absolute_root(load_config("seed", None, {"data_root": "/nonexistent/sae-keys"}))
    cell = Cell(4, 0.01, "sampling")
    return {
        "train": cache.train_cache_key(cfg, cell, store),
        "analyze": cache.analyze_cache_key(cfg, cell, store),
        "extract": cache.extract_cache_key(cfg),
        "run_config_hash": config_hash(cell_identity(cell, cfg, _Data())),
    }


class _Data:
    """What `cell_identity` reads of the training data: its width and its store's fingerprint."""

    d_model = 768

    def fingerprint(self) -> str:
        return "store:" + "1" * 32


def test_seed_cache_keys_are_those_main_computed(tmp_path, monkeypatch):
    assert _keys(tmp_path, monkeypatch) == MAIN_KEYS


def test_a_normalised_preset_changes_its_train_key_on_purpose(tmp_path, monkeypatch):
    seed_train = _keys(tmp_path, monkeypatch)["train"]
    overrides = {"data_root": "/nonexistent/sae-keys", "training.normalize_activations": "expected_norm"}
    cfg = paths.with_absolute_root(load_config("seed", None, overrides))
    assert cache.train_cache_key(cfg, Cell(4, 0.01, "sampling"), tmp_path / "store") != seed_train
