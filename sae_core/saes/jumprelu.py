"""JumpReLU SAE (Rajamanoharan et al. 2024): `h = pre · [pre > θ]` with a learned threshold θ per
latent, trained with an L0 penalty through straight-through estimators (STE).

The step `[pre > θ]` has zero gradient almost everywhere, so θ's gradient is estimated with a rectangle
kernel of width ε (`bandwidth`): `∂/∂θ [pre > θ] ≈ −(1/ε) K((pre − θ)/ε)` and `∂/∂θ (pre · [pre > θ]) ≈
−(θ/ε) K((pre − θ)/ε)`, K(u) = 1 on |u| < ½. The pre-activations get the exact gradient of the
JumpReLU (`[pre > θ]`) and none from the penalty's step (the paper's choice).

The sparsity term, `sparsity_loss`:
- `step` (the paper's): the L0 itself, `Σ_j [pre_j > θ_j]` per token, θ trained through the step's STE;
- `tanh` (Anthropic's 2025 form): `Σ_j tanh(c · h_j · ‖W_dec,j‖)`, a smooth stand-in for the L0 that
  also trains the encoder (c = `tanh_scale`; the decoder rows are unit norm here, kept in the formula).

θ is stored directly (`threshold` [m], float32), not as its log (SAELens has had bugs from that), and
projected to θ ≥ 0 after each optimizer step: below zero the gate would pass negative pre-activations.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

from sae_core.saes.base import AutogradSae
from sae_core.saes.relu import InitScheme

SparsityLoss = Literal["step", "tanh"]


def _window(pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """`(1/ε) K((pre − θ)/ε)` with K the rectangle on (−½, ½)."""
    return ((pre - threshold).abs() < bandwidth / 2).to(pre.dtype) / bandwidth


class JumpReLUFunction(torch.autograd.Function):
    """`pre · [pre > θ]`; exact gradient to `pre`, the STE `−(θ/ε) K` to θ (summed over the batch)."""

    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        pre, threshold = ctx.saved_tensors
        g_pre = grad * (pre > threshold)
        g_threshold = -(threshold * _window(pre, threshold, ctx.bandwidth) * grad).sum(dim=0)
        return g_pre, g_threshold, None


class StepFunction(torch.autograd.Function):
    """`[pre > θ]`; the STE `−(1/ε) K` to θ, nothing to `pre`."""

    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        pre, threshold = ctx.saved_tensors
        return None, -(_window(pre, threshold, ctx.bandwidth) * grad).sum(dim=0), None


class JumpReLUSAE(AutogradSae):
    """JumpReLU with a per-latent threshold; the fields are documented in `config.JumpReLUConfig`."""

    architecture = "jumprelu"

    def __init__(
        self,
        d_in: int,
        d_hidden: int,
        *,
        l0_coefficient: float = 1e-3,
        threshold_init: float = 1e-3,
        bandwidth: float = 1e-3,
        sparsity_loss: SparsityLoss = "step",
        tanh_scale: float = 4.0,
        seed: int | None = None,
        init: InitScheme = "seed",
        encoder_norm: float = 0.1,
    ) -> None:
        super().__init__(d_in, d_hidden, seed=seed, init=init, encoder_norm=encoder_norm)
        if not math.isfinite(l0_coefficient) or l0_coefficient < 0:
            raise ValueError(f"l0_coefficient: must be finite and >= 0 (got {l0_coefficient})")
        if not math.isfinite(threshold_init) or threshold_init < 0:
            raise ValueError(f"threshold_init: must be finite and >= 0 (got {threshold_init})")
        if not math.isfinite(bandwidth) or bandwidth <= 0:
            raise ValueError(f"bandwidth: must be finite and > 0 (got {bandwidth})")
        if sparsity_loss not in ("step", "tanh"):
            raise ValueError(f"sparsity_loss: must be step or tanh (got {sparsity_loss!r})")
        if not math.isfinite(tanh_scale) or tanh_scale <= 0:
            raise ValueError(f"tanh_scale: must be finite and > 0 (got {tanh_scale})")
        self.l0_coefficient = float(l0_coefficient)
        self.bandwidth = float(bandwidth)
        self.sparsity_loss: SparsityLoss = sparsity_loss
        self.tanh_scale = float(tanh_scale)
        self.threshold = torch.nn.Parameter(torch.full((d_hidden,), float(threshold_init)))

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return pre * (pre > self.threshold)

    def train_activate(self, pre: torch.Tensor) -> torch.Tensor:
        return JumpReLUFunction.apply(pre, self.threshold, self.bandwidth)

    def extra_loss(
        self, pre: torch.Tensor, h: torch.Tensor, err: torch.Tensor, dead: torch.Tensor | None
    ) -> tuple[torch.Tensor, float]:
        if self.sparsity_loss == "step":
            per_token = StepFunction.apply(pre, self.threshold, self.bandwidth).sum(dim=-1)
        else:
            per_token = torch.tanh(self.tanh_scale * h * self.W_dec.norm(dim=1)).sum(dim=-1)
        return per_token.mean(), self.l0_coefficient

    @torch.no_grad()
    def after_step(self) -> None:
        self.threshold.clamp_(min=0.0)

    def saelens_export(self) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
        threshold = self.threshold.detach().to("cpu", torch.float32).contiguous()
        return "jumprelu", {}, {**self.params(), "threshold": threshold}
