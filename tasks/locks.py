"""Locks: two sweeps of the same config at once must not write the same store or run dir together."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import re
from collections.abc import Iterator

from sae_core.config import SweepConfig
from tasks.paths import PREFECT_DIRNAME, data_root

log = logging.getLogger(__name__)


@contextlib.contextmanager
def stage_lock(cfg: SweepConfig, name: str) -> Iterator[None]:
    """An exclusive `flock` on `data_root/.prefect/locks/<name>.lock`.

    The kernel drops the lock when its holder dies, so a worker killed mid-cell never leaves a stale
    lock behind (Prefect's file lock manager would: its locks have no expiry by default). The second
    sweep waits here, then finds the work done (extraction and training return at once when their
    outputs are complete).
    """
    lock_dir = data_root(cfg) / PREFECT_DIRNAME / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    with open(lock_dir / f"{safe}.lock", "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another run holding the lock %s", safe)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
