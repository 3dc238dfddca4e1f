"""What every SAE architecture shares: the interface the trainer, analysis and export use, and the base
class of the architectures trained through autograd (topk, batchtopk, jumprelu).

All four keep the study's parameters and layout (`W_enc [d, m]`, `b_enc [m]`, `W_dec [m, d]`,
`b_dec [d]`), the pre-activation `(x − b_dec) W_enc + b_enc`, the decoder `h W_dec + b_dec` and unit-norm
decoder rows (the trainer projects the rows' gradients and renormalises them after every step, for every
architecture: TopK (Gao et al.) and JumpReLU (Rajamanoharan et al.) train with the same constraint). They
differ only in the activation that turns pre-activations into `h`, in the sparsity term of the loss and
in the few extra tensors their state dict holds (their spec's `extra_keys`, `sae_core.architectures`).

`relu.SparseAutoencoder` implements the same interface with its hand-written fused step; the others get
their step from autograd here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import torch
from torch import nn

from sae_core.saes.common import InitScheme, StepStats, explained_variance_from_error, initial_weights
from sae_core.saes.state_keys import PARAM_NAMES, check_state_keys, tensors_of

SaeT = TypeVar("SaeT", bound="AutogradSae")


class Sae(Protocol):
    """The interface every architecture offers (`SparseAutoencoder` and the `AutogradSae` subclasses)."""

    @property
    def architecture(self) -> str: ...

    d_in: int
    d_hidden: int
    W_enc: nn.Parameter
    b_enc: nn.Parameter
    W_dec: nn.Parameter
    b_dec: nn.Parameter

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, h: torch.Tensor) -> torch.Tensor: ...

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...


@dataclass
class TrainLoss:
    """One training forward pass: the loss and its parts, with the tensors the step statistics read."""

    loss: torch.Tensor
    mse: torch.Tensor
    penalty: torch.Tensor
    """The architecture's extra term before its coefficient (jumprelu: the L0 penalty; topk family: AuxK)."""
    x_hat: torch.Tensor
    h: torch.Tensor


