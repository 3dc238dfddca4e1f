"""The analysis's passes over the store: the first (every feature's exact statistics, reconstruction,
examples for every feature), the extra dead-count pass of `dead_split=all`, the second (the selected
features' examples and correlation), and CE loss recovered on the analysed documents."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from sae_core.analysis.correlation import (
    PearsonAccumulator,
)
from sae_core.analysis.ev_carriers import ErrorCarriers
from sae_core.analysis.evaluation import ReconstructionStats, ce_loss_recovered
from sae_core.analysis.examples import (
    ExampleCollector,
    SparseTopK,
)
from sae_core.analysis.feature_stats import FeatureStats, threshold_counts
from sae_core.config import AnalysisConfig, SweepConfig
from sae_core.progress import Progress

log = logging.getLogger(__name__)


def first_pass(
    store: Any,
    sae: Any,
    acfg: AnalysisConfig,
    n_tokens: int,
    device: torch.device,
    progress: Progress,
    total: int,
) -> tuple[FeatureStats, ReconstructionStats, SparseTopK, ErrorCarriers]:
    stats = FeatureStats(sae.d_hidden, acfg.dead_threshold, device)
    recon = ReconstructionStats(sae.d_in)
    carriers = ErrorCarriers()
    # Every feature's top examples from the firing entries this pass gathers anyway (pass 2 encodes
    # only the selected columns: collecting them there would cost a second encode of all m).
    every_top = SparseTopK(sae.d_hidden, acfg.examples_per_feature, acfg.dead_threshold, device)
    start = time.perf_counter()
    for acts in _limited(store, acfg, n_tokens):
        x = acts.acts.to(device, non_blocking=True)
        seen = stats.tokens

        def sink(first: int, rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor) -> None:
            every_top.update(rows + first, cols, vals, seen, acts.doc_id, acts.pos, acts.token_id)  # noqa: B023

        at = 0
        for chunk, x_hat, l0, l1 in stats.encode_and_update(sae, x, sink):
            recon.update(chunk, x_hat, l0, l1)
            rows = slice(at, at + chunk.shape[0])
            carriers.update(chunk, x_hat, acts.doc_id[rows], acts.pos[rows], acts.token_id[rows])
            at += chunk.shape[0]
        elapsed = time.perf_counter() - start
        progress(
            stats.tokens,
            total,
            {"tok/s": stats.tokens / max(elapsed, 1e-9), "L0": recon.l0_sum / recon.tokens},
        )
    return stats, recon, every_top, carriers


def second_pass(
    store: Any,
    sae: Any,
    acfg: AnalysisConfig,
    selected: list[int],
    n_tokens: int,
    device: torch.device,
    progress: Progress,
    total: int,
    seed: int,
) -> tuple[ExampleCollector, PearsonAccumulator]:
    pearson = PearsonAccumulator(len(selected))
    collector = ExampleCollector(
        len(selected), acfg.examples_per_feature, acfg.quantile_examples, acfg.dead_threshold, seed, device
    )
    if not selected:
        progress(2 * n_tokens, total, {})
        return collector, pearson
    # The selected features' columns: for relu an SAE of 2k columns instead of m (the same encode); a
    # TopK or JumpReLU latent depends on the other latents or its threshold, so it reads the full encode.
    sub = _columns(sae, torch.as_tensor(selected, dtype=torch.long, device=device))
    done = n_tokens
    for batch in _limited(store, acfg, n_tokens):
        acts = sub.encode(batch.acts.to(device, non_blocking=True))
        pearson.update(acts)
        collector.update(acts, batch.doc_id, batch.pos, batch.token_id)
        done += acts.shape[0]
        progress(done, total, {})
    return collector, pearson


def dead_split_name(acfg: AnalysisConfig) -> str:
    """`analysis.json`'s `dead_split`: the analysed split's name, or `all`."""
    return "all" if acfg.dead_split == "all" else acfg.split


def rest_of_store(store: Any, acfg: AnalysisConfig, n_tokens: int) -> list[tuple[str, int, int]]:
    """(split, rows to skip, rows to read) that `dead_split=all` adds to the analysed tokens: the other
    splits whole, and what `max_tokens` cut from the analysed one. Empty for `dead_split=test`."""
    if acfg.dead_split != "all":
        return []
    from sae_core.store.format import SPLITS

    rest = []
    for split in SPLITS:
        available = store.num_tokens_in(split)
        skip = n_tokens if split == acfg.split else 0
        if available > skip:
            rest.append((split, skip, available - skip))
    return rest


def dead_set_counts(
    store: Any,
    sae: Any,
    acfg: AnalysisConfig,
    stats: FeatureStats,
    rest: list[tuple[str, int, int]],
    device: torch.device,
) -> tuple[np.ndarray | None, int]:
    """Firings above the threshold on the dead-% token set (None: the analysed tokens, already counted)
    and how many tokens that set holds.

    Only features pass 1 left undecided — fewer than `min_activations` firings, the dead ones included —
    are encoded over the other tokens: the rest are alive and eligible whatever those tokens hold, so
    their counts there change neither figure. The pass costs an encode of those columns only."""
    if acfg.dead_split != "all":
        return None, stats.tokens
    count = stats.count.clone()
    tokens = stats.tokens + sum(n for _, _, n in rest)
    undecided = torch.nonzero(count < acfg.min_activations).flatten()
    if undecided.numel() == 0 or not rest:
        return count.cpu().numpy(), tokens
    sub = _columns(sae, undecided)
    for split, skip, _ in rest:
        more = threshold_counts(
            sub, _skipped(store, split, skip, acfg.batch_size), acfg.dead_threshold, device
        )
        count[undecided] += more
    return count.cpu().numpy(), tokens


def _columns(sae: Any, index: torch.Tensor) -> Any:
    """An SAE made of the features `index` of `sae` (the same encode, fewer columns)."""
    from sae_core.saes.base import ColumnView
    from sae_core.saes.relu import SparseAutoencoder

    if sae.architecture != "relu":  # topk/jumprelu activations depend on all columns (or on θ)
        return ColumnView(sae, index)

    sub = SparseAutoencoder(sae.d_in, int(index.numel()), seed=0).to(sae.W_enc.device)
    weights = {"W_enc": sae.W_enc[:, index], "b_enc": sae.b_enc[index], "W_dec": sae.W_dec[index]}
    sub.load_state_dict({**weights, "b_dec": sae.b_dec})
    return sub


def _skipped(store: Any, split: str, skip: int, batch_size: int) -> Any:
    """The split's rows in store order from row `skip` on (the same order `iter_rows` reads)."""
    seen = 0
    for batch in store.batches(split, batch_size=batch_size, shuffle=False, prefetch=True):
        n = batch.shape[0]
        if seen + n > skip:
            yield batch[max(0, skip - seen) :]
        seen += n


