"""What the Trainer needs to train the architectures beside relu (`sae_core.saes`): building one from a
grid cell's settings (and what the cell's identity adds), and its autograd step with the `auxk`
strategy's dead mask."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from sae_core.config import SaesConfig, TrainingConfig
from sae_core.config.architectures import section_of
from sae_core.errors import TrainingError
from sae_core.naming import Cell
from sae_core.saes.auxk import window_steps
from sae_core.saes.base import AutogradSae
from sae_core.saes.common import StepStats, normalize_decoder
from sae_core.saes.registry import architecture_class, check_strategy


def build_architecture(
    architecture: str, d_in: int, d_hidden: int, training: TrainingConfig, options: dict[str, Any]
) -> AutogradSae:
    """A fresh SAE of `architecture`, initialised as relu would be for `training` (`seed`, `init`,
    `init_encoder_norm`); `options` are its constructor keywords (its sparsity and `saes` section)."""
    init = {"seed": training.seed, "init": training.init, "encoder_norm": training.init_encoder_norm}
    try:
        return architecture_class(architecture)(d_in, d_hidden, **init, **options)
    except ValueError as exc:  # k >= width and the like, named by the constructor
        raise TrainingError(f"{architecture}: {exc}") from None


def build_sae(
    d_in: int, d_hidden: int, training: TrainingConfig, architecture: str = "relu", **options: Any
) -> Any:
    """A fresh SAE initialised as `training` says (`init`, `init_encoder_norm`, `seed`); `options`: the
    constructor keywords of another `architecture` (see `architectures.build_architecture`)."""
    if architecture != "relu":
        return build_architecture(architecture, d_in, d_hidden, training, options)
    from sae_core.saes.relu import SparseAutoencoder

    return SparseAutoencoder(
        d_in, d_hidden, seed=training.seed, init=training.init, encoder_norm=training.init_encoder_norm
    )


def check_cell_strategy(architecture: str, strategy: str) -> None:
    """`auxk` is for the TopK family only; the error names both values."""
    try:
        check_strategy(architecture, strategy)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None


def auxk_dead(last_fired: torch.Tensor, step: int, window: int) -> torch.Tensor:
    """The `auxk` strategy's dead latents: no firing in the last `window` steps (`auxk_window`) — the
    rule of `window_dead_fraction`; none before a whole window has passed."""
    return last_fired <= step - window


def auxk_window(sae: Any, strategy: str, batch_size: int, total_steps: int) -> int:
    """The `auxk` strategy's dead window in steps (0 for another strategy), from the SAE's
    `auxk_dead_tokens` (`saes.<architecture>.auxk_dead_tokens`); a window not shorter than the run is
    refused when the Trainer is built, before any work, naming the key."""
    if strategy != "auxk":
        return 0
    tokens = sae.auxk_dead_tokens
    steps = window_steps(tokens, batch_size, total_steps)
    if steps >= total_steps:
        raise TrainingError(
            f"saes.{sae.architecture}.auxk_dead_tokens: a window of {tokens} tokens ({steps} steps of "
            f"{batch_size}) is not shorter than the run ({total_steps} steps), so the `auxk` term would "
            "never act; set it below the run's tokens or leave it unset (10M, capped at a tenth of the run)"
        )
    return steps


def optimizer_params(sae: Any, lr: float) -> Any:
    """What Adam is built on: the SAE's own parameter groups where it has them (jumprelu: θ at its own
    learning rate), else its parameters (relu: the study's single group)."""
    groups = getattr(sae, "optimizer_groups", None)
    return groups(lr) if groups is not None else sae.parameters()


def init_from_data(sae: Any, data: Any, training: TrainingConfig) -> None:
    """At step 0, after `b_dec`'s init: the SAE's data-dependent init (jumprelu: θ capped by its
    pre-activations) on a training sample of its own seed; nothing for relu."""
    init = getattr(sae, "init_from_data", None)
    if init is not None:
        init(data.sample(min(training.resample_pool_tokens, 16_384), training.seed + 19))


def autograd_step_fn(trainer: Any) -> Callable[[torch.Tensor, bool, float], StepStats]:
    """The Trainer's step for an `AutogradSae`: autograd, the AuxK term fed the window's dead mask. The
    third argument, the step's warmed-up λ, is relu's L1 coefficient: these architectures have none."""
    sae, auxk, window = trainer.sae, trainer.strategy == "auxk", trainer.auxk_window

    def step(x: torch.Tensor, full: bool, l1: float) -> StepStats:
        dead = auxk_dead(trainer.state.last_fired, trainer.state.step, window) if auxk else None
        return sae.step_grads(x, dead=dead, full_stats=full, exceed_threshold=trainer.fire_threshold)

    return step


@torch.no_grad()
def normalize_after_step(sae: Any) -> None:
    """After an optimizer step: unit-norm decoder rows (every architecture), then the architecture's own
    constraints (jumprelu: thresholds >= 0)."""
    normalize_decoder(sae)
    if isinstance(sae, AutogradSae):
        sae.after_step()


def cell_options(cell: Cell, saes: SaesConfig, d_hidden: int) -> dict[str, Any]:
    """Constructor keywords of `cell`'s architecture: its sparsity (the spec's `sparsity.keyword`: k or
    the L0 coefficient) and its `saes` section; `{}` for relu. A k not below the width names
    `grid.k_values`."""
    sparsity = cell.spec.sparsity
    section = section_of(saes, cell.architecture)
    settings = section.model_dump() if section is not None else {}
    if sparsity.keyword is None:
        return settings
    value = getattr(cell, sparsity.field)
    if sparsity.field == "k" and value >= d_hidden:
        raise TrainingError(
            f"grid.{sparsity.axis}: k must be below the SAE's width, {d_hidden} latents for {cell.name} "
            f"(got {value})"
        )
    return {sparsity.keyword: value, **settings}


def cell_settings(cell: Cell, saes: SaesConfig) -> dict[str, Any]:
    """What a cell's resume identity and cache key add for its architecture (nothing for relu, so a
    relu cell's keys are the study's)."""
    section = section_of(saes, cell.architecture)
    if section is None:
        return {}
    return {"saes": {cell.architecture: section.model_dump(mode="json")}}


def export_metadata(cell: Cell) -> dict[str, Any]:
    """What a cell of another architecture adds to its SAELens metadata: the architecture it was trained
    as (batchtopk exports as SAELens `jumprelu`) and its sparsity."""
    if cell.architecture == "relu":
        return {}
    return {"trained_architecture": cell.architecture, "k": cell.k, "l0_coefficient": cell.l0}
