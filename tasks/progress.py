"""What a running task shows in the UI: the `Progress` callback as a Prefect progress artifact and run-log
lines, artifact keys Prefect accepts, and the run logger."""

from __future__ import annotations

import logging
import re
import time
from decimal import Decimal
from typing import Any

log = logging.getLogger(__name__)


_DECIMAL = re.compile(r"(?<![A-Za-z0-9.])(\d+\.\d+(?:e[+-]?\d+)?|\d+e[+-]?\d+)(?![A-Za-z0-9.])", re.I)


def readable_number(value: float) -> str:
    """A number with only letters, digits and dashes, still readable: 0.0001 → `1e-4`, 0.00025 →
    `25e-5`, 0.01 → `1e-2`, 3.0 → `3` (an artifact key cannot hold the dot of `0.0001`)."""
    sign, digits, exponent = Decimal(repr(float(value))).normalize().as_tuple()
    mantissa = ("-" if sign else "") + "".join(map(str, digits))
    return mantissa if exponent == 0 else f"{mantissa}e{exponent}"


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only. Decimal numbers (a cell's
    λ) are written as `1e-4` first, so `train-demo-8x-1e-4-sampling`, not `…-8x-0-0001-sampling`."""
    text = _DECIMAL.sub(lambda m: readable_number(float(m.group(1))), "-".join(parts)).lower()
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text)).strip("-")


class PrefectProgress:
    """`progress(done, total, info)` → a progress artifact, updated at most every `min_interval_s`, and a
    line in the run log every `log_every_s` (and at the end): the UI shows both.

    Rate-limited because every update is an API call; a training loop reports hundreds of times. A loop
    that cannot know its total (`total` None) gets the log lines only.
    """

    def __init__(
        self,
        key: str,
        description: str,
        min_interval_s: float = 2.0,
        log_every_s: float = 30.0,
        unit: str = "",
    ) -> None:
        self.key = key
        self.description = description
        self.min_interval_s = min_interval_s
        self.log_every_s = log_every_s
        self.unit = unit
        self._artifact_id: Any = None
        self._last = 0.0
        self._last_percent = -1.0
        self._last_log: float | None = None
        self._logged_end = False

    def __call__(self, done: int, total: int | None, info: dict[str, float]) -> None:
        percent = min(100.0, 100.0 * done / total) if total else None
        now = time.monotonic()
        self._log(now, done, total, percent, info)
        if percent is None:
            return
        final = percent >= 100.0
        if not final and now - self._last < self.min_interval_s:
            return
        if percent == self._last_percent:
            return
        self._last, self._last_percent = now, percent
        text = self.description + _format_info(info)
        try:
            self._publish(percent, text)
        except Exception as exc:  # a UI nicety must never fail the stage
            log.debug("progress artifact %s not updated: %s", self.key, exc)

    def _log(self, now: float, done: int, total: int | None, percent: float | None, info: dict) -> None:
        final = percent is not None and percent >= 100.0
        due = self._last_log is None or now - self._last_log >= self.log_every_s
        if not (due or (final and not self._logged_end)) or self._logged_end:
            return
        self._last_log, self._logged_end = now, final
        unit = f" {self.unit}" if self.unit else ""
        count = f"{done:,}/{total:,}{unit}" if total else f"{done:,}{unit}"
        head = f"{percent:.0f}% ({count})" if percent is not None else count
        run_logger().info("%s: %s%s", self.description, head, _format_info(info))

    def _publish(self, percent: float, text: str) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        if self._artifact_id is None:
            self._artifact_id = create_progress_artifact(percent, key=self.key, description=text)
        else:
            update_progress_artifact(self._artifact_id, percent, description=text)


def _format_info(info: dict[str, float]) -> str:
    """` (loss 0.0123, L0 12.3, dead % (training window) 4.2%)`: rounded for reading; a key naming a
    percentage holds one (`round(100 * x, 1)`) and is shown with its `%`."""
    if not info:
        return ""
    return " (" + ", ".join(f"{k} {_format_value(k, v)}" for k, v in info.items()) + ")"


def _format_value(key: str, value: float) -> str:
    if "%" in key:
        return f"{value:.1f}%"
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a run, the module logger outside one (tests calling helpers)."""
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:
        return log