def _limited(store: Any, acfg: AnalysisConfig, n_tokens: int) -> Any:
    """The split's rows in store order, cut at `n_tokens` (the same tokens on both passes)."""
    seen = 0
    for batch in store.iter_rows(acfg.split, batch_size=acfg.batch_size):
        if seen >= n_tokens:
            return
        take = min(len(batch.doc_id), n_tokens - seen)
        if take < len(batch.doc_id):
            batch = type(batch)(
                batch.acts[:take], batch.doc_id[:take], batch.pos[:take], batch.token_id[:take]
            )
        seen += take
        yield batch


def run_ce_loss(
    sae: Any,
    store: Any,
    cfg: SweepConfig,
    docs: dict[int, np.ndarray],
    progress: Progress,
    done: int,
    total: int,
) -> tuple[dict[str, Any] | None, str]:
    """CE loss recovered on `docs` (doc_id → token ids) of the analysed split, the store's left-out rows
    (and, with `drop_first_token`, position 0) left clean and uncounted."""
    if cfg.analysis.ce_loss_documents == 0:
        return None, "skipped: analysis.ce_loss_documents is 0"
    model = store.manifest.get("model") or {}
    layer = model.get("layer")
    if layer is None:
        return None, "skipped: the store's manifest names no model layer"

    start, steps = done, total
    doc_ids = sorted(docs)
    left_out = store.left_out_positions(cfg.analysis.split)

    def shifted(done: int, total: int | None, info: dict[str, float]) -> None:
        progress(start + done, steps, info)

    result, note = ce_loss_recovered(
        sae,
        store.tokenizer_path,
        int(layer),
        [docs[doc] for doc in doc_ids],
        revision=model.get("revision"),
        device=cfg.model.device,
        dtype=cfg.model.dtype,
        skip_first_position=store.drop_first_token,
        left_out=[left_out.get(int(doc), np.empty(0, np.int64)) for doc in doc_ids],
        progress=shifted,
    )
    log.info("CE loss: %s", note)
    return result, note
