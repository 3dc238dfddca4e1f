"""The three dead figures a run reports, read back by every consumer (report, tasks, tracking, model card),
from the typed run files (`sae_core.rundir.models`).

- `training_dead_fraction` (metrics.json): fired in no training step of the last `training.resample_every`
  steps at the end of training, a resampling reset not counting as a firing.
- `never_fired_fraction` (metrics.json `final`/`val`, train_log.parquet `kind=val` rows): fired (> 0) on
  none of the evaluated tokens; `window_dead_fraction` (train_log.parquet `kind=train` rows) is the
  training-window rule at that step.
- `dead_fraction` (analysis.json): never above `analysis.dead_threshold` on the `dead_split` tokens.
  Beside it analysis.json has `never_fired_fraction` (no activation > 0 on the analysed tokens: free of
  the threshold's units and of L1 shrinkage, what the cross-architecture tables use) and
  `below_threshold_only_fraction` (fires, but never above the threshold); the gap between the two dead
  figures is the threshold's doing, and the report says so in words.

Runs written before these names existed stored `dead_fraction_train`, which counted a neuron reset at
the last resampling as alive. It is read where that made no difference (no neuron reset in the final
window) and refused with the reason otherwise, never passed off as the corrected figure.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sae_core.rundir.models import Analysis, Metrics

LEGACY_TRAINING_KEY = "dead_fraction_train"


def pct(fraction: float) -> str:
    """A fraction as logs, UI and report show it: `round(100 * x, 1)` followed by `%`."""
    return f"{round(100 * fraction, 1)}%"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def training_dead_fraction(metrics: Metrics | None) -> tuple[float | None, str | None]:
    """(metrics.json's training-window dead fraction, None) or (None, why it is not available)."""
    if metrics is None:
        return None, "missing (no metrics.json)"
    if "training_dead_fraction" in metrics.model_fields_set:
        value = _number(metrics.training_dead_fraction)
        return (value, None) if value is not None else (None, "missing (training_dead_fraction not a number)")
    legacy = _number(metrics.dead_fraction_train)
    if legacy is None:
        return None, "missing (training_dead_fraction absent)"
    steps = _number(metrics.steps)
    window = _number((metrics.training or {}).get("resample_every"))
    events = metrics.resample_events or []
    if steps is None or window is None:
        return None, f"missing (old {LEGACY_TRAINING_KEY} without steps/resample_every; retrain)"
    late = [e.step for e in events if (e.neurons or 0) > 0 and (e.step or 0) > steps - window]
    if late:
        return None, (
            f"missing (old {LEGACY_TRAINING_KEY} counted neurons reset at step {late[-1]} as alive; retrain)"
        )
    return legacy, None


def dead_token_set(analysis: Analysis | None) -> str | None:
    """analysis.json's dead-% token set (`test`, `all`, …); an analysis written before `dead_split`
    counted on its analysed split."""
    return analysis.dead_token_set if analysis is not None else None


def dead_caption(threshold: float | None, token_set: str | None) -> str:
    """`dead % (>0.07, test tokens)`: the analysis figure's title with its threshold and token set."""
    thr = f">{threshold:g}" if threshold is not None else "> threshold"
    tokens = f"{token_set} tokens" if token_set else "tokens unknown"
    return f"dead % ({thr}, {tokens})"


TRAINING_CAPTION = "dead % (training window)"


# ---------------------------------------------------------------------------------------------
# Units: every threshold and activation value names the scale it is in and the tokens it counts

RAW_UNITS = "raw"
"""analysis.json's `activation_units` of a run trained on the stored activations as extracted."""
NORMALISED = "normalised"
"""The prefix of a normalised run's `activation_units`: `normalised (x·s, s=12.34)`."""


def normalised_units(scale: float) -> str:
    """`normalised (x·s, s=12.34)`: a run trained on x·s (`training.normalize_activations`)."""
    return f"{NORMALISED} (x·s, s={scale:.4g})"


def run_units(metrics: Metrics | None) -> str:
    """The units a run's SAE activations are in, from its metrics.json `normalization` (raw without)."""
    scale = metrics.normalization.scale if metrics is not None and metrics.normalization else None
    return normalised_units(float(scale)) if scale is not None else RAW_UNITS


def units_text(units: str | None) -> str:
    """`raw units of the stored activations`, `normalised units (x·s, s=12.34: E‖x·s‖ = √d on the
    training split)`, or the named scale."""
    if units in (None, RAW_UNITS):
        return "raw units of the stored activations"
    if units.startswith(f"{NORMALISED} (") and units.endswith(")"):
        return f"{NORMALISED} units ({units[len(NORMALISED) + 2 : -1]}: E‖x·s‖ = √d on the training split)"
    return f"{units} units"


def threshold_text(threshold: float | None, units: str | None) -> str:
    """`> 0.07 (raw units of the stored activations)`."""
    thr = f"> {threshold:g}" if threshold is not None else "> threshold"
    return f"{thr} ({units_text(units)})"


def disagreement_text(analysis: Analysis) -> str | None:
    """The words the report prints when never-fired and dead % disagree: features fire (> 0) on the
    tokens but never above the dead threshold, so the threshold, not the SAE, makes them dead."""
    below = _number(analysis.below_threshold_only_count)
    d_hidden = _number(analysis.d_hidden)
    if not below or not d_hidden:
        return None
    threshold = _number(analysis.dead_threshold)
    max_act = _number(analysis.max_activation)
    largest = f"; the largest activation of any feature is {max_act:.3g}" if max_act is not None else ""
    return (
        f"{int(below):,} of {int(d_hidden):,} features ({pct(below / d_hidden)}) fire (> 0) on the "
        f"{analysis.never_fired_split or analysis.split or 'analysed'} tokens but never "
        f"{threshold_text(threshold, analysis.activation_units)}: they count as dead only "
        f"because of the threshold{largest}. Compare `analysis.dead_threshold` with the activations' "
        "scale before reading dead % or the selection."
    )


def selection_shortfall(
    asked: int,
    selected: int,
    eligible: int,
    threshold: float,
    min_activations: int,
    token_set: str,
    units: str | None,
    below_only: int,
) -> str | None:
    """Why the selection holds fewer features than `2 × top_k_features` asked (None when it is full):
    `3 of 50 asked: only 3 features fire > 0.07 (raw units …) on ≥ 10 test tokens; …`."""
    if selected >= asked:
        return None
    reason = (
        f"{selected} of {asked} asked: only {eligible} features fire {threshold_text(threshold, units)} "
        f"on ≥ {min_activations} {token_set} tokens"
    )
    if below_only > 0:
        reason += (
            f"; {below_only} more fire > 0 but never above the threshold: the SAE's activations are "
            "small against it in these units — see analysis.dead_threshold"
        )
    elif eligible == 0:
        reason += "; see analysis.dead_threshold and analysis.min_activations"
    return reason
