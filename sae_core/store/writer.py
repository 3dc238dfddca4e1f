"""`write_store`: an activation store from your own arrays (activations made elsewhere, imports, tests).

It writes through the same shard writer and manifest as extraction, then opens the result for reading.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sae_core.errors import StoreError
from sae_core.store.format import (
    DEFAULT_ROW_GROUP_TOKENS,
    MANIFEST,
    SPLITS,
    RowChunk,
    ShardWriter,
    check_store_dtype,
    plan_shards,
    split_codes,
)
from sae_core.store.left_out import LeftOutRules, measure_left_out
from sae_core.store.reader import ActivationStore


def write_store(
    path: str | Path,
    activations: np.ndarray | torch.Tensor,
    doc_ids: np.ndarray | torch.Tensor,
    positions: np.ndarray | torch.Tensor | None = None,
    token_ids: np.ndarray | torch.Tensor | None = None,
    *,
    splits: np.ndarray | list[str] | None = None,
    store_dtype: str = "float32",
    model: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    drop_first_token: bool = False,
    shard_tokens: int = 262_144,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    row_group_tokens: int = DEFAULT_ROW_GROUP_TOKENS,
    overwrite: bool = False,
    left_out: LeftOutRules | None = None,
) -> ActivationStore:
    """Write a store from arrays: `activations` [N, d], `doc_ids` [N] (each document's rows contiguous).
        `positions` default to the position within each document, `token_ids` to zeros, `splits` (an [N]
        array of train/val/test) to the same hash of doc_id that extraction uses. `left_out` measures which
    rows readers leave out (special tokens, sinks), as extraction does."""
    root = Path(path)
    if (root / MANIFEST).exists():
        if not overwrite:
            raise StoreError(f"store: {root} already holds a complete store (pass overwrite=True)")
        (root / MANIFEST).unlink()
    acts = _as_numpy(activations)
    if acts.ndim != 2 or acts.shape[0] == 0:
        raise StoreError(
            f"activations: expected a non-empty [N, d_model] array (got shape {list(acts.shape)})"
        )
    n, d_model = acts.shape
    check_store_dtype(store_dtype)
    docs = _column("doc_ids", doc_ids, n)
    bounds = np.flatnonzero(np.diff(docs)) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, n]
    run_ids, run_counts = np.unique(docs[starts], return_counts=True)
    if (run_counts > 1).any():
        repeated = int(run_ids[np.argmax(run_counts > 1)])
        raise StoreError(f"doc_ids: the rows of document {repeated} are not contiguous")
    pos = (
        _column("positions", positions, n)
        if positions is not None
        else (np.arange(n) - np.repeat(starts, ends - starts)).astype(np.int32)
    )
    toks = _column("token_ids", token_ids, n) if token_ids is not None else np.zeros(n, dtype=np.int32)
    if splits is None:
        codes = split_codes(docs, val_fraction, test_fraction, seed)
    else:
        names = np.asarray(splits).astype(str)
        if names.shape != (n,):
            raise StoreError(f"splits: expected {n} entries (got shape {list(names.shape)})")
        bad = set(np.unique(names)) - set(SPLITS)
        if bad:
            raise StoreError(f"splits: values must be train/val/test (got {sorted(bad)})")
        codes = np.select([names == s for s in SPLITS], [0, 1, 2]).astype(np.int8)

    writer = ShardWriter(root, d_model, store_dtype, row_group_tokens)
    writer.remove_temporaries()
    for old in writer.existing_shards():
        (root / f"part-{old:05d}.parquet").unlink()
    shards = []
    for index, (first, end) in enumerate(plan_shards((ends - starts).tolist(), shard_tokens)):
        lo, hi = int(starts[first]), int(ends[end - 1])
        cuts = [*range(lo, hi, row_group_tokens), hi]
        chunks = (
            RowChunk(docs[a:b], pos[a:b], toks[a:b], codes[a:b], acts[a:b])
            for a, b in itertools.pairwise(cuts)
        )
        shards.append(writer.write_shard(index, chunks))
    default_model = {
        "name": "custom",
        "resolved_path": None,
        "revision": None,
        "layer": None,
        "layer_meaning": "activations supplied to write_store",
        "num_layers": None,
        "dtype": str(acts.dtype),
    }
    writer.write_manifest(
        shards,
        left_out=measure_left_out(root, shards, d_model, left_out or LeftOutRules()),
        model={**default_model, **(model or {})},
        data=data or {},
        drop_first_token=drop_first_token,
        split_rule={
            "rule": "explicit" if splits is not None else "splitmix64(doc_id)",
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "seed": seed,
        },
    )
    return ActivationStore.open(root)


def _as_numpy(values: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.dtype == torch.bfloat16:
            values = values.float()
        return values.numpy()
    return np.asarray(values)


def _column(name: str, values: np.ndarray | torch.Tensor, n: int) -> np.ndarray:
    array = _as_numpy(values)
    if array.shape != (n,):
        raise StoreError(f"{name}: expected shape [{n}] (got {list(array.shape)})")
    if not np.issubdtype(array.dtype, np.integer):
        raise StoreError(f"{name}: expected integers (got dtype {array.dtype})")
    if array.size and (array.min() < np.iinfo(np.int32).min or array.max() > np.iinfo(np.int32).max):
        raise StoreError(f"{name}: values must fit int32 (got range {array.min()}..{array.max()})")
    return array.astype(np.int32)
