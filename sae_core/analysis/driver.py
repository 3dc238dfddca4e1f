"""Feature analysis of one trained cell: exact statistics, dead %, selectivity, examples, correlation.

`analyze_run(store_path, run_dir, cfg)` makes two streaming passes over `cfg.analysis.split` of the store
(memory bounded by the batch, the m-wide accumulators and the selected features' buffers, never by the
token count):

1. Encode every token with the SAE. From the positive entries of h (gathered once per chunk of rows) it
   accumulates per feature the exact count of activations strictly above `dead_threshold`, their sum and
   a log-spaced histogram, and the maximum activation; it decodes the same sparse entries (an
   `embedding_bag` over the active features, or a dense matmul when h is dense) for the reconstruction
   metrics. A dense h (an untrained SAE) switches to dense reductions (see `feature_stats`). Counts are
   exact: no top-k-per-token cap (the study kept 25 features per token).
2. Selectivity = mean activation over firing tokens / ln(count + 1) — the natural log, where the study's
   DuckDB `LOG` was log10 (the ranking is the same, the values are log(10) ≈ 2.3× smaller in the study) —
   for features firing at least `min_activations` times; the `top_k_features` most and least selective
   are selected. The second pass encodes only those features' columns and keeps a streaming top-k and a
   reservoir sample per feature (examples) and the centred co-moments for their Pearson matrix.

Features are selected only once the counts are known, hence two passes; the second costs a store read
and an encode of 2k columns instead of m.

Dead % counts features that never exceed `dead_threshold` on the token set `analysis.dead_split` names:
the analysed tokens (`test`), or every token of the store (`all`, as the study counted, training tokens
included). Thresholds and activations are in the SAE's input units (`activation_units`): raw, or for a run
trained with `training.normalize_activations` the normalised x·s — its `.pth` has s folded in, so encoding
the raw rows gives the latents of x·s and the reconstruction ÷ s, and nothing here scales twice;
beside dead %, analysis.json gives never-fired % (no activation > 0) and the features that fire only at
or below the threshold, and `selection` says why it holds fewer features than asked. For `all` a
third pass reads the tokens pass 1 did not, encoding only the features pass 1 left undecided (fewer
than `min_activations` firings) and counting their firings; the `min_activations` eligibility then
uses the counts over all tokens as well.

Every pass reads the store's rows through its one row filter (`sae_core.store.left_out.kept_rows`): the
rows the store leaves out (a prepended BOS, special tokens, attention sinks; the first tokens with
`drop_first_token`) are in no figure, no selection and no example; `left_out` counts them per split and
rule. `error_carriers` names the analysed rows that carry the most reconstruction error.
"""

from __future__ import annotations

import logging
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from sae_core.analysis.correlation import (
    DUPLICATE_RULE,
    cluster_order,
    decoder_cosine,
    near_duplicates,
    nearest_neighbors,
    plot_correlation,
    plot_density,
)
from sae_core.analysis.evaluation import finite_or_none
from sae_core.analysis.examples import (
    TokenDecoder,
    attach_contexts,
    example_documents,
)
from sae_core.analysis.feature_stats import (
    histogram_edges,
    select_features,
    selection_summary,
    unit_figures,
    units_doc,
)
from sae_core.analysis.passes import (
    dead_set_counts,
    dead_split_name,
    first_pass,
    rest_of_store,
    run_ce_loss,
    second_pass,
)
from sae_core.analysis.scoring_windows import (
    SAMPLE_RULE,
    random_sample,
    scoring_sampler,
    scoring_summary,
    scoring_windows,
)
from sae_core.config import AnalysisConfig, SweepConfig
from sae_core.device import cpu_threads, resolve_device
from sae_core.errors import AnalysisError
from sae_core.io import atomic_write_json, atomic_write_with, check_writable
from sae_core.naming import Cell
from sae_core.progress import Progress, no_progress
from sae_core.rundir import (
    ANALYSIS_FORMAT,
    Metrics,
    RunDir,
    RunFileError,
    dead_caption,
    pct,
    read_metrics,
    run_units,
    units_text,
)
from sae_core.rundir import training_dead_fraction as _training_dead_fraction
from sae_core.store.format import SPLITS
from sae_core.version import code_version

log = logging.getLogger(__name__)

