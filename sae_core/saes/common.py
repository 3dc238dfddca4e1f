"""What every SAE architecture shares, beside the interface in `base`: the initial weights (the study's
draw or the tied one), the decoder constraint (unit-norm rows: the gradient's radial part removed, the
rows renormalised after each step), the statistics a training step returns and the explained variance
they carry. `relu` and `base` both read them from here, so `base` does not import the study's SAE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

InitScheme = Literal["seed", "tied"]


def initial_weights(
    d_in: int, d_hidden: int, *, seed: int | None, init: InitScheme, encoder_norm: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(W_enc [d, m], W_dec [m, d])` at step 0, the same for every architecture given the same seed.

    `seed`: the study's initialisation, a Gaussian encoder scaled by 1/sqrt(d) and decoder by 1/sqrt(m)
    (decoder rows become unit-norm after the first step, as in its code); `tied`: see `tied_init`."""
    if d_in <= 0 or d_hidden <= 0:
        raise ValueError(f"d_in and d_hidden must be > 0 (got {d_in}, {d_hidden})")
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    if init == "seed":
        w_enc = torch.randn(d_in, d_hidden, generator=gen) / math.sqrt(d_in)
        w_dec = torch.randn(d_hidden, d_in, generator=gen) / math.sqrt(d_hidden)
    elif init == "tied":
        w_dec, w_enc = tied_init(d_in, d_hidden, encoder_norm, gen)
    else:
        raise ValueError(f"training.init: must be seed or tied (got {init!r})")
    return w_enc, w_dec


def tied_init(
    d_in: int, d_hidden: int, encoder_norm: float, gen: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder rows: random unit-norm directions; encoder: the decoder's transpose × `encoder_norm`.

    Each feature then starts reading along the direction it writes, so it begins as a matched filter
    for its own direction instead of an unrelated random one, and the decoder row and encoder column
    co-adapt from step 0 (the untied Gaussian start recovered ground-truth features far worse, see
    docs/results.md "Ground truth"). The decoder norm itself is irrelevant here: rows are renormalised
    to unit norm after every step, so only the encoder's scale matters.
    """
    if not math.isfinite(encoder_norm) or encoder_norm <= 0:
        raise ValueError(f"training.init_encoder_norm: must be > 0 (got {encoder_norm})")
    w_dec = torch.randn(d_hidden, d_in, generator=gen)
    w_dec /= w_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return w_dec, w_dec.t().contiguous() * encoder_norm


@torch.no_grad()
def project_decoder_grad(sae: Any) -> None:
    """Remove from each decoder row's gradient its component along the row (the row's norm is fixed)."""
    grad, w = sae.W_dec.grad, sae.W_dec
    if grad is None:
        return
    coef = (grad * w).sum(dim=1, keepdim=True) / (w * w).sum(dim=1, keepdim=True).clamp_min(1e-12)
    grad.sub_(coef * w)


@torch.no_grad()
def normalize_decoder(sae: Any) -> None:
    """Renormalise decoder rows to unit L2 norm (after every optimizer step)."""
    sae.W_dec.div_(sae.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))


@dataclass
class StepStats:
    """Tensors (no host sync) describing one training step; `fired` is a per-feature bool (> 0 on some
    token), `exceeded` the same above `exceed_threshold` when the step was asked for it."""

    loss: torch.Tensor
    mse: torch.Tensor
    l1: torch.Tensor
    fired: torch.Tensor
    l0: torch.Tensor | None = None
    explained_variance: torch.Tensor | None = None
    exceeded: torch.Tensor | None = None


def explained_variance_from_error(x: torch.Tensor, err: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """`1 − Σ‖x − x̂‖² / Σ‖x − mean(x)‖²` over the batch; `err` is `(x̂ − x) / scale`."""
    resid = (err * scale).pow(2).sum()
    total = (x - x.mean(dim=0, keepdim=True)).pow(2).sum().clamp_min(1e-12)
    return 1.0 - resid / total
