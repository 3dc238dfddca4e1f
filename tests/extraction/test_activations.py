"""The activation store: write_store round trips, reading modes, splits, checksums and refusals."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from sae_core.errors import StoreError
from sae_core.store import ActivationStore, split_codes, write_store


def _docs(n_docs=30, d=8, seed=0, lo=3, hi=40):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(lo, hi, size=n_docs)
    doc_ids = np.repeat(np.arange(n_docs) * 7, lengths)  # ids need not be 0..n-1
    acts = rng.standard_normal((len(doc_ids), d)).astype(np.float32)
    return acts, doc_ids, lengths


def test_round_trip_in_store_order(tmp_path):
    acts, doc_ids, _ = _docs()
    tokens = np.arange(len(doc_ids)) % 50
    store = write_store(tmp_path, acts, doc_ids, token_ids=tokens, shard_tokens=200, row_group_tokens=64)
    assert len(store.manifest["shards"]) > 1
    assert store.num_tokens == len(acts) and store.d_model == 8
    seen = {}
    for split in ("train", "val", "test"):
        for batch in store.iter_rows(split, batch_size=50, drop_first_token=False):
            for i, doc in enumerate(batch.doc_id):
                seen.setdefault(int(doc), []).append(
                    (int(batch.pos[i]), int(batch.token_id[i]), batch.acts[i])
                )
    assert sum(len(v) for v in seen.values()) == len(acts)
    for doc, rows in seen.items():
        where = np.flatnonzero(doc_ids == doc)
        assert [r[0] for r in rows] == list(range(len(where)))  # default positions: 0.. within the doc
        assert [r[1] for r in rows] == tokens[where].tolist()
        torch.testing.assert_close(torch.stack([r[2] for r in rows]), torch.from_numpy(acts[where]))


def test_splits_follow_the_doc_id_hash_and_never_straddle(tmp_path):
    acts, doc_ids, _ = _docs(n_docs=200, d=4)
    store = write_store(tmp_path, acts, doc_ids, val_fraction=0.2, test_fraction=0.1)
    table = pq.read_table(tmp_path / store.manifest["shards"][0]["file"], columns=["doc_id", "split"])
    per_doc = {}
    for doc, split in zip(table["doc_id"].to_pylist(), table["split"].to_pylist(), strict=True):
        per_doc.setdefault(doc, set()).add(split)
    assert all(len(s) == 1 for s in per_doc.values())
    codes = split_codes(np.array(sorted(per_doc)), 0.2, 0.1)
    assert [per_doc[d].pop() for d in sorted(per_doc)] == [("train", "val", "test")[c] for c in codes]
    counts = {s: store.manifest["splits"][s]["documents"] for s in ("train", "val", "test")}
    assert counts["train"] > counts["val"] > 0 and counts["test"] > 0 and sum(counts.values()) == 200


def test_shuffled_batches_cover_the_split_once_and_are_deterministic(tmp_path):
    acts, doc_ids, _ = _docs(n_docs=60)
    acts[:, 0] = np.arange(len(acts))  # a row id, to check coverage exactly
    store = write_store(tmp_path, acts, doc_ids, shard_tokens=300, row_group_tokens=50, drop_first_token=True)
    expected = torch.cat([b.acts for b in store.iter_rows("train", batch_size=1000)])[:, 0]
    first = list(store.batches("train", batch_size=64, seed=5, shuffle_buffer=200))
    again = list(store.batches("train", batch_size=64, seed=5, shuffle_buffer=200, prefetch=True))
    other = list(store.batches("train", batch_size=64, seed=6, shuffle_buffer=200))
    ids = torch.cat(first)[:, 0]
    assert sorted(ids.tolist()) == sorted(expected.tolist())  # each row once, first tokens left out
    assert len(ids) == store.num_tokens_in("train")
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(ids, torch.cat(other)[:, 0])
    assert not torch.equal(ids, expected)  # actually shuffled …
    # … across the whole store: the first batch draws from several row groups far apart
    assert ids[:64].max() - ids[:64].min() > 200
    assert all(b.dtype == torch.float32 and b.shape[1] == 8 for b in first)
    dropped = list(store.batches("train", batch_size=64, drop_last=True))
    assert all(len(b) == 64 for b in dropped)


def test_first_token_default_comes_from_the_manifest(tmp_path):
    acts, doc_ids, lengths = _docs()
    keep = write_store(tmp_path / "keep", acts, doc_ids, drop_first_token=False)
    drop = write_store(tmp_path / "drop", acts, doc_ids, drop_first_token=True)
    total = sum(keep.num_tokens_in(s) for s in ("train", "val", "test"))
    assert total == len(acts)
    assert sum(drop.num_tokens_in(s) for s in ("train", "val", "test")) == len(acts) - len(lengths)
    assert drop.num_tokens_in("train", drop_first_token=False) == keep.num_tokens_in("train")
    rows = next(drop.iter_rows("train", batch_size=10_000))
    assert (rows.pos > 0).all()


def test_sample_load_split_and_documents(tmp_path):
    acts, doc_ids, _ = _docs(n_docs=40)
    tokens = np.arange(len(doc_ids)) % 97
    store = write_store(tmp_path, acts, doc_ids, token_ids=tokens, store_dtype="float16", row_group_tokens=40)
    full = store.load_split("val")
    assert full.shape == (store.num_tokens_in("val"), 8)
    in_order = torch.cat([b.acts for b in store.iter_rows("val", batch_size=33)])
    assert torch.equal(full, in_order)
    torch.testing.assert_close(
        full, torch.from_numpy(acts[_rows_of(store, doc_ids, "val")]), atol=2e-3, rtol=1e-3
    )
    drawn = store.sample(50, split="val", seed=1)
    assert drawn.shape == (50, 8)
    as_set = {tuple(r) for r in full.tolist()}
    assert all(tuple(r) in as_set for r in drawn.tolist())
    assert len({tuple(r) for r in drawn.tolist()}) == 50  # without replacement
    assert torch.equal(drawn, store.sample(50, split="val", seed=1))
    with pytest.raises(StoreError, match="exceeds"):
        store.sample(10**6, split="val")
    docs = store.documents("test")
    for doc, toks in docs.items():
        assert toks.tolist() == tokens[doc_ids == doc].tolist()


def _rows_of(store, doc_ids, split):
    """Indices of the rows of `split` in write order, as the hash assigns them."""
    unique = np.unique(doc_ids)
    codes = split_codes(unique, 0.1, 0.1)
    rows = np.isin(doc_ids, unique[codes == ("train", "val", "test").index(split)])
    if store.drop_first_token:
        rows &= np.r_[False, np.diff(doc_ids) == 0]
    return np.flatnonzero(rows)


def test_incomplete_or_corrupted_stores_are_refused(tmp_path):
    acts, doc_ids, _ = _docs()
    store = write_store(tmp_path / "s", acts, doc_ids, shard_tokens=200)
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match=r"no manifest\.json"):
        ActivationStore.open(tmp_path / "empty")
    with pytest.raises(StoreError, match="no such directory"):
        ActivationStore.open(tmp_path / "nowhere")
    shard = tmp_path / "s" / store.manifest["shards"][1]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    reopened = ActivationStore.open(tmp_path / "s")
    with pytest.raises(StoreError, match=f"{shard.name} does not match its checksum"):
        list(reopened.batches("train", shuffle=False))
    shard.unlink()
    with pytest.raises(StoreError, match="missing"):
        ActivationStore.open(tmp_path / "s")
    manifest = tmp_path / "s" / "manifest.json"
    manifest.write_text(json.dumps({"d_model": 8}))
    with pytest.raises(StoreError, match="lacks the key"):
        ActivationStore.open(tmp_path / "s")


def test_write_store_checks_its_input(tmp_path):
    acts, doc_ids, _ = _docs()
    bad = acts.copy()
    bad[5, 2] = np.nan
    with pytest.raises(StoreError, match=f"doc_id={int(doc_ids[5])}"):
        write_store(tmp_path / "nan", bad, doc_ids)
    big = acts.copy()
    big[7, 0] = 1e6
    with pytest.raises(StoreError, match="overflows float16"):
        write_store(tmp_path / "big", big, doc_ids, store_dtype="float16")
    write_store(tmp_path / "big32", big, doc_ids, store_dtype="float32")  # float32 holds it
    with pytest.raises(StoreError, match="not contiguous"):
        write_store(tmp_path / "nc", acts[:6], np.array([1, 1, 2, 2, 1, 1]))
    with pytest.raises(StoreError, match="splits"):
        write_store(tmp_path / "sp", acts[:2], np.array([1, 1]), splits=["train", "nope"])
    with pytest.raises(StoreError, match="doc_ids: expected shape"):
        write_store(tmp_path / "sh", acts, doc_ids[:-1])
    with pytest.raises(StoreError, match="already holds"):
        write_store(tmp_path / "big32", acts, doc_ids)
    with pytest.raises(StoreError, match="split: must be one of"):
        ActivationStore.open(tmp_path / "big32").num_tokens_in("training")


def test_torch_input_and_explicit_splits(tmp_path):
    acts, doc_ids, _ = _docs(n_docs=4)
    names = np.where(doc_ids < 14, "train", "test")
    store = write_store(tmp_path, torch.from_numpy(acts), torch.from_numpy(doc_ids), splits=names)
    assert store.num_tokens_in("train", drop_first_token=False) == int((doc_ids < 14).sum())
    assert store.num_tokens_in("val") == 0
    assert list(store.batches("val")) == []


def test_closing_a_prefetching_stream_stops_its_thread(tmp_path):
    import threading
    import time

    acts, doc_ids, _ = _docs(n_docs=60)
    store = write_store(tmp_path, acts, doc_ids, row_group_tokens=50)
    stream = store.batches("train", batch_size=16, prefetch=True)
    next(stream)
    stream.close()
    deadline = time.monotonic() + 5
    while any(t.name == "store-prefetch" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "store-prefetch" for t in threading.enumerate())
