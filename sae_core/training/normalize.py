"""Activation normalisation (`training.normalize_activations`): one scalar per store, s = √d / E‖x‖ over
the training split, so the SAE trains on x·s with E‖x·s‖ = √d (SAELens `expected_average_only_in`,
Gemma Scope). Thresholds, λ and JumpReLU thresholds then mean the same on every model and layer.

s is measured by `expected_norm_scale` alone, on rows read through the training data's own reader
(`TrainingData.sample`: the rows training draws from, so a reader that leaves tokens out leaves them out
of s too): `SCALE_TOKENS` training rows drawn uniformly without replacement with the fixed seed
`SCALE_SEED` (every row when the split is smaller), the mean of their L2 norms in float64. The seed is
not `training.seed`: s is a property of the store, the same for every cell and sweep on it. For a store
on disk it is cached in `<store>/expected_norm.json`, keyed by the store's fingerprint (written
atomically; a read-only store is measured again each time, which costs one sample).

Training wraps its data in `ScaledData` (batches, resampling pools and validation are x·s); the run's
released weights fold s back (`sae_core.saes.export.fold_input_scale`), so they take raw activations.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from sae_core.errors import TrainingError
from sae_core.io import atomic_write_json, read_json
from sae_core.store.identity import store_fingerprint
from sae_core.training.data import TrainingData

log = logging.getLogger(__name__)

SCALE_TOKENS = 65_536
"""Training rows s is measured on (the mean norm of 65,536 rows is within ~0.1 % of the split's)."""
SCALE_SEED = 20_221
"""Fixed draw of those rows: s depends on the store alone, not on `training.seed`."""
CACHE_NAME = "expected_norm.json"
CACHE_VERSION = 1
"""Bumped when the measurement changes: a cache of another version is measured again."""


@dataclass(frozen=True)
class Normalization:
    """The scale a run trained at and how it was measured (metrics.json's `normalization`)."""

    rule: str
    scale: float
    mean_norm: float
    tokens: int
    split_tokens: int

    def record(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "scale": self.scale,
            "mean_norm_raw": self.mean_norm,
            "measured_on": (
                f"{self.tokens} of {self.split_tokens} training tokens (uniform, without replacement, "
                f"seed {SCALE_SEED}): s = √d / mean ‖x‖, so E‖x·s‖ = √d"
            ),
            "folded_into_exports": True,
        }


def expected_norm_scale(data: TrainingData) -> Normalization:
    """s = √d / mean ‖x‖ over `SCALE_TOKENS` rows of the training split (see the module docstring)."""
    rows = data.sample(SCALE_TOKENS, SCALE_SEED)
    mean_norm = float(rows.double().norm(dim=1).mean())
    if not (math.isfinite(mean_norm) and mean_norm > 0):
        raise TrainingError(
            f"training.normalize_activations: the training rows' mean norm is {mean_norm}, so no scale "
            "makes it √d; check the store or set training.normalize_activations=none"
        )
    scale = math.sqrt(data.d_model) / mean_norm
    return Normalization("expected_norm", scale, mean_norm, int(rows.shape[0]), int(data.train_tokens))


def store_normalization(data: TrainingData, store: Any) -> Normalization:
    """`expected_norm_scale` of the store's training split, from `<store>/expected_norm.json` when it
    holds this store's (same fingerprint and training tokens), else measured and cached there."""
    path = getattr(store, "path", None)
    if path is None:
        return expected_norm_scale(data)
    cache = path / CACHE_NAME
    key = {"version": CACHE_VERSION, "store": store_fingerprint(store), "split_tokens": data.train_tokens}
    if cache.is_file():
        try:
            cached = read_json(cache)
            if {k: cached.get(k) for k in key} == key:
                return Normalization(
                    "expected_norm", float(cached["scale"]), float(cached["mean_norm"]),
                    int(cached["tokens"]), int(data.train_tokens),
                )  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable or of another layout: measured again and rewritten
    found = expected_norm_scale(data)
    try:
        atomic_write_json(
            cache, {**key, "scale": found.scale, "mean_norm": found.mean_norm, "tokens": found.tokens}
        )
    except OSError as exc:  # a read-only store: the scale is only measured again next time
        log.info("training.normalize_activations: cannot cache the scale in %s (%s)", cache, exc)
    return found


class ScaledData:
    """`data` with every row multiplied by `normalization.scale` (batches, samples, validation)."""

    def __init__(self, data: TrainingData, normalization: Normalization):
        self.inner = data
        self.normalization = normalization
        self.scale = normalization.scale
        self.d_model = data.d_model
        self.train_tokens = data.train_tokens
        self.data_path = data.data_path
        self.data_path_reason = data.data_path_reason

    def fingerprint(self) -> str:
        # The rows' identity; the scale is keyed through the training config (`normalize_activations`).
        return self.inner.fingerprint()

    def batches(
        self, batch_size: int, seed: int, start_step: int, shuffle: bool = True
    ) -> Iterator[torch.Tensor]:
        for batch in self.inner.batches(batch_size, seed, start_step, shuffle):
            yield batch * self.scale

    def sample(self, n: int, seed: int) -> torch.Tensor:
        return self.inner.sample(n, seed) * self.scale

    def validation(self, n: int, seed: int) -> torch.Tensor | None:
        rows = self.inner.validation(n, seed)
        return None if rows is None else rows * self.scale


def normalized(data: TrainingData, store: Any, rule: str) -> TrainingData:
    """The training data at `training.normalize_activations=rule`: as is for `none`, else `ScaledData`."""
    if rule == "none":
        return data
    found = store_normalization(data, store)
    log.info(
        "training.normalize_activations=%s: s = %.6g (mean raw norm %.4g over %d training tokens; "
        "E‖x·s‖ = √%d)",
        rule, found.scale, found.mean_norm, found.tokens, data.d_model,
    )  # fmt: skip
    return ScaledData(data, found)


def input_scale(data: Any) -> float:
    """The scale the SAE trained on `data` sees its inputs at (1.0 when not normalised)."""
    return float(getattr(data, "scale", 1.0))


def normalization_record(data: Any) -> dict[str, Any] | None:
    """metrics.json's `normalization` for a run trained on `data` (None when not normalised)."""
    found = getattr(data, "normalization", None)
    return found.record() if isinstance(found, Normalization) else None
