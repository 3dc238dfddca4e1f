"""Where training batches come from: an in-memory split (shuffled by index) or a streamed store.

Both paths draw the same batches: each epoch is `randperm(train tokens)` seeded by (seed, epoch), batch i
the rows at positions [i·B, (i+1)·B) of it, and `sample`/`validation` pick rows by the same seeded
`randperm` rule. So which path ran changes speed and memory, never the trained SAE, and a resumed run
reaches exactly the batches an uninterrupted one would by starting at its step.

When the training split fits the memory budget (`training.max_memory_gb`) it is held as one tensor, in
the store's dtype, on the training device and each batch is an index there — the fastest path, and what
DESIGN.md's "Where the time goes" asks for on a GPU. Otherwise the epoch's permutation is cut into
windows of rows (half the budget each, at least 65,536 rows); a background thread gathers the next
window from the store (`ActivationStore.gather`: every row group holding one of its rows is read once)
while the current one is trained on. Memory is two windows plus 8 bytes per token for the permutation,
and each epoch reads the split once per window: a split k times the window is read k times (from the
page cache when the store fits there; from disk otherwise, so keep the window large for such stores).

Both paths read the rows the store's one row filter keeps (`sae_core.store.left_out.kept_rows`): no
dropped first token, prepended BOS, special token or attention sink is ever a training row, a
validation row or a resampling candidate (`sample`); metrics.json's `train_left_out` counts them.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from sae_core.errors import TrainingError
from sae_core.store.identity import store_fingerprint
from sae_core.store.prefetch import prefetched

log = logging.getLogger(__name__)


MIN_WINDOW_ROWS = 65_536
"""Smallest streamed window: below it each epoch would re-read the split once per handful of batches."""


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919) % (2**63 - 1)


def epoch_order(tokens: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """The epoch's row order: a uniform permutation of the whole split, from (seed, epoch) alone; or,
    unshuffled, the split in store order (consecutive tokens of one document per batch, as the study)."""
    if not shuffle:
        return torch.arange(tokens)
    return torch.randperm(tokens, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))


def sample_rows(tokens: int, n: int, seed: int) -> torch.Tensor:
    """`n` distinct row indices drawn uniformly (all of them, shuffled, when n exceeds `tokens`)."""
    return torch.randperm(tokens, generator=torch.Generator().manual_seed(seed))[:n]


class TrainingData(Protocol):
    d_model: int
    train_tokens: int

    data_path: str
    """`memory` or `stream`: how the training split is read (recorded in metrics.json)."""
    data_path_reason: str

    def fingerprint(self) -> str: ...
    def batches(
        self, batch_size: int, seed: int, start_step: int, shuffle: bool = True
    ) -> Iterator[torch.Tensor]: ...
    def sample(self, n: int, seed: int) -> torch.Tensor: ...
    def validation(self, n: int, seed: int) -> torch.Tensor | None: ...


def steps_per_epoch(train_tokens: int, batch_size: int) -> int:
    """Full batches per epoch (a last partial batch is dropped; a split smaller than a batch is one)."""
    return max(1, train_tokens // batch_size)


class InMemoryData:
    """Training (and optional validation) activations held as tensors, e.g. for notebooks and benchmarks."""

    def __init__(self, train: torch.Tensor, val: torch.Tensor | None = None, fingerprint: str | None = None):
        if train.ndim != 2:
            raise TrainingError(
                f"training data: expected a [tokens, d] tensor (got shape {tuple(train.shape)})"
            )
        # Held as given (a float16 store stays float16: half the memory, same values); batches are float32.
        self.train = train if train.is_floating_point() else train.float()
        self.val = val.float() if val is not None and val.shape[0] > 0 else None
        self.d_model = int(train.shape[1])
        self.train_tokens = int(train.shape[0])
        self._fingerprint = fingerprint
        self.data_path = "memory"
        self.data_path_reason = "tensors given"

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            digest = hashlib.sha256(str(tuple(self.train.shape)).encode())
            probe = self.train[:: max(1, self.train_tokens // 64)][:64].cpu().contiguous()
            digest.update(probe.numpy().tobytes())
            self._fingerprint = "tensor:" + digest.hexdigest()[:16]
        return self._fingerprint

    def batches(
        self, batch_size: int, seed: int, start_step: int, shuffle: bool = True
    ) -> Iterator[torch.Tensor]:
        per_epoch = steps_per_epoch(self.train_tokens, batch_size)
        size = min(batch_size, self.train_tokens)
        epoch, offset = divmod(start_step, per_epoch)
        while True:
            order = epoch_order(self.train_tokens, seed, epoch, shuffle).to(self.train.device)
            for i in range(offset, per_epoch):
                yield self.train[order[i * size : (i + 1) * size]].float()
            epoch, offset = epoch + 1, 0

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """`n` random training rows (without replacement; all of them, shuffled, when n exceeds the split)."""
        return self.train[sample_rows(self.train_tokens, n, seed).to(self.train.device)].float()

    def validation(self, n: int, seed: int) -> torch.Tensor | None:
        if self.val is None:
            return None
        if self.val.shape[0] <= n:
            return self.val
        return self.val[sample_rows(self.val.shape[0], n, seed).to(self.val.device)]


class StreamingData:
    """Batches gathered window by window from the store; memory stays bounded for any store size."""

    def __init__(
        self,
        store: Any,
        device: torch.device,
        window_gb: float,
        reason: str = "",
        min_window_rows: int = MIN_WINDOW_ROWS,
    ):
        self.store = store
        self.device = device
        self.d_model = int(store.d_model)
        self.train_tokens = int(store.num_tokens_in("train"))
        self.row_bytes = self.d_model * (2 if store.store_dtype == "float16" else 4)
        self.window_gb = window_gb
        self.min_window_rows = min_window_rows
        self.data_path = "stream"
        self.data_path_reason = reason

    def fingerprint(self) -> str:
        return store_fingerprint(self.store)

    def window_rows(self, batch_size: int) -> int:
        """Rows per window, whole batches: `window_gb` of store-dtype rows (rounded down), or
        `min_window_rows` (rounded up) when that is more, and at most an epoch's rows."""
        rows = int(self.window_gb * 2**30) // self.row_bytes // batch_size * batch_size
        rows = max(rows, -(-self.min_window_rows // batch_size) * batch_size, batch_size)
        return min(rows, steps_per_epoch(self.train_tokens, batch_size) * batch_size)

    def batches(
        self, batch_size: int, seed: int, start_step: int, shuffle: bool = True
    ) -> Iterator[torch.Tensor]:
        # Batches are cut and widened to float32 a few ahead in a background thread (as the store's
        # reader does), so the training step only moves them to the device.
        stream = prefetched(self._host_batches(batch_size, seed, start_step, shuffle))
        try:
            for batch in stream:
                yield batch.to(self.device, non_blocking=True)
        finally:
            stream.close()

    def _host_batches(
        self, batch_size: int, seed: int, start_step: int, shuffle: bool
    ) -> Iterator[torch.Tensor]:
        size = min(batch_size, self.train_tokens)
        windows = self._windows(size, seed, start_step, shuffle)
        # The next window is gathered in the background (across epoch ends too) while the current
        # one is trained on: two windows in memory.
        # Two buffers, allocated once and alternated: window k+2 is written into window k's, whose batches
        # were all copied out (widened) before window k+1 began.
        dtype = np.float16 if self.store.store_dtype == "float16" else np.float32
        buffers = [np.empty((self.window_rows(size), self.d_model), dtype) for _ in range(2)]
        with ThreadPoolExecutor(1, thread_name_prefix="stream-window") as pool:
            pending = pool.submit(self.store.gather, "train", next(windows), out=buffers[0])
            for k in itertools.count(1):
                rows = pending.result()
                pending = pool.submit(self.store.gather, "train", next(windows), out=buffers[k % 2])
                for at in range(0, len(rows), size):
                    yield torch.from_numpy(rows[at : at + size].astype(np.float32))

    def _windows(self, size: int, seed: int, start_step: int, shuffle: bool) -> Iterator[np.ndarray]:
        """Consecutive slices of each epoch's permutation, whole batches each, from `start_step` on."""
        per_epoch = steps_per_epoch(self.train_tokens, size)
        window = self.window_rows(size)
        epoch, offset = divmod(start_step, per_epoch)
        while True:
            order = epoch_order(self.train_tokens, seed, epoch, shuffle).numpy()
            for lo in range(offset * size, per_epoch * size, window):
                yield order[lo : min(lo + window, per_epoch * size)]
            epoch, offset = epoch + 1, 0

    def sample(self, n: int, seed: int) -> torch.Tensor:
        rows = sample_rows(self.train_tokens, n, seed).numpy()
        return torch.from_numpy(self.store.gather("train", rows).astype(np.float32)).to(self.device)

    def validation(self, n: int, seed: int) -> torch.Tensor | None:
        available = int(self.store.num_tokens_in("val"))
        if available == 0:
            return None
        rows = np.arange(available) if available <= n else sample_rows(available, n, seed).numpy()
        return torch.from_numpy(self.store.gather("val", rows).astype(np.float32)).to(self.device)


def open_store_data(
    store_path: str | Path, device: torch.device, max_memory_gb: float
) -> tuple[TrainingData, Any]:
    """Open the store; hold its train split in (device) memory, in the store's dtype, when it fits
    `max_memory_gb`, else stream it in windows of half that budget (see the module docstring)."""
    from sae_core.store import ActivationStore

    store = ActivationStore.open(store_path)
    train_tokens = int(store.num_tokens_in("train"))
    if train_tokens == 0:
        raise TrainingError(f"activations: the store at {store_path} has an empty train split (got 0 tokens)")
    hold = torch.float16 if store.store_dtype == "float16" else torch.float32  # exact: the stored values
    needed_gb = train_tokens * int(store.d_model) * hold.itemsize / 2**30
    if needed_gb > max_memory_gb:
        data = StreamingData(store, device, window_gb=max_memory_gb / 2)
        window_gb = data.window_rows(1) * data.row_bytes / 2**30
        data.data_path_reason = (
            f"train split {needed_gb:.2f} GB > training.max_memory_gb={max_memory_gb}: streamed in "
            f"windows of {window_gb:.2f} GB, the split read {math.ceil(needed_gb / window_gb)}× per epoch"
        )
        log.info("%s", data.data_path_reason)
        return data, store
    train = store.load_split("train", device=device, dtype=hold)
    val = None
    if int(store.num_tokens_in("val")) > 0:
        val = store.load_split("val", device=device, dtype=torch.float32)
    held = InMemoryData(train, val, fingerprint=store_fingerprint(store))
    held.data_path_reason = f"train split {needed_gb:.2f} GB <= training.max_memory_gb={max_memory_gb}"
    return held, store


@torch.no_grad()
def geometric_median(points: torch.Tensor, iters: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm (the initial decoder bias of Anthropic's recipe)."""
    median = points.mean(dim=0)
    for _ in range(iters):
        dist = (points - median).norm(dim=1).clamp_min(1e-8)
        weights = 1.0 / dist
        new = (weights[:, None] * points).sum(dim=0) / weights.sum()
        if (new - median).norm() < tol * max(1.0, float(median.norm())):
            return new
        median = new
    return median
