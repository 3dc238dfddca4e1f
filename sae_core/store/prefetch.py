"""A generator run ahead in a background thread: store reads and batch widening overlap the training step."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import Any

import torch


def prefetched(gen: Iterator[torch.Tensor], depth: int = 3) -> Generator[torch.Tensor, None, None]:
    """Run `gen` in a background thread, `depth` batches ahead (Arrow and torch release the GIL)."""
    items: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in gen:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)
        finally:
            close = getattr(gen, "close", None)
            if close is not None:  # in this thread, which runs it: releases its read-ahead pool
                close()

    thread = threading.Thread(target=work, name="store-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
