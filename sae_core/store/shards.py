"""The shard files under an activation store: checksums verified once per process, row groups mapped
and read straight from their Parquet pages (Arrow as the fallback), read ahead in worker threads.
`ActivationStore` builds its reading orders on these."""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sae_core.errors import StoreError
from sae_core.io import sha256_file
from sae_core.store.format import SPLITS
from sae_core.store.left_out import LeftOut, kept_rows
from sae_core.store.parquet_pages import map_file, read_fixed_size_column, release_mapped

_VERIFIED: dict[tuple[str, str, int, int], bool] = {}
"""Shards whose checksum this process has verified: (path, sha256, size, mtime_ns)."""
_VERIFY_LOCK = threading.Lock()
_T = TypeVar("_T")
_MAPPED_SHARDS = 64
"""Shards a store object keeps memory-mapped (400 MB each at the default 262,144 tokens in float16)."""


@dataclass
class Unit:
    """One row group and the rows of it a read selects (None: all of them)."""

    shard: int
    group: int
    rows: np.ndarray | None
    count: int


class ShardFiles:
    """Row-group reads over a store's shards; the subclass sets the attributes annotated here."""

    path: Path
    manifest: dict[str, Any]
    d_model: int
    read_workers: int
    _index_lock: threading.Lock
    _index: dict[tuple[str, bool, bool], list[Unit]]
    _mapped: OrderedDict[int, tuple[memoryview, pq.FileMetaData]]
    left_out: LeftOut

    def _verified_path(self, shard: int) -> Path:
        """The shard's path, its checksum verified (once per process)."""
        entry = self.manifest["shards"][shard]
        path = self.path / entry["file"]
        _verify(path, entry["sha256"])
        return path

    def _shard_file(self, shard: int) -> pq.ParquetFile:
        """A fresh reader: Arrow's readers are not shared between threads."""
        return pq.ParquetFile(self._verified_path(shard), memory_map=True)

    def _shard_bytes(self, shard: int) -> tuple[memoryview, pq.FileMetaData]:
        """The shard's mapped bytes and metadata, kept for the `_MAPPED_SHARDS` most recently used shards
        (a mapping holds a file descriptor; one that is dropped closes when its last array goes)."""
        with self._index_lock:
            if shard in self._mapped:
                self._mapped.move_to_end(shard)
            else:
                path = self._verified_path(shard)
                self._mapped[shard] = (map_file(path), pq.read_metadata(path))
                if len(self._mapped) > _MAPPED_SHARDS:
                    self._mapped.popitem(last=False)
            return self._mapped[shard]

    def _units(self, split: str, drop: bool, leave_out: bool = True) -> list[Unit]:
        """Row groups holding rows of `split` and which rows (cached per store object). `leave_out=False`
        keeps the left-out rows too: whole documents, for contexts and the CE evaluation only."""
        key = (check_split(split), drop, leave_out)
        with self._index_lock:
            if key not in self._index:
                self._index[key] = self._build_units(*key)
            return self._index[key]

    def _build_units(self, split: str, drop: bool, leave_out: bool) -> list[Unit]:
        """Each row group's rows that `kept_rows` keeps: the one place every read selects its rows."""
        units: list[Unit] = []
        keys = self.left_out.keys(split) if leave_out else None
        for shard, entry in enumerate(self.manifest["shards"]):
            if entry.get("splits", {}).get(split, {}).get("tokens", 1) == 0:
                continue
            parquet = self._shard_file(shard)
            for group in range(parquet.num_row_groups):
                table = parquet.read_row_group(group, columns=["split", "pos", "doc_id"])
                mask = kept_rows(
                    pc.equal(table.column("split"), split).to_numpy(zero_copy_only=False),
                    table.column("doc_id").to_numpy(),
                    table.column("pos").to_numpy(),
                    drop,
                    keys,
                )
                count = int(mask.sum())
                if count == len(mask):
                    units.append(Unit(shard, group, None, count))
                elif count:
                    units.append(Unit(shard, group, np.flatnonzero(mask).astype(np.int64), count))
        return units

    def _read_raw(self, unit: Unit) -> np.ndarray:
        """All rows of the unit's row group, [rows, d] in the store dtype, read-only: the values straight
        from the Parquet pages when the column is stored as this project writes it, else through Arrow."""
        direct = read_fixed_size_column(*self._shard_bytes(unit.shard), unit.group, self.d_model)
        if direct is not None:
            return direct
        column = self._shard_file(unit.shard).read_row_group(unit.group, columns=["act"]).column("act")
        values = column.combine_chunks().flatten().to_numpy(zero_copy_only=True)
        return values.reshape(-1, self.d_model)

    def _read_unit(self, unit: Unit) -> np.ndarray:
        """The unit's rows in the store dtype: a read-only view of the file when it takes the whole row
        group (the caller copies it, then calls `release_mapped`), else a copy of the rows it selects."""
        raw = self._read_raw(unit)
        if unit.rows is None:
            return raw
        picked = raw[unit.rows]
        release_mapped(raw)
        return picked

    def _read_ahead(
        self, units: list[_T], read: Callable[[_T], tuple[np.ndarray, ...]]
    ) -> Iterator[tuple[np.ndarray, ...]]:
        """`read` of each unit, in order, run by `read_workers` threads a few units ahead of the consumer
        (numpy and Arrow release the GIL): the consumer, an encode or a training step, overlaps them."""
        if self.read_workers <= 1 or len(units) <= 1:
            yield from map(read, units)
            return
        with ThreadPoolExecutor(self.read_workers, thread_name_prefix="store-read") as pool:
            pending: deque[Future] = deque()
            todo = iter(units)
            for unit in itertools.islice(todo, self.read_workers + 1):
                pending.append(pool.submit(read, unit))
            while pending:
                result = pending.popleft().result()
                if (following := next(todo, None)) is not None:
                    pending.append(pool.submit(read, following))
                yield result

    def _read_store_dtype(self, unit: Unit) -> tuple[np.ndarray]:
        return (self._read_unit(unit),)

    def _read_float32(self, unit: Unit) -> tuple[np.ndarray]:
        """The unit's rows widened to a writable float32 array (in the reader thread, off the consumer's)."""
        part = self._read_unit(unit)
        out = part.astype(np.float32, copy=unit.rows is None)  # never a view of the read-only file
        release_mapped(part)
        return (out,)

    def _read_with_rows(self, unit: Unit) -> tuple[np.ndarray, ...]:
        table = self._shard_file(unit.shard).read_row_group(unit.group, columns=["doc_id", "pos", "token_id"])
        meta = [table.column(c).to_numpy() for c in ("doc_id", "pos", "token_id")]
        # Copies: Arrow's buffers are read-only, and a batch's arrays are the caller's to keep or modify.
        picked = (np.array(m if unit.rows is None else m[unit.rows], dtype=np.int32) for m in meta)
        return (*self._read_float32(unit), *picked)


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise StoreError(f"split: must be one of {', '.join(SPLITS)} (got {split!r})")
    return split


