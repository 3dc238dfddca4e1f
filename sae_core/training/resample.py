"""Dead-neuron resampling as in Anthropic's "Towards Monosemanticity", with the study's parameters.

Neurons that fired in no step of the window (or, with `training.resample_criterion=threshold`, never
exceeded the dead threshold in it) are dead. A large random pool of training inputs (never just the
current batch, the study's mistake) is scored by squared reconstruction error; one input per dead neuron
is drawn with probability ∝ loss² (without replacement unless `training.resample_replacement`); the
neuron's decoder row becomes the normalised `x − b_dec`, its encoder column the same direction scaled to
`enc_scale` × the mean alive encoder norm, its bias is drawn from U(bias_low, 0), and the Adam moments of
exactly those rows/columns are zeroed. All vectorised.

That encoder scale suits relu, where any positive pre-activation fires. A TopK latent must beat the k-th
largest pre-activation of its token (BatchTopK: the batch's, θ at inference), which a 0.05–0.2 × column
seldom does, so it stays dead (docs/results.md, "Resampling the TopK family"). With `match_entry` (the
TopK family's `resample_encoder: entry`) each column is instead sized so that the latent's pre-activation
on the input it was drawn from is just above the k-th largest there (`entry_pre_activation`), never below
the relu-recipe norm.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from sae_core.saes.relu import SparseAutoencoder

log = logging.getLogger(__name__)


@torch.no_grad()
def reconstruction_loss(sae: SparseAutoencoder, pool: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Per-input squared reconstruction error `‖x̂ − x‖²` over the pool, chunked to bound memory."""
    out = torch.empty(pool.shape[0], dtype=torch.float32, device=pool.device)
    for start in range(0, pool.shape[0], chunk):
        xb = pool[start : start + chunk].float()
        x_hat, _ = sae(xb)
        out[start : start + chunk] = (x_hat - xb).pow(2).sum(dim=1)
    return out


@torch.no_grad()
def resample_dead(
    sae: SparseAutoencoder,
    optimizer: torch.optim.Optimizer | None,
    dead: torch.Tensor,
    pool: torch.Tensor,
    *,
    enc_scale: float,
    bias_low: float,
    generator: torch.Generator,
    replacement: bool = False,
    match_entry: bool = False,
) -> int:
    """Reinitialise the neurons flagged in the bool mask `dead` [m] from `pool` [N, d]; returns how many.

    `replacement=True` draws each dead neuron's input independently with p ∝ loss² (Anthropic's recipe;
    two neurons may get the same input). `False` draws distinct inputs: no duplicated directions, but each
    draw removes its input, so once the dead neurons are a noticeable share of the pool's high-loss inputs
    the draw is flatter than p ∝ loss². More dead neurons than usable inputs always draw with replacement.
    `match_entry` (TopK family only): size each encoder column by `entry_pre_activation` (module doc).
    """
    dead_idx = torch.nonzero(dead.to(sae.W_enc.device), as_tuple=False).flatten()
    n_dead = int(dead_idx.numel())
    if n_dead == 0:
        return 0
    pool = pool.to(sae.W_enc.device, torch.float32)
    weights = reconstruction_loss(sae, pool).pow(2)
    if not torch.isfinite(weights).all() or float(weights.sum()) <= 0:
        weights = torch.ones_like(weights)  # perfect (or broken) reconstruction: draw uniformly
    weights = weights.cpu().double()  # multinomial with the CPU generator: reproducible on any device
    replacement = replacement or n_dead > int((weights > 0).sum())
    chosen = torch.multinomial(weights, n_dead, replacement=replacement, generator=generator)
    inputs = pool[chosen.to(pool.device)] - sae.b_dec
    directions = inputs / inputs.norm(dim=1, keepdim=True).clamp_min(1e-12)

    alive = ~dead.to(sae.W_enc.device)
    alive_norm = sae.W_enc[:, alive].norm(dim=0).mean() if bool(alive.any()) else torch.tensor(1.0)
    bias = (torch.rand(n_dead, generator=generator, dtype=torch.float32) * bias_low).to(sae.b_enc.device)
    if match_entry:
        target = entry_pre_activation(sae, pool[chosen.to(pool.device)], alive)
        norms = ((target - bias) / inputs.norm(dim=1).clamp_min(1e-12)).clamp_min(alive_norm * enc_scale)
        sae.W_enc[:, dead_idx] = directions.t() * norms
    else:
        sae.W_enc[:, dead_idx] = directions.t() * (alive_norm * enc_scale)
    sae.W_dec[dead_idx] = directions
    sae.b_enc[dead_idx] = bias  # U(bias_low, 0)
    reset_thresholds = getattr(sae, "reset_thresholds", None)  # jumprelu: θ must let it fire on its input
    if reset_thresholds is not None:
        reset_thresholds(dead_idx, (inputs * sae.W_enc[:, dead_idx].t()).sum(dim=1) + bias)
    if optimizer is not None:
        zero_adam_moments(sae, optimizer, dead_idx)
    log.info("resampled %d dead neurons from a pool of %d inputs", n_dead, pool.shape[0])
    return n_dead


@torch.no_grad()
def entry_pre_activation(sae: Any, x: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """The pre-activation a revived latent starts at on each row of `x`: halfway between the k-th and the
    (k−1)-th largest pre-activations of the alive latents there, so it is kept on that row (TopK keeps a
    row's k largest; BatchTopK k per row on average) as the last of the k, displacing no stronger one.
    The k-th itself would only tie; the mean of the k largest revives more but costs explained variance
    (docs/results.md, "Resampling the TopK family"). Zero when no latent is alive."""
    if not bool(alive.any()):
        return x.new_zeros(x.shape[0])
    pre = sae.pre_activation(x.float())[:, alive]
    k = min(sae.k_value, pre.shape[1])
    largest = pre.topk(k, dim=1).values
    return (largest[:, k - 1] + largest[:, max(k - 2, 0)]) / 2


@torch.no_grad()
def zero_adam_moments(sae: SparseAutoencoder, optimizer: torch.optim.Optimizer, idx: torch.Tensor) -> None:
    """Zero Adam's first and second moments for exactly the resampled rows/columns (and thresholds)."""
    params: list[tuple[torch.Tensor, str]] = [(sae.W_enc, "col"), (sae.b_enc, "row"), (sae.W_dec, "row")]
    threshold = getattr(sae, "threshold", None)
    if isinstance(threshold, torch.nn.Parameter):  # jumprelu's θ [m]
        params.append((threshold, "row"))
    for param, view in params:
        state = optimizer.state.get(param)
        if not state:
            continue
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            moment = state.get(key)
            if moment is None:
                continue
            if view == "col":
                moment[:, idx] = 0
            else:
                moment[idx] = 0
