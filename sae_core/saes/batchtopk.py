"""BatchTopK SAE (Bussmann et al. 2024): in training, the `k · B` largest pre-activations of the whole
batch of B tokens are kept (ReLU'd), so tokens share the budget of k latents on average; at inference a
single threshold θ replaces the batch: `h = pre · [pre > θ]`, which needs no batch and is what SAELens
runs for a BatchTopK SAE (a `jumprelu` with θ for every latent).

θ is estimated during training as a running mean of the smallest activation kept in each batch
(`θ ← β θ + (1 − β) min`, the first batch sets it), and stored in the state dict as `topk_threshold`
(with `k`). Until a training batch has been seen θ is −1 and encoding refuses to run.
"""

from __future__ import annotations

from typing import Any

import torch

from sae_core.saes.auxk import AuxkWeighting
from sae_core.saes.base import LOSS_METHODS, AutogradSae, TrainLoss, overrides
from sae_core.saes.common import InitScheme, StepStats
from sae_core.saes.sparse_step import sparse_step_grads
from sae_core.saes.topk import AUXK_COEFFICIENT, TopKSAE

UNESTIMATED = -1.0


def top_k_of_batch(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the `k · B` largest entries of the whole [B, m] batch (ReLU'd), zeros elsewhere."""
    flat = pre.reshape(-1)
    values, indices = flat.topk(k * pre.shape[0], sorted=False)
    return torch.zeros_like(flat).scatter(0, indices, values.relu()).reshape(pre.shape)


class BatchTopKSAE(TopKSAE):
    """BatchTopK with a running-mean inference threshold; `threshold_decay` is β above; resampling keeps
    relu's recipe unless `resample_encoder="entry"` (it costs explained variance here: docs/results.md)."""

    topk_threshold: torch.Tensor  # a buffer: θ, estimated in training

    architecture = "batchtopk"

    def __init__(
        self,
        d_in: int,
        d_hidden: int,
        *,
        k: int = 32,
        auxk_k: int | None = None,
        auxk_coefficient: float = AUXK_COEFFICIENT,
        auxk_dead_tokens: int | None = None,
        auxk_weighting: AuxkWeighting = "variance",
        auxk_dead_scale: bool = False,
        threshold_decay: float = 0.99,
        seed: int | None = None,
        init: InitScheme = "seed",
        encoder_norm: float = 0.1,
        resample_encoder: str = "scaled",
    ) -> None:
        super().__init__(
            d_in, d_hidden, k=k, auxk_k=auxk_k, auxk_coefficient=auxk_coefficient,
            auxk_dead_tokens=auxk_dead_tokens, auxk_weighting=auxk_weighting, auxk_dead_scale=auxk_dead_scale,
            seed=seed, init=init, encoder_norm=encoder_norm, resample_encoder=resample_encoder,
        )  # fmt: skip
        if not 0 <= threshold_decay < 1:
            raise ValueError(f"threshold_decay: must be in [0, 1) (got {threshold_decay})")
        self.threshold_decay = float(threshold_decay)
        self.register_buffer("topk_threshold", torch.tensor(UNESTIMATED, dtype=torch.float32))

    @property
    def threshold_value(self) -> float:
        return float(self.topk_threshold)

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        if self.threshold_value < 0:
            raise ValueError(
                "topk_threshold: a batchtopk SAE encodes with the threshold estimated in training, and "
                f"none has been estimated yet (got {self.threshold_value})"
            )
        return pre * (pre > self.topk_threshold)

    def train_activate(self, pre: torch.Tensor) -> torch.Tensor:
        return top_k_of_batch(pre, self.k_value)

    def training_loss(self, x: torch.Tensor, dead: torch.Tensor | None = None) -> TrainLoss:
        # The dense decode of the base: TopK's per-token sparse decode assumes k latents in every row.
        return AutogradSae.training_loss(self, x, dead)

    def step_grads(
        self,
        x: torch.Tensor,
        *,
        dead: torch.Tensor | None = None,
        full_stats: bool = False,
        exceed_threshold: float | None = None,
    ) -> StepStats:
        """The hand-written step on the k·B kept entries of the batch (`sparse_step`), then θ's update
        from the kept activations; `training_loss` through autograd is its reference."""
        if overrides(self, BatchTopKSAE, LOSS_METHODS):  # the sparse step would ignore the subclass's loss
            return AutogradSae.step_grads(
                self, x, dead=dead, full_stats=full_stats, exceed_threshold=exceed_threshold
            )
        stats, kept = sparse_step_grads(
            self, x, "batch", dead=dead, full_stats=full_stats, exceed_threshold=exceed_threshold
        )
        self.observe_batch(kept.pre, kept.pre)
        return stats

    @torch.no_grad()
    def observe_batch(self, pre: torch.Tensor, h: torch.Tensor) -> None:
        # Device-side only (no host sync): a batch with nothing kept leaves θ as it is.
        smallest = torch.where(h > 0, h, torch.inf).amin().to(self.topk_threshold.dtype)
        t, beta = self.topk_threshold, self.threshold_decay
        estimate = torch.where(t < 0, smallest, beta * t + (1 - beta) * smallest)
        self.topk_threshold.copy_(torch.where(torch.isfinite(smallest), estimate, t))

    def saelens_export(self) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
        if self.threshold_value < 0:
            raise ValueError("topk_threshold: not estimated yet, so there is no inference SAE to export")
        threshold = torch.full((self.d_hidden,), self.threshold_value, dtype=torch.float32)
        return "jumprelu", {}, {**self.params(), "threshold": threshold}
