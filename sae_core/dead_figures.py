"""The three dead figures a run reports, read back by every consumer (report, tasks, tracking, model card).

- `training_dead_fraction` (metrics.json): fired in no training step of the last `training.resample_every`
  steps at the end of training, a resampling reset not counting as a firing.
- `never_fired_fraction` (metrics.json `final`/`val`, train_log.parquet `kind=val` rows): fired (> 0) on
  none of the evaluated tokens; `window_dead_fraction` (train_log.parquet `kind=train` rows) is the
  training-window rule at that step.
- `dead_fraction` (analysis.json): never above `analysis.dead_threshold` on the `dead_split` tokens.

Runs written before these names existed stored `dead_fraction_train`, which counted a neuron reset at
the last resampling as alive. It is read where that made no difference (no neuron reset in the final
window) and refused with the reason otherwise, never passed off as the corrected figure.
"""

from __future__ import annotations

import math
from typing import Any

LEGACY_TRAINING_KEY = "dead_fraction_train"


def pct(fraction: float) -> str:
    """A fraction as logs, UI and report show it: `round(100 * x, 1)` followed by `%`."""
    return f"{round(100 * fraction, 1)}%"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def training_dead_fraction(metrics: dict[str, Any] | None) -> tuple[float | None, str | None]:
    """(metrics.json's training-window dead fraction, None) or (None, why it is not available)."""
    if not metrics:
        return None, "missing (no metrics.json)"
    if "training_dead_fraction" in metrics:
        value = _number(metrics["training_dead_fraction"])
        return (value, None) if value is not None else (None, "missing (training_dead_fraction not a number)")
    legacy = _number(metrics.get(LEGACY_TRAINING_KEY))
    if legacy is None:
        return None, "missing (training_dead_fraction absent)"
    steps = _number(metrics.get("steps"))
    window = _number((metrics.get("training") or {}).get("resample_every"))
    events = metrics.get("resample_events") or []
    if steps is None or window is None:
        return None, f"missing (old {LEGACY_TRAINING_KEY} without steps/resample_every; retrain)"
    late = [
        e.get("step")
        for e in events
        if isinstance(e, dict) and (e.get("neurons") or 0) > 0 and (e.get("step") or 0) > steps - window
    ]
    if late:
        return None, (
            f"missing (old {LEGACY_TRAINING_KEY} counted neurons reset at step {late[-1]} as alive; retrain)"
        )
    return legacy, None


def dead_token_set(analysis: dict[str, Any] | None) -> str | None:
    """analysis.json's dead-% token set (`test`, `all`, …); an analysis written before `dead_split`
    counted on its analysed split."""
    if not analysis:
        return None
    value = analysis.get("dead_split") or analysis.get("split")
    return str(value) if value else None


def dead_caption(threshold: float | None, token_set: str | None) -> str:
    """`dead % (>0.07, test tokens)`: the analysis figure's title with its threshold and token set."""
    thr = f">{threshold:g}" if threshold is not None else "> threshold"
    tokens = f"{token_set} tokens" if token_set else "tokens unknown"
    return f"dead % ({thr}, {tokens})"


TRAINING_CAPTION = "dead % (training window)"
