"""Where training batches come from: the streamed path draws the in-memory path's batches (a uniform
permutation of the whole split per epoch, not a shuffle within blocks of a few row groups), resumes at
any step, keeps memory to its windows, and `metrics.json` says which path ran."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sae_core.naming import Cell
from sae_core.store import ActivationStore, write_store
from sae_core.training import train_cell
from sae_core.training.data import InMemoryData, StreamingData, open_store_data
from tests.fixtures_sae import small_config

pytestmark = pytest.mark.usefixtures("single_thread")

ROWS, GROUP = 200_000, 1_000
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def indexed_store(tmp_path_factory) -> Path:
    """200k rows in 200 row groups of 1,000; column 0 holds the row's index in the split (float32 holds
    it exactly), so a batch tells where in the store its rows came from."""
    path = tmp_path_factory.mktemp("indexed")
    acts = np.zeros((ROWS, 4), dtype=np.float32)
    acts[:, 0] = np.arange(ROWS)
    acts[:, 1:] = np.random.default_rng(0).standard_normal((ROWS, 3))
    doc_ids = np.repeat(np.arange(ROWS // 100), 100)
    write_store(
        path, acts, doc_ids, store_dtype="float32", splits=["train"] * ROWS, drop_first_token=False,
        row_group_tokens=GROUP, shard_tokens=20 * GROUP,
    )  # fmt: skip
    return path


def _first(gen, n: int) -> list[torch.Tensor]:
    return list(itertools.islice(gen, n))


def test_first_batch_of_each_epoch_draws_from_the_whole_split(indexed_store):
    """Old behaviour: a 65,536-row shuffle buffer filled from a few dozen row groups, so the first batch
    held rows of at most ~66 of the 200 row groups. A uniform draw of 1,024 rows touches ~199."""
    data, _ = open_store_data(indexed_store, CPU, max_memory_gb=0)  # forces the streamed path
    assert isinstance(data, StreamingData) and data.train_tokens == ROWS
    per_epoch = ROWS // 1024
    for epoch in range(2):
        (batch,) = _first(data.batches(1024, seed=11, start_step=epoch * per_epoch), 1)
        rows = batch[:, 0].numpy().astype(np.int64)
        assert len(np.unique(rows)) == 1024
        groups = len(np.unique(rows // GROUP))
        assert groups >= 180, f"epoch {epoch}: the first batch came from only {groups} of 200 row groups"
        # and spread evenly: each tenth of the split holds ~102 of the 1,024 rows
        assert np.bincount(rows * 10 // ROWS, minlength=10).min() >= 60


def test_streamed_batches_equal_the_in_memory_batches(indexed_store):
    """Both paths: batch i of an epoch = the rows at [i·B, (i+1)·B) of randperm(split) seeded by (seed,
    epoch); so `training.max_memory_gb` decides speed and memory, never what is trained on."""
    streamed, _ = open_store_data(indexed_store, CPU, max_memory_gb=0)
    in_memory, _ = open_store_data(indexed_store, CPU, max_memory_gb=10)
    assert isinstance(in_memory, InMemoryData) and isinstance(streamed, StreamingData)
    assert (streamed.data_path, in_memory.data_path) == ("stream", "memory")
    assert streamed.window_rows(4096) == 65_536  # several windows per epoch: 200k rows
    per_epoch = ROWS // 4096
    a = _first(in_memory.batches(4096, seed=3, start_step=0), per_epoch + 5)  # into the second epoch
    b = _first(streamed.batches(4096, seed=3, start_step=0), per_epoch + 5)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], a[per_epoch])  # a new permutation each epoch
    assert torch.equal(in_memory.sample(3000, 5), streamed.sample(3000, 5))


@pytest.mark.parametrize("start", [1, 17, 48, 50])
def test_resuming_the_stream_at_a_step_gives_the_uninterrupted_batches(indexed_store, start):
    data = StreamingData(ActivationStore.open(indexed_store), CPU, window_gb=0, min_window_rows=8_000)
    assert data.window_rows(4096) == 8_192  # resuming lands inside a window, and across an epoch end
    whole = _first(data.batches(4096, seed=9, start_step=0), 60)
    resumed = _first(data.batches(4096, seed=9, start_step=start), 60 - start)
    assert all(torch.equal(x, y) for x, y in zip(whole[start:], resumed, strict=True))


def test_stream_memory_is_its_window_and_each_epoch_reads_each_row_once_per_window(indexed_store):
    store = ActivationStore.open(indexed_store)
    gathered: list[int] = []
    buffers: set[int] = set()
    real_gather = store.gather

    def recording_gather(split: str, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        gathered.append(len(rows))
        buffers.add(id(out))
        return real_gather(split, rows, out=out)

    store.gather = recording_gather  # the real reader, observed
    data = StreamingData(store, CPU, window_gb=0, min_window_rows=20_000)
    per_epoch = ROWS // 512
    seen = torch.cat([b[:, 0] for b in _first(data.batches(512, seed=1, start_step=0), per_epoch)])
    rows = seen.long()
    assert len(rows.unique()) == len(rows) == per_epoch * 512  # each row at most once (the rest dropped)
    window = data.window_rows(512)
    assert window == 20_480 and max(gathered) <= window
    # the epoch's windows, in order (the next epoch's may already be under way: read ahead)
    windows = math.ceil(per_epoch * 512 / window)
    assert sum(gathered[:windows]) == per_epoch * 512 and len(gathered) <= windows + 3
    assert len(buffers) == 2  # two window buffers, allocated once and reused


def test_metrics_record_the_data_path_and_both_paths_train_the_same_sae(sae_store, tmp_path):
    cell = Cell(2, 0.02, "sampling")
    streamed = train_cell(sae_store, cell, small_config(max_memory_gb=0), tmp_path / "stream")
    held = train_cell(sae_store, cell, small_config(max_memory_gb=1), tmp_path / "memory")
    assert streamed["data_path"] == "stream" and held["data_path"] == "memory"
    assert "> training.max_memory_gb=0" in streamed["data_path_reason"]
    assert "<= training.max_memory_gb=1" in held["data_path_reason"]
    a = torch.load(tmp_path / "stream" / cell.weights_filename)
    b = torch.load(tmp_path / "memory" / cell.weights_filename)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert streamed["final"] == held["final"] and streamed["val"] == held["val"]


def test_gather_reads_rows_by_index_in_load_split_order(tiny_store):
    """A real float16 extraction, first tokens dropped: gather(rows) == load_split()[rows], any order,
    repeats included; out-of-range indices name the range."""
    from sae_core.errors import StoreError

    store = ActivationStore.open(tiny_store)
    whole = store.load_split("train", dtype=torch.float16).numpy()
    rows = np.random.default_rng(2).integers(0, len(whole), size=500)
    got = store.gather("train", rows)
    assert got.dtype == np.float16 and np.array_equal(got, whole[rows])
    assert store.gather("train", np.array([], dtype=np.int64)).shape == (0, store.d_model)
    with pytest.raises(StoreError, match=rf"gather: row indices must be in \[0, {len(whole)}\)"):
        store.gather("train", np.array([len(whole)]))


def test_seed_preset_holds_its_train_split_in_memory_with_room_to_spare():
    """The study's store: ~6.95M tokens × 768, 80 % train, float16 ≈ 7.95 GB: the default budget (8)
    sat within 1 % of it; the preset states a budget twice the split so the path is a choice."""
    from sae_core.config import load_config

    train_gb = 6.95e6 * 0.8 * 768 * 2 / 2**30
    assert 7.9 < train_gb < 8.0
    assert load_config("seed").training.max_memory_gb >= 2 * train_gb
