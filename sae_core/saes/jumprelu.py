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

Three things make the `step` form's coefficient mean something in a run of our length:
- θ trains at `threshold_lr_scale` × the learning rate (`optimizer_groups`). Adam normalises each
  parameter's step to ~lr, so at lr 1e-3 a threshold moves at most ~1e-3 a step whatever the L0 term's
  pull: above c ≈ 1e-3 that pull saturates and Adam sees only its sign, and c = 0.01, 0.1 and 1 gave
  the same thresholds (docs/results.md, "Dead-latent remedies").
- the coefficient is in our loss's units: our MSE is a mean over d, so the paper's λ (beside the summed
  squared error) is d × ours.
- θ at step 0 is `threshold_init` capped, per latent, at the `threshold_init_quantile` quantile of its
  pre-activations on a training sample (`init_from_data`), so a `threshold_init` above the data's scale
  cannot start every latent dead; and resampling resets a revived latent's θ (`reset_thresholds`) and
  its Adam moments with its other rows.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

from sae_core.saes.base import AutogradSae
from sae_core.saes.common import InitScheme

SparsityLoss = Literal["step", "tanh"]

STEP_THRESHOLD_LR_SCALE = 30.0
"""θ's learning rate ÷ the rest's for the `step` form by default (measured: docs/results.md)."""


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
        threshold_lr_scale: float | None = None,
        threshold_init_quantile: float = 0.9,
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
        lr_scale = threshold_lr_scale
        if lr_scale is not None and not (math.isfinite(lr_scale) and lr_scale > 0):
            raise ValueError(f"threshold_lr_scale: must be finite and > 0 (got {threshold_lr_scale})")
        if not 0 < threshold_init_quantile <= 1:
            raise ValueError(f"threshold_init_quantile: must be in (0, 1] (got {threshold_init_quantile})")
        self.l0_coefficient = float(l0_coefficient)
        self.threshold_init = float(threshold_init)
        self.threshold_init_quantile = float(threshold_init_quantile)
        if threshold_lr_scale is None:  # the step form needs it (module doc); tanh trains the encoder too
            threshold_lr_scale = STEP_THRESHOLD_LR_SCALE if sparsity_loss == "step" else 1.0
        self.threshold_lr_scale = float(threshold_lr_scale)
        self.bandwidth = float(bandwidth)
        self.sparsity_loss: SparsityLoss = sparsity_loss
        self.tanh_scale = float(tanh_scale)
        self.threshold = torch.nn.Parameter(torch.full((d_hidden,), float(threshold_init)))

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return pre * (pre > self.threshold)

    def train_activate(self, pre: torch.Tensor) -> torch.Tensor:
        return JumpReLUFunction.apply(pre, self.threshold, self.bandwidth)

    def extra_loss(
        self,
        pre: torch.Tensor,
        h: torch.Tensor,
        err: torch.Tensor,
        dead: torch.Tensor | None,
        x: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, float]:
        if self.sparsity_loss == "step":
            per_token = StepFunction.apply(pre, self.threshold, self.bandwidth).sum(dim=-1)
        else:
            per_token = torch.tanh(self.tanh_scale * h * self.W_dec.norm(dim=1)).sum(dim=-1)
        return per_token.mean(), self.l0_coefficient

    @torch.no_grad()
    def after_step(self) -> None:
        self.threshold.clamp_(min=0.0)

    def optimizer_groups(self, lr: float) -> list[dict[str, Any]]:
        """Adam's parameter groups: θ at `threshold_lr_scale` × `lr`, the rest at `lr`."""
        rest = [p for p in self.parameters() if p is not self.threshold]
        return [{"params": rest, "lr": lr}, {"params": [self.threshold], "lr": lr * self.threshold_lr_scale}]

    @torch.no_grad()
    def init_from_data(self, sample: torch.Tensor) -> None:
        """At step 0: cap each θ at the `threshold_init_quantile` quantile of its pre-activations on
        `sample`, so each latent starts firing on at least that share's complement of the tokens."""
        pre = self.pre_activation(sample.to(self.W_enc.device, torch.float32))
        cap = torch.quantile(pre, self.threshold_init_quantile, dim=0).clamp_min(0.0)
        self.threshold.copy_(torch.minimum(self.threshold, cap))

    @torch.no_grad()
    def reset_thresholds(self, idx: torch.Tensor, entry_pre: torch.Tensor) -> None:
        """Resampling: latents `idx` start again at `threshold_init`, capped at half the pre-activation
        `entry_pre` each has on the input it was drawn from, so the gate lets it fire there."""
        start = torch.full_like(entry_pre, self.threshold_init)
        self.threshold[idx] = torch.minimum(start, entry_pre / 2).clamp_min(0.0).to(self.threshold.dtype)

    def saelens_export(self) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
        threshold = self.threshold.detach().to("cpu", torch.float32).contiguous()
        return "jumprelu", {}, {**self.params(), "threshold": threshold}