class AutogradSae(nn.Module):
    """An SAE whose training step is autograd's; subclasses define the activation and the loss terms."""

    architecture: ClassVar[str]

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
        # The study's draw (`common.initial_weights`, relu's too), so every architecture starts from exactly
        # the weights relu would for the same seed and `training.init` (a like-for-like comparison).
        w_enc, w_dec = initial_weights(d_in, d_hidden, seed=seed, init=init, encoder_norm=encoder_norm)
        self.d_in = d_in
        self.d_hidden = d_hidden
        self.W_enc = nn.Parameter(w_enc)
        self.b_enc = nn.Parameter(torch.zeros(d_hidden))
        self.W_dec = nn.Parameter(w_dec)
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    # ---- inference ----------------------------------------------------------------------------------

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b_enc, x - self.b_dec, self.W_enc)

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Pre-activations → feature activations at inference (what `encode` and SAELens compute)."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.pre_activation(x))

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b_dec, h, self.W_dec)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encode(x)
        return self.decode(h), h

    # ---- training -----------------------------------------------------------------------------------

    def train_activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Pre-activations → activations in a training step (batchtopk differs from `activate` here)."""
        return self.activate(pre)

    def extra_loss(
        self,
        pre: torch.Tensor,
        h: torch.Tensor,
        err: torch.Tensor,
        dead: torch.Tensor | None,
        x: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, float]:
        """The architecture's term of the loss and its coefficient: `loss = mse + coefficient · term`.
        `err` is `x − x̂` (detached), `dead` the per-feature mask of latents dead for a window (or None),
        `x` the batch (AuxK's weighting reads its variance)."""
        return pre.new_zeros(()), 0.0

    def observe_batch(self, pre: torch.Tensor, h: torch.Tensor) -> None:
        """Update non-gradient state from a training batch (batchtopk's threshold estimate)."""

    def training_loss(self, x: torch.Tensor, dead: torch.Tensor | None = None) -> TrainLoss:
        """`MSE(x, x̂)` (mean over batch × d, as relu's) `+ coefficient · extra term`."""
        pre = self.pre_activation(x)
        h = self.train_activate(pre)
        x_hat = self.decode(h)
        mse = (x_hat - x).pow(2).mean()
        term, coefficient = self.extra_loss(pre, h, (x - x_hat).detach(), dead, x=x)
        loss = mse + coefficient * term if coefficient else mse
        self.observe_batch(pre.detach(), h.detach())
        return TrainLoss(loss=loss, mse=mse, penalty=term, x_hat=x_hat, h=h)

    def step_grads(
        self,
        x: torch.Tensor,
        *,
        dead: torch.Tensor | None = None,
        full_stats: bool = False,
        exceed_threshold: float | None = None,
    ) -> StepStats:
        """Loss and every gradient (into `.grad`) through autograd, with relu's step statistics. `l1`
        holds the architecture's extra term (`TrainLoss.penalty`): these SAEs have no L1 penalty."""
        self.zero_grad(set_to_none=False)
        parts = self.training_loss(x, dead)
        parts.loss.backward()
        with torch.no_grad():
            h = parts.h.detach()
            top = h.amax(dim=0)
            stats = StepStats(
                loss=parts.loss.detach(), mse=parts.mse.detach(), l1=parts.penalty.detach(), fired=top > 0
            )
            if exceed_threshold is not None:
                stats.exceeded = top > exceed_threshold
            if full_stats:
                stats.l0 = (h > 0).sum(dim=1, dtype=torch.float32).mean()
                stats.explained_variance = explained_variance_from_error(x, parts.x_hat.detach() - x)
        return stats

    @torch.no_grad()
    def after_step(self) -> None:
        """Keep the architecture's own constraints after an optimizer step (jumprelu: threshold ≥ 0)."""

    def optimizer_groups(self, lr: float) -> list[dict[str, Any]]:
        """Adam's parameter groups (jumprelu: its thresholds at their own learning rate)."""
        return [{"params": list(self.parameters()), "lr": lr}]

    def init_from_data(self, sample: torch.Tensor) -> None:
        """At step 0, after `b_dec`'s init: set what depends on the data (jumprelu: its thresholds)."""

    # ---- files --------------------------------------------------------------------------------------

    @classmethod
    def options_from_state(cls, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Constructor keywords a state dict fixes (topk: its `k`)."""
        return {}

    @classmethod
    def from_state_dict(cls: type[SaeT], state: dict[str, torch.Tensor]) -> SaeT:
        check_state_keys(state, cls.architecture)
        state = tensors_of(state)  # without the recorded name
        d_in, d_hidden = state["W_enc"].shape
        sae = cls(d_in, d_hidden, seed=0, **cls.options_from_state(state))  # the weights come next
        sae.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        return sae

    @classmethod
    def from_pth(cls: type[SaeT], path: str | Path, device: str | torch.device = "cpu") -> SaeT:
        state = torch.load(Path(path), map_location=device, weights_only=True)
        return cls.from_state_dict(state).to(device)

    @classmethod
    def from_saelens(cls: type[SaeT], cfg: dict[str, Any], state: dict[str, torch.Tensor]) -> SaeT:
        """The SAE a SAELens export of this inference form holds (`cfg.json`, its weights)."""
        return cls.from_state_dict(state)

    def saelens_export(self) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
        """SAELens' architecture name, its extra cfg fields and the weights it loads for this SAE."""
        raise NotImplementedError

    def params(self) -> dict[str, torch.Tensor]:
        """The study's four parameters, detached, float32, on the CPU."""
        return {k: getattr(self, k).detach().to("cpu", torch.float32).contiguous() for k in PARAM_NAMES}


def overrides(sae: object, owner: type, names: tuple[str, ...]) -> bool:
    """Whether `sae`'s class redefines any of `names` below `owner` (a hand-written step written for
    `owner`'s loss would then silently ignore the subclass's)."""
    return any(getattr(type(sae), n) is not getattr(owner, n) for n in names)


LOSS_METHODS = ("training_loss", "extra_loss", "train_activate", "activate", "decode", "pre_activation")
"""What a hand-written step (`sparse_step`) re-implements: a subclass redefining one trains through
autograd instead (`AutogradSae.step_grads`, which calls them)."""


class ColumnView:
    """The features `index` of `sae`: `encode` is the whole SAE's encode restricted to those columns.
    (Relu can be cut to a smaller SAE; a TopK or JumpReLU latent's activation depends on the other
    latents or on its threshold, so its columns are read from the full encode.)"""

    def __init__(self, sae: Sae, index: torch.Tensor) -> None:
        self.sae, self.index = sae, index
        self.d_hidden = int(index.numel())
        self.d_in = sae.d_in

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.sae.encode(x)[:, self.index.to(x.device)]
