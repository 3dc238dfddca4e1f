"""AuxK (Gao et al. 2024, appendix A.2): an auxiliary loss that gives dead latents a gradient.

A TopK SAE's dead latents never reach the top k, so the main loss never touches them. AuxK takes, per
token, the `k_aux` largest pre-activations among the latents dead for a window, decodes them with the
decoder alone (no bias: `b_dec` is already in the residual) and asks that to reconstruct the main
reconstruction's error `e = x − x̂`. The selected pre-activations are used as they are, without a ReLU:
a dead latent's pre-activation is usually negative, and a ReLU there would give it no gradient at all.

Its weight (`auxk_weight`): Gao et al.'s code divides the main MSE by Var(x) and the aux MSE by Var(e),
so α weighs the aux term *relative to how much is left to explain*: as the SAE improves, Var(e) falls
and the term keeps its pull. Our main loss stays the plain MSE (relu's units); the `variance` weighting
multiplies the aux MSE by Var(x)/Var(e) instead, the same ratio of the two terms (Adam ignores the
loss's overall scale; Var(x) is the batch's, where Gao et al. fix it from one batch). `mse` keeps the
aux MSE in the main loss's units (α/FVU times weaker). `auxk_dead_scale` multiplies by
min(n_dead / k_aux, 1), sparsify's damping while few latents are dead.
"""

from __future__ import annotations

from typing import Literal

import torch

AuxkWeighting = Literal["variance", "mse"]

DEFAULT_WINDOW_TOKENS = 10_000_000
"""Gao et al.'s, sparsify's and dictionary_learning's dead window: ~10M training tokens."""

WINDOW_RUN_FRACTION = 0.1
"""The default window is capped at this fraction of the cell's run (short runs still get a live term)."""


def window_steps(window_tokens: int | None, batch_size: int, total_steps: int) -> int:
    """The dead window in steps: `window_tokens` (None: `DEFAULT_WINDOW_TOKENS`, capped at
    `WINDOW_RUN_FRACTION` of the run's `total_steps`), at least one step."""
    if window_tokens is None:
        steps = -(-DEFAULT_WINDOW_TOKENS // batch_size)
        return max(1, min(steps, int(WINDOW_RUN_FRACTION * total_steps)))
    return max(1, -(-window_tokens // batch_size))


def _variance(t: torch.Tensor) -> torch.Tensor:
    return (t - t.mean(dim=0)).pow(2).mean()


def auxk_weight(
    x: torch.Tensor, err: torch.Tensor, n_dead: int, k_aux: int, weighting: AuxkWeighting, dead_scale: bool
) -> torch.Tensor:
    """The factor on α·MSE(ê, e) (module doc): Var(x)/Var(e) for `variance`, 1 for `mse`, times
    min(n_dead/k_aux, 1) with `dead_scale`. Detached: a weight, not a term to minimise."""
    with torch.no_grad():
        if weighting == "variance":
            scale = _variance(x.float()) / _variance(err.float()).clamp_min(1e-12)
        elif weighting == "mse":
            scale = x.new_ones((), dtype=torch.float32)
        else:
            raise ValueError(f"auxk_weighting: must be 'variance' or 'mse' (got {weighting!r})")
        return scale * min(n_dead / k_aux, 1.0) if dead_scale else scale


def auxk_loss(
    pre: torch.Tensor, err: torch.Tensor, w_dec: torch.Tensor, dead: torch.Tensor, k_aux: int
) -> torch.Tensor:
    """`mean((ê − e)²)` over batch × d (the units of the main MSE), `ê = TopK_aux(pre | dead) W_dec`.

    `pre` [B, m] pre-activations, `err` [B, d] the main error `x − x̂` (treated as a constant), `dead`
    [m] bool. Zero (with a graph, so a step stays uniform) when no latent is dead; with fewer dead latents
    than `k_aux` it uses all of them."""
    if k_aux <= 0:
        raise ValueError(f"auxk_k: must be > 0 (got {k_aux})")
    n_dead = int(dead.sum())
    if n_dead == 0:
        return (pre[:1, :1] * 0.0).sum()
    k = min(k_aux, n_dead)
    masked = torch.where(dead, pre, torch.full_like(pre, -torch.inf))
    values, indices = masked.topk(k, dim=-1, sorted=False)
    acts = torch.zeros_like(pre).scatter(-1, indices, values)
    return (acts @ w_dec - err.detach()).pow(2).mean()
