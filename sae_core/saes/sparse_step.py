"""The TopK family's hand-written training step, which touches only the latents each token keeps.

A TopK (or BatchTopK) SAE keeps k of m latents per token (k·B per batch), so of the five [B·d·m] matrix
products of a dense step only the encoder's forward has to be dense: every other product has a zero
factor outside the kept entries. Here each one is done on the N kept entries (N = k·B; AuxK adds its
k_aux per token), as an `embedding_bag` over the decoder or encoder rows:

- decode `x̂ = Σ_kept a W_dec[j] + b_dec` — `F.embedding_bag`, B·k·d;
- `∂L/∂a` at the kept entries: the dot of each token's output gradient with the kept decoder rows
  (embedding_bag's per-sample-weight backward), B·k·d instead of the dense `g W_decᵀ`;
- `∂L/∂W_dec`: each kept row gets `a · g` (embedding_bag's weight backward), B·k·d;
- `∂L/∂W_enc`: column j gets `Σ (x − b_dec) · ∂L/∂pre_j` over the tokens that kept j — the same
  weight backward with `x − b_dec` as the "output gradient", B·k·d instead of `(x − b_dec)ᵀ G`;
- `∂L/∂b_enc` an `index_add` of the N entries, `∂L/∂b_dec` its [d, m] × [m] product plus `Σ g`.

The loss is relu's units (MSE averaged over batch × d) plus `auxk_coefficient` × the AuxK term on the
window's dead latents (`auxk.auxk_loss`'s definition, no ReLU on the selected pre-activations) × its
weight (`auxk.auxk_weight`). The
gradients equal autograd's on the dense formulation (tests/saes/test_sparse_step.py, float64).

The two backward kernels are ATen's own embedding_bag backward ops (CPU and CUDA); ATen names them
with a leading underscore, so the tests are what tells a PyTorch upgrade that changed them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sae_core.saes.auxk import auxk_weight
from sae_core.saes.common import StepStats, explained_variance_from_error

_SUM = 0  # embedding_bag's mode code for "sum"
_NO_PADDING = -1


@dataclass
class Kept:
    """The kept entries of a [B, m] batch of pre-activations, grouped by token (rows ascending):
    entry i is latent `cols[i]` of token `rows[i]`, with pre-activation `pre[i]`; token b's entries
    start at `offsets[b]` and there are `counts[b]` of them."""

    rows: torch.Tensor
    cols: torch.Tensor
    pre: torch.Tensor
    offsets: torch.Tensor
    counts: torch.Tensor

    @staticmethod
    def per_token(pre: torch.Tensor, k: int) -> Kept:
        """Each token's k largest pre-activations (TopK)."""
        values, cols = pre.topk(k, dim=-1, sorted=False)
        batch = pre.shape[0]
        rows = torch.arange(batch, device=pre.device).repeat_interleave(k)
        counts = torch.full((batch,), k, dtype=torch.int64, device=pre.device)
        offsets = torch.arange(0, batch * k, k, device=pre.device)
        return Kept(rows, cols.reshape(-1), values.reshape(-1), offsets, counts)

    @staticmethod
    def from_flat(pre: torch.Tensor, flat: torch.Tensor) -> Kept:
        """The entries at the given flat indices of `pre` (BatchTopK's k·B of the whole batch)."""
        flat = flat.sort().values  # row-major flat indices: sorted by index = grouped by token
        batch, m = pre.shape
        rows, cols = flat // m, flat % m
        # Not `bincount`: on CUDA it reads the largest row to the host to size its output, which a
        # captured step (`training.capture`) cannot do; here the size is the batch, known beforehand.
        counts = torch.zeros(batch, dtype=torch.int64, device=pre.device).index_add_(
            0, rows, torch.ones_like(rows)
        )
        offsets = torch.cumsum(counts, 0) - counts
        return Kept(rows, cols, pre.reshape(-1)[flat], offsets, counts)

    @staticmethod
    def of_batch(pre: torch.Tensor, k: int) -> Kept:
        """The k·B largest pre-activations of the whole batch (BatchTopK)."""
        return Kept.from_flat(pre, pre.reshape(-1).topk(k * pre.shape[0], sorted=False).indices)

    def dense(self, weights: torch.Tensor, m: int) -> torch.Tensor:
        """`weights` (one per entry) as the [B, m] matrix they stand for (statistics and tests)."""
        out = weights.new_zeros(self.offsets.shape[0], m)
        return out.index_put_((self.rows, self.cols), weights, accumulate=True)


