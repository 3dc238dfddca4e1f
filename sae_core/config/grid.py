"""The grid of cells and where they run."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from sae_core.architectures import STRATEGY_NAMES
from sae_core.config.architectures import ARCHITECTURE_NAMES, STRATEGIES_BY_ARCHITECTURE

if TYPE_CHECKING:
    Architecture = str
    StrategyName = str
else:  # the registry's names, as a Literal (the JSON schema's enum, the UI's choices)
    Architecture = Literal[ARCHITECTURE_NAMES]
    StrategyName = Literal[STRATEGY_NAMES]
from sae_core.config.base import Section


def _study_architectures() -> list[Architecture]:
    """The study's SAE only: the seed preset's 16 cells and their names stay the study's."""
    return ["relu"]


def _study_strategies() -> list[StrategyName]:
    """The study's two strategies (`auxk` is opt-in: it exists for the TopK family only)."""
    return ["nosampling", "sampling"]


class GridConfig(Section):
    expansion_factors: list[int] = Field(default_factory=lambda: [4, 8, 16, 32], min_length=1)
    """SAE width as a multiple of d_model."""

    l1_coefficients: list[float] = Field(default_factory=lambda: [1e-2, 1e-4], min_length=1)
    """Sparsity penalties λ (see `training.l1_scaling` for what λ multiplies)."""

    strategies: list[StrategyName] = Field(default_factory=_study_strategies, min_length=1)
    """Dead-neuron strategies: `nosampling` (plain training), `sampling` (resampling) and, for the TopK
    family only, `auxk` (Gao et al.'s auxiliary loss on latents dead for `training.resample_every` steps).
    Each architecture's cells take the listed strategies it has."""

    architectures: list[Architecture] = Field(default_factory=_study_architectures, min_length=1)
    """SAE architectures (`sae_core.architectures`): `relu` (the study's ReLU-L1; sparsity axis
    `l1_coefficients`), `topk`, `batchtopk` and the other TopK-family ones (axis `k_values`), `jumprelu`
    (axis `l0_coefficients`). Settings in the `saes` section."""

    k_values: list[int] = Field(default_factory=lambda: [32], min_length=1)
    """Active latents per token k of the TopK-family cells (`topk`, `batchtopk`, …; each below the width)."""

    l0_coefficients: list[float] = Field(default_factory=lambda: [1e-3], min_length=1)
    """L0 penalty coefficients of the `jumprelu` cells, in our loss's units: beside the reconstruction
    MSE averaged over d_model, so the paper's λ (beside the summed squared error) is d_model × this
    (Rajamanoharan et al.'s λ on d = 2304 is ~2.3k × ours)."""

    placement: Literal["local", "pool"] = "local"
    """`local`: cells train in the sweep's own process; `pool`: each pack of cells (`pack`) is a run of
    the `train-pack` deployment on a (GPU) work pool, each cell outside a pack a run of `train-cell`."""

    max_concurrency: int = Field(1, ge=1)
    """Cells trained at once when `placement` is `local` (1 on a single GPU or a small CPU)."""

    pack: Literal["auto", "none", "device"] = "auto"
    """Train the cells of a sweep together (either placement): `device` steps every cell of a pack on one
    shared batch (read once), each with its own parameters, Adam, resampling, checkpoint and run dir —
    the same result as alone (bit-identical on a CPU); `none` trains one cell at a time; `auto` (the
    default): `device` when `training.device` resolves to CUDA, where one cell's small matmuls leave the
    GPU idle, `none` elsewhere (a CPU gains nothing from it); with `placement: pool` the cells train on
    the pool's GPUs, so `auto` packs there unless `training.device` is `cpu` or `mps`. A sweep's cells
    share the store, batch size, token budget and seed, so they pack together, any architecture mix,
    split by `pack_memory_gb`."""

    pack_memory_gb: float | None = Field(None, gt=0)
    """Memory a pack may take, in GB (2^30 bytes): each cell's parameters, gradients, Adam moments and step
    work arrays, estimated before training. A pack over it is split (the split is logged). None: the
    device's free memory (CUDA: free memory after the training data is loaded; CPU: `MemAvailable`),
    less 10 %. With `placement: pool` the sweep plans its packs against this figure, one `train-pack`
    run each (set it to one gpu worker's GPU memory: the seed deployment and the RunPod launcher do);
    None there: one pack of every cell, split by the worker's free memory."""

    cell_deployment: str = "train-cell/train-cell"
    """Deployment (`flow-name/deployment-name`) that runs one cell when `placement` is `pool`."""

    pack_deployment: str = "train-pack/train-pack"
    """Deployment (`flow-name/deployment-name`) that trains one pack of cells on shared batches and
    analyses them when `placement` is `pool` and `pack` packs."""

    extract_deployment: str = "extract/extract"
    """Deployment (`flow-name/deployment-name`) that extracts the activation store when `placement` is
    `pool` (on the `gpu` pool: the model runs on a GPU, the store lands on the shared `data_root`)."""

    work_queue: str | None = None
    """With `placement: pool`, the work queue of the deployments' pool that the sweep's runs of
    `extract_deployment`, `pack_deployment` and `cell_deployment` go to (`run_deployment`'s
    `work_queue_name`), e.g. a queue of the `gpu` pool that only one GPU type's workers poll
    (`prefect worker start --pool gpu --work-queue a100`); Prefect creates a queue the pool lacks, and
    only workers polling it take its runs. None (the default): each deployment's own queue, the pool's
    `default` queue. Where a cell runs, not what it computes: no cache key reads it."""

    cell_retries: int = Field(2, ge=0)
    """With `placement: pool`, how many more times a cell's, a pack's (or the extraction's) flow run is
    submitted when its run crashed or its worker was lost; the new run resumes from each cell's last
    checkpoint."""

    lost_after_s: float = Field(90.0, gt=0)
    """With `placement: pool`, seconds without a heartbeat after which a claimed (Pending or Running)
    flow run counts as lost (its worker died with it): marked Crashed and submitted again. Flow runs send
    a heartbeat every `PREFECT_FLOWS_HEARTBEAT_FREQUENCY` s (30 in the deployments): keep this above it."""

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

    @field_validator("architectures")
    @classmethod
    def _unique_architectures(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError(f"architectures repeat (got {values})")
        return values

    @field_validator("k_values")
    @classmethod
    def _positive_k(cls, values: list[int]) -> list[int]:
        for value in values:
            if value <= 0:
                raise ValueError(f"every k must be > 0 (got {value})")
        if len(set(values)) != len(values):
            raise ValueError(f"k values repeat (got {values})")
        return values

    @field_validator("l0_coefficients")
    @classmethod
    def _non_negative_l0(cls, values: list[float]) -> list[float]:
        for value in values:
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"every L0 coefficient must be finite and >= 0 (got {value})")
        if len(set(values)) != len(values):
            raise ValueError(f"L0 coefficients repeat (got {values})")
        return values

    @model_validator(mode="after")
    def _every_strategy_has_an_architecture(self) -> GridConfig:
        for strategy in self.strategies:
            if not any(strategy in STRATEGIES_BY_ARCHITECTURE[a] for a in self.architectures):
                takers = [a for a, allowed in STRATEGIES_BY_ARCHITECTURE.items() if strategy in allowed]
                raise ValueError(
                    f"grid.strategies: {strategy!r} is only for {takers}, and grid.architectures "
                    f"is {self.architectures}"
                )
        return self
