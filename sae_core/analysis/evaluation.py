"""How well an SAE reconstructs held-out activations, and what its reconstruction costs the model.

Two measurements:

- `ReconstructionStats`: streaming sums over analysed tokens → MSE, explained variance, L0, L1, cosine
  similarity and l2 ratio (the numbers SAELens and SAEBench report), exact whatever the token count.
- `ce_loss_recovered`: run the language model on held-out documents three times — clean, with
  `hidden_states[layer]` replaced by the SAE's reconstruction, and with it zero-ablated — and report
  CE-loss recovered `(CE_zero − CE_sae) / (CE_zero − CE_clean)` and the KL divergence of each patched
  run from the clean one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from sae_core.analysis.lm_cache import borrowed_lm, cache_key
from sae_core.device import resolve_device, resolve_dtype
from sae_core.extraction.extract import length_batches
from sae_core.progress import Progress, no_progress

log = logging.getLogger(__name__)

CE_BATCH_TOKENS = 2048
"""Padded tokens per model forward in the CE evaluation: bounds the [tokens, vocab] logits in memory."""

_BLOCK_LISTS = ("h", "layers", "layer", "blocks")
_FINAL_NORMS = ("ln_f", "norm", "final_layer_norm", "final_layernorm")


# ---------------------------------------------------------------------------------------------
# Reconstruction metrics


@dataclass
class ReconstructionStats:
    """Streaming sums for reconstruction metrics; feed it every analysed batch with `update`."""

    d_in: int
    tokens: int = 0
    squared_error: float = 0.0
    l0_sum: float = 0.0
    l1_sum: float = 0.0
    cosine_sum: float = 0.0
    l2_ratio_sum: float = 0.0
    mean_x: np.ndarray | None = None
    """Running mean of x [d] (float64)."""
    centred_sq: float = 0.0
    """Σ‖x − x̄‖² over the tokens seen, merged batch by batch (Chan et al.): the one-pass
    Σ‖x‖² − ‖Σx‖²/n cancels catastrophically when the mean is large against the spread."""
    error_sum: np.ndarray | None = None
    """Σ(x − x̂) [d] (float64): the constant part of the error, n‖ē‖², is what a decoder bias left far
    from the data's mean costs (a near-empty SAE with b_dec at zeros on a model whose residual stream
    has a large mean: EV ≈ −‖x̄‖²/Var, not 0)."""

    def update(self, x: torch.Tensor, x_hat: torch.Tensor, l0: float, l1: float) -> None:
        """`x`, `x_hat` [B, d]; `l0`, `l1`: the batch's totals of active features and of activations."""
        # Per-token figures in float32 (one value per token), their sums in float64.
        err = torch.linalg.vector_norm(x - x_hat, dim=1).square()
        x_sq = x.square().sum(1)
        xh_sq = x_hat.square().sum(1)
        x_norm, xh_norm = x_sq.sqrt(), xh_sq.sqrt()
        # A zero vector has no direction: its cosine counts as 0, its l2 ratio as 0 (never NaN).
        cos = (x * x_hat).sum(1) / (x_norm * xh_norm).clamp_min(1e-12)
        ratio = xh_norm / x_norm.clamp_min(1e-12)
        self._merge_variance(x)
        err_sum = (x - x_hat).sum(0, dtype=torch.float64).cpu().numpy()
        self.error_sum = err_sum if self.error_sum is None else self.error_sum + err_sum
        self.tokens += int(x.shape[0])
        self.squared_error += float(err.sum(dtype=torch.float64))
        self.l0_sum += float(l0)
        self.l1_sum += float(l1)
        self.cosine_sum += float(cos.sum(dtype=torch.float64))
        self.l2_ratio_sum += float(ratio.sum(dtype=torch.float64))

    def _merge_variance(self, x: torch.Tensor) -> None:
        """Fold the batch's mean and centred sum of squares into the running ones (before `tokens`
        grows). The batch is centred on its own mean, in float64."""
        b = int(x.shape[0])
        if b == 0:
            return
        centred = x.double()  # float64: the squares of small deviations keep their digits
        mean_b = centred.mean(0)
        centred -= mean_b
        sq_b = float(centred.square().sum())
        mean_np = mean_b.cpu().numpy()
        if self.mean_x is None:
            self.mean_x, self.centred_sq = mean_np, sq_b
            return
        n = self.tokens + b
        delta = mean_np - self.mean_x
        self.centred_sq += sq_b + float(np.dot(delta, delta)) * (self.tokens * b / n)
        self.mean_x = self.mean_x + delta * (b / n)

    def summary(self) -> dict[str, float | None]:
        """`mse` (mean over tokens and dimensions, as `F.mse_loss`), `explained_variance`
        (1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²), `l0` (active features per token), `l1` (sum of activations per
        token), `cosine_similarity` and `l2_ratio` (‖x̂‖/‖x‖), each averaged over tokens, and
        `error_mean_share`: the share of Σ‖x − x̂‖² that is the error's mean, n‖ē‖² (a constant offset
        of the reconstruction, which a decoder bias at the data's mean would remove)."""
        n = self.tokens
        keys = ("mse", "explained_variance", "l0", "l1", "cosine_similarity", "l2_ratio", "error_mean_share")
        if n == 0 or self.mean_x is None:
            return dict.fromkeys(keys, None)
        total_var = self.centred_sq
        offset = float(np.dot(self.error_sum, self.error_sum)) / n if self.error_sum is not None else 0.0
        return {
            "mse": self.squared_error / (n * self.d_in),
            "explained_variance": 1.0 - self.squared_error / total_var if total_var > 0 else None,
            "l0": self.l0_sum / n,
            "l1": self.l1_sum / n,
            "cosine_similarity": self.cosine_sum / n,
            "l2_ratio": self.l2_ratio_sum / n,
            "error_mean_share": offset / self.squared_error if self.squared_error > 0 else 0.0,
        }


