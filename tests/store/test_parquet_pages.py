"""The direct page reader of `act`: the same values as Arrow for every layout it accepts, None (and the
store falls back to Arrow) for every layout it does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from sae_core.io import sha256_file
from sae_core.store import ActivationStore, write_store
from sae_core.store.format import act_type, store_schema
from sae_core.store.parquet_pages import map_file, read_fixed_size_column, release_mapped

D = 24


def _table(rows: int, dtype: str, seed: int = 0) -> tuple[pa.Table, np.ndarray]:
    acts = np.random.default_rng(seed).standard_normal((rows, D)).astype(dtype)
    schema = store_schema(D, dtype)
    table = pa.Table.from_arrays(
        [
            pa.array(np.arange(rows, dtype=np.int32) // 10),
            pa.array(np.arange(rows, dtype=np.int32) % 10),
            pa.array(np.zeros(rows, dtype=np.int32)),
            pa.array(["train"] * rows),
            pa.FixedSizeListArray.from_arrays(pa.array(acts.reshape(-1)), type=act_type(D, dtype)),
        ],
        schema=schema,
    )
    return table, acts


def _arrow(parquet: pq.ParquetFile, group: int) -> np.ndarray:
    column = parquet.read_row_group(group, columns=["act"]).column("act").combine_chunks()
    return column.flatten().to_numpy().reshape(-1, D)


LAYOUTS = {
    "as the store writes it": {},
    "many small pages": {"data_page_size": 512},
    "data page v2": {"data_page_version": "2.0", "data_page_size": 700},
    # Statistics go to the page headers (their min/max are binary fields the header parser skips)...
    "statistics in the page headers": {"write_statistics": True, "data_page_size": 1000},
    # ...or, with a page index, to the index instead.
    "statistics, page checksums and a page index": {
        "write_statistics": True,
        "write_page_checksum": True,
        "write_page_index": True,
        "data_page_size": 1000,
    },
}


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_same_values_as_arrow(tmp_path, dtype, layout):
    table, acts = _table(300, dtype)
    path = tmp_path / "part.parquet"
    options = {"compression": "none", "use_dictionary": ["split"], "write_statistics": False}
    pq.write_table(table, path, row_group_size=128, **{**options, **LAYOUTS[layout]})
    parquet = pq.ParquetFile(path)
    assert parquet.num_row_groups == 3
    got = [
        read_fixed_size_column(map_file(path), parquet.metadata, g, D) for g in range(parquet.num_row_groups)
    ]
    assert all(g is not None for g in got), layout
    for group, values in enumerate(got):
        rows = parquet.metadata.row_group(group).num_rows
        assert values.dtype == np.dtype(dtype) and values.shape == (rows, D)
        np.testing.assert_array_equal(values, _arrow(parquet, group))
    np.testing.assert_array_equal(np.concatenate(got), acts)


def _refused(tmp_path: Path, table: pa.Table, **options) -> None:
    path = tmp_path / "part.parquet"
    pq.write_table(table, path, **options)
    parquet = pq.ParquetFile(path)
    assert read_fixed_size_column(map_file(path), parquet.metadata, 0, D) is None


def test_compressed_or_dictionary_pages_are_left_to_arrow(tmp_path):
    table, _ = _table(50, "float16")
    _refused(tmp_path, table, compression="zstd")
    _refused(tmp_path, table, compression="none", use_dictionary=True)


def test_nulls_other_widths_and_other_types_are_left_to_arrow(tmp_path):
    # A nullable element with a null in it: the page holds one value fewer than it has levels.
    values = pa.array([1.0] * (D - 1) + [None] + [2.0] * D, type=pa.float32())
    nullable = pa.FixedSizeListArray.from_arrays(values, D)
    _refused(tmp_path, pa.table({"act": nullable}), compression="none", use_dictionary=False)
    # Lists of another length than asked for.
    table, _ = _table(50, "float32")
    path = tmp_path / "ok.parquet"
    pq.write_table(table, path, compression="none", use_dictionary=["split"])
    assert read_fixed_size_column(map_file(path), pq.read_metadata(path), 0, D + 1) is None
    # float64 values, and a file without an `act` column.
    as_double = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(2 * D)), D)
    _refused(tmp_path, pa.table({"act": as_double}), compression="none", use_dictionary=False)
    _refused(tmp_path, pa.table({"other": as_double}), compression="none", use_dictionary=False)


def test_a_store_rewritten_compressed_reads_the_same_through_arrow(tmp_path):
    rng = np.random.default_rng(1)
    doc_ids = np.repeat(np.arange(40), 12)
    acts = rng.standard_normal((len(doc_ids), D)).astype(np.float32)
    store = write_store(tmp_path / "store", acts, doc_ids, store_dtype="float16", row_group_tokens=64)
    for shard in store.manifest["shards"]:  # as written: the direct path, one page, no copy
        parquet = pq.ParquetFile(store.path / shard["file"])
        for group in range(parquet.num_row_groups):
            values = read_fixed_size_column(map_file(store.path / shard["file"]), parquet.metadata, group, D)
            assert values is not None and not values.flags.owndata and not values.flags.writeable
    expected = [b.clone() for b in store.batches("train", batch_size=50, seed=3)]
    # Another tool rewrites each shard with zstd (same rows, same schema): the direct path declines.
    manifest = store.manifest
    for shard in manifest["shards"]:
        path = store.path / shard["file"]
        table = pq.read_table(path)
        pq.write_table(table, path, compression="zstd", row_group_size=64)
        shard["sha256"] = sha256_file(path)
        parquet = pq.ParquetFile(path)
        assert read_fixed_size_column(map_file(path), parquet.metadata, 0, D) is None
    rewritten = ActivationStore(store.path, manifest)
    got = list(rewritten.batches("train", batch_size=50, seed=3))
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_the_store_keeps_a_bounded_number_of_shards_mapped(tmp_path, monkeypatch):
    import sae_core.store.shards as shards

    monkeypatch.setattr(shards, "_MAPPED_SHARDS", 2)
    doc_ids = np.repeat(np.arange(30), 10)
    acts = np.random.default_rng(2).standard_normal((len(doc_ids), D)).astype(np.float32)
    store = write_store(tmp_path / "store", acts, doc_ids, shard_tokens=50, row_group_tokens=20)
    assert len(store.manifest["shards"]) >= 5
    rows = torch.cat([b.acts for s in ("train", "val", "test") for b in store.iter_rows(s, 64, False)])
    assert len(store._mapped) == 2
    torch.testing.assert_close(rows.sort(0).values, torch.from_numpy(acts).sort(0).values)


def test_released_pages_read_back_the_same_values(tmp_path):
    """Dropping a mapping's pages after a copy keeps the data: they fault back in from the file."""
    table, acts = _table(400, "float32")
    path = tmp_path / "part.parquet"
    pq.write_table(table, path, compression="none", use_dictionary=["split"], data_page_size=1 << 26)
    meta = pq.read_metadata(path)
    values = read_fixed_size_column(map_file(path), meta, 0, D)
    assert values is not None and not values.flags.owndata
    copied = values.copy()
    release_mapped(values)
    release_mapped(values[1:3])  # a slice inside the mapping: whole pages only, if any
    release_mapped(copied)  # not mapped: a no-op
    np.testing.assert_array_equal(values, acts)
    np.testing.assert_array_equal(copied, acts)
