"""Where training batches come from: an in-memory split (shuffled by index) or a streamed store.

Batch order is a pure function of (seed, epoch), so a resumed run reaches exactly the batches an
uninterrupted run would have seen by skipping to its step. When the training split fits the memory
budget (`training.max_memory_gb`) it is held as one float32 tensor on the training device and every epoch
is a `randperm` over it — the fastest path, and what DESIGN.md's "Where the time goes" asks for on a GPU.
Otherwise batches stream from the store's shuffled reader, and memory does not grow with the store.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch

from sae_core.errors import TrainingError

log = logging.getLogger(__name__)


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919) % (2**63 - 1)


class TrainingData(Protocol):
    d_model: int
    train_tokens: int

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
            if not shuffle:  # the split in its stored order: consecutive tokens of one document per batch
                for i in range(offset, per_epoch):
                    yield self.train[i * size : (i + 1) * size].float()
                epoch, offset = epoch + 1, 0
                continue
            gen = torch.Generator().manual_seed(epoch_seed(seed, epoch))
            order = torch.randperm(self.train_tokens, generator=gen).to(self.train.device)
            for i in range(offset, per_epoch):
                yield self.train[order[i * size : (i + 1) * size]].float()
            epoch, offset = epoch + 1, 0

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """`n` random training rows (without replacement; all of them, shuffled, when n exceeds the split)."""
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(self.train_tokens, generator=gen)[:n].to(self.train.device)
        return self.train[idx].float()

    def validation(self, n: int, seed: int) -> torch.Tensor | None:
        if self.val is None:
            return None
        if self.val.shape[0] <= n:
            return self.val
        gen = torch.Generator().manual_seed(seed)
        return self.val[torch.randperm(self.val.shape[0], generator=gen)[:n].to(self.val.device)]


class StreamingData:
    """Batches streamed from the store's shuffled reader; memory stays bounded for any store size."""

    def __init__(self, store: Any, device: torch.device):
        self.store = store
        self.device = device
        self.d_model = int(store.d_model)
        self.train_tokens = int(store.num_tokens_in("train"))

    def fingerprint(self) -> str:
        return store_fingerprint(self.store)

    def batches(
        self, batch_size: int, seed: int, start_step: int, shuffle: bool = True
    ) -> Iterator[torch.Tensor]:
        per_epoch = steps_per_epoch(self.train_tokens, batch_size)
        size = min(batch_size, self.train_tokens)
        epoch, offset = divmod(start_step, per_epoch)
        while True:
            stream = self.store.batches(
                split="train", batch_size=size, shuffle=shuffle, seed=epoch_seed(seed, epoch),
                prefetch=True, drop_last=True,
            )  # fmt: skip
            try:
                for i, batch in enumerate(stream):
                    if i >= per_epoch:
                        break
                    if i >= offset:  # resuming mid-epoch: the skipped batches are read, not trained on
                        yield batch.to(self.device, torch.float32, non_blocking=True)
            finally:
                stream.close()  # stops the store's prefetch thread
            epoch, offset = epoch + 1, 0

    def sample(self, n: int, seed: int) -> torch.Tensor:
        n = min(n, self.train_tokens)
        return self.store.sample(n, "train", seed).to(self.device, torch.float32)

    def validation(self, n: int, seed: int) -> torch.Tensor | None:
        available = int(self.store.num_tokens_in("val"))
        if available == 0:
            return None
        return self.store.sample(min(n, available), "val", seed).to(self.device, torch.float32)


def store_fingerprint(store: Any) -> str:
    """Identity of a store's contents: its shard checksums (or the whole manifest when they are absent)."""
    manifest = getattr(store, "manifest", {}) or {}
    shards = manifest.get("shards")
    basis = repr([s.get("sha256") for s in shards]) if shards else repr(sorted(manifest.items()))
    return "store:" + hashlib.sha256(basis.encode()).hexdigest()[:16]


def open_store_data(
    store_path: str | Path, device: torch.device, max_memory_gb: float
) -> tuple[TrainingData, Any]:
    """Open the store; hold its train split in (device) memory, in the store's dtype, when it fits
    `max_memory_gb`."""
    from sae_core.activations import ActivationStore

    store = ActivationStore.open(store_path)
    train_tokens = int(store.num_tokens_in("train"))
    if train_tokens == 0:
        raise TrainingError(f"activations: the store at {store_path} has an empty train split (got 0 tokens)")
    hold = torch.float16 if store.store_dtype == "float16" else torch.float32  # exact: the stored values
    needed_gb = train_tokens * int(store.d_model) * hold.itemsize / 2**30
    if needed_gb > max_memory_gb:
        log.info("train split needs %.2f GB > training.max_memory_gb=%s: streaming", needed_gb, max_memory_gb)
        return StreamingData(store, device), store
    train = store.load_split("train", device=device, dtype=hold)
    val = None
    if int(store.num_tokens_in("val")) > 0:
        val = store.load_split("val", device=device, dtype=torch.float32)
    data = InMemoryData(train, val, fingerprint=store_fingerprint(store))
    return data, store


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