LEFT_OUT_NOTE = (
    "rows every figure here leaves out, per split and rule (each row under the first rule that takes "
    "it); the analysed split's are the ones missing from tokens_analyzed"
)
CE_TOKEN_SET = (
    "predictions made at the analysed split's kept rows of the first analysis.ce_loss_documents "
    "documents: positions the store leaves out (and position 0 with drop_first_token) run clean and "
    "are not counted"
)

NEIGHBORS_SCHEMA = pa.schema(
    [("feature_id", pa.int32()), ("neighbor_ids", pa.list_(pa.int32())), ("cosine", pa.list_(pa.float32()))]
)


# ---------------------------------------------------------------------------------------------
# The run


def analyze_run(
    store_path: str | Path, run_dir: str | Path, cfg: SweepConfig, progress: Progress | None = None
) -> dict[str, Any]:
    """Analyse the SAE in `run_dir` on `cfg.analysis.split` of the store; write `features/…` and
    `analysis.json` (last) as docs/architecture.md specifies; return the analysis.json dict."""
    from sae_core.store import ActivationStore

    acfg = cfg.analysis
    progress = progress or no_progress
    _check_config(acfg)
    run_dir = Path(run_dir)
    store = ActivationStore.open(store_path)
    sae, metrics = load_sae(run_dir)
    check_writable(run_dir)  # before minutes of passes: a read-only run dir was found at the first write
    if sae.d_in != store.d_model:
        raise AnalysisError(
            f"run: the SAE in {run_dir} takes d_in={sae.d_in} but the store {store.path} has "
            f"d_model={store.d_model}"
        )
    available = store.num_tokens_in(acfg.split)
    if available == 0:
        raise AnalysisError(f"analysis.split: the store {store.path} has no tokens in split {acfg.split!r}")
    n_tokens = min(available, acfg.max_tokens or available)
    device = resolve_device(cfg.training.device)
    sae = sae.to(device).eval()
    timings: dict[str, float] = {}
    docs = store.documents(acfg.split)
    ce_docs = {k: docs[k] for k in sorted(docs)[: acfg.ce_loss_documents]}
    rest = rest_of_store(store, acfg, n_tokens)
    total = 2 * n_tokens + sum(n for _, _, n in rest) + sum(len(d) for d in ce_docs.values())
    cell_name = _cell_name(run_dir, metrics)
    # A normalised run's weights take raw rows with s folded in: its latents are those of x·s already.
    activation_units = run_units(metrics)
    log.info(
        "analysing %s on %d %s tokens of %s (activations in %s)",
        cell_name, n_tokens, acfg.split, store.path, units_text(activation_units),
    )  # fmt: skip

    with torch.inference_mode(), cpu_threads(acfg.num_threads, device):
        start = time.perf_counter()
        stats, recon, every_top, carriers = first_pass(store, sae, acfg, n_tokens, device, progress, total)
        timings["pass1_s"] = time.perf_counter() - start
        start = time.perf_counter()
        dead_set_count, dead_tokens = dead_set_counts(store, sae, acfg, stats, rest, device)
        if rest:
            timings["dead_pass_s"] = time.perf_counter() - start
        extra = sum(n for _, _, n in rest)  # the dead pass's share of the progress bar
        progress(n_tokens + extra, total, {})
        stats_table, cols = stats.table(acfg.min_activations, dead_set_count)
        top, bottom = select_features(cols["selectivity"], acfg.top_k_features)
        units = unit_figures(cols, recon.l0_sum, acfg.split)
        selection = selection_summary(cols, top, bottom, acfg, dead_split_name(acfg), units, activation_units)
        if selection["shortfall"]:
            log.warning("%s: selection %s", cell_name, selection["shortfall"])
        selected, groups = top + bottom, ["top"] * len(top) + ["bottom"] * len(bottom)
        start = time.perf_counter()
        after_dead_pass: Progress = lambda d, t, info: progress(d + extra, t, info)  # noqa: E731
        # scope=sample: random eligible features, labelled and scored as their own group; they get
        # examples and windows from this pass but stay out of the correlation (the study's 2k).
        sample = random_sample(cols["selectivity"], selected, cfg.labeling, cfg.training.seed)
        labelled, labelled_groups = selected + sample, groups + ["sample"] * len(sample)
        sampler = scoring_sampler(cfg, len(labelled), device)
        collector, pearson = second_pass(
            store,
            sae,
            acfg,
            labelled,
            n_tokens,
            device,
            after_dead_pass,
            total,
            cfg.training.seed,
            [sampler],
            correlated=len(selected),
        )
        timings["pass2_s"] = time.perf_counter() - start
        start = time.perf_counter()
        example_rows = collector.examples(labelled, labelled_groups)
        scoring, scoring_doc = scoring_windows(
            store, sae, acfg, cfg, sampler, labelled, example_rows, docs, n_tokens, device
        )
        timings["scoring_windows_s"] = time.perf_counter() - start
        start = time.perf_counter()
        neighbor_ids, neighbor_cos = nearest_neighbors(sae.W_dec, acfg.neighbors)
        timings["neighbors_s"] = time.perf_counter() - start

    start = time.perf_counter()
    decoder = TokenDecoder(store.tokenizer_path)  # loaded once: the selected and every feature's examples
    examples = attach_contexts(example_rows, docs, acfg.context_window, decoder)
    scoring_table_ = scoring(decoder)
    corr = pearson.correlation()
    cosine = decoder_cosine(sae.W_dec.detach(), selected) if selected else np.zeros((0, 0))
    order, clusters = cluster_order(corr)
    duplicate_of = near_duplicates(selected, corr, cosine)
    timings["examples_correlation_s"] = time.perf_counter() - start
    start = time.perf_counter()
    top_examples = every_top.table()
    documents, vocab = example_documents(top_examples, docs, decoder)
    timings["examples_all_features_s"] = time.perf_counter() - start

    start = time.perf_counter()
    ce, ce_note = run_ce_loss(sae, store, cfg, ce_docs, progress, done=2 * n_tokens + extra, total=total)
    timings["ce_loss_s"] = time.perf_counter() - start

    features = run_dir / "features"
    title = f"{cell_name} — {acfg.split}, {n_tokens} tokens"
    atomic_write_with(features / "feature_stats.parquet", lambda p: pq.write_table(stats_table, p))
    atomic_write_json(
        features / "selected.json",
        {
            "top": top,
            "bottom": bottom,
            "min_activations": acfg.min_activations,
            "min_activations_counted_on": dead_split_name(acfg),
            "threshold": acfg.dead_threshold,
            "top_k_features": acfg.top_k_features,
            "eligible": selection["eligible"],
            "asked": selection["asked"],
            "shortfall": selection["shortfall"],
            "activation_units": activation_units,
            "selectivity": "mean activation over firing tokens / ln(count + 1)",
            "split": acfg.split,
            "tokens_analyzed": n_tokens,
            "duplicate_of": {str(k): v for k, v in duplicate_of.items()},
            "duplicate_rule": DUPLICATE_RULE,
            "context_window": acfg.context_window,
            **({"sample": sample, "sample_rule": SAMPLE_RULE} if cfg.labeling.scope == "sample" else {}),
        },
    )
    atomic_write_with(features / "examples.parquet", lambda p: pq.write_table(examples, p))
    atomic_write_with(features / "top_examples.parquet", lambda p: pq.write_table(top_examples, p))
    atomic_write_with(features / "scoring_examples.parquet", lambda p: pq.write_table(scoring_table_, p))
    atomic_write_with(features / "example_documents.parquet", lambda p: pq.write_table(documents, p))
    atomic_write_with(features / "example_vocab.parquet", lambda p: pq.write_table(vocab, p))
    atomic_write_json(
        features / "correlation.json",
        {
            "ids": selected,
            "groups": groups,
            "pearson": _json_matrix(corr),
            "decoder_cosine": _json_matrix(cosine),
            "order": order,
            "ordered_ids": [selected[i] for i in order],
            "clusters": clusters,
            "duplicate_of": {str(k): v for k, v in duplicate_of.items()},
            "clustering": "average linkage on 1 − Pearson, optimal leaf order; clusters cut at 2",
            "tokens": n_tokens,
        },
    )
    neighbors = pa.Table.from_arrays(
        [
            pa.array(np.arange(sae.d_hidden, dtype=np.int32)),
            pa.array(list(neighbor_ids), type=pa.list_(pa.int32())),
            pa.array(list(neighbor_cos), type=pa.list_(pa.float32())),
        ],
        schema=NEIGHBORS_SCHEMA,
    )
    atomic_write_with(features / "neighbors.parquet", lambda p: pq.write_table(neighbors, p))
    if selected:
        plot_correlation(features / "correlation.png", selected, groups, corr, cosine, order, title)
    plot_density(
        features / "density.png",
        cols["density"],
        cols["dead"],
        cols["hist"].sum(0),
        histogram_edges(acfg.dead_threshold),
        title,
    )

    recon_summary = recon.summary()
    carrier_tokens = decoder.tokens([int(t) for t in carriers.meta[:, 2]])
    dead_count = int(cols["dead"].sum())
    summary: dict[str, Any] = {
        "format": ANALYSIS_FORMAT,
        "cell": cell_name,
        "split": acfg.split,
        "tokens_analyzed": n_tokens,
        "d_in": sae.d_in,
        "d_hidden": sae.d_hidden,
        "activation_units": activation_units,
        "dead_threshold": acfg.dead_threshold,
        "dead_split": dead_split_name(acfg),
        "dead_tokens": dead_tokens,
        "dead_count": dead_count,
        "dead_fraction": dead_count / sae.d_hidden,
        **units,
        "units": units_doc(acfg, dead_split_name(acfg), activation_units),
        "training_dead_fraction": _training_dead_fraction(metrics)[0],
        **{k: finite_or_none(v) for k, v in recon_summary.items()},
        "ce_loss": None if ce is None else {k: _json_value(v) for k, v in ce.items()},
        "ce_loss_note": ce_note,
        "ce_loss_tokens": CE_TOKEN_SET,
        "error_carriers": carriers.summary(recon, carrier_tokens),
        "histogram_edges": histogram_edges(acfg.dead_threshold).tolist(),
        "selected": {"top": top, "bottom": bottom},
        "selection": selection,
        "scoring_examples": scoring_summary(scoring_table_, scoring_doc, acfg.split, n_tokens),
        "store": str(store.path),
        "drop_first_token": store.drop_first_token,
        "left_out": {split: store.left_out_counts(split) for split in SPLITS},
        "left_out_note": LEFT_OUT_NOTE,
        "timings_s": timings,
        "code_version": code_version(),
    }
    atomic_write_json(RunDir(run_dir).analysis, summary)
    log.info(
        "%s: %s %s (never fired %s), L0 %.1f, explained variance %s, CE recovered %s",
        cell_name,
        dead_caption(acfg.dead_threshold, summary["dead_split"]),
        pct(summary["dead_fraction"]),
        pct(summary["never_fired_fraction"]),
        summary["l0"] or 0,
        summary["explained_variance"],
        None if ce is None else ce["recovered"],
    )
    return summary


