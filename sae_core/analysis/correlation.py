"""How the selected features relate: Pearson correlation of their activations (exact, from streaming
sums), cosine similarity of their decoder directions, a clustered order, nearest neighbours of every
feature by decoder direction, and the heatmap / density figures.

The study's "correlation" heatmap was a cosine similarity of features as vectors over token ids; here the
Pearson matrix is what `numpy.corrcoef` would give on the full [tokens × features] activation matrix,
computed without holding it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from sae_core.io import atomic_write_with

NEIGHBOR_CHUNK = 1024
"""Decoder rows compared at once when finding neighbours: bounds the [chunk, m] similarity block."""


class PearsonAccumulator:
    """Count, mean and centred co-moment matrix, merged batch by batch (Chan et al.'s pairwise update):
    float64 throughout and no `Σxy − n·x̄ȳ` cancellation, so the result matches `numpy.corrcoef`."""

    def __init__(self, width: int) -> None:
        self.n = 0
        self.mean = np.zeros(width)
        self.comoment = np.zeros((width, width))

    def update(self, acts: torch.Tensor) -> None:
        """`acts` [B, width]: every analysed token's activations of the selected features (zeros too)."""
        b = int(acts.shape[0])
        if b == 0:
            return
        x = acts.double()
        mean_b = x.mean(0)
        centred = x - mean_b
        comoment_b = (centred.T @ centred).cpu().numpy()
        mean_b_np = mean_b.cpu().numpy()
        n = self.n + b
        delta = mean_b_np - self.mean
        self.comoment += comoment_b + np.outer(delta, delta) * (self.n * b / n)
        self.mean += delta * (b / n)
        self.n = n

    def correlation(self) -> np.ndarray:
        """Pearson matrix; NaN for a feature with zero variance (as `numpy.corrcoef`)."""
        std = np.sqrt(np.diag(self.comoment))
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = self.comoment / np.outer(std, std)
        corr[std == 0, :] = np.nan
        corr[:, std == 0] = np.nan
        return np.clip(corr, -1.0, 1.0)


def decoder_cosine(w_dec: torch.Tensor, ids: Sequence[int]) -> np.ndarray:
    """Cosine similarity of the decoder rows (feature directions) of `ids`."""
    rows = w_dec[torch.as_tensor(list(ids), dtype=torch.long, device=w_dec.device)].double()
    rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (rows @ rows.T).cpu().numpy()


DUPLICATE_COSINE = 0.95
DUPLICATE_CORRELATION = 0.9
DUPLICATE_RULE = (
    f"decoder cosine > {DUPLICATE_COSINE} and activation Pearson r > {DUPLICATE_CORRELATION} with a "
    "feature selected before it (top group first, by selectivity)"
)


def near_duplicates(ids: Sequence[int], pearson: np.ndarray, cosine: np.ndarray) -> dict[int, int]:
    """Selected features that repeat an earlier selected one's direction (`DUPLICATE_RULE`): feature →
    its representative, the first of its group in selection order (so a chain a ≈ b ≈ c maps b and c
    to a). Labelling such a feature again would spend a request on the same direction."""
    duplicate_of: dict[int, int] = {}
    for j in range(len(ids)):
        if ids[j] in duplicate_of or ids[j] in ids[:j]:  # a feature in both groups is not its own duplicate
            continue
        for i in range(j):
            if ids[i] == ids[j]:
                continue
            r, c = pearson[i, j], cosine[i, j]
            if np.isfinite(r) and r > DUPLICATE_CORRELATION and c > DUPLICATE_COSINE:
                duplicate_of[int(ids[j])] = duplicate_of.get(int(ids[i]), int(ids[i]))
                break
    return duplicate_of


def cluster_order(corr: np.ndarray, max_clusters: int = 2) -> tuple[list[int], list[int]]:
    """Average-linkage clustering on 1 − Pearson (an undefined correlation counts as 0), leaves in
    optimal order; returns (order: positions into the matrix, cluster label per position, 1-based)."""
    n = corr.shape[0]
    if n < 3:
        return list(range(n)), [1] * n
    from scipy.cluster.hierarchy import fcluster, leaves_list, linkage
    from scipy.spatial.distance import squareform

    dist = 1.0 - np.nan_to_num(corr, nan=0.0)
    dist = np.clip((dist + dist.T) / 2, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    tree = linkage(squareform(dist, checks=False), method="average", optimal_ordering=True)
    labels = fcluster(tree, t=max_clusters, criterion="maxclust")
    return [int(i) for i in leaves_list(tree)], [int(c) for c in labels]


def nearest_neighbors(w_dec: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For every feature, the `k` other features with the most similar decoder direction:
    (ids [m, k] int32, cosine [m, k] float32), most similar first; chunked so memory is O(chunk × m)."""
    m = int(w_dec.shape[0])
    k = min(k, m - 1)
    ids = np.zeros((m, max(k, 0)), dtype=np.int32)
    cos = np.zeros((m, max(k, 0)), dtype=np.float32)
    if k <= 0:
        return ids, cos
    rows = w_dec.float()
    rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
    for start in range(0, m, NEIGHBOR_CHUNK):
        block = rows[start : start + NEIGHBOR_CHUNK] @ rows.T
        own = torch.arange(start, start + block.shape[0], device=block.device)
        block[torch.arange(block.shape[0], device=block.device), own] = -float("inf")
        values, index = block.topk(k, dim=1)
        ids[start : start + block.shape[0]] = index.cpu().numpy()
        cos[start : start + block.shape[0]] = values.cpu().numpy()
    return ids, cos


# ---------------------------------------------------------------------------------------------
# Figures (matplotlib, Agg backend: no display needed)


def plot_correlation(
    path: Path,
    ids: Sequence[int],
    groups: Sequence[str],
    pearson: np.ndarray,
    cosine: np.ndarray,
    order: Sequence[int],
    title: str,
) -> None:
    """Two heatmaps side by side, rows and columns in the clustered order; a strip marks each
    feature's group (top / bottom selectivity)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = list(order)
    labels = [str(ids[i]) for i in order]
    strip = np.array([[0.0 if groups[i] == "top" else 1.0 for i in order]])
    fig, axes = plt.subplots(
        2, 2, figsize=(13, 6.9), gridspec_kw={"height_ratios": [1, 24]}, constrained_layout=True
    )
    for col, (matrix, name) in enumerate(
        ((pearson, "Pearson correlation of activations"), (cosine, "Decoder-direction cosine"))
    ):
        axes[0, col].imshow(strip, aspect="auto", cmap="coolwarm", vmin=-0.5, vmax=1.5)
        axes[0, col].set_xticks([])
        axes[0, col].set_yticks([0], ["blue: top, red: bottom"], fontsize=7)
        ax = axes[1, col]
        image = ax.imshow(matrix[np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(name, fontsize=10)
        ticks = range(len(order))
        size = 5 if len(order) <= 60 else 3
        ax.set_xticks(list(ticks), labels, rotation=90, fontsize=size)
        ax.set_yticks(list(ticks), labels, fontsize=size)
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(title, fontsize=11)
    _save(fig, path)


def plot_density(
    path: Path,
    density: np.ndarray,
    dead: np.ndarray,
    hist_total: np.ndarray,
    edges: np.ndarray,
    title: str,
) -> None:
    """Left: features by log10 firing density (dead ones counted in the legend). Right: all firing
    activations on the log-spaced histogram edges."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    alive = density[~dead & (density > 0)]  # alive on dead_split=all tokens may not fire on these
    if alive.size:
        left.hist(np.log10(alive), bins=50, color="tab:blue", label=f"alive: {alive.size}")
    left.plot([], [], " ", label=f"dead: {int(dead.sum())} of {dead.size}")
    left.set_xlabel("log10(firing density)")
    left.set_ylabel("features")
    left.legend(fontsize=8)
    left.set_title("Feature density", fontsize=10)
    right.stairs(hist_total, edges, fill=True, color="tab:orange")
    right.set_xscale("log")
    right.set_xlabel("activation (firing tokens)")
    right.set_ylabel("count")
    right.set_title("Activation values", fontsize=10)
    fig.suptitle(title, fontsize=11)
    _save(fig, path)


def _save(fig: object, path: Path) -> None:
    import matplotlib.pyplot as plt

    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
