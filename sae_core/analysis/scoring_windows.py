"""Held-out windows for detection and fuzzing scores (delphi's conventions), per selected feature.

Which tokens: the analysed tokens (`analysis.split`, cut at `analysis.max_tokens`), the same the
statistics and examples are computed on. During the second pass `ScoringSampler` keeps, per selected
feature, a uniform reservoir sample of its FIRING tokens (activation > `analysis.dead_threshold`, in
the SAE input's units) and one of its NON-firing tokens. Afterwards:

- activating windows: the firing sample is sorted by activation and cut into `labeling.
  scoring_quantiles` equal-count bands; an equal share of `labeling.scoring_activating` is drawn from
  each (seeded). Tokens whose window would overlap a context shown to the labeller (any row of
  examples.parquet, same document, within the window length) are left out: scoring is held out.
- non-activating windows: random non-firing tokens whose whole window has no firing token (tokens of
  the window without a store row, such as a dropped first token, count as not firing).

A window is `labeling.scoring_window` consecutive tokens of one document containing the sampled
token at a random offset (so the token is not always in the middle; delphi's windows are fixed
chunks). One more read of the analysed split then encodes (the selected columns only) the rows those
windows cover, so every window carries each token's activation, and fuzzing can highlight exactly the
firing tokens. Written to `features/scoring_examples.parquet`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from sae_core.analysis.examples import RESERVOIR_PER_QUANTILE, TokenDecoder, _Buffer
from sae_core.analysis.passes import _columns as columns_of
from sae_core.analysis.passes import _limited as limited_rows
from sae_core.config import AnalysisConfig, SweepConfig

SCORING_SCHEMA = pa.schema(
    [
        ("feature_id", pa.int32()),
        ("kind", pa.string()),
        ("quantile", pa.int32()),
        ("rank", pa.int32()),
        ("activation", pa.float32()),
        ("doc_id", pa.int32()),
        ("pos", pa.int32()),
        ("start", pa.int32()),
        ("token_ids", pa.list_(pa.int32())),
        ("tokens", pa.list_(pa.string())),
        ("activations", pa.list_(pa.float32())),
        ("firing", pa.list_(pa.bool_())),
    ]
)
"""One row per window: `kind` activating | non_activating; `quantile` 0 = lowest band (-1 for
non-activating); `activation` of the sampled token at `pos`; `activations` per window token (NaN where
the store has no row); `firing` = activation > the analysis threshold."""

RANDOM_OVERSAMPLE = 8
"""Non-firing candidates kept per wanted non-activating window: a window around a non-firing token of a
frequent feature often holds a firing one and is dropped (a feature firing on 5 % of tokens leaves
~19 % of 32-token windows quiet). Fewer than asked are reported, never padded."""


@dataclass(frozen=True)
class ScoringSizes:
    quantiles: int
    activating: int
    non_activating: int
    window: int


@dataclass(frozen=True)
class _Window:
    j: int
    kind: str
    quantile: int
    activation: float
    doc: int
    pos: int
    start: int
    end: int


class ScoringSampler:
    """Reservoirs of firing and non-firing tokens per selected feature (fed like `ExampleCollector`)."""

    def __init__(self, width: int, sizes: ScoringSizes, threshold: float, seed: int, device: torch.device):
        self.width, self.sizes, self.threshold = width, sizes, threshold
        firing_slots = max(RESERVOIR_PER_QUANTILE * sizes.quantiles, 4 * sizes.activating)
        self.firing = _Buffer.empty(firing_slots, width, float("inf"), device)
        self.quiet = _Buffer.empty(
            max(1, RANDOM_OVERSAMPLE * sizes.non_activating), width, float("inf"), device
        )
        self._gen = torch.Generator().manual_seed(seed + 7919)  # not the examples' reservoir stream

    def update(self, acts: torch.Tensor, doc_id: np.ndarray, pos: np.ndarray, token_id: np.ndarray) -> None:
        dev = acts.device
        doc, p, tok = (
            torch.from_numpy(np.ascontiguousarray(a, dtype=np.int32)).to(dev) for a in (doc_id, pos, token_id)
        )
        firing = acts > self.threshold
        keys = torch.rand(acts.shape, generator=self._gen).to(dev)
        self.firing.merge(torch.where(firing, keys, float("inf")), acts, doc, p, tok, descending=False)
        keys = torch.rand(acts.shape, generator=self._gen).to(dev)
        self.quiet.merge(torch.where(firing, float("inf"), keys), acts, doc, p, tok, descending=False)

    def plan(
        self,
        feature_ids: Sequence[int],
        shown: dict[int, list[tuple[int, int]]],
        doc_lengths: dict[int, int],
        seed: int,
    ) -> list[_Window]:
        """Candidate windows per feature: activating ones spread over the quantile bands, and every
        non-firing candidate (filtered to quiet windows once their activations are known)."""
        w = self.sizes.window
        out: list[_Window] = []
        for j, fid in enumerate(feature_ids):
            rng = random.Random(f"{seed}-scoring-{fid}")
            near = shown.get(int(fid), [])
            firing = _slots(self.firing, j)
            firing = [s for s in firing if not any(d == s[1] and abs(p - s[2]) < w for d, p in near)]
            firing.sort(key=lambda s: (s[0], s[1], s[2]))
            q, n = self.sizes.quantiles, self.sizes.activating
            bands = [firing[int(i * len(firing) / q) : int((i + 1) * len(firing) / q)] for i in range(q)]
            per_band = [n // q + (1 if i < n % q else 0) for i in range(q)]
            for band_index, (band, take) in enumerate(zip(bands, per_band, strict=True)):
                for act, doc, pos in sorted(rng.sample(band, min(take, len(band)))):
                    out.append(self._window(j, "activating", band_index, act, doc, pos, doc_lengths, rng))
            for act, doc, pos in _slots(self.quiet, j, order_by_key=True):
                out.append(self._window(j, "non_activating", -1, act, doc, pos, doc_lengths, rng))
        return out

    def _window(
        self,
        j: int,
        kind: str,
        quantile: int,
        act: float,
        doc: int,
        pos: int,
        lengths: dict[int, int],
        rng: Any,
    ) -> _Window:
        w, length = self.sizes.window, lengths[doc]
        start = min(max(0, pos - rng.randrange(w)), max(0, length - w))
        return _Window(j, kind, quantile, act, doc, pos, start, min(length, start + w))


def _slots(buf: _Buffer, j: int, order_by_key: bool = False) -> list[tuple[float, int, int]]:
    key = buf.key[:, j].cpu().numpy()
    act, doc, pos = (getattr(buf, n)[:, j].cpu().numpy() for n in ("act", "doc", "pos"))
    kept = np.flatnonzero(np.isfinite(key))
    if order_by_key:
        kept = kept[np.argsort(key[kept], kind="stable")]
    return [(float(act[s]), int(doc[s]), int(pos[s])) for s in kept]


def window_activations(
    batches: Any, sub_sae: Any, windows: Sequence[_Window], device: torch.device
) -> dict[int, np.ndarray]:
    """Encode (the selected columns only) the store rows the windows cover; `(doc << 32) | pos` →
    activations of the selected features. `batches` yields the analysed rows (as pass 2 reads them)."""
    wanted = np.unique(
        np.concatenate([(np.int64(w.doc) << 32) + np.arange(w.start, w.end, dtype=np.int64) for w in windows])
        if windows
        else np.zeros(0, dtype=np.int64)
    )
    found: dict[int, np.ndarray] = {}
    for batch in batches:
        keys = (np.asarray(batch.doc_id, dtype=np.int64) << 32) + np.asarray(batch.pos, dtype=np.int64)
        hit = np.flatnonzero(np.isin(keys, wanted))
        if not len(hit):
            continue
        acts = sub_sae.encode(batch.acts[torch.from_numpy(hit)].to(device)).float().cpu().numpy()
        found.update(zip(keys[hit].tolist(), acts, strict=True))
    return found


def scoring_table(
    windows: Sequence[_Window],
    feature_ids: Sequence[int],
    found: dict[int, np.ndarray],
    documents: dict[int, np.ndarray],
    threshold: float,
    non_activating: int,
    decoder: TokenDecoder,
) -> pa.Table:
    """The windows with their tokens and per-token activations; non-activating candidates kept only
    when no token of the window fires, at most `non_activating` per feature."""
    rows: list[dict[str, Any]] = []
    kept_quiet: dict[int, int] = {}
    ranks: dict[tuple[int, str], int] = {}
    for w in windows:
        acts = np.array(
            [
                found[(w.doc << 32) + p][w.j] if ((w.doc << 32) + p) in found else np.nan
                for p in range(w.start, w.end)
            ],
            dtype=np.float32,
        )
        firing = np.nan_to_num(acts, nan=-np.inf) > threshold
        if w.kind == "non_activating":
            if firing.any() or kept_quiet.get(w.j, 0) >= non_activating:
                continue
            kept_quiet[w.j] = kept_quiet.get(w.j, 0) + 1
        rank = ranks.get((w.j, w.kind), 0)
        ranks[(w.j, w.kind)] = rank + 1
        ids = [int(t) for t in documents[w.doc][w.start : w.end]]
        rows.append(
            {
                "feature_id": int(feature_ids[w.j]),
                "kind": w.kind,
                "quantile": w.quantile,
                "rank": rank,
                "activation": w.activation,
                "doc_id": w.doc,
                "pos": w.pos,
                "start": w.start,
                "token_ids": ids,
                "tokens": decoder.tokens(ids),
                "activations": acts.tolist(),
                "firing": firing.tolist(),
            }
        )
    return pa.Table.from_pylist(rows, schema=SCORING_SCHEMA)


def scoring_summary(table: pa.Table, sizes: ScoringSizes, split: str, tokens: int) -> dict[str, Any]:
    """analysis.json's `scoring_examples`: what was drawn, from which tokens, and how many."""
    kinds = table.column("kind").to_pylist() if table.num_rows else []
    per_feature: dict[tuple[int, str], int] = {}
    if table.num_rows:
        for fid, kind in zip(table.column("feature_id").to_pylist(), kinds, strict=True):
            per_feature[(fid, kind)] = per_feature.get((fid, kind), 0) + 1
    features = sorted({fid for fid, _ in per_feature})
    short = {
        kind: sum(per_feature.get((f, kind), 0) < asked for f in features)
        for kind, asked in (("activating", sizes.activating), ("non_activating", sizes.non_activating))
    }
    return {
        "file": "features/scoring_examples.parquet",
        "tokens": (
            f"the analysed {split} tokens ({tokens}); none within a window of a context shown to the labeller"
        ),
        "window_tokens": sizes.window,
        "quantiles": sizes.quantiles,
        "activating_asked": sizes.activating,
        "non_activating_asked": sizes.non_activating,
        "activating": kinds.count("activating"),
        "non_activating": kinds.count("non_activating"),
        "features_short": short,
        "short_means": "features with fewer windows of that kind than asked (too few firing tokens, or "
        "too few windows where the feature never fires)",
    }