# ---------------------------------------------------------------------------------------------
# Inputs


def load_sae(run_dir: Path) -> tuple[Any, Metrics | None]:
    """The SAE (`model_weights_*.pth`, of the architecture its keys name) and metrics.json (None when
    absent) of a run dir; AnalysisError naming the path when either is unusable."""
    from sae_core.saes.registry import load_any

    if not run_dir.is_dir():
        raise AnalysisError(f"run: no such run directory {str(run_dir)!r}")
    weights = _weights_file(run_dir)
    try:
        sae = load_any(weights)
    except (OSError, RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as exc:
        raise AnalysisError(f"run: cannot load the SAE weights {weights} ({exc})") from None
    try:
        metrics = read_metrics(run_dir)
    except RunFileError as exc:
        raise AnalysisError(f"run: {exc}") from None
    return sae, metrics


def _weights_file(run_dir: Path) -> Path:
    """The cell's own weights name when the directory is named after a cell, else the only .pth."""
    try:
        named = run_dir / Cell.parse(run_dir.name).weights_filename
        if named.is_file():
            return named
    except ValueError:
        pass
    found = RunDir(run_dir).weight_files()
    if not found:
        raise AnalysisError(f"run: {run_dir} holds no model_weights_*.pth (train the cell first)")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise AnalysisError(f"run: {run_dir} holds several weight files ({names}); which cell is it?")
    return found[0]


def _check_config(acfg: AnalysisConfig) -> None:
    # The config model already refuses these; a config built without validation must not slip through.
    if not acfg.dead_threshold >= 0:
        raise AnalysisError(f"analysis.dead_threshold: must be >= 0 (got {acfg.dead_threshold})")
    if acfg.batch_size <= 0:
        raise AnalysisError(f"analysis.batch_size: must be > 0 (got {acfg.batch_size})")


def _cell_name(run_dir: Path, metrics: Metrics | None) -> str:
    try:
        return Cell.parse(run_dir.name).name
    except ValueError:
        return (metrics.cell if metrics is not None else None) or run_dir.name


def _json_value(value: Any) -> Any:
    return finite_or_none(value) if isinstance(value, float) else value


def _json_matrix(matrix: np.ndarray) -> list[list[float | None]]:
    return [[finite_or_none(float(v)) for v in row] for row in matrix]
