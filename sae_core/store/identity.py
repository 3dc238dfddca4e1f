"""A store's identity: one fingerprint of everything a reader of the store can observe, the one key every
cache, resume identity and completed-run check uses (training's `config_hash`, the train and analyze
task keys of `tasks.cache`).

Observable means: which rows a reader yields and what they mean — the shards' checksums and row counts,
the split totals (`drop_first_token` changes them without touching a shard: 340 vs 323 training tokens
of the same arrays), the split rule, the row-group size (the unit shuffled reading permutes), `d_model`,
the stored dtype, and the model, revision and layer the rows were taken from. Not observable, and so
left out: `created_at`, the code and library versions and the data source's provenance (an identical
re-extraction must not retrain every cell; a different source shows in the shard checksums), the
extraction's own settings (their effect is in the shards and the keys above) and where the model was
cached on the machine that wrote the store (`model.resolved_path`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sae_core.errors import StoreError
from sae_core.io import read_json
from sae_core.store.format import MANIFEST

IDENTITY_VERSION = 1
"""Bumped when the identity's definition changes: every run keyed by the old one is then retrained."""

MODEL_KEYS = ("name", "revision", "layer", "dtype", "d_model", "num_layers")
"""The manifest's `model` entries that say what the rows are (the rest is provenance or wording)."""


def store_identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """The observable part of a store's manifest (see the module docstring), as a plain dict."""
    model = manifest.get("model") or {}
    return {
        "identity_version": IDENTITY_VERSION,
        "format_version": manifest.get("format_version"),
        "shards": [(s.get("file"), s.get("rows"), s.get("sha256")) for s in manifest.get("shards", [])],
        "num_tokens": manifest.get("num_tokens"),
        "splits": manifest.get("splits"),
        "split_rule": manifest.get("split_rule"),
        "row_group_tokens": manifest.get("row_group_tokens"),
        "d_model": manifest.get("d_model"),
        "store_dtype": manifest.get("store_dtype"),
        "drop_first_token": manifest.get("drop_first_token"),
        "model": {key: model.get(key) for key in MODEL_KEYS},
        # Which rows readers leave out (absent from stores that leave none out: their identity stands).
        **({"left_out": _left_out_identity(manifest["left_out"])} if manifest.get("left_out") else {}),
    }


def _left_out_identity(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: entry.get(key) for key in ("sha256", "rows", "counts", "at_first_position")}


def store_fingerprint(store: str | Path | dict[str, Any] | Any) -> str:
    """`store:<32 hex>`, the sha256 of `store_identity`, for a store's directory, its manifest dict or
    an opened store (anything with a `manifest`)."""
    manifest: Any
    if isinstance(store, dict):
        manifest = store
    elif isinstance(store, str | Path):
        path = Path(store) / MANIFEST
        if not path.is_file():
            raise StoreError(f"store: {Path(store)} has no {MANIFEST}; the store is incomplete")
        manifest = read_json(path)
    else:
        manifest = getattr(store, "manifest", None)
        if not isinstance(manifest, dict):
            raise StoreError(f"store: {store!r} has no manifest to fingerprint")
    text = json.dumps(store_identity(manifest), sort_keys=True, separators=(",", ":"), default=str)
    return "store:" + hashlib.sha256(text.encode()).hexdigest()[:32]
