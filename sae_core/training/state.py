"""What a training run carries beyond weights and optimizer (`TrainState`, saved in checkpoints), and how
many steps a run has."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from sae_core.config import TrainingConfig
from sae_core.training.data import steps_per_epoch


@dataclass
class TrainState:
    """Everything beyond weights and optimizer that a resumed run needs."""

    step: int = 0
    # [m] int64: last step a feature fired (0 = never since start). Only real firings: a resampling reset
    # is not one, so a reset neuron that never fires again is counted dead. (No reset record is needed for
    # the "a reset neuron gets a full window" rule: resets happen only at checks `resample_every` apart,
    # and a neuron reset at check r last fired at or before r − window, so at the next check it is
    # eligible again exactly when it has not fired since the reset.)
    last_fired: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    # [m] int64: last step a feature exceeded the dead threshold; kept only for resample_criterion=threshold
    last_exceeded: torch.Tensor | None = None
    resample_events: list[dict] = field(default_factory=list)
    log_rows: list[dict] = field(default_factory=list)
    wall_time_s: float = 0.0


def total_steps_for(training: TrainingConfig, train_tokens: int) -> int:
    batch = min(training.batch_size, train_tokens)
    if training.max_tokens is not None:
        return max(1, math.ceil(training.max_tokens / batch))
    return max(1, math.ceil((training.epochs or 1.0) * steps_per_epoch(train_tokens, training.batch_size)))
