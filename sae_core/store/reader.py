"""Reading an activation store (`ActivationStore`); `sae_core.store.writer` writes one from arrays.

The store is one row per token in Parquet shards plus a manifest (see `docs/architecture.md`). Reading
is built for training throughput: row groups are the unit of I/O, `act` is read straight from its
Parquet pages (`parquet_pages`; Arrow's list decoding cost more than everything else together), shuffled
batches permute the row-group order per epoch and mix rows through an in-memory buffer, float16 is widened
to float32 in the same pass that fills the buffer, and each shard's checksum is verified once per process
before its first use.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from sae_core.errors import StoreError
from sae_core.io import read_json
from sae_core.store.format import MANIFEST, split_codes, split_of
from sae_core.store.left_out import LeftOut, left_out_counts
from sae_core.store.parquet_pages import release_mapped
from sae_core.store.prefetch import prefetched
from sae_core.store.shards import ShardFiles, Unit, check_split

__all__ = ["ActivationStore", "RowBatch", "split_codes", "split_of"]

log = logging.getLogger(__name__)


@dataclass
class RowBatch:
    """Rows in store order with their provenance (what analysis needs to find contexts)."""

    acts: torch.Tensor  # float32 [B, d_model]
    doc_id: np.ndarray  # int32 [B]
    pos: np.ndarray  # int32 [B]
    token_id: np.ndarray  # int32 [B]


class ActivationStore(ShardFiles):
    """A complete store on disk. Open with `ActivationStore.open(path)`."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.d_model: int = int(manifest["d_model"])
        self.num_tokens: int = int(manifest["num_tokens"])
        self.store_dtype: str = manifest["store_dtype"]
        self.drop_first_token: bool = bool(manifest["drop_first_token"])
        model = manifest.get("model") or {}
        self.tokenizer_path: str | None = model.get("resolved_path") or model.get("name")
        self.left_out = LeftOut(path, manifest.get("left_out"))
        """Rows every read leaves out besides the first tokens (`sae_core.store.left_out`)."""
        self._index: dict[tuple[str, bool, bool], list[Unit]] = {}
        self._index_lock = threading.Lock()
        self._mapped: OrderedDict[int, tuple[memoryview, pq.FileMetaData]] = OrderedDict()
        self.read_workers: int = min(4, os.cpu_count() or 1)
        """Threads decoding row groups ahead of the consumer (1: read in the calling thread)."""

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path) -> ActivationStore:
        """Refuse a folder without a manifest (incomplete store) or with missing shards."""
        root = Path(path)
        if not root.is_dir():
            raise StoreError(f"store: no such directory {str(root)!r}")
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise StoreError(
                f"store: {root} has no {MANIFEST}; the store is incomplete (re-run the extraction)"
            )
        try:
            manifest = read_json(manifest_path)
        except ValueError as exc:
            raise StoreError(f"store: {manifest_path} is not valid JSON ({exc})") from None
        for key in ("d_model", "num_tokens", "store_dtype", "drop_first_token", "splits", "shards"):
            if key not in manifest:
                raise StoreError(f"store: {manifest_path} lacks the key {key!r}")
        for shard in manifest["shards"]:
            if not (root / shard["file"]).is_file():
                raise StoreError(f"store: shard {root / shard['file']} listed in the manifest is missing")
        return cls(root, manifest)

    def __repr__(self) -> str:
        return f"ActivationStore({str(self.path)!r}, tokens={self.num_tokens}, d_model={self.d_model})"

    # -- sizes ---------------------------------------------------------------------------------

    def num_tokens_in(self, split: str, drop_first_token: bool | None = None) -> int:
        """Rows a read of `split` yields: its tokens less the left-out rows (`left_out_counts`)."""
        info = self.manifest["splits"][check_split(split)]
        kept = int(info["tokens"]) - self.left_out.count(split)
        if self._drop(drop_first_token):
            kept -= int(info["first_tokens"]) - self.left_out.at_first_position(split)
        return kept

    def left_out_counts(self, split: str, drop_first_token: bool | None = None) -> dict[str, Any]:
        """How many rows of `split` a read leaves out, per rule, with the rules' definitions."""
        return left_out_counts(self.manifest, check_split(split), self._drop(drop_first_token))

    def left_out_positions(self, split: str) -> dict[int, np.ndarray]:
        """doc_id → positions of its rows in the left-out index (not the first tokens): what the CE
        evaluation leaves unpatched and uncounted."""
        rows = self.left_out.rows(check_split(split))
        out: dict[int, list[int]] = {}
        for doc, pos in zip(rows["doc_id"].tolist(), rows["pos"].tolist(), strict=True):
            out.setdefault(int(doc), []).append(int(pos))
        return {doc: np.asarray(sorted(p), dtype=np.int64) for doc, p in out.items()}

    def _drop(self, drop_first_token: bool | None) -> bool:
        return self.drop_first_token if drop_first_token is None else bool(drop_first_token)

    # -- reading -------------------------------------------------------------------------------

    def batches(
        self,
        split: str = "train",
        batch_size: int = 4096,
        shuffle: bool = True,
        seed: int = 0,
        drop_first_token: bool | None = None,
        prefetch: bool = False,
        drop_last: bool = False,
        shuffle_buffer: int | None = None,
    ) -> Iterator[torch.Tensor]:
        """One epoch of float32 [B, d_model] batches. Shuffled: the row groups' order is permuted with
        `seed` and rows are mixed through a buffer of `shuffle_buffer` rows (default max(64k, 4 × B));
        the same seed gives the same batches. `prefetch` reads ahead in a background thread."""
        if batch_size <= 0:
            raise StoreError(f"batch_size: must be > 0 (got {batch_size})")
        units = self._units(split, self._drop(drop_first_token))
        if shuffle:
            buffer = shuffle_buffer or max(65_536, 4 * batch_size)
            gen = self._shuffled(units, batch_size, seed, buffer, drop_last)
        else:
            gen = (b.acts for b in self._in_order(units, batch_size, drop_last, with_rows=False))
        return prefetched(gen) if prefetch else gen

    def iter_rows(
        self, split: str = "test", batch_size: int = 8192, drop_first_token: bool | None = None
    ) -> Iterator[RowBatch]:
        """Store order (documents in order, positions ascending), no shuffle, with provenance."""
        units = self._units(split, self._drop(drop_first_token))
        return self._in_order(units, batch_size, drop_last=False, with_rows=True)

    def sample(
        self, n: int, split: str = "train", seed: int = 0, drop_first_token: bool | None = None
    ) -> torch.Tensor:
        """`n` rows drawn uniformly without replacement, float32 [n, d_model], in random order."""
        units = self._units(split, self._drop(drop_first_token))
        total = sum(u.count for u in units)
        if n > total:
            raise StoreError(f"sample: n={n} exceeds the {total} tokens of split {split!r} in {self.path}")
        picks = np.random.default_rng(seed).choice(total, size=n, replace=False)
        starts = np.cumsum([0] + [u.count for u in units])
        owner = np.searchsorted(starts, picks, side="right") - 1
        out = torch.empty(n, self.d_model, dtype=torch.float32)
        for unit_index in np.unique(owner):
            where = np.nonzero(owner == unit_index)[0]
            acts = self._read_unit(units[unit_index])
            local = picks[where] - starts[unit_index]
            out[torch.from_numpy(where)] = torch.from_numpy(acts[local].astype(np.float32))
            release_mapped(acts)
        return out

    def gather(
        self,
        split: str,
        rows: np.ndarray,
        drop_first_token: bool | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Rows of `split` by index (0 … `num_tokens_in(split)` − 1, in `load_split`'s order), [len(rows),
        d_model] in the store dtype. Each row group holding one of them is read once, `read_workers`
        ahead: the cost is the row groups touched, not the rows taken. `out` (at least len(rows) rows
        of the store dtype) is filled instead of a fresh array: a reused buffer is not page-faulted in
        again at every call, which cost more than the copy itself."""
        units = self._units(split, self._drop(drop_first_token))
        starts = np.cumsum([0] + [u.count for u in units])
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= starts[-1]):
            raise StoreError(
                f"gather: row indices must be in [0, {starts[-1]}) for split {split!r} "
                f"(got {int(rows.min())}…{int(rows.max())})"
            )
        order = np.argsort(rows, kind="stable")
        wanted = rows[order]
        bounds = np.searchsorted(wanted, starts)
        todo = [
            (i, int(bounds[i]), int(bounds[i + 1])) for i in range(len(units)) if bounds[i + 1] > bounds[i]
        ]

        dtype = np.float16 if self.store_dtype == "float16" else np.float32
        if out is None:
            out = np.empty((len(rows), self.d_model), dtype=dtype)
        elif out.dtype != dtype or out.shape[1:] != (self.d_model,) or len(out) < len(rows):
            raise StoreError(
                f"gather: out must hold {len(rows)} × {self.d_model} {np.dtype(dtype).name} "
                f"(got {out.shape} {out.dtype})"
            )
        target = out[: len(rows)]

        def pick(item: tuple[int, int, int]) -> tuple[np.ndarray, ...]:
            # Each reader thread scatters its row group's rows into `target` itself (disjoint rows; numpy
            # releases the GIL), so the random writes run in parallel too.
            unit, lo, hi = item
            part = self._read_unit(units[unit])
            target[order[lo:hi]] = part[wanted[lo:hi] - starts[unit]]
            release_mapped(part)
            return ()

        for _ in self._read_ahead(todo, pick):
            pass
        return target

    def load_split(
        self,
        split: str = "train",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        drop_first_token: bool | None = None,
    ) -> torch.Tensor:
        """The whole split as one [N, d_model] tensor on `device` (shuffle by index there: the GPU path)."""
        units = self._units(split, self._drop(drop_first_token))
        out = torch.empty(sum(u.count for u in units), self.d_model, dtype=dtype, device=device)
        at = 0
        for (part,) in self._read_ahead(units, self._read_store_dtype):
            with warnings.catch_warnings():  # "not writable": `part` is only the source of the copy
                warnings.simplefilter("ignore", UserWarning)
                acts = torch.from_numpy(part)
            out[at : at + len(acts)].copy_(acts, non_blocking=False)
            release_mapped(part)
            at += len(acts)
        return out

    def documents(self, split: str = "test") -> dict[int, np.ndarray]:
        """doc_id → its token ids in position order (every token, the first and the left-out included)."""
        docs: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        for unit in self._units(split, drop=False, leave_out=False):
            table = self._shard_file(unit.shard).read_row_group(
                unit.group, columns=["doc_id", "pos", "token_id"]
            )
            cols = [table.column(c).to_numpy() for c in ("doc_id", "pos", "token_id")]
            if unit.rows is not None:
                cols = [c[unit.rows] for c in cols]
            doc_id, pos, token_id = cols
            bounds = np.flatnonzero(np.diff(doc_id)) + 1
            for start, end in zip(np.r_[0, bounds], np.r_[bounds, len(doc_id)], strict=True):
                docs.setdefault(int(doc_id[start]), []).append((pos[start:end], token_id[start:end]))
        out: dict[int, np.ndarray] = {}
        for doc, parts in docs.items():
            pos = np.concatenate([p for p, _ in parts])
            tok = np.concatenate([t for _, t in parts])
            out[doc] = tok[np.argsort(pos, kind="stable")].astype(np.int32)
        return out

    def _in_order(
        self, units: list[Unit], batch_size: int, drop_last: bool, with_rows: bool
    ) -> Iterator[RowBatch]:
        pending: deque[tuple[np.ndarray, ...]] = deque()
        pending_rows = 0

        def take(n: int) -> list[np.ndarray]:
            nonlocal pending_rows
            pieces: list[tuple[np.ndarray, ...]] = []
            while n:
                head = pending[0]
                if len(head[0]) <= n:
                    pieces.append(pending.popleft())
                else:
                    pieces.append(tuple(c[:n] for c in head))
                    pending[0] = tuple(c[n:] for c in head)
                n -= len(pieces[-1][0])
            pending_rows -= sum(len(p[0]) for p in pieces)
            if len(pieces) == 1:  # a batch inside one row group: its rows as they are, no copy
                return list(pieces[0])
            return [np.concatenate(cols) for cols in zip(*pieces, strict=True)]

        read = self._read_with_rows if with_rows else self._read_float32
        for parts in self._read_ahead(units, read):
            pending.append(parts)
            pending_rows += len(parts[0])
            while pending_rows >= batch_size:
                yield _row_batch(take(batch_size), with_rows)
        if pending_rows and not drop_last:
            yield _row_batch(take(pending_rows), with_rows)

    def _shuffled(
        self, units: list[Unit], batch_size: int, seed: int, buffer_rows: int, drop_last: bool
    ) -> Iterator[torch.Tensor]:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(units))
        parts: list[np.ndarray] = []
        rows = 0
        # One buffer for the whole epoch, refilled in place: a fresh 100 MB array per refill costs its
        # page faults every time (and, on a VM, first-touch faults that made whole epochs 2x slower).
        space: np.ndarray | None = None
        capacity = buffer_rows + max((u.count for u in units), default=0)
        reads = self._read_ahead([units[i] for i in order], self._read_store_dtype)
        while True:
            part = next(reads, None)
            if part is not None:
                parts.append(part[0])
                rows += len(part[0])
                if rows < buffer_rows:
                    continue
            if not rows:
                return
            if space is None or len(space) < rows:
                space = np.empty((max(rows, capacity), self.d_model), dtype=parts[0].dtype)
            # Gathered in the store dtype (half the bytes to move), widened to float32 batch by batch.
            # numpy, not torch: torch's multi-threaded casts spin when the cores are shared (8x the CPU).
            buffer = np.concatenate(parts, out=space[:rows])
            for done in parts:
                release_mapped(done)
            order = rng.permutation(len(buffer))
            full = len(buffer) // batch_size * batch_size
            for start in range(0, full, batch_size):
                yield torch.from_numpy(buffer[order[start : start + batch_size]].astype(np.float32))
            rest = buffer[order[full:]]  # a copy (fancy indexing): the next refill may overwrite `space`
            if part is None:  # the epoch's last rows
                if len(rest) and not drop_last:
                    yield torch.from_numpy(rest.astype(np.float32))
                return
            parts, rows = [rest], len(rest)


def _row_batch(cols: list[np.ndarray], with_rows: bool) -> RowBatch:
    acts = torch.from_numpy(np.ascontiguousarray(cols[0], dtype=np.float32))
    if not with_rows:
        empty = np.empty(0, dtype=np.int32)
        return RowBatch(acts, empty, empty, empty)
    return RowBatch(acts, *(c.astype(np.int32, copy=False) for c in cols[1:]))
