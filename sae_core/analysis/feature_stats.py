"""Exact per-feature statistics from one streaming pass: firing counts, sums, maxima, histograms.

The SAE encodes a batch densely (one matmul); everything after that works on the positive entries of h,
gathered once per chunk of rows: counts of activations strictly above the threshold, their float64 sums,
maxima, log-spaced histograms, and the decode `x̂ = h W_dec + b_dec` for the reconstruction metrics —
a CSR product over the active features when h is sparse on CPU (a trained SAE's L0 is a few dozen out
of thousands), a dense matmul otherwise. Counts are exact: no cap of features per token.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from sae_core.rundir import RAW_UNITS, selection_shortfall

HIST_BINS = 64
HIST_MAX = 1e3
"""Per-feature histograms of firing activations use HIST_BINS log-spaced bins from max(threshold, 1e-3)
to HIST_MAX; values outside fall in the first/last bin, so a feature's histogram sums to its count."""

CHUNK_ELEMENTS = 1 << 22
"""A batch is encoded in row chunks of about this many elements of h (682 rows at m = 6,144; 16 MB), and
at least `MIN_CHUNK_ROWS` rows: h stays in cache for the scans and the sparse decode that follow the
matmul. At m = 6,144 on one thread the encode alone runs ~15 % faster than in chunks of 2,730 rows or
in whole batches of 8,192 (`benchmarks/analyze.py`)."""

MIN_CHUNK_ROWS = 384
"""Fewer rows per matmul lose more to the matmul's own blocking than cache locality gains (measured:
170 rows ran 30 % slower than 341 at both m = 3,072 and m = 24,576)."""


def chunk_rows(d_hidden: int) -> int:
    """Rows of x encoded at a time for an SAE of `d_hidden` features."""
    return max(MIN_CHUNK_ROWS, CHUNK_ELEMENTS // d_hidden)


DENSE_STATS_DENSITY = 0.2
"""From this fraction of positive entries in h on, statistics use dense reductions instead of gathering
the positive entries (an untrained SAE's h is about half dense)."""

SPARSE_DECODE_DENSITY = 0.05
"""On CPU, below this fraction of active entries a chunk is decoded sparsely (a CSR matrix times W_dec),
else densely. Other devices always decode densely: there the dense matmul is cheap."""

STATS_SCHEMA = pa.schema(
    [
        ("feature_id", pa.int32()),
        ("count", pa.int64()),
        ("sum", pa.float64()),
        ("mean", pa.float64()),
        ("max", pa.float32()),
        ("density", pa.float64()),
        ("selectivity", pa.float64()),
        ("dead", pa.bool_()),
        ("hist", pa.list_(pa.int64())),
    ]
)


FiringSink = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]
"""Receives a chunk's positive entries (all those above the threshold, maybe more): (the chunk's
first row in the batch, rows, features, values)."""


def histogram_edges(threshold: float) -> np.ndarray:
    low = max(threshold, 1e-3)
    return np.logspace(np.log10(low), np.log10(max(HIST_MAX, low * 10)), HIST_BINS + 1)


