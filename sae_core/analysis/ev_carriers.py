"""Which analysed rows carry explained variance: the few with the largest squared reconstruction error.

EV = 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖² is a ratio of sums, so a handful of rows with a huge norm (attention
sinks the store did not leave out) can decide it: on SmolLM2 2 test tokens held 75 % of the test split's
variance and turned EV negative. `ErrorCarriers` keeps the top rows by squared error with their
provenance, share of the error and of the variance, and the EV recomputed without them — what the report
shows when a cell's EV is negative or jumps against its neighbours.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sae_core.analysis.evaluation import ReconstructionStats

CARRIERS = 5
"""Rows kept (the report lists them for a flagged cell)."""


class ErrorCarriers:
    """Streaming top rows by ‖x − x̂‖²: feed every analysed chunk with `update`."""

    def __init__(self, keep: int = CARRIERS) -> None:
        self.keep = keep
        self.err = np.empty(0, dtype=np.float64)
        self.x = np.empty((0, 0), dtype=np.float64)
        self.meta = np.empty((0, 3), dtype=np.int64)  # doc_id, pos, token_id

    def update(
        self, x: torch.Tensor, x_hat: torch.Tensor, doc_id: np.ndarray, pos: np.ndarray, token_id: np.ndarray
    ) -> None:
        err = (x - x_hat).square().sum(1)
        k = min(self.keep, int(err.shape[0]))
        if k == 0:
            return
        top = torch.topk(err, k).indices
        idx = top.cpu().numpy()
        err_np = err[top].double().cpu().numpy()
        x_np = x[top].double().cpu().numpy()
        meta = np.stack([doc_id[idx], pos[idx], token_id[idx]], axis=1).astype(np.int64)
        if self.x.size == 0:
            self.x = np.empty((0, x_np.shape[1]), dtype=np.float64)
        err_all = np.concatenate([self.err, err_np])
        order = np.argsort(-err_all, kind="stable")[: self.keep]
        self.err = err_all[order]
        self.x = np.concatenate([self.x, x_np])[order]
        self.meta = np.concatenate([self.meta, meta])[order]

    def summary(self, recon: ReconstructionStats, tokens: list[str] | None = None) -> dict[str, Any]:
        """The rows (largest error first) and `explained_variance_without`: EV on the analysed rows less
        these, from the same sums (exact: the removed rows' mean and centred squares are taken out)."""
        if recon.mean_x is None or recon.tokens == 0 or not len(self.err):
            return {"rows": [], "explained_variance_without": None, "definition": DEFINITION}
        mean, sse, sst, n = recon.mean_x, recon.squared_error, recon.centred_sq, recon.tokens
        rows = []
        for i in range(len(self.err)):
            rows.append(
                {
                    "doc_id": int(self.meta[i, 0]),
                    "pos": int(self.meta[i, 1]),
                    "token_id": int(self.meta[i, 2]),
                    **({"token": tokens[i]} if tokens is not None else {}),
                    "norm": float(np.linalg.norm(self.x[i])),
                    "share_of_error": float(self.err[i] / sse) if sse > 0 else None,
                    "share_of_variance": float(np.square(self.x[i] - mean).sum() / sst) if sst > 0 else None,
                }
            )
        return {
            "rows": rows,
            "explained_variance_without": _ev_without(self, mean, sse, sst, n),
            "definition": DEFINITION,
        }


DEFINITION = (
    "the analysed rows with the largest squared reconstruction error ‖x − x̂‖²; share_of_error of "
    "Σ‖x − x̂‖², share_of_variance ‖x − x̄‖² / Σ‖x − x̄‖² (x̄ over the analysed rows), norm ‖x‖ in the "
    "SAE's input units; explained_variance_without: EV over the analysed rows less these"
)


def _ev_without(carriers: ErrorCarriers, mean: np.ndarray, sse: float, sst: float, n: int) -> float | None:
    r = len(carriers.err)
    rest = n - r
    if rest <= 0:
        return None
    mean_r = carriers.x.mean(0)
    centred_r = float(np.square(carriers.x - mean_r).sum())
    mean_rest = (n * mean - r * mean_r) / rest
    sst_rest = sst - centred_r - float(np.square(mean_rest - mean_r).sum()) * rest * r / n
    sse_rest = sse - float(carriers.err.sum())
    return 1.0 - sse_rest / sst_rest if sst_rest > 0 else None
