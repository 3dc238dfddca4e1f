"""The grid of cells and where they run."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from sae_core.config.base import STRATEGIES, Section, Strategy


class GridConfig(Section):
    expansion_factors: list[int] = Field(default_factory=lambda: [4, 8, 16, 32], min_length=1)
    """SAE width as a multiple of d_model."""

    l1_coefficients: list[float] = Field(default_factory=lambda: [1e-2, 1e-4], min_length=1)
    """Sparsity penalties λ (see `training.l1_scaling` for what λ multiplies)."""

    strategies: list[Strategy] = Field(default_factory=lambda: list(STRATEGIES), min_length=1)
    """Dead-neuron strategies: `nosampling` (plain training) and/or `sampling` (resampling)."""

    placement: Literal["local", "pool"] = "local"
    """`local`: cells train in the sweep's own process; `pool`: each cell is a run of the `train-cell`
    deployment on a (GPU) work pool."""

    max_concurrency: int = Field(1, ge=1)
    """Cells trained at once when `placement` is `local` (1 on a single GPU or a small CPU)."""

    cell_deployment: str = "train-cell/train-cell"
    """Deployment (`flow-name/deployment-name`) that runs one cell when `placement` is `pool`."""

    @field_validator("expansion_factors")
    @classmethod
    def _positive_expansion(cls, values: list[int]) -> list[int]:
        for value in values:
            if value <= 0:
                raise ValueError(f"every expansion factor must be > 0 (got {value})")
        if len(set(values)) != len(values):
            raise ValueError(f"expansion factors repeat (got {values})")
        return values

    @field_validator("l1_coefficients")
    @classmethod
    def _non_negative_l1(cls, values: list[float]) -> list[float]:
        for value in values:
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"every λ must be finite and >= 0 (got {value})")
        if len(set(values)) != len(values):
            raise ValueError(f"λ values repeat (got {values})")
        return values

    @field_validator("strategies")
    @classmethod
    def _unique_strategies(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError(f"strategies repeat (got {values})")
        return values
