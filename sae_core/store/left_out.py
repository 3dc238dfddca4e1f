"""Rows every reader of a store leaves out: a prepended BOS, special tokens and attention sinks.

Measured once, when the store is written (`measure_left_out`, after the last shard), and kept beside the
shards in `left_out.parquet` (doc_id, pos, token_id, split, rule, norm; its sha256 in the manifest) with
the counts per split and rule in the manifest's `left_out` entry. Rules, each row counted under the
first that takes it:

- `bos`: position 0 of a document when extraction prepended the tokenizer's BOS there;
- `special`: a row whose token is one of the tokenizer's special tokens;
- `sink`: a row whose norm exceeds `sink_norm_multiple` × the median row norm of its split (the median
  over the rows the two rules above keep), at positions ≤ `sink_max_position` (None: any position).

The readers' rule (`kept_rows`) adds the store's own `drop_first_token` (position 0), counted as
`first_token` only for the first rows no rule above took. A store without a `left_out` entry (every store
written before it, the `seed` preset's) leaves nothing out but the first tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sae_core.errors import StoreError
from sae_core.io import atomic_write_with, sha256_file
from sae_core.store.format import SPLITS
from sae_core.store.parquet_pages import map_file, read_fixed_size_column, release_mapped

LEFT_OUT_FILE = "left_out.parquet"
RULES = ("bos", "special", "sink")
"""The measured rules, in the order that attributes a row to one of them."""
READER_RULES = ("first_token", *RULES)
"""Every rule a reader applies, as analysis.json and the report count them."""

RULE_DEFINITIONS = {
    "first_token": "position 0 of each document (drop_first_token), where no other rule took it",
    "bos": "the BOS token extraction prepended at position 0",
    "special": "a token that is one of the tokenizer's special tokens",
    "sink": "row norm > {multiple:g} × its split's median row norm, at {where}",
}

_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.int32(), nullable=False),
        pa.field("pos", pa.int32(), nullable=False),
        pa.field("token_id", pa.int32(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("rule", pa.string(), nullable=False),
        pa.field("norm", pa.float32(), nullable=False),
    ]
)


@dataclass(frozen=True)
class LeftOutRules:
    """What to leave out (the extraction's settings, resolved against its tokenizer)."""

    bos_prepended: bool = False
    special_token_ids: tuple[int, ...] = ()
    sink_norm_multiple: float | None = None
    sink_max_position: int | None = None

    @property
    def active(self) -> bool:
        return self.bos_prepended or bool(self.special_token_ids) or self.sink_norm_multiple is not None


def row_keys(doc_id: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """One int64 per row, (doc_id, pos) packed: what the left-out index is matched on."""
    return (np.asarray(doc_id, dtype=np.int64) << 32) | np.asarray(pos, dtype=np.int64)


def kept_rows(
    split_mask: np.ndarray,
    doc_id: np.ndarray,
    pos: np.ndarray,
    drop_first_token: bool,
    left_out_keys: np.ndarray | None,
) -> np.ndarray:
    """The readers' one row filter: rows of the split (`split_mask`) that are not a dropped first token
    and not in the store's left-out index (sorted keys of `row_keys`). Every reader of the store —
    training batches, samples, analysis, the normalisation scale — selects its rows through this."""
    keep = np.asarray(split_mask, dtype=bool).copy()
    if drop_first_token:
        keep &= np.asarray(pos) != 0
    if left_out_keys is not None and len(left_out_keys):
        keep &= ~np.isin(row_keys(doc_id, pos), left_out_keys, assume_unique=False)
    return keep


def sink_definition(multiple: float, max_position: int | None) -> str:
    where = "any position" if max_position is None else f"positions 0–{max_position}"
    return RULE_DEFINITIONS["sink"].format(multiple=multiple, where=where)


# ---------------------------------------------------------------------------------------------
# Measuring (when the store is written)


def measure_left_out(
    path: str | Path, shards: list[dict[str, Any]], d_model: int, rules: LeftOutRules
) -> dict[str, Any] | None:
    """Measure `rules` over the complete shards of the store at `path`, write `left_out.parquet` and
    return the manifest's `left_out` entry (None when no rule is active: nothing is written)."""
    root = Path(path)
    if not rules.active:
        (root / LEFT_OUT_FILE).unlink(missing_ok=True)  # a rewritten store's stale index
        return None
    special = np.asarray(sorted(set(rules.special_token_ids)), dtype=np.int64)
    need_norms = rules.sink_norm_multiple is not None
    groups: list[dict[str, np.ndarray]] = []
    for entry in shards:
        groups.extend(_row_groups(root / entry["file"], d_model, need_norms))
    taken: list[dict[str, np.ndarray]] = []
    medians: dict[str, float | None] = {}
    for group in groups:
        rule = np.full(len(group["pos"]), "", dtype=object)
        if rules.bos_prepended:
            rule[group["pos"] == 0] = "bos"
        if len(special):
            rule[(rule == "") & np.isin(group["token_id"], special)] = "special"
        group["rule"] = rule
    if need_norms:
        assert rules.sink_norm_multiple is not None
        for code, name in enumerate(SPLITS):
            norms = [g["norm"][(g["split"] == code) & (g["rule"] == "")] for g in groups]
            pooled = np.concatenate(norms) if norms else np.empty(0, np.float32)
            medians[name] = float(np.median(pooled)) if len(pooled) else None
        for group in groups:
            limit = np.asarray([medians[s] or np.inf for s in SPLITS])[group["split"]]
            sink = (group["rule"] == "") & (group["norm"] > rules.sink_norm_multiple * limit)
            if rules.sink_max_position is not None:
                sink &= group["pos"] <= rules.sink_max_position
            group["rule"][sink] = "sink"
    for group in groups:
        pick = group["rule"] != ""
        if pick.any():
            taken.append({k: v[pick] for k, v in group.items()})
    table = _table(taken, need_norms)
    atomic_write_with(root / LEFT_OUT_FILE, lambda p: pq.write_table(table, p))
    return _entry(root / LEFT_OUT_FILE, table, rules, medians)


def _row_groups(path: Path, d_model: int, need_norms: bool) -> Iterable[dict[str, np.ndarray]]:
    parquet = pq.ParquetFile(path, memory_map=True)
    mapped = (map_file(path), pq.read_metadata(path)) if need_norms else None
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group, columns=["doc_id", "pos", "token_id", "split"])
        split = table.column("split").to_numpy(zero_copy_only=False)
        out = {
            "doc_id": table.column("doc_id").to_numpy().astype(np.int32),
            "pos": table.column("pos").to_numpy().astype(np.int32),
            "token_id": table.column("token_id").to_numpy().astype(np.int32),
            "split": np.select([split == s for s in SPLITS], [0, 1, 2]).astype(np.int8),
        }
        if mapped is not None:
            acts = read_fixed_size_column(*mapped, group, d_model)
            if acts is None:  # not laid out as this project writes it: through Arrow
                column = parquet.read_row_group(group, columns=["act"]).column("act")
                acts = column.combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, d_model)
            out["norm"] = np.linalg.norm(acts.astype(np.float32), axis=1).astype(np.float32)
            release_mapped(acts)
        else:
            out["norm"] = np.full(len(out["pos"]), np.nan, dtype=np.float32)
        yield out


