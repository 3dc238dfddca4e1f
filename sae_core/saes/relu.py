"""The study's sparse autoencoder, its loss, the decoder constraint and a hand-written training step.

`h = ReLU((x − b_dec) W_enc + b_enc)`, `x̂ = h W_dec + b_dec`, parameters stored as the study stored them
(`W_enc [d, m]`, `b_enc [m]`, `W_dec [m, d]`, `b_dec [d]`), so its `.pth` files load unchanged.

`fused_step_grads` computes the loss and every gradient by hand instead of through autograd. It is exactly
the gradient autograd would give (tests compare them), but it does 5 matmuls per step instead of autograd's
6: autograd propagates a full `[B, d]` gradient into `x − b_dec` only to sum it for `b_dec`, while the sum
can be taken first (`Σ_b g_pre @ W_encᵀ`, a matrix-vector product). It also fuses the ReLU mask with the
L1 gradient and writes the weight gradients in place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

# Re-exported: these lived here before `common` held what every architecture shares.
from sae_core.saes.common import InitScheme as InitScheme
from sae_core.saes.common import StepStats as StepStats
from sae_core.saes.common import explained_variance_from_error as explained_variance_from_error
from sae_core.saes.common import initial_weights
from sae_core.saes.common import normalize_decoder as normalize_decoder
from sae_core.saes.common import project_decoder_grad as project_decoder_grad
from sae_core.saes.common import tied_init as tied_init
from sae_core.saes.state_keys import PARAM_NAMES as PARAM_NAMES
from sae_core.saes.state_keys import check_state_keys, tensors_of

L1Scaling = Literal["seed", "sum"]


class SparseAutoencoder(nn.Module):
    """One hidden layer of `d_hidden` ReLU features over `d_in`-dimensional activations.

    `init`: `seed` (the study's, the default here so a bare construction stays the study's SAE) or
    `tied` (see `tied_init`; `training.init` chooses it for every trained SAE and defaults to it)."""

    architecture = "relu"
    """The registry name (`sae_core.saes.registry`); the other architectures share this interface."""

    def __init__(
        self,
        d_in: int,
        d_hidden: int,
        *,
        seed: int | None = None,
        init: InitScheme = "seed",
        encoder_norm: float = 0.1,
    ) -> None:
        super().__init__()
        if d_in <= 0 or d_hidden <= 0:
            raise ValueError(f"d_in and d_hidden must be > 0 (got {d_in}, {d_hidden})")
        self.d_in = d_in
        self.d_hidden = d_hidden
        w_enc, w_dec = initial_weights(d_in, d_hidden, seed=seed, init=init, encoder_norm=encoder_norm)
        self.W_enc = nn.Parameter(w_enc)
        self.b_enc = nn.Parameter(torch.zeros(d_hidden))
        self.W_dec = nn.Parameter(w_dec)
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(torch.addmm(self.b_enc, x - self.b_dec, self.W_enc))

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b_dec, h, self.W_dec)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encode(x)
        return self.decode(h), h

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> SparseAutoencoder:
        check_state_keys(state, "relu")  # another architecture's .pth is refused, naming which it is
        d_in, d_hidden = state["W_enc"].shape
        sae = cls(d_in, d_hidden, seed=0)  # the init is overwritten by the state below
        sae.load_state_dict({k: v.float() for k, v in tensors_of(state).items()})
        return sae

    @classmethod
    def from_saelens(cls, cfg: dict[str, Any], state: dict[str, torch.Tensor]) -> SparseAutoencoder:
        """SAELens `standard` computes exactly this SAE, with the same tensors."""
        return cls.from_state_dict(state)

    @classmethod
    def from_pth(cls, path: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
        """Load a `.pth` state dict with the study's keys (`W_enc`, `b_enc`, `W_dec`, `b_dec`)."""
        state = torch.load(Path(path), map_location=device, weights_only=True)
        return cls.from_state_dict(state).to(device)


def l1_factor(scaling: L1Scaling, d_hidden: int) -> float:
    """What λ is multiplied by per unit of summed activation per token: `seed` averages over m features."""
    if scaling == "seed":
        return 1.0 / d_hidden
    if scaling == "sum":
        return 1.0
    raise ValueError(f"training.l1_scaling: must be seed or sum (got {scaling!r})")


@dataclass
class LossParts:
    loss: torch.Tensor
    mse: torch.Tensor
    l1: torch.Tensor


def sae_loss(
    x: torch.Tensor, x_hat: torch.Tensor, h: torch.Tensor, l1_coef: float | torch.Tensor, scaling: L1Scaling
) -> LossParts:
    """`MSE(x, x̂)` (mean over batch × d, as `F.mse_loss`) `+ λ·L1(h)`; the L1 term is the mean over
    batch × m (`seed`, the study's `F.l1_loss(h, 0)`) or the per-token sum averaged over the batch (`sum`)."""
    mse = (x_hat - x).pow(2).mean()
    l1 = h.abs().sum(dim=-1).mean() * l1_factor(scaling, h.shape[-1])
    return LossParts(loss=mse + l1_coef * l1, mse=mse, l1=l1)


def _ensure_grad(p: nn.Parameter) -> torch.Tensor:
    if p.grad is None:
        p.grad = torch.empty_like(p)
    return p.grad


