"""TopK SAE (Gao et al. 2024): each token keeps its `k` largest pre-activations, then a ReLU.

Sparsity is set by `k` directly, so the loss is the reconstruction alone; the optional AuxK term
(`auxk.auxk_loss`) trains the latents dead for a window when the trainer passes their mask. The state
dict adds `k` (an int64 scalar) to the study's four tensors, so the `.pth` says what it is and loading it
as another architecture fails (`state_keys`). Exported as SAELens `topk` with the same `k`.

The step reads `k` as a Python int (`k_value`), never from the buffer: reading a device tensor's value
is a host sync, which a CUDA-graph capture (`training.capture`) refuses and which stalls the GPU each
step otherwise. Loading a state dict refreshes the int from the buffer it loaded.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from sae_core.saes.auxk import AuxkWeighting, auxk_loss, auxk_weight
from sae_core.saes.base import LOSS_METHODS, AutogradSae, TrainLoss, overrides
from sae_core.saes.common import InitScheme, StepStats
from sae_core.saes.sparse_step import sparse_step_grads

AUXK_COEFFICIENT = 1 / 32
"""Gao et al.'s AuxK coefficient α."""


def check_k(k: int, d_hidden: int) -> int:
    if isinstance(k, bool) or int(k) != k or not 0 < k < d_hidden:
        raise ValueError(f"k: must be an integer with 0 < k < d_hidden = {d_hidden} (got {k})")
    return int(k)


def sparse_decode(
    indices: torch.Tensor, values: torch.Tensor, w_dec: torch.Tensor, b_dec: torch.Tensor
) -> torch.Tensor:
    """`h W_dec + b_dec` from each row's k active `indices` and `values` ([B, k]): a gather-and-sum of
    B × k decoder rows (`embedding_bag`), B·k·d work instead of the dense product's B·m·d, and a
    backward that touches the same k rows per token."""
    return F.embedding_bag(indices, w_dec, per_sample_weights=values, mode="sum") + b_dec