def _table(taken: list[dict[str, np.ndarray]], with_norms: bool) -> pa.Table:
    if not taken:
        return _SCHEMA.empty_table()

    def col(name: str) -> np.ndarray:
        return np.concatenate([t[name] for t in taken])

    return pa.Table.from_arrays(
        [
            pa.array(col("doc_id"), pa.int32()),
            pa.array(col("pos"), pa.int32()),
            pa.array(col("token_id"), pa.int32()),
            pa.array(np.asarray(SPLITS, dtype=object)[col("split")].tolist(), pa.string()),
            pa.array(col("rule").tolist(), pa.string()),
            pa.array(col("norm"), pa.float32()),
        ],
        schema=_SCHEMA,
    )


def _entry(
    file: Path, table: pa.Table, rules: LeftOutRules, medians: dict[str, float | None]
) -> dict[str, Any]:
    split = np.asarray(table.column("split").to_pylist(), dtype=object)
    rule = np.asarray(table.column("rule").to_pylist(), dtype=object)
    pos = table.column("pos").to_numpy()
    definitions = {name: RULE_DEFINITIONS[name] for name in ("first_token", "bos", "special")}
    if rules.sink_norm_multiple is not None:
        definitions["sink"] = sink_definition(rules.sink_norm_multiple, rules.sink_max_position)
    return {
        "file": file.name,
        "sha256": sha256_file(file),
        "rows": int(table.num_rows),
        "rules": definitions,
        "bos_prepended": rules.bos_prepended,
        "special_token_ids": sorted(set(rules.special_token_ids)),
        "sink_norm_multiple": rules.sink_norm_multiple,
        "sink_max_position": rules.sink_max_position,
        "median_norm": medians,
        "counts": {
            s: {r: int(((split == s) & (rule == r)).sum()) for r in RULES if r in definitions} for s in SPLITS
        },
        "at_first_position": {s: int(((split == s) & (pos == 0)).sum()) for s in SPLITS},
    }


