"""AuxK (Gao et al. 2024, appendix A.2): an auxiliary loss that gives dead latents a gradient.

A TopK SAE's dead latents never reach the top k, so the main loss never touches them. AuxK takes, per
token, the `k_aux` largest pre-activations among the latents dead for a window, decodes them with the
decoder alone (no bias: `b_dec` is already in the residual) and asks that to reconstruct the main
reconstruction's error `e = x − x̂`. The selected pre-activations are used as they are, without a ReLU:
a dead latent's pre-activation is usually negative, and a ReLU there would give it no gradient at all.
"""

from __future__ import annotations

import torch


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