def bag_sum(kept: Kept, weights: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """`out[b] = Σ_{i of token b} weights[i] · table[cols[i]]`, [B, d]."""
    return F.embedding_bag(kept.cols, table, kept.offsets, mode="sum", per_sample_weights=weights)


def bag_weight_grad(
    rows: torch.Tensor,
    cols: torch.Tensor,
    weights: torch.Tensor,
    grad: torch.Tensor,
    m: int,
    counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """∂/∂table of `Σ_b grad[b] · bag_sum(·, weights, table)[b]` for entries (rows, cols) in any order:
    `out[j] = Σ_{i: cols[i]=j} weights[i] · grad[rows[i]]`, [m, d], without forming the [N, d] products.
    `counts`: entries per token (computed when not given; the op reads it for mode "mean" only)."""
    no_max = torch.empty(0, dtype=torch.int64, device=grad.device)
    if counts is None:
        counts = torch.bincount(rows, minlength=grad.shape[0])
    return torch.ops.aten._embedding_bag_dense_backward(
        grad.contiguous(), cols, rows, counts, no_max, m, False, _SUM, weights, _NO_PADDING
    )


def bag_weights_grad(kept: Kept, grad: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """∂/∂weights of `Σ_b grad[b] · bag_sum(kept, weights, table)[b]`: `grad[rows[i]] · table[cols[i]]`."""
    return torch.ops.aten._embedding_bag_per_sample_weights_backward(
        grad.contiguous(), table, kept.cols, kept.offsets, kept.rows, _SUM, _NO_PADDING
    )


def dead_kept(pre: torch.Tensor, dead: torch.Tensor, k_aux: int) -> Kept | None:
    """AuxK's entries: per token the `k_aux` largest pre-activations among the dead latents (all of
    them when fewer are dead); None when no latent is dead."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return None
    masked = torch.where(dead, pre, torch.full_like(pre, -torch.inf))
    return Kept.per_token(masked, min(k_aux, n_dead))


def _any_per_latent(cols: torch.Tensor, flags: torch.Tensor, m: int) -> torch.Tensor:
    """Per latent: is any of its entries flagged (a count, not a masked index: no host sync)."""
    return torch.zeros(m, dtype=torch.int32, device=cols.device).index_add_(0, cols, flags.int()) > 0


def sparse_step_grads(
    sae: torch.nn.Module,
    x: torch.Tensor,
    kept_of: str,
    *,
    dead: torch.Tensor | None = None,
    full_stats: bool = False,
    exceed_threshold: float | None = None,
) -> tuple[StepStats, Kept]:
    """Loss and every gradient of a TopK-family SAE (`kept_of`: "token" for TopK, "batch" for
    BatchTopK) into `.grad`, as autograd would give them; returns the step statistics and the kept
    entries (with their ReLU'd activations in `pre`'s place: BatchTopK reads its threshold from them)."""
    params: tuple[torch.Tensor, ...] = (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec)  # type: ignore[assignment]
    w_enc, b_enc, w_dec, b_dec = params
    batch = x.shape[0]
    m = int(w_dec.shape[0])
    k = int(sae.k_value)  # type: ignore[arg-type]  # a Python int: reading the buffer syncs the host
    auxk_k = int(sae.auxk_k)  # type: ignore[arg-type]
    auxk_coefficient = float(sae.auxk_coefficient)  # type: ignore[arg-type]
    with torch.no_grad():
        centred = x - b_dec
        pre = torch.addmm(b_enc, centred, w_enc)
        kept = Kept.per_token(pre, k) if kept_of == "token" else Kept.of_batch(pre, k)
        acts = kept.pre.relu()
        x_hat = bag_sum(kept, acts, w_dec) + b_dec
        err = x_hat - x
        mse = err.pow(2).mean()
        g_out = err * (2.0 / err.numel())
        grad_dec = bag_weight_grad(kept.rows, kept.cols, acts, g_out, m, kept.counts)
        g_pre = bag_weights_grad(kept, g_out, w_dec) * (kept.pre > 0)
        rows, cols, grads, counts = kept.rows, kept.cols, g_pre, kept.counts  # where ∂L/∂pre ≠ 0
        loss, aux_term = mse, mse.new_zeros(())
        aux = dead_kept(pre, dead, auxk_k) if dead is not None and auxk_coefficient else None
        if aux is not None:
            # AuxK: the dead latents' top pre-activations (no ReLU), decoded without b_dec, fit x − x̂.
            aux_err = bag_sum(aux, aux.pre, w_dec) + err  # ê − (x − x̂)
            n_dead = int(dead.sum())  # type: ignore[union-attr]
            weight = auxk_weight(x, err, n_dead, auxk_k, sae.auxk_weighting, sae.auxk_dead_scale)  # type: ignore[arg-type]
            aux_term = aux_err.pow(2).mean() * weight
            loss = mse + auxk_coefficient * aux_term
            g_aux = aux_err * (2.0 * auxk_coefficient / aux_err.numel()) * weight
            grad_dec += bag_weight_grad(aux.rows, aux.cols, aux.pre, g_aux, m, aux.counts)
            rows, cols, counts = torch.cat([rows, aux.rows]), torch.cat([cols, aux.cols]), counts + aux.counts
            grads = torch.cat([grads, bag_weights_grad(aux, g_aux, w_dec)])
        grad_enc_t = bag_weight_grad(rows, cols, grads, centred, m, counts)  # [m, d]: ∂L/∂W_enc transposed
        grad_b_enc = torch.zeros_like(b_enc).index_add_(0, cols, grads)
        grad_b_dec = g_out.sum(dim=0) - w_enc @ grad_b_enc  # b_dec enters the decode and, negated, pre
        for p, g in ((w_enc, grad_enc_t.t()), (b_enc, grad_b_enc), (w_dec, grad_dec), (b_dec, grad_b_dec)):
            if p.grad is None:
                p.grad = torch.empty_like(p)
            p.grad.copy_(g)
        stats = StepStats(loss=loss, mse=mse, l1=aux_term, fired=_any_per_latent(kept.cols, acts > 0, m))
        if exceed_threshold is not None:
            stats.exceeded = _any_per_latent(kept.cols, acts > exceed_threshold, m)
        if full_stats:
            stats.l0 = (acts > 0).sum(dtype=torch.float32) / batch
            stats.explained_variance = explained_variance_from_error(x, err)
    kept.pre = acts
    return stats, kept