# ---------------------------------------------------------------------------------------------
# CE-loss recovered


@dataclass
class _Totals:
    ce: float = 0.0
    kl: float = 0.0


def ce_loss_recovered(
    sae: nn.Module,
    model_path: str | None,
    layer: int,
    documents: Sequence[np.ndarray],
    *,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "float32",
    skip_first_position: bool = True,
    left_out: Sequence[np.ndarray] | None = None,
    progress: Progress | None = None,
) -> tuple[dict[str, Any] | None, str]:
    """Splice `sae` into the causal LM at `hidden_states[layer]` on `documents` (token-id arrays).

    Returns `(result, note)`. `result` holds `clean`, `sae`, `zero` (mean next-token CE in nats),
    `recovered`, `kl_sae`, `kl_zero` (mean KL(clean ‖ patched) per predicted token), `documents` and
    `tokens`; it is None when the evaluation cannot run (no model path, no LM head, no documents), and
    `note` then says why. With `skip_first_position` position 0 is left unpatched — the SAE never saw
    it (`drop_first_token`) — and its prediction is not counted. `left_out` (per document, the positions
    the store leaves out: a BOS, special tokens, sinks) are treated the same way: left clean, and the
    predictions made there not counted. So the counted predictions are made at exactly the positions
    whose rows the SAE was trained and analysed on. The model is loaded once per process and reused
    (`sae_core.analysis.lm_cache`).
    """
    progress = progress or no_progress
    if not model_path:
        return None, "skipped: the store's manifest names no model to splice the SAE into"
    first = 1 if skip_first_position else 0
    docs = [np.asarray(d, dtype=np.int64) for d in documents]
    cleans = [
        _clean_mask(len(d), first, None if left_out is None else left_out[i]) for i, d in enumerate(docs)
    ]
    keep = [i for i, d in enumerate(docs) if len(d) >= 2 and (~cleans[i][:-1]).any()]  # ≥ 1 prediction
    docs, cleans = [docs[i] for i in keep], [cleans[i] for i in keep]
    if not docs:
        return None, "skipped: no held-out document is long enough (≥ 2 predicted tokens)"
    key = cache_key(model_path, revision, device, dtype)
    with borrowed_lm(key, lambda: _load_causal_lm(model_path, revision, device, dtype)) as (model, why):
        if model is None:
            return None, f"skipped: {why}"
        return _spliced_ce(sae, model, model_path, layer, docs, cleans, first, progress)


