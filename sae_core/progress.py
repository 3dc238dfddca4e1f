"""Progress reporting without knowing who listens: a terminal bar, a Prefect artifact, a tracker.

Long loops in `sae_core` take an optional `progress` callback and call it as they go; the CLI passes
a tqdm bar (`TqdmProgress`), the Prefect tasks pass one that updates a progress artifact.
"""

from __future__ import annotations

import sys
from typing import Protocol


class Progress(Protocol):
    """`progress(done, total, info)`: `done` units out of `total` (None when unknown); `info` holds a
    few current figures to show (tokens/s, loss, L0, dead %)."""

    def __call__(self, done: int, total: int | None, info: dict[str, float]) -> None: ...


def no_progress(done: int, total: int | None, info: dict[str, float]) -> None:
    """The default: report nothing."""


class TqdmProgress:
    """A tqdm bar on standard error; `info` goes into the bar's postfix."""

    def __init__(self, desc: str, unit: str = "tok") -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(desc=desc, unit=unit, unit_scale=True, file=sys.stderr, dynamic_ncols=True)

    def __call__(self, done: int, total: int | None, info: dict[str, float]) -> None:
        if total is not None and self._bar.total != total:
            self._bar.total = total
        self._bar.n = done
        if info:
            self._bar.set_postfix({k: _short(v) for k, v in info.items()}, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _short(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"