def top_k_per_row(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Keep each row's `k` largest entries (ReLU'd), zeros elsewhere."""
    values, indices = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter(-1, indices, values.relu())


def _refresh_k(module: torch.nn.Module, incompatible: Any) -> None:
    """After `load_state_dict`: the Python `k` follows the loaded buffer (once per load, not per step)."""
    sae: Any = module
    sae._k = check_k(int(sae.k), sae.d_hidden)


class TopKSAE(AutogradSae):
    """`h = ReLU(TopK_k((x − b_dec) W_enc + b_enc))`.

    `auxk_k`: dead latents AuxK selects per token (None: d_in // 2, the heuristic of Gao et al.'s
    appendix B.1); `auxk_coefficient`: its weight α in the loss (Gao et al.: 1/32), scaled as
    `auxk_weighting` and `auxk_dead_scale` say (`auxk.auxk_weight`); `auxk_dead_tokens`: the dead window
    in training tokens (None: `auxk.window_steps`' default), read by the trainer; `resample_encoder`:
    how resampling sizes a revived latent's encoder column (`training.resample.resample_dead`)."""

    k: torch.Tensor  # a buffer: the state dict carries it

    architecture = "topk"

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
        seed: int | None = None,
        init: InitScheme = "seed",
        encoder_norm: float = 0.1,
        resample_encoder: str = "entry",
    ) -> None:
        super().__init__(d_in, d_hidden, seed=seed, init=init, encoder_norm=encoder_norm)
        if resample_encoder not in ("entry", "scaled"):
            raise ValueError(f"resample_encoder: must be 'entry' or 'scaled' (got {resample_encoder!r})")
        self.resample_encoder = resample_encoder
        self._k = check_k(k, d_hidden)
        self.register_buffer("k", torch.tensor(self._k, dtype=torch.int64))
        self.register_load_state_dict_post_hook(_refresh_k)
        self.auxk_k = int(auxk_k) if auxk_k is not None else max(1, d_in // 2)
        if self.auxk_k <= 0:
            raise ValueError(f"auxk_k: must be > 0 (got {auxk_k})")
        if not auxk_coefficient >= 0:  # also refuses NaN
            raise ValueError(f"auxk_coefficient: must be >= 0 (got {auxk_coefficient})")
        self.auxk_coefficient = float(auxk_coefficient)
        if auxk_dead_tokens is not None and (isinstance(auxk_dead_tokens, bool) or auxk_dead_tokens <= 0):
            raise ValueError(f"auxk_dead_tokens: must be a positive token count (got {auxk_dead_tokens})")
        self.auxk_dead_tokens = None if auxk_dead_tokens is None else int(auxk_dead_tokens)
        if auxk_weighting not in ("variance", "mse"):
            raise ValueError(f"auxk_weighting: must be 'variance' or 'mse' (got {auxk_weighting!r})")
        self.auxk_weighting: AuxkWeighting = auxk_weighting
        self.auxk_dead_scale = bool(auxk_dead_scale)

    @property
    def k_value(self) -> int:
        """`k` as a Python int: no device read (the buffer is for the state dict)."""
        return self._k

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return top_k_per_row(pre, self.k_value)

    def training_loss(self, x: torch.Tensor, dead: torch.Tensor | None = None) -> TrainLoss:
        """As the base's, but decoded from the k active latents per token (`sparse_decode`)."""
        pre = self.pre_activation(x)
        values, indices = pre.topk(self.k_value, dim=-1, sorted=False)
        values = values.relu()
        x_hat = sparse_decode(indices, values, self.W_dec, self.b_dec)
        mse = (x_hat - x).pow(2).mean()
        term, coefficient = self.extra_loss(pre, values, (x - x_hat).detach(), dead, x=x)
        h = torch.zeros_like(pre).scatter(-1, indices, values.detach())  # for the step's statistics
        return TrainLoss(
            loss=mse + coefficient * term if coefficient else mse, mse=mse, penalty=term, x_hat=x_hat, h=h
        )

    def step_grads(
        self,
        x: torch.Tensor,
        *,
        dead: torch.Tensor | None = None,
        full_stats: bool = False,
        exceed_threshold: float | None = None,
    ) -> StepStats:
        """The hand-written step on the k kept latents per token (`sparse_step`); `training_loss`
        through autograd is its reference."""
        if overrides(self, TopKSAE, LOSS_METHODS):  # the sparse step would ignore the subclass's loss
            return AutogradSae.step_grads(
                self, x, dead=dead, full_stats=full_stats, exceed_threshold=exceed_threshold
            )
        stats, _ = sparse_step_grads(
            self, x, "token", dead=dead, full_stats=full_stats, exceed_threshold=exceed_threshold
        )
        return stats

    def extra_loss(
        self,
        pre: torch.Tensor,
        h: torch.Tensor,
        err: torch.Tensor,
        dead: torch.Tensor | None,
        x: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, float]:
        """The AuxK term, already multiplied by `auxk_weight` (which reads `x`: without it, as `mse`)."""
        if dead is None:
            return pre.new_zeros(()), 0.0
        term = auxk_loss(pre, err, self.W_dec, dead, self.auxk_k)
        weighting: AuxkWeighting = self.auxk_weighting if x is not None else "mse"
        n_dead = int(dead.sum())
        x_or_err = x if x is not None else err
        weight = auxk_weight(x_or_err, err, n_dead, self.auxk_k, weighting, self.auxk_dead_scale)
        return term * weight, self.auxk_coefficient

    @classmethod
    def options_from_state(cls, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"k": int(state["k"])}

    @classmethod
    def from_saelens(cls, cfg: dict[str, Any], state: dict[str, torch.Tensor]) -> TopKSAE:
        return cls.from_state_dict({**state, "k": torch.tensor(int(cfg["k"]))})

    def saelens_export(self) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
        # SAELens' inference TopK: topk of the pre-activations, then ReLU; no rescaling by decoder norms
        # (ours are unit norm anyway).
        return "topk", {"k": self.k_value, "rescale_acts_by_decoder_norm": False}, self.params()
