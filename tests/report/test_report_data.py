"""Fabricated sweep directories in exactly docs/architecture.md's file formats, for the report and
browser tests (the real producers are tested by their own stages). Also checks the fabricator itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sae_core.analysis.correlation import DUPLICATE_RULE
from sae_core.analysis.examples import EXAMPLE_SCHEMA, TOP_EXAMPLES_SCHEMA
from sae_core.naming import Cell

D_MODEL = 16
HIST_BINS = 20
VOCAB = ["the", " cat", " sat", " on", " mat", ",", " Washington", " D", ".C", "\n", " <b>", "&"]


def _png(path: Path, seed: int) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.add_subplot().imshow(np.random.default_rng(seed).normal(size=(8, 8)))
    fig.savefig(path, format="png")


def _every_feature_examples(run: Path, rng: Any, counts: np.ndarray, maxes: np.ndarray) -> None:
    """top_examples.parquet (5 per alive feature), the documents they cite and their vocabulary."""
    n_docs, doc_len, per = 40, 50, 5
    docs = rng.integers(0, len(VOCAB), size=(n_docs, doc_len)).astype(np.int32)
    alive = np.flatnonzero(counts > 0)
    fid = np.repeat(alive, per).astype(np.int32)
    rank = np.tile(np.arange(per), len(alive)).astype(np.int32)
    act = (maxes[fid] * (1 - 0.1 * rank)).astype(np.float32)
    doc = rng.integers(0, n_docs, size=len(fid)).astype(np.int32)
    pos = rng.integers(0, doc_len, size=len(fid)).astype(np.int32)
    columns = [fid, rank, act, doc, pos, docs[doc, pos]]
    table = pa.Table.from_arrays([pa.array(c) for c in columns], schema=TOP_EXAMPLES_SCHEMA)
    pq.write_table(table, run / "features" / "top_examples.parquet")
    pq.write_table(
        pa.table({"doc_id": pa.array(np.arange(n_docs), pa.int32()),
                  "token_ids": pa.array(list(docs), pa.list_(pa.int32()))}),
        run / "features" / "example_documents.parquet",
    )  # fmt: skip
    pq.write_table(
        pa.table({"token_id": pa.array(np.arange(len(VOCAB)), pa.int32()), "token": VOCAB}),
        run / "features" / "example_vocab.parquet",
    )


def fabricate_cell(
    sweep_dir: Path,
    cell: Cell,
    *,
    n_features: int | None = None,
    labels: str = "ok",
    with_analysis: bool = True,
    seed: int = 0,
) -> Path:
    """Write one cell's metrics, train log, analysis, features and labels; `labels` is `ok`,
    `skipped` or `none` (no labels files). Returns the cell directory."""
    rng = np.random.default_rng(seed)
    m = n_features or D_MODEL * cell.expansion
    run = sweep_dir / cell.name
    (run / "features").mkdir(parents=True, exist_ok=True)
    dead_train = float(rng.uniform(0.05, 0.3))
    events = [{"step": 200, "neurons": 7}, {"step": 400, "neurons": 3}] if cell.strategy == "sampling" else []
    final = {
        "loss": 0.5,
        "mse": 0.4,
        "l1": 10.0,
        "l0": 12.0,
        "explained_variance": 0.8,
        "never_fired_fraction": 0.1,
    }
    metrics = {
        "cell": cell.name,
        "d_in": D_MODEL,
        "d_hidden": m,
        "store": "/tmp/store",
        "steps": 600,
        "tokens_trained": 600 * 512 + seed,
        "wall_time_s": 12.5 + seed,
        "tokens_per_s": 24000.0,
        "final": final,
        "val": final,
        "training_dead_fraction": dead_train,
        "resample_events": events,
        "training": {"lr": 1e-3},
        "code_version": "0.1.0+test",
        "completed": True,
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    steps = np.arange(0, 601, 20)
    log = pa.table(
        {
            "step": pa.array(np.concatenate([steps, [e["step"] for e in events]]), pa.int64()),
            "tokens": pa.array(np.concatenate([steps * 512, [e["step"] * 512 for e in events]]), pa.int64()),
            "kind": ["train"] * len(steps) + ["resample"] * len(events),
            "loss": np.concatenate([2.0 / (1 + steps / 50.0), [np.nan] * len(events)]),
            **{
                k: np.full(len(steps) + len(events), 0.5)
                for k in (
                    "mse",
                    "l1",
                    "l0",
                    "explained_variance",
                    "window_dead_fraction",
                    "never_fired_fraction",
                    "lr",
                )
            },
            "neurons_resampled": pa.array([0] * len(steps) + [e["neurons"] for e in events], pa.int64()),
        }
    )
    pq.write_table(log, run / "train_log.parquet")
    if not with_analysis:
        return run

    counts = rng.integers(0, 5000, size=m)
    counts[rng.random(m) < 0.15] = 0
    dead = counts == 0
    mean = np.where(dead, np.nan, rng.uniform(0.1, 3.0, size=m))
    total = np.where(dead, 0.0, mean * counts)
    maxes = np.where(dead, 0.0, mean * 2).astype(np.float32)
    selectivity = np.where(counts >= 10, mean / np.log(counts + 1.0), np.nan)
    hist = [list(map(int, rng.integers(0, 50, size=HIST_BINS))) if not d else [0] * HIST_BINS for d in dead]
    pq.write_table(
        pa.table(
            {
                "feature_id": pa.array(np.arange(m), pa.int32()),
                "count": pa.array(counts, pa.int64()),
                "sum": pa.array(total, pa.float64()),
                "mean": pa.array(mean, pa.float64()),
                "max": pa.array(maxes, pa.float32()),
                "density": pa.array(counts / 100_000.0, pa.float64()),
                "selectivity": pa.array(selectivity, pa.float64()),
                "dead": pa.array(dead, pa.bool_()),
                "hist": pa.array(hist, pa.list_(pa.int64())),
            }
        ),
        run / "features" / "feature_stats.parquet",
    )
    ranked = [int(i) for i in np.argsort(-np.nan_to_num(selectivity, nan=-1)) if not np.isnan(selectivity[i])]
    k = min(5, len(ranked) // 2)
    top, bottom = ranked[:k], ranked[-k:]
    duplicate_of = {str(top[1]): top[0]} if k >= 2 else {}  # one near-duplicate pair
    (run / "features" / "selected.json").write_text(
        json.dumps(
            {"top": top, "bottom": bottom, "min_activations": 10, "threshold": 0.07, "top_k_features": k,
             "duplicate_of": duplicate_of, "duplicate_rule": DUPLICATE_RULE, "context_window": 3}
        )
    )  # fmt: skip
    _every_feature_examples(run, rng, counts, maxes)
    rows: dict[str, list[Any]] = {c: [] for c in EXAMPLE_SCHEMA.names}
    for group, ids in (("top", top), ("bottom", bottom)):
        for fid in ids:
            for kind, n in (("top", 4), ("quantile", 2)):
                for rank in range(n):
                    ctx = [int(t) for t in rng.integers(0, len(VOCAB), size=7)]
                    marked = 3
                    ctx[marked] = 6  # " Washington" is always the marked token
                    toks = [VOCAB[t] for t in ctx]
                    text = "".join(f"**{t}**" if j == marked else t for j, t in enumerate(toks))
                    act = float(maxes[fid]) * (1 - 0.1 * rank) * (1 if kind == "top" else 0.3)
                    for col, val in zip(
                        rows,
                        (
                            fid,
                            group,
                            kind,
                            rank,
                            act,
                            int(rng.integers(0, 99)),
                            int(rng.integers(1, 60)),
                            ctx[marked],
                            toks[marked],
                            ctx,
                            toks,
                            marked,
                            text,
                        ),
                        strict=True,
                    ):
                        rows[col].append(val)
    pq.write_table(
        pa.table(
            {
                **{
                    c: rows[c]
                    for c in EXAMPLE_SCHEMA.names[:9]  # feature_id … token
                },
                "feature_id": pa.array(rows["feature_id"], pa.int32()),
                "context_token_ids": pa.array(rows["context_token_ids"], pa.list_(pa.int32())),
                "context_tokens": pa.array(rows["context_tokens"], pa.list_(pa.string())),
                "marked_index": pa.array(rows["marked_index"], pa.int32()),
                "context_text": rows["context_text"],
            }
        ),
        run / "features" / "examples.parquet",
    )
    sel = top + bottom
    corr = np.corrcoef(rng.normal(size=(len(sel), 40)))
    (run / "features" / "correlation.json").write_text(
        json.dumps(
            {
                "ids": sel,
                "pearson": corr.tolist(),
                "decoder_cosine": np.eye(len(sel)).tolist(),
                "order": list(range(len(sel))),
            }
        )
    )
    nb = rng.integers(0, m, size=(m, 5))
    pq.write_table(
        pa.table(
            {
                "feature_id": pa.array(np.arange(m), pa.int32()),
                "neighbor_ids": pa.array(list(nb), pa.list_(pa.int32())),
                "cosine": pa.array(list(rng.uniform(0, 1, size=(m, 5))), pa.list_(pa.float32())),
            }
        ),
        run / "features" / "neighbors.parquet",
    )
    _png(run / "features" / "correlation.png", seed)
    _png(run / "features" / "density.png", seed + 1)
    analysis = {
        "cell": cell.name,
        "split": "test",
        "tokens_analyzed": 100_000,
        "dead_threshold": 0.07,
        "dead_split": "test",
        "dead_tokens": 100_000,
        "dead_count": int(dead.sum()),
        "dead_fraction": float(dead.mean()),
        "never_fired_fraction": float(dead.mean()) / 2,  # half the dead fire, but only below 0.07
        "below_threshold_only_fraction": float(dead.mean()) / 2,
        "training_dead_fraction": dead_train,
        "l0": float(rng.uniform(5, 50)),
        "l1": 30.0,
        "mse": 0.3,
        "explained_variance": float(rng.uniform(0.5, 0.95)),
        "cosine_similarity": 0.9,
        "l2_ratio": 0.95,
        "ce_loss": {
            "clean": 3.0,
            "sae": 3.2,
            "zero": 6.0,
            "recovered": float(rng.uniform(0.7, 0.99)),
            "kl_sae": 0.1,
            "kl_zero": 2.0,
            "documents": 32,
            "tokens": 4000,
        },
        "ce_loss_note": None,
        "histogram_edges": list(np.linspace(0.07, 6.0, HIST_BINS + 1)),
        "selected": {"top": top, "bottom": bottom},
        "code_version": "0.1.0+test",
    }
    (run / "analysis.json").write_text(json.dumps(analysis))
    if labels == "skipped":
        (run / "labels.json").write_text(
            json.dumps(
                {
                    "monosemanticity_rate": None,
                    "rate_top": None,
                    "rate_bottom": None,
                    "labelled": 0,
                    "polysemantic": 0,
                    "failed": 0,
                    "skipped_reason": "no API key in OPENAI_API_KEY",
                    "model": "gpt-4o-mini",
                    "prompt_version": "v1",
                }
            )
        )
    elif labels == "ok":
        poly = {fid: i % 3 == 0 for i, fid in enumerate(sel)}
        pq.write_table(
            pa.table(
                {
                    "feature_id": pa.array(sel, pa.int32()),
                    "group": ["top"] * len(top) + ["bottom"] * len(bottom),
                    "label": ["POLYSEMANTIC" if poly[f] else f"the token Washington <{f}>" for f in sel],
                    "reasoning": [f"Reasoning for feature {f}: contexts about D.C." for f in sel],
                    "polysemantic": [poly[f] for f in sel],
                    "model": ["gpt-4o-mini"] * len(sel),
                    "prompt_version": ["v1"] * len(sel),
                    "attempts": pa.array([1] * len(sel), pa.int32()),
                    "status": ["ok"] * len(sel),
                    "error": pa.array([None] * len(sel), pa.string()),
                    "examples_hash": ["abc"] * len(sel),
                    "detection_accuracy": pa.array([None] * len(sel), pa.float64()),
                }
            ),
            run / "labels.parquet",
        )
        rate = 1 - sum(poly.values()) / len(sel)
        (run / "labels.json").write_text(
            json.dumps(
                {
                    "monosemanticity_rate": rate,
                    "rate_top": rate,
                    "rate_bottom": rate,
                    "labelled": len(sel),
                    "polysemantic": sum(poly.values()),
                    "failed": 0,
                    "skipped_reason": None,
                    "model": "gpt-4o-mini",
                    "prompt_version": "v1",
                }
            )
        )
    return run


def fabricate_sweep(root: Path, name: str = "demo", skip: tuple[str, ...] = ("4x_0.0001_sampling",)) -> Path:
    """A 2 × 2 × 2 sweep (expansions 2 and 4, λ 0.01 and 0.0001, both strategies); cells named in
    `skip` have no directory (a failed cell), 2x_0.0001_nosampling has training but no analysis, and
    4x_0.01_nosampling's labels were skipped."""
    sweep = root / "runs" / name
    sweep.mkdir(parents=True)
    for i, cell in enumerate(
        Cell(e, l1, s) for e in (2, 4) for l1 in (0.01, 0.0001) for s in ("nosampling", "sampling")
    ):
        if cell.name in skip:
            continue
        fabricate_cell(
            sweep,
            cell,
            seed=i,
            with_analysis=cell.name != "2x_0.0001_nosampling",
            labels="skipped" if cell.name == "4x_0.01_nosampling" else "ok",
        )
    return sweep


def test_fabricated_cell_has_the_contract_columns(tmp_path):
    run = fabricate_cell(tmp_path, Cell(2, 0.01, "sampling"))
    assert pq.read_schema(run / "features" / "feature_stats.parquet").names == [
        "feature_id",
        "count",
        "sum",
        "mean",
        "max",
        "density",
        "selectivity",
        "dead",
        "hist",
    ]
    assert pq.read_schema(run / "features" / "examples.parquet").names == [
        "feature_id",
        "group",
        "kind",
        "rank",
        "activation",
        "doc_id",
        "pos",
        "token_id",
        "token",
        "context_token_ids",
        "context_tokens",
        "marked_index",
        "context_text",
    ]
    assert pq.read_schema(run / "train_log.parquet").names == [
        "step",
        "tokens",
        "kind",
        "loss",
        "mse",
        "l1",
        "l0",
        "explained_variance",
        "window_dead_fraction",
        "never_fired_fraction",
        "lr",
        "neurons_resampled",
    ]
    assert set(json.loads((run / "labels.json").read_text())) == {
        "monosemanticity_rate",
        "rate_top",
        "rate_bottom",
        "labelled",
        "polysemantic",
        "failed",
        "skipped_reason",
        "model",
        "prompt_version",
    }