def _spliced_ce(
    sae: nn.Module,
    model: nn.Module,
    model_path: str,
    layer: int,
    docs: list[np.ndarray],
    cleans: list[np.ndarray],
    first: int,
    progress: Progress,
) -> tuple[dict[str, Any] | None, str]:
    """`ce_loss_recovered` on a loaded model (borrowed from the process's cache)."""
    config: Any = model.config  # a transformers PretrainedConfig (typed loosely by nn.Module)
    num_layers = int(config.num_hidden_layers)
    if not 0 <= layer <= num_layers:
        return None, f"skipped: layer {layer} is outside 0..{num_layers} of {model_path}"
    max_len = int(getattr(config, "max_position_embeddings", 0) or 1 << 30)
    docs, cleans = [d[:max_len] for d in docs], [c[:max_len] for c in cleans]
    dev = next(model.parameters()).device
    sae = sae.to(dev).eval()

    def reconstruct(hidden: torch.Tensor) -> torch.Tensor:
        return sae(hidden.float())[0].to(hidden.dtype)

    splice = _Splice()
    handle = _register_splice(model, layer, num_layers, splice)
    if handle is None:
        return None, f"skipped: cannot find the blocks of {type(model).__name__} to splice into"
    clean_t, sae_t, zero_t = _Totals(), _Totals(), _Totals()
    counted = 0
    done, total = 0, sum(len(d) for d in docs)
    try:
        with torch.inference_mode():
            for index in _padded_batches(docs):
                batch = [docs[i] for i in index]
                ids, attn, patch_mask, loss_mask = _pad(batch, [cleans[i] for i in index], dev)
                splice.replace = None
                clean_logp = _log_probs(model, ids, attn)
                targets = ids[:, 1:]
                clean_t.ce += _ce(clean_logp, targets, loss_mask)
                splice.mask = patch_mask
                for totals, replace in ((sae_t, reconstruct), (zero_t, torch.zeros_like)):
                    splice.replace = replace
                    logp = _log_probs(model, ids, attn)
                    totals.ce += _ce(logp, targets, loss_mask)
                    totals.kl += _kl(clean_logp, logp, loss_mask)
                    del logp
                counted += int(loss_mask.sum())
                done += sum(len(d) for d in batch)
                progress(done, total, {"ce_docs": len(batch)})
    finally:
        handle.remove()
    clean, with_sae, zero = (t.ce / counted for t in (clean_t, sae_t, zero_t))
    gap = zero - clean
    result = {
        "clean": clean,
        "sae": with_sae,
        "zero": zero,
        "recovered": (zero - with_sae) / gap if abs(gap) > 1e-12 else None,
        "kl_sae": sae_t.kl / counted,
        "kl_zero": zero_t.kl / counted,
        "documents": len(docs),
        "tokens": counted,
    }
    left = sum(int(c[first:].sum()) for c in cleans)
    where = f"input of block {layer}" if layer < num_layers else "output of the final norm"
    note = (
        f"hidden_states[{layer}] ({where}) replaced on {len(docs)} documents, {counted} predicted tokens"
        + ("; position 0 left clean and not counted (drop_first_token)" if first else "")
        + (f"; {left} left-out rows (BOS, special tokens, sinks) left clean and not counted" if left else "")
    )
    return result, note


class _Splice:
    """What the hook does: nothing (`replace` None), or replace the hidden state where `mask` is set."""

    def __init__(self) -> None:
        self.replace: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.mask: torch.Tensor | None = None

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.replace is None or self.mask is None:
            return hidden
        out = hidden.clone()
        out[self.mask] = self.replace(hidden[self.mask])
        return out


