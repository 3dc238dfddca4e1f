"""The original study's `.pt` activation chunks → an activation store, so its own data can be re-used.

Each `chunk_<k>.pt` is a dict: `filtered_residual_activations [n_tok, d]` (padding already removed),
`token_ids [n_tok]` and `attention_mask [n_docs, ctx]`. The mask's row sums give each document's token
count, in order; documents are numbered across chunks in chunk order (`chunk_0` first), so doc_id is
the document's index in the study's data set. One chunk is in memory at a time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sae_core.errors import StoreError
from sae_core.progress import Progress, no_progress
from sae_core.store.format import (
    DEFAULT_ROW_GROUP_TOKENS,
    MANIFEST,
    RowChunk,
    ShardWriter,
    check_store_dtype,
    check_values,
    shard_name,
    split_codes,
)

log = logging.getLogger(__name__)

_CHUNK_RE = re.compile(r"^chunk_(\d+)\.pt$")
_KEYS = ("filtered_residual_activations", "token_ids", "attention_mask")
_Doc = tuple[int, np.ndarray, np.ndarray]  # doc_id, token ids, activations [n, d] (store dtype)


def chunk_files(chunk_dir: str | Path) -> list[Path]:
    """`chunk_<k>.pt` files in numeric order of k."""
    folder = Path(chunk_dir)
    if not folder.is_dir():
        raise StoreError(f"chunk_dir: no such directory {str(folder)!r}")
    found = sorted(
        ((int(m.group(1)), p) for p in folder.iterdir() if (m := _CHUNK_RE.match(p.name))), key=lambda t: t[0]
    )
    if not found:
        raise StoreError(f"chunk_dir: no chunk_<k>.pt files in {folder}")
    return [p for _, p in found]


def import_pt_chunks(
    chunk_dir: str | Path,
    out_dir: str | Path,
    *,
    store_dtype: str = "float16",
    model_name: str = "gpt2",
    layer: int = 6,
    dataset: str = "Skylion007/openwebtext",
    drop_first_token: bool = True,
    shard_tokens: int = 262_144,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    progress: Progress | None = None,
) -> Path:
    """Convert every chunk of `chunk_dir` into a store at `out_dir`; returns `out_dir`."""
    files = chunk_files(chunk_dir)
    check_store_dtype(store_dtype)
    if shard_tokens <= 0:
        raise StoreError(f"shard_tokens: must be > 0 (got {shard_tokens})")
    out = Path(out_dir)
    if (out / MANIFEST).exists():
        raise StoreError(f"out: {out} already holds a complete store")
    report = progress or no_progress
    writer: ShardWriter | None = None
    shards: list[dict[str, Any]] = []
    done = 0
    for block in _blocks(_documents(files, store_dtype), shard_tokens):
        if writer is None:
            d_model = block[0][2].shape[1]
            writer = ShardWriter(out, d_model, store_dtype, min(DEFAULT_ROW_GROUP_TOKENS, shard_tokens))
            writer.remove_temporaries()
            for old in writer.existing_shards():
                (out / shard_name(old)).unlink()
        codes = split_codes(np.array([d for d, _, _ in block]), val_fraction, test_fraction, seed)
        chunks = (
            RowChunk(
                np.full(len(ids), doc, dtype=np.int32),
                np.arange(len(ids), dtype=np.int32),
                ids,
                np.full(len(ids), code, dtype=np.int8),
                acts,
            )
            for (doc, ids, acts), code in zip(block, codes, strict=True)
        )
        shards.append(writer.write_shard(len(shards), chunks))
        done += shards[-1]["rows"]
        report(done, None, {"shards": len(shards)})
    if writer is None:
        raise StoreError(f"chunk_dir: the chunks in {chunk_dir} hold no tokens")
    writer.write_manifest(
        shards,
        model={
            "name": model_name,
            "resolved_path": None,
            "revision": None,
            "layer": layer,
            "layer_meaning": (
                f"hidden_states[{layer}] as the study's code took it (output_hidden_states=True): the "
                f"residual stream entering block {layer}; imported from .pt chunks"
            ),
            "num_layers": None,
            "dtype": "float32",
        },
        data={
            "dataset": dataset,
            "source": str(Path(chunk_dir).resolve()),
            "chunks": [p.name for p in files],
        },
        drop_first_token=drop_first_token,
        split_rule={
            "rule": "splitmix64(doc_id)",
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "seed": seed,
        },
    )
    return out


def _documents(files: list[Path], store_dtype: str) -> Iterator[_Doc]:
    """Each chunk's documents, split by the attention mask's row sums."""
    next_doc = 0
    np_dtype = check_store_dtype(store_dtype)
    for path in files:
        try:
            chunk = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise StoreError(f"chunk: cannot read {path} ({type(exc).__name__}: {exc})") from None
        if not isinstance(chunk, dict) or any(k not in chunk for k in _KEYS):
            have = sorted(chunk) if isinstance(chunk, dict) else type(chunk).__name__
            raise StoreError(f"chunk: {path} must be a dict with keys {', '.join(_KEYS)} (got {have})")
        acts = chunk["filtered_residual_activations"]
        mask = chunk["attention_mask"].bool()
        tokens = chunk["token_ids"]
        if tokens.ndim == 2 and tokens.shape == mask.shape:  # padded [n_docs, ctx]: keep the real ones
            tokens = tokens[mask]
        tokens = tokens.reshape(-1)
        lengths = mask.sum(dim=1).tolist()
        if acts.ndim != 2 or acts.shape[0] != len(tokens) or sum(lengths) != len(tokens):
            raise StoreError(
                f"chunk: {path} is inconsistent: activations {list(acts.shape)}, token_ids {len(tokens)}, "
                f"attention_mask holds {sum(lengths)} tokens"
            )
        acts_np = acts.float().numpy() if acts.dtype == torch.bfloat16 else acts.numpy()
        tokens_np = tokens.numpy().astype(np.int32)
        start = 0
        for length in lengths:
            if length:
                rows = slice(start, start + length)
                doc_acts = acts_np[rows]
                # Checked before the cast, so a float16 overflow is caught with its doc id.
                check_values(doc_acts, np.full(length, next_doc), store_dtype)
                yield next_doc, tokens_np[rows], doc_acts.astype(np_dtype)
            start += length
            next_doc += 1
        log.info("imported %s (%d documents)", path.name, len(lengths))


def _blocks(docs: Iterator[_Doc], shard_tokens: int) -> Iterator[list[_Doc]]:
    block: list[_Doc] = []
    rows = 0
    for doc in docs:
        if block and rows + len(doc[1]) > shard_tokens:
            yield block
            block, rows = [], 0
        block.append(doc)
        rows += len(doc[1])
    if block:
        yield block