# ---------------------------------------------------------------------------------------------
# Reading


class LeftOut:
    """A store's left-out index, read once (its checksum verified) and kept sorted per split."""

    def __init__(self, root: Path, entry: dict[str, Any] | None) -> None:
        self.entry = entry
        self._keys: dict[str, np.ndarray] = {}
        self._table: pa.Table | None = None
        if entry is not None:
            file = root / entry["file"]
            if not file.is_file():
                raise StoreError(
                    f"store: {file} listed in the manifest's left_out is missing; rebuild the store with "
                    "`sae-sweep extract --force`"
                )
            if sha256_file(file) != entry["sha256"]:
                raise StoreError(f"store: {file} does not match its checksum; rebuild the store")
            self._table = pq.read_table(file)

    def keys(self, split: str) -> np.ndarray | None:
        """Sorted `row_keys` of the split's left-out rows (None: the store leaves none out)."""
        if self._table is None:
            return None
        if split not in self._keys:
            rows = self.rows(split)
            self._keys[split] = np.sort(row_keys(rows["doc_id"], rows["pos"]))
        return self._keys[split]

    def rows(self, split: str) -> dict[str, np.ndarray]:
        """The split's left-out rows: doc_id, pos, token_id, rule, norm (empty arrays when none)."""
        if self._table is None:
            return {k: np.empty(0) for k in ("doc_id", "pos", "token_id", "rule", "norm")}
        table = self._table
        mask = np.asarray(table.column("split").to_pylist(), dtype=object) == split
        out = {
            k: table.column(k).to_numpy(zero_copy_only=False)[mask]
            for k in ("doc_id", "pos", "token_id", "norm")
        }
        out["rule"] = np.asarray(table.column("rule").to_pylist(), dtype=object)[mask]
        return out

    def count(self, split: str) -> int:
        if self.entry is None:
            return 0
        return sum(int(v) for v in self.entry["counts"][split].values())

    def at_first_position(self, split: str) -> int:
        return 0 if self.entry is None else int(self.entry["at_first_position"][split])


def left_out_counts(manifest: dict[str, Any], split: str, drop_first_token: bool) -> dict[str, Any]:
    """Rows a reader of `split` leaves out, per rule (`READER_RULES`; a rule the store did not apply is
    absent), with each rule's definition: what analysis.json records and the report prints."""
    info = manifest["splits"][split]
    entry = manifest.get("left_out")
    counts: dict[str, int] = {}
    definitions: dict[str, str] = {}
    at_first = 0
    if entry is not None:
        counts.update({k: int(v) for k, v in entry["counts"][split].items()})
        definitions.update({k: v for k, v in entry["rules"].items() if k in counts})
        at_first = int(entry["at_first_position"][split])
    if drop_first_token:
        counts = {"first_token": int(info["first_tokens"]) - at_first, **counts}
        definitions = {"first_token": RULE_DEFINITIONS["first_token"], **definitions}
    return {
        "split": split,
        "rows_in_split": int(info["tokens"]),
        "left_out": counts,
        "total_left_out": sum(counts.values()),
        "definitions": definitions,
        "median_norm": None if entry is None else (entry.get("median_norm") or {}).get(split),
    }