def _register_splice(model: nn.Module, layer: int, num_layers: int, splice: _Splice) -> Any:
    """`hidden_states[L]` is the input of block L for L < num_layers and, for L = num_layers, the output
    of the final norm (checked against `output_hidden_states=True` for GPT-2 in the tests)."""
    base = getattr(model, "base_model", model)
    blocks = next(
        (
            getattr(base, n)
            for n in _BLOCK_LISTS
            if isinstance(getattr(base, n, None), nn.ModuleList) and len(getattr(base, n)) == num_layers
        ),
        None,
    )
    if blocks is None:
        return None
    if layer < num_layers:

        def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            if args:
                return (splice(args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": splice(kwargs["hidden_states"])}

        return blocks[layer].register_forward_pre_hook(pre_hook, with_kwargs=True)
    norm = next(
        (getattr(base, n) for n in _FINAL_NORMS if isinstance(getattr(base, n, None), nn.Module)), None
    )
    if norm is None:
        return None

    def post_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return splice(output)

    return norm.register_forward_hook(post_hook)


def _load_causal_lm(
    model_path: str, revision: str | None, device: str, dtype: str
) -> tuple[nn.Module | None, str]:
    """The model with a trained LM head, or (None, why not). A head whose weights are neither in the
    checkpoint nor tied to the embeddings would be random: that counts as no head."""
    from transformers import AutoModelForCausalLM

    try:
        loaded: Any = AutoModelForCausalLM.from_pretrained(
            model_path,
            revision=revision,
            dtype=resolve_dtype(dtype),
            output_loading_info=True,
            local_files_only=True,  # extraction fetched it; analysis never downloads
        )
        model, info = loaded  # (model, loading info) with output_loading_info=True
    except ValueError as exc:  # the architecture has no causal-LM class
        return None, f"{model_path} has no language-model head ({str(exc).splitlines()[0]})"
    except OSError as exc:
        return None, f"cannot load the model {model_path!r} locally ({str(exc).splitlines()[0]})"
    missing = [k for k in info.get("missing_keys", []) if k]
    if missing:
        return None, f"{model_path} has no trained language-model head (missing weights: {missing[:3]})"
    model.to(resolve_device(device)).eval()
    return model, ""


def _padded_batches(docs: list[np.ndarray]) -> list[list[int]]:
    """Indices of documents grouped by length so a padded batch stays within CE_BATCH_TOKENS (any
    padding share: evaluation runs a few dozen documents, where fewer forwards matter more than padded
    rows)."""
    lengths = [len(doc) for doc in docs]
    return length_batches(lengths, CE_BATCH_TOKENS, max_padding=1.0)


def _clean_mask(length: int, first: int, left_out: np.ndarray | None) -> np.ndarray:
    """Positions of a document left clean (unpatched, their predictions not counted): the first
    `first`, and the left-out ones."""
    mask = np.zeros(length, dtype=bool)
    mask[:first] = True
    if left_out is not None and len(left_out):
        mask[np.asarray(left_out, dtype=np.int64)[np.asarray(left_out) < length]] = True
    return mask


def _pad(
    batch: list[np.ndarray], clean: list[np.ndarray], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask (causal attention never looks right, so padding cannot
    change real positions), the positions to patch, and the predictions to count ([B, T-1]): every
    real position but the `clean` ones (`_clean_mask`)."""
    width = max(len(d) for d in batch)
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    attn = torch.zeros(len(batch), width, dtype=torch.long)
    patch = torch.zeros(len(batch), width, dtype=torch.bool)
    for i, doc in enumerate(batch):
        ids[i, : len(doc)] = torch.from_numpy(doc)
        attn[i, : len(doc)] = 1
        patch[i, : len(doc)] = torch.from_numpy(~clean[i])
    loss_mask = patch[:, :-1] & attn[:, 1:].bool()
    return ids.to(device), attn.to(device), patch.to(device), loss_mask.to(device)


def _log_probs(model: nn.Module, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]
    return torch.log_softmax(logits.float(), dim=-1)


def _ce(logp: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> float:
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return float(-(picked[mask]).double().sum())


def _kl(clean_logp: torch.Tensor, logp: torch.Tensor, mask: torch.Tensor) -> float:
    p, q = clean_logp[mask], logp[mask]
    kl = (p.exp() * (p - q)).sum(-1)
    return float(kl.double().sum())


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN/Infinity: such values are written as null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)