REBUILD = "rebuild it with `sae-sweep extract --force` and the same config"


def verify_store(path: str | Path) -> None:
    """Every shard the manifest lists is there and matches its sha256, else `StoreError` naming the
    shard and how to rebuild the store. Verified shards are remembered for the process, so the readers
    that follow do not hash them again."""
    from sae_core.io import read_json

    store = Path(path)
    for entry in read_json(store / "manifest.json").get("shards", []):
        shard = store / entry["file"]
        if not shard.is_file():
            raise StoreError(f"store: shard {shard} is missing; the store is incomplete, {REBUILD}")
        _verify(shard, entry["sha256"])


def remove_store(path: str | Path) -> None:
    """Manifest first, then the shards. Removed rather than rebuilt beside it and swapped in: a store
    can be most of a disk, and a reader holding the old manifest would meet new shards under the same
    names anyway; without a manifest every reader refuses the store as incomplete until the new one
    lands."""
    store = Path(path)
    (store / "manifest.json").unlink(missing_ok=True)
    for shard in store.glob("part-*.parquet"):
        shard.unlink()


def _verify(path: Path, expected: str) -> None:
    """Checksum a shard before its first use in this process; a mismatch is refused with the path."""
    stat = path.stat()
    key = (str(path.resolve()), expected, stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return
    with _VERIFY_LOCK:
        if key in _VERIFIED:
            return
        actual = sha256_file(path)
        if actual != expected:
            raise StoreError(
                f"store: shard {path} does not match its checksum (sha256 {actual[:12]}…, manifest "
                f"{expected[:12]}…); the store is corrupted, {REBUILD}"
            )
        _VERIFIED[key] = True
