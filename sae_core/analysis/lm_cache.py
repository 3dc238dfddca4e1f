"""The causal LM that CE-loss recovered splices into, loaded once per process and reused by every cell.

Reloading it per cell was 90 % of a SmolLM2 cell's analysis time (issue 22). A cell borrows the model for
the length of its evaluation — it hooks the model's blocks, so two cells in one process (the sweep's cell
threads) must never hold the same instance at once: a second borrower while the model is out loads its
own copy, and the cache keeps one model per key afterwards. Only the last key used is kept (a sweep
evaluates one model; a process that moves to another model frees the first).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from torch import nn

CacheKey = tuple[str, str | None, str, str, int]
"""(model path, revision, device, dtype, mtime of the model directory in ns, 0 for a hub id)."""

_lock = threading.Lock()
_idle: dict[CacheKey, nn.Module] = {}


def cache_key(model_path: str, revision: str | None, device: str, dtype: str) -> CacheKey:
    """The key a model is cached under; a directory rebuilt in place (a new mtime) is a new key."""
    path = Path(model_path)
    stamp = path.stat().st_mtime_ns if path.exists() else 0
    return (os.path.abspath(model_path) if path.exists() else model_path, revision, device, dtype, stamp)


@contextmanager
def borrowed_lm(
    key: CacheKey, load: Callable[[], tuple[nn.Module | None, str]]
) -> Iterator[tuple[nn.Module | None, str]]:
    """(model, "") taken from the cache or from `load()`, returned to the cache on exit; or (None, why)
    when `load` could not load it (not cached: the next cell says why again)."""
    with _lock:
        model = _idle.pop(key, None)
    why = ""
    if model is None:
        model, why = load()
    try:
        yield model, why
    finally:
        if model is not None:
            with _lock:
                for other in [k for k in _idle if k != key]:
                    del _idle[other]
                _idle.setdefault(key, model)


def clear_lm_cache() -> None:
    """Forget every cached model (frees its memory once no cell holds it)."""
    with _lock:
        _idle.clear()


def cached_keys() -> list[CacheKey]:
    """The keys of the models waiting in the cache (for tests and logs)."""
    with _lock:
        return list(_idle)
