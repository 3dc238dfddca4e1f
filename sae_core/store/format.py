"""The activation store's on-disk format: schema, split assignment, shard planning and the shard writer.

A store is a directory of `part-NNNNN.parquet` shards (one row per token, in document order) and a
`manifest.json` written last. Readers live in `sae_core.store.reader`; writers are `write_store` (bring
your own arrays), `sae_core.extraction.extract` (a model's residual stream) and
`sae_core.store.import_pt` (the study's chunks). They all go through `ShardWriter`, so every store has
the same layout and checks.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sae_core.errors import StoreError
from sae_core.io import atomic_path, atomic_write_json, make_dirs, sha256_file
from sae_core.version import code_version, library_versions

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")
FLOAT16_MAX = 65504.0
DEFAULT_ROW_GROUP_TOKENS = 16_384
"""Rows per Parquet row group: the unit that shuffled reading permutes (25 MB at d=768 in float16)."""

_SHARD_RE = re.compile(r"^part-(\d{5})\.parquet$")
_NUMPY_DTYPES = {"float16": np.float16, "float32": np.float32}


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def store_schema(d_model: int, store_dtype: str) -> pa.Schema:
    """Every field required (non-nullable): Parquet then stores no definition levels for them, which
    makes decoding `act` about 1.5× faster (its per-element levels are the reader's main cost)."""
    return pa.schema(
        [
            pa.field("doc_id", pa.int32(), nullable=False),
            pa.field("pos", pa.int32(), nullable=False),
            pa.field("token_id", pa.int32(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("act", act_type(d_model, store_dtype), nullable=False),
        ]
    )


def act_type(d_model: int, store_dtype: str) -> pa.DataType:
    value_type = pa.float16() if store_dtype == "float16" else pa.float32()
    return pa.list_(pa.field("element", value_type, nullable=False), d_model)


def check_store_dtype(store_dtype: str) -> np.dtype:
    if store_dtype not in _NUMPY_DTYPES:
        raise StoreError(f"extraction.store_dtype: must be float16 or float32 (got {store_dtype!r})")
    return np.dtype(_NUMPY_DTYPES[store_dtype])


# ---------------------------------------------------------------------------------------------
# Splits: a document's split is a pure function of its id, so it never straddles splits and a
# re-extraction (or another tool) assigns the same one.


def _splitmix64(values: np.ndarray) -> np.ndarray:
    z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def split_codes(doc_ids: np.ndarray, val_fraction: float, test_fraction: float, seed: int = 0) -> np.ndarray:
    """Index into `SPLITS` (0 train, 1 val, 2 test) for each doc id: a uniform draw u from a hash of
    (seed, doc_id); u < test_fraction → test, u < test + val → val, else train."""
    ids = np.asarray(doc_ids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        mixed = _splitmix64(ids ^ _splitmix64(np.asarray([seed], dtype=np.int64))[0])
    u = (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    codes = np.zeros(len(ids), dtype=np.int8)
    codes[u < test_fraction + val_fraction] = 1
    codes[u < test_fraction] = 2
    return codes


def split_of(doc_id: int, val_fraction: float, test_fraction: float, seed: int = 0) -> str:
    return SPLITS[int(split_codes(np.asarray([doc_id]), val_fraction, test_fraction, seed)[0])]


def plan_shards(doc_lengths: list[int], shard_tokens: int) -> list[tuple[int, int]]:
    """Group consecutive documents into shards of at most `shard_tokens` rows (a longer document gets a
    shard of its own): [(first, end)) index ranges. Deterministic, so a resumed run re-plans the same."""
    plans: list[tuple[int, int]] = []
    start, rows = 0, 0
    for i, length in enumerate(doc_lengths):
        if rows and rows + length > shard_tokens:
            plans.append((start, i))
            start, rows = i, 0
        rows += length
    if rows or start < len(doc_lengths):
        plans.append((start, len(doc_lengths)))
    return [p for p in plans if p[1] > p[0]]


def check_values(acts: np.ndarray, doc_ids: np.ndarray, store_dtype: str) -> None:
    """NaN/Inf fail with the document id; so does a value that float16 cannot hold (|x| > 65504)."""
    if acts.size == 0:
        return
    finite = np.isfinite(acts).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise StoreError(f"activations: NaN or Inf in document doc_id={int(doc_ids[row])} (row {row})")
    if store_dtype == "float16" and acts.dtype != np.float16:
        peak = np.abs(acts).max(axis=1)
        if peak.max() > FLOAT16_MAX:
            row = int(np.argmax(peak))
            raise StoreError(
                f"extraction.store_dtype: |activation| {float(peak[row]):.4g} in document "
                f"doc_id={int(doc_ids[row])} overflows float16 (max 65504); use float32"
            )


# ---------------------------------------------------------------------------------------------
# Writing


@dataclass
class RowChunk:
    """Consecutive rows of a shard; `acts` may be float32 (checked, then cast) or the store dtype."""

    doc_id: np.ndarray
    pos: np.ndarray
    token_id: np.ndarray
    split: np.ndarray  # int8 codes into SPLITS
    acts: np.ndarray  # [n, d_model]


class ShardWriter:
    """Writes shards atomically (temporary name, then rename) and, last, the manifest."""

    def __init__(self, path: str | Path, d_model: int, store_dtype: str, row_group_tokens: int) -> None:
        self.path = Path(path)
        self.d_model = int(d_model)
        self.store_dtype = store_dtype
        self.np_dtype = check_store_dtype(store_dtype)
        self.row_group_tokens = int(row_group_tokens)
        self.schema = store_schema(self.d_model, store_dtype)
        make_dirs(self.path)

    def remove_temporaries(self) -> None:
        """Temporary files a killed writer left behind (never visible as shards)."""
        for tmp in self.path.glob(".part-*.tmp"):
            tmp.unlink(missing_ok=True)

    def existing_shards(self) -> list[int]:
        return sorted(int(m.group(1)) for p in self.path.iterdir() if (m := _SHARD_RE.match(p.name)))

    def write_shard(self, index: int, chunks: Iterable[RowChunk]) -> dict[str, Any]:
        """Write one shard from row chunks in store order; return its manifest entry."""
        target = self.path / shard_name(index)
        with atomic_path(target) as tmp:
            writer = pq.ParquetWriter(
                tmp,
                self.schema,
                compression={c: ("none" if c == "act" else "zstd") for c in self.schema.names},
                use_dictionary=["split"],
                write_statistics=["doc_id", "pos", "token_id"],
                # One data page per column chunk: a row group's `act` is then one contiguous run of
                # values that readers map without a copy (`parquet_pages`).
                data_page_size=self.row_group_tokens * self.d_model * self.np_dtype.itemsize + (1 << 20),
            )
            try:
                pending: list[RowChunk] = []
                pending_rows = 0
                for chunk in chunks:
                    pending.append(self._checked(chunk))
                    pending_rows += len(chunk.doc_id)
                    if pending_rows >= self.row_group_tokens:
                        self._write_group(writer, pending)
                        pending, pending_rows = [], 0
                if pending:
                    self._write_group(writer, pending)
            finally:
                writer.close()
        return shard_entry(target)

    def _checked(self, chunk: RowChunk) -> RowChunk:
        if chunk.acts.ndim != 2 or chunk.acts.shape[1] != self.d_model:
            raise StoreError(
                f"activations: expected shape [n, {self.d_model}] (got {list(chunk.acts.shape)})"
            )
        check_values(chunk.acts, chunk.doc_id, self.store_dtype)
        return chunk

    def _write_group(self, writer: pq.ParquetWriter, chunks: list[RowChunk]) -> None:
        acts = np.ascontiguousarray(np.concatenate([c.acts for c in chunks]), dtype=self.np_dtype)
        codes = np.concatenate([c.split for c in chunks]).astype(np.int8)
        split = pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(SPLITS)).dictionary_decode()
        table = pa.Table.from_arrays(
            [
                pa.array(np.concatenate([c.doc_id for c in chunks]).astype(np.int32)),
                pa.array(np.concatenate([c.pos for c in chunks]).astype(np.int32)),
                pa.array(np.concatenate([c.token_id for c in chunks]).astype(np.int32)),
                split,
                pa.FixedSizeListArray.from_arrays(
                    pa.array(acts.reshape(-1)), type=act_type(self.d_model, self.store_dtype)
                ),
            ],
            schema=self.schema,
        )
        writer.write_table(table, row_group_size=len(table))

    def write_manifest(
        self,
        shards: list[dict[str, Any]],
        *,
        model: dict[str, Any],
        data: dict[str, Any],
        drop_first_token: bool,
        split_rule: dict[str, Any],
        extraction: dict[str, Any] | None = None,
        source: dict[str, Any] | None = None,
        left_out: dict[str, Any] | None = None,
        bos: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Totals from the shard entries; written atomically, last: its presence marks a complete store.
        `source` says where the documents came from (`extract` records it; arrays brought by the
        caller have none). `left_out` is `measure_left_out`'s entry (rows every reader leaves out),
        `bos` what extraction did about the tokenizer's BOS; both are absent when None."""
        splits: dict[str, dict[str, int]] = {}
        for name in SPLITS:
            docs: set[int] = set()
            for shard in shards:
                docs.update(shard["_docs"][name])
            splits[name] = {
                "tokens": sum(s["splits"][name]["tokens"] for s in shards),
                "documents": len(docs),
                "first_tokens": sum(s["splits"][name]["first_tokens"] for s in shards),
            }
        manifest = {
            "format_version": FORMAT_VERSION,
            "model": {**model, "d_model": self.d_model},
            "data": data,
            "extraction": extraction or {},
            "d_model": self.d_model,
            "store_dtype": self.store_dtype,
            "drop_first_token": bool(drop_first_token),
            "num_tokens": sum(s["rows"] for s in shards),
            "num_documents": sum(v["documents"] for v in splits.values()),
            "splits": splits,
            "split_rule": split_rule,
            "row_group_tokens": self.row_group_tokens,
            "shards": [{k: v for k, v in s.items() if not k.startswith("_")} for s in shards],
            **({"left_out": left_out} if left_out is not None else {}),
            **({"bos": bos} if bos is not None else {}),
            "code_version": code_version(),
            **({"source": source} if source is not None else {}),
            "versions": library_versions(),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        atomic_write_json(self.path / MANIFEST, manifest)
        log.info("store complete: %s (%d tokens, %d shards)", self.path, manifest["num_tokens"], len(shards))
        return manifest


def shard_entry(path: Path) -> dict[str, Any]:
    """The manifest entry of a complete shard: rows, checksum and per-split counts (read back from the
    file, so a resumed run describes earlier shards exactly as the run that wrote them)."""
    table = pq.read_table(path, columns=["doc_id", "pos", "split"])
    doc_id = table.column("doc_id").to_numpy()
    pos = table.column("pos").to_numpy()
    split = table.column("split")
    entry: dict[str, Any] = {
        "file": path.name,
        "rows": int(table.num_rows),
        "sha256": sha256_file(path),
        "doc_id_min": int(doc_id.min()) if len(doc_id) else None,
        "doc_id_max": int(doc_id.max()) if len(doc_id) else None,
        "splits": {},
        "_docs": {},
    }
    for name in SPLITS:
        mask = pc.equal(split, name).to_numpy(zero_copy_only=False)
        entry["splits"][name] = {"tokens": int(mask.sum()), "first_tokens": int((pos[mask] == 0).sum())}
        entry["_docs"][name] = set(np.unique(doc_id[mask]).tolist())
    return entry


# ---------------------------------------------------------------------------------------------
# Bring your own activations
