"""Matryoshka BatchTopK SAE (Bussmann et al. 2025; SAELens `matryoshka_batchtopk`): BatchTopK whose
latents form nested dictionaries. The latents are split into groups (`group_sizes`, positive, summing to
d_hidden); prefix i is groups 0..i, and the loss sums the reconstruction MSE of every prefix, from the
first group alone to the whole dictionary, so the first latents must reconstruct on their own (general
features early, specific ones later, less feature absorption). The activation is BatchTopK's (k·B per
batch in training, the estimated threshold θ at inference), AuxK on the whole reconstruction's error
(SAELens' default), and the export is BatchTopK's: SAELens `jumprelu` with θ for every latent.

`group_fractions` (the config's) gives the groups as shares of the width, so one setting serves every
expansion factor; the state dict stores the `group_sizes` it resolved to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from sae_core.saes.base import TrainLoss
from sae_core.saes.batchtopk import BatchTopKSAE, top_k_of_batch

DEFAULT_FRACTIONS = (0.0625, 0.0625, 0.125, 0.25, 0.5)


def group_sizes_of(d_hidden: int, fractions: Sequence[float]) -> list[int]:
    """Each group's latents for shares `fractions` of `d_hidden` (positive, summing to 1)."""
    if not fractions or any(not f > 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"group_fractions: must be positive and sum to 1 (got {list(fractions)})")
    total, bounds = 0.0, []
    for f in fractions:
        total += f
        bounds.append(round(total * d_hidden))
    bounds[-1] = d_hidden
    return check_group_sizes([b - a for a, b in zip([0, *bounds[:-1]], bounds, strict=True)], d_hidden)


def check_group_sizes(sizes: Sequence[int], d_hidden: int) -> list[int]:
    if not sizes or any(int(s) != s or s <= 0 for s in sizes) or sum(sizes) != d_hidden:
        raise ValueError(
            f"group_sizes: must be positive integers summing to d_hidden = {d_hidden} (got {list(sizes)})"
        )
    return [int(s) for s in sizes]


class MatryoshkaBatchTopKSAE(BatchTopKSAE):
    """BatchTopK with nested-prefix losses; its training goes through autograd (it overrides
    `training_loss`, so BatchTopK's sparse step steps aside: `base.overrides`)."""

    group_sizes: torch.Tensor  # a buffer: the state dict carries it

    architecture = "matryoshka"

    def __init__(
        self,
        d_in: int,
        d_hidden: int,
        *,
        group_fractions: Sequence[float] = DEFAULT_FRACTIONS,
        group_sizes: Sequence[int] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(d_in, d_hidden, **options)
        sizes = (
            check_group_sizes(group_sizes, d_hidden)
            if group_sizes is not None
            else group_sizes_of(d_hidden, group_fractions)
        )
        self._bounds = [sum(sizes[: i + 1]) for i in range(len(sizes))]
        self.register_buffer("group_sizes", torch.tensor(sizes, dtype=torch.int64))

    def training_loss(self, x: torch.Tensor, dead: torch.Tensor | None = None) -> TrainLoss:
        """Σ over prefixes of MSE(x, x̂_prefix) (each mean over batch × d) + the AuxK term; `mse` is the
        whole dictionary's."""
        pre = self.pre_activation(x)
        h = top_k_of_batch(pre, self.k_value)
        decoded, lo, nested = self.b_dec.expand_as(x), 0, x.new_zeros(())
        for hi in self._bounds:
            decoded = decoded + h[:, lo:hi] @ self.W_dec[lo:hi]
            nested = nested + (decoded - x).pow(2).mean()
            lo = hi
        x_hat = decoded
        mse = (x_hat - x).pow(2).mean()
        term, coefficient = self.extra_loss(pre, h, (x - x_hat).detach(), dead, x=x)
        loss = nested + coefficient * term if coefficient else nested
        self.observe_batch(pre.detach(), h.detach())
        return TrainLoss(loss=loss, mse=mse, penalty=term, x_hat=x_hat, h=h)

    @classmethod
    def options_from_state(cls, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"k": int(state["k"]), "group_sizes": [int(s) for s in state["group_sizes"].tolist()]}