# ---------------------------------------------------------------------------------------------
# The analysis's calls


def scoring_sampler(cfg: SweepConfig, width: int, device: torch.device) -> ScoringSampler:
    lab = cfg.labeling
    sizes = ScoringSizes(
        lab.scoring_quantiles, lab.scoring_activating, lab.scoring_non_activating, lab.scoring_window
    )
    return ScoringSampler(width, sizes, cfg.analysis.dead_threshold, cfg.training.seed, device)


def scoring_windows(
    store: Any,
    sae: Any,
    acfg: AnalysisConfig,
    cfg: SweepConfig,
    sampler: ScoringSampler,
    selected: list[int],
    example_rows: list[dict[str, Any]],
    docs: dict[int, np.ndarray],
    n_tokens: int,
    device: torch.device,
) -> tuple[Any, ScoringSizes]:
    """Plan the windows, read their activations (one more read of the analysed rows, encoding only
    the rows the windows cover); returns a function of the decoder that builds the table."""
    shown: dict[int, list[tuple[int, int]]] = {}
    for row in example_rows:
        shown.setdefault(row["feature_id"], []).append((row["doc_id"], row["pos"]))
    windows = sampler.plan(selected, shown, {d: len(t) for d, t in docs.items()}, cfg.training.seed)
    found: dict[int, np.ndarray] = {}
    if windows:
        sub = columns_of(sae, torch.as_tensor(selected, dtype=torch.long, device=device))
        found = window_activations(limited_rows(store, acfg, n_tokens), sub, windows, device)
    threshold, quiet = acfg.dead_threshold, sampler.sizes.non_activating

    def build(decoder: TokenDecoder) -> Any:
        return scoring_table(windows, selected, found, docs, threshold, quiet, decoder)

    return build, sampler.sizes


SAMPLE_RULE = (
    "labeling.sample_size features drawn uniformly (seeded by training.seed) from the eligible features "
    "(≥ analysis.min_activations firings) not in top or bottom"
)


def random_sample(selectivity: np.ndarray, selected: Sequence[int], lab: Any, seed: int) -> list[int]:
    """`labeling.scope: sample`: random eligible features beyond the selected ones (empty otherwise)."""
    if lab.scope != "sample":
        return []
    taken = set(selected)
    pool = [int(i) for i in np.flatnonzero(~np.isnan(selectivity)) if int(i) not in taken]
    return sorted(random.Random(f"{seed}-sample").sample(pool, min(lab.sample_size, len(pool))))