class StepBuffers:
    """Reused `[B, m]` work arrays for the fused step. Fresh 100 MB temporaries every step cost page
    faults and zeroing (the allocator returns large blocks to the OS), a measurable share of a CPU step."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != like.dtype or buf.device != like.device:
            buf = torch.empty(shape, dtype=like.dtype, device=like.device)
            self._buffers[name] = buf
        return buf


@torch.no_grad()
def fused_step_grads(
    sae: SparseAutoencoder,
    x: torch.Tensor,
    l1_coef: float,
    scaling: L1Scaling,
    *,
    full_stats: bool = False,
    buffers: StepBuffers | None = None,
    exceed_threshold: float | None = None,
) -> StepStats:
    """Forward pass, loss and all four gradients (written into `.grad`), equal to autograd's.
    Pass the same `buffers` every step to reuse the large work arrays."""
    batch, d = x.shape
    m = sae.d_hidden
    buffers = buffers or StepBuffers()
    x_c = x - sae.b_dec
    h = torch.addmm(sae.b_enc, x_c, sae.W_enc, out=buffers.get("h", (batch, m), x)).relu_()
    x_hat = torch.addmm(sae.b_dec, h, sae.W_dec)
    err = x_hat.sub_(x)  # x̂ is not needed past this point: reuse its memory for the error
    mse = err.pow(2).mean()
    l1_per = l1_factor(scaling, m)
    per_feature = h.sum(dim=0)  # h >= 0: |h| = h, and a feature fired iff its column sum is > 0
    # one extra [B, m] pass, only for resample_criterion=threshold
    exceeded = h.amax(dim=0) > exceed_threshold if exceed_threshold is not None else None
    l1 = per_feature.sum() * (l1_per / batch)
    # dLoss/dx̂ = 2(x̂ − x)/(B·d); dLoss/dh = that @ W_decᵀ + λ·l1_per/B on h > 0 (ReLU gate).
    g_out = err.mul_(2.0 / (batch * d))
    torch.mm(h.t(), g_out, out=_ensure_grad(sae.W_dec))
    g_h = torch.addmm(
        g_out.new_full((1, 1), l1_coef * l1_per / batch),
        g_out,
        sae.W_dec.t(),
        out=buffers.get("g", (batch, m), x),
    )
    g_pre = torch.ops.aten.threshold_backward.grad_input(g_h, h, 0.0, grad_input=g_h)  # in place: g_h·[h > 0]
    g_benc = g_pre.sum(dim=0)
    _ensure_grad(sae.b_enc).copy_(g_benc)
    torch.mm(x_c.t(), g_pre, out=_ensure_grad(sae.W_enc))
    # b_dec enters twice: added in the decoder, subtracted before the encoder.
    torch.sub(g_out.sum(dim=0), sae.W_enc @ g_benc, out=_ensure_grad(sae.b_dec))
    stats = StepStats(loss=mse + l1_coef * l1, mse=mse, l1=l1, fired=per_feature > 0, exceeded=exceeded)
    if full_stats:
        stats.l0 = (h > 0).sum(dim=1, dtype=torch.float32).mean()
        stats.explained_variance = explained_variance_from_error(x, g_out, scale=batch * d / 2.0)
    return stats


def autograd_step_grads(
    sae: SparseAutoencoder,
    x: torch.Tensor,
    l1_coef: float | torch.Tensor,  # a device scalar in a captured step (training.capture)
    scaling: L1Scaling,
    *,
    full_stats: bool = False,
    forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    exceed_threshold: float | None = None,
) -> StepStats:
    """The same step through autograd (used under bf16 autocast / torch.compile on CUDA, and as the
    reference the fused step is tested against); `forward` may be a compiled `sae.forward`."""
    x_hat, h = (forward or sae)(x)
    parts = sae_loss(x, x_hat.float(), h.float(), l1_coef, scaling)
    sae.zero_grad(set_to_none=False)
    parts.loss.backward()
    with torch.no_grad():
        hd = h.detach()
        stats = StepStats(
            loss=parts.loss.detach(), mse=parts.mse.detach(), l1=parts.l1.detach(), fired=hd.amax(dim=0) > 0
        )
        if exceed_threshold is not None:
            stats.exceeded = hd.amax(dim=0) > exceed_threshold
        if full_stats:
            stats.l0 = (hd > 0).sum(dim=1, dtype=torch.float32).mean()
            stats.explained_variance = explained_variance_from_error(x, x_hat.detach().float() - x)
    return stats


@torch.no_grad()
def evaluate(
    sae: SparseAutoencoder,
    x: torch.Tensor,
    l1_coef: float,
    scaling: L1Scaling,
    chunk: int = 8192,
    frequency_out: torch.Tensor | None = None,
) -> dict[str, float]:
    """Loss, MSE, L1, L0 and explained variance over `x` (chunked), plus per-feature firing; with
    `frequency_out` ([d_hidden]) also each feature's firing frequency (> 0) on `x`, from the same encode."""
    n = x.shape[0]
    sq_err = 0.0
    l1_sum = 0.0
    l0_sum = 0.0
    fired = torch.zeros(sae.d_hidden, dtype=torch.int64, device=x.device)  # rows each feature fired on
    mean = x.mean(dim=0, keepdim=True)
    total_var = float((x - mean).pow(2).sum())
    for start in range(0, n, chunk):
        xb = x[start : start + chunk]
        x_hat, h = sae(xb)
        sq_err += float((x_hat - xb).pow(2).sum())
        l1_sum += float(h.sum())
        l0_sum += float((h > 0).sum())
        fired += (h > 0).sum(dim=0)
    if frequency_out is not None:
        frequency_out.copy_(fired.to(frequency_out.device, frequency_out.dtype) / max(1, n))
    mse = sq_err / (n * sae.d_in)
    l1 = l1_sum / n * l1_factor(scaling, sae.d_hidden)
    return {
        "loss": mse + l1_coef * l1,
        "mse": mse,
        "l1": l1,
        "l0": l0_sum / n,
        "explained_variance": 1.0 - sq_err / max(total_var, 1e-12),
        "never_fired_fraction": float((fired == 0).float().mean()),
    }