class FeatureStats:
    """Per-feature accumulators over the positive entries of h (cols, vals)."""

    def __init__(self, d_hidden: int, threshold: float, device: torch.device) -> None:
        self.m, self.threshold = d_hidden, threshold
        self.count = torch.zeros(d_hidden, dtype=torch.int64, device=device)
        self.sum = torch.zeros(d_hidden, dtype=torch.float64, device=device)
        self.max = torch.zeros(d_hidden, dtype=torch.float32, device=device)
        self.hist = torch.zeros(d_hidden * HIST_BINS, dtype=torch.int64, device=device)
        edges = torch.as_tensor(histogram_edges(threshold), dtype=torch.float32, device=device)
        # Bin b holds [edges[b], edges[b+1]) as numpy.histogram; the first and last bins are open-ended.
        self._lower = torch.cat([edges.new_tensor([-float("inf")]), edges[1:-1]])
        self._upper = torch.cat([edges[1:-1], edges.new_tensor([float("inf")])])
        self._log_low = float(edges[0].log())
        self._inv_step = HIST_BINS / float(edges[-1].log() - edges[0].log())
        self.tokens = 0
        self._dense = False

    def encode_and_update(
        self, sae: Any, x: torch.Tensor, on_firing: FiringSink | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, int, float]]:
        """Encode `x` [B, d] chunk by chunk of rows and accumulate; yield each chunk's (x, x̂, active
        entries, sum of activations), to be measured while both are still in cache. `on_firing` gets
        each chunk's positive entries, at least the firing ones (first row, rows, features, values):
        every feature's top examples."""
        rows_per_chunk = chunk_rows(self.m)
        for start in range(0, x.shape[0], rows_per_chunk):
            chunk = x[start : start + rows_per_chunk]
            h = sae.encode(chunk)
            if self._dense:
                active, total, x_hat = self._update_dense(h, sae, start, on_firing)
            else:
                rows, cols, vals = positive_entries(h)
                self.update(cols, vals)
                if on_firing is not None:
                    on_firing(start, rows, cols, vals)
                x_hat = decode_chunk(h, rows, cols, vals, sae.W_dec, sae.b_dec)
                active, total = vals.numel(), float(vals.sum())
            # The next chunk takes the dense path when this one was dense (h's density is stable).
            self._dense = active >= DENSE_STATS_DENSITY * h.numel()
            self.tokens += int(chunk.shape[0])
            yield chunk, x_hat, active, total

    def _update_dense(
        self, h: torch.Tensor, sae: Any, start: int = 0, on_firing: FiringSink | None = None
    ) -> tuple[int, float, torch.Tensor]:
        """The same statistics with dense reductions, for a dense h (gathering half of it costs more)."""
        fired = h > self.threshold
        self.count += torch.count_nonzero(fired, dim=0)
        # Column sums over one chunk's rows in float32, accumulated across chunks in float64.
        self.sum += torch.where(fired, h, 0.0).sum(0).double()
        torch.maximum(self.max, h.amax(0), out=self.max)
        flat = h.reshape(-1)
        index = fired.reshape(-1).nonzero().squeeze(1)
        fc, fv = index % self.m, flat[index]
        self.hist.index_add_(0, fc * HIST_BINS + self._bins(fv), torch.ones_like(fc))
        if on_firing is not None:
            on_firing(start, index // self.m, fc, fv)
        active = int(torch.count_nonzero(h))
        return active, float(h.sum()), torch.addmm(sae.b_dec, h, sae.W_dec)

    def update(self, cols: torch.Tensor, vals: torch.Tensor) -> None:
        # The threshold is compared in float32, strictly: an activation equal to it does not fire. At
        # a threshold of 0 every positive entry fires and the selection is skipped.
        if self.threshold <= 0:
            fc, fv = cols, vals
        else:
            fire = vals > self.threshold
            fc, fv = cols[fire], vals[fire]
        self.count += torch.bincount(fc, minlength=self.m)
        self.sum.index_add_(0, fc, fv.double())
        self.max.scatter_reduce_(0, cols, vals, reduce="amax")
        self.hist.index_add_(0, fc * HIST_BINS + self._bins(fv), torch.ones_like(fc))

    def _bins(self, values: torch.Tensor) -> torch.Tensor:
        """Histogram bin of each value: a log-scale guess, corrected by one bin against the exact edges
        (what `bucketize` gives, at a fraction of its cost)."""
        guess = ((values.log() - self._log_low) * self._inv_step).long().clamp_(0, HIST_BINS - 1)
        guess += (values >= self._upper[guess]).long()
        guess -= (values < self._lower[guess]).long()
        return guess.clamp_(0, HIST_BINS - 1)

    def table(
        self, min_activations: int, dead_set_count: np.ndarray | None = None
    ) -> tuple[pa.Table, dict[str, np.ndarray]]:
        """The per-feature table. `dead_set_count`: firings on the token set dead % is counted on
        (`analysis.dead_split=all`), when it is not these tokens; `dead` and the `min_activations`
        eligibility then follow it, while mean, density and selectivity stay those of these tokens."""
        count = self.count.cpu().numpy()
        total = self.sum.cpu().numpy()
        basis = count if dead_set_count is None else dead_set_count
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(count > 0, total / count, np.nan)
            sel = np.where(basis >= min_activations, selectivity(mean, count, 1), np.nan)
        cols = {
            "feature_id": np.arange(self.m, dtype=np.int32),
            "count": count,
            "sum": total,
            "mean": mean,
            "max": self.max.cpu().numpy(),
            "density": count / max(self.tokens, 1),
            "selectivity": sel,
            "dead": basis == 0,
        }
        hist = self.hist.view(self.m, HIST_BINS).cpu().numpy()
        arrays = [pa.array(cols[f.name], type=f.type) for f in STATS_SCHEMA if f.name != "hist"]
        hist_array = pa.FixedSizeListArray.from_arrays(pa.array(hist.ravel()), HIST_BINS).cast(
            pa.list_(pa.int64())
        )
        table = pa.Table.from_arrays([*arrays, hist_array], schema=STATS_SCHEMA)
        cols["hist"] = hist
        return table, cols


@torch.no_grad()
def threshold_counts(
    sae: Any, batches: Iterator[torch.Tensor], threshold: float, device: torch.device
) -> torch.Tensor:
    """Per-feature count of activations strictly above `threshold` over `batches`: the pass
    `analysis.dead_split=all` adds over the tokens the analysis does not otherwise read (an encode and
    one comparison per chunk, no gathering)."""
    count = torch.zeros(sae.d_hidden, dtype=torch.int64, device=device)
    rows_per_chunk = chunk_rows(sae.d_hidden)
    for batch in batches:
        x = batch.to(device, torch.float32, non_blocking=True)
        for start in range(0, x.shape[0], rows_per_chunk):
            count += torch.count_nonzero(sae.encode(x[start : start + rows_per_chunk]) > threshold, dim=0)
    return count


def selectivity(mean: np.ndarray, count: np.ndarray, min_activations: int) -> np.ndarray:
    """mean / ln(count + 1) for features with count ≥ min_activations, NaN otherwise."""
    with np.errstate(divide="ignore", invalid="ignore"):
        value = mean / np.log(count.astype(np.float64) + 1.0)
    return np.where(count >= min_activations, value, np.nan)


def select_features(sel: np.ndarray, k: int) -> tuple[list[int], list[int]]:
    """The k most and k least selective features (ties by feature id). Disjoint: with fewer than 2k
    eligible features, the top takes its k (or all) and the bottom the rest."""
    ids = np.flatnonzero(~np.isnan(sel))
    by_desc = ids[np.lexsort((ids, -sel[ids]))]
    top = [int(i) for i in by_desc[:k]]
    taken = set(top)
    rest = [int(i) for i in by_desc[::-1] if int(i) not in taken]
    return top, rest[:k]


def positive_entries(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, cols, vals) of the positive entries of h [R, m] in row-major order (rows ascending, as the
    CSR decode needs).

    On CPU `nonzero` costs ~2 ns per element scanned, whatever its dtype, so it scans one int64 word
    per 8 entries of `h != 0` as bytes, then splits the few non-zero words (a trained SAE's h is ~99 %
    zeros): ~25 % cheaper than `nonzero` over h (`benchmarks/analyze.py`)."""
    flat = h.reshape(-1)
    if h.device.type == "cpu" and flat.numel() % 8 == 0 and flat.is_contiguous():
        words = flat.to(torch.bool).view(torch.int64)  # a fresh tensor: aligned for the view
        word_index = words.nonzero().squeeze(1)
        groups = flat.view(-1, 8)[word_index]
        which, lane = (groups > 0).nonzero(as_tuple=True)
        index = word_index[which] * 8 + lane
    else:
        index = (flat > 0).nonzero().squeeze(1)
    return index // h.shape[1], index % h.shape[1], flat[index]


def decode_chunk(
    chunk: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    vals: torch.Tensor,
    w_dec: torch.Tensor,
    b_dec: torch.Tensor,
) -> torch.Tensor:
    """x̂ = h W_dec + b_dec; sparse on CPU when few entries are active (the same sum, ~1 % of the FLOPs).
    CSR × dense measured ~20 % faster than `embedding_bag` with per-sample weights for the same sum."""
    if chunk.device.type != "cpu" or vals.numel() >= SPARSE_DECODE_DENSITY * chunk.numel():
        return torch.addmm(b_dec, chunk, w_dec)
    crow = torch.searchsorted(rows, torch.arange(chunk.shape[0] + 1, device=rows.device))
    with warnings.catch_warnings():  # "sparse CSR support is in beta": used here for one product only
        warnings.simplefilter("ignore", UserWarning)
        sparse = torch.sparse_csr_tensor(crow, cols, vals, size=chunk.shape)
    return torch.addmm(b_dec, sparse, w_dec)


# ---------------------------------------------------------------------------------------------
# Units and the selection's counts (analysis.json)


def unit_figures(cols: dict[str, np.ndarray], l0_sum: float, split: str) -> dict[str, Any]:
    """Never-fired and below-threshold figures on the analysed tokens. `max` is taken over every
    positive activation, `count` over those above the threshold, and L0 counts every positive one, so
    the three dead readings (never > 0; > 0 but never > threshold; dead) come from pass 1's sums."""
    m = len(cols["count"])
    fired = cols["max"] > 0
    below_only = fired & (cols["count"] == 0)
    above = float(cols["count"].sum())
    return {
        "never_fired_split": split,
        "never_fired_count": int(np.count_nonzero(~fired)),
        "never_fired_fraction": float(np.count_nonzero(~fired)) / m,
        "below_threshold_only_count": int(np.count_nonzero(below_only)),
        "below_threshold_only_fraction": float(np.count_nonzero(below_only)) / m,
        # Of all positive activations on these tokens, the share at or below the threshold.
        "firings_below_threshold_fraction": (1.0 - above / l0_sum) if l0_sum > 0 else None,
        "max_activation": float(cols["max"].max()) if m else None,
    }


def selection_summary(
    cols: dict[str, np.ndarray],
    top: list[int],
    bottom: list[int],
    acfg: Any,
    token_set: str,
    units: dict[str, Any],
    activation_units: str = RAW_UNITS,
) -> dict[str, Any]:
    """The selection's counts (asked, selected, eligible) and, when it is short, why — in words."""
    eligible = int(np.count_nonzero(~np.isnan(cols["selectivity"])))
    asked = 2 * acfg.top_k_features
    shortfall = selection_shortfall(
        asked,
        len(top) + len(bottom),
        eligible,
        acfg.dead_threshold,
        acfg.min_activations,
        token_set,
        activation_units,
        units["below_threshold_only_count"],
    )
    return {
        "asked": asked,
        "selected": len(top) + len(bottom),
        "eligible": eligible,
        "min_activations": acfg.min_activations,
        "shortfall": shortfall,
    }


def units_doc(acfg: Any, dead_set: str, activation_units: str = RAW_UNITS) -> dict[str, str]:
    """What each figure of analysis.json is in and counted on (read by the report and the browser)."""
    split = acfg.split
    scale = (
        "the stored activations as extracted, no normalisation"
        if activation_units == RAW_UNITS
        else "the SAE's input was x·s (E‖x·s‖ = √d on the training split); its latents, and so every "
        "activation value and threshold here, are in those units (the released weights take raw x)"
    )
    return {
        "activations": f"{activation_units}: {scale}",
        "dead_threshold": (
            f"{activation_units} SAE activation, compared strictly (>), on the {dead_set} tokens"
        ),
        "min_activations": f"firings > dead_threshold on the {dead_set} tokens",
        "l0": f"latents with activation > 0 per token, mean over the {split} tokens",
        "never_fired": f"no activation > 0 on the {split} tokens (independent of the threshold)",
        "explained_variance": f"on the {split} tokens, in the stored activations' units",
    }
