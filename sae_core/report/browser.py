"""The feature browser: one self-contained static HTML page per cell (`run_dir/browser.html`).

The page needs no server and no network (no CDN): the data is embedded as JSON in the page and the
code is plain JavaScript (`sae_core/report/templates/browser.html`), so it opens from disk or from the Hub.
It lists every feature (sortable, searchable, virtualised: only visible rows exist in the DOM, so
24,576 features stay fast) and shows one feature at a time: label and reasoning, statistics, the
activation histogram, top and quantile examples with the token highlighted in proportion to its
activation, and the most correlated / nearest features as links.

Inputs are the analysis and labelling files of docs/architecture.md; only `features/feature_stats.parquet`
is required, every other file may be absent (the page then says so).
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from sae_core.encoding import script_json
from sae_core.errors import ReportError
from sae_core.io import atomic_write_text
from sae_core.naming import Cell
from sae_core.rundir import (
    ANALYSIS,
    BROWSER,
    LABELS,
    LABELS_PARQUET,
    Analysis,
    Labels,
    RunDir,
    RunFileError,
    Selected,
    dead_caption,
    dead_token_set,
    read_analysis,
    read_labels,
    read_selected,
    units_text,
)

log = logging.getLogger(__name__)

BROWSER_FILENAME = BROWSER
PLACEHOLDER = "__SAE_BROWSER_DATA__"
EXAMPLES_PLACEHOLDER = "__SAE_BROWSER_EXAMPLES__"
CORRELATED_SHOWN = 8
"""How many most-correlated features (|Pearson r| among the selected ones) a feature panel lists."""


def write_browser(run_dir: str | Path) -> Path:
    """Write `run_dir/browser.html` from the cell's analysis (and labels when present); return its path."""
    run_dir = Path(run_dir)
    payload = browser_data(run_dir)
    template = (resources.files("sae_core.report") / "templates" / "browser.html").read_text(encoding="utf-8")
    for placeholder in (PLACEHOLDER, EXAMPLES_PLACEHOLDER):
        if placeholder not in template:
            raise ReportError(f"browser template: placeholder {placeholder} not found")
    # Every feature's examples go in a second script element, parsed when a feature is first opened:
    # the list of 24,576 features appears without waiting for them.
    every = every_feature_examples(run_dir / "features", skip=set(payload["examples"]))
    page = template.replace(PLACEHOLDER, script_json(payload), 1)
    page = page.replace(EXAMPLES_PLACEHOLDER, script_json(every), 1)
    out = run_dir / BROWSER_FILENAME
    atomic_write_text(out, page)
    log.info("browser: %d features → %s", len(payload["f"]["id"]), out)
    return out


BROWSER_INPUTS = (
    "features/feature_stats.parquet",
    "features/examples.parquet",
    "features/top_examples.parquet",
    "features/neighbors.parquet",
    "features/correlation.json",
    ANALYSIS,
    BROWSER,
    LABELS_PARQUET,
    LABELS,
)


def write_browsers(sweep_dir: str | Path, *, only_stale: bool = True) -> dict[str, Path]:
    """A browser for every analysed cell of a sweep (by default only where the page is absent or older
    than its inputs); a cell whose page cannot be built is logged and left out. Returns cell → page."""
    pages: dict[str, Path] = {}
    root = Path(sweep_dir)
    for run in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        try:
            Cell.parse(run.name)
        except ValueError:
            continue
        if not (run / BROWSER_INPUTS[0]).is_file():
            continue
        page = run / BROWSER_FILENAME
        if only_stale and not _stale(run, page):
            pages[run.name] = page
            continue
        try:
            pages[run.name] = write_browser(run)
        except ReportError as exc:
            log.warning("browser: %s skipped: %s", run.name, exc)
    return pages


def _stale(run: Path, page: Path) -> bool:
    if not page.is_file():
        return True
    built = page.stat().st_mtime
    return any((run / name).is_file() and (run / name).stat().st_mtime > built for name in BROWSER_INPUTS)


def browser_data(run_dir: Path) -> dict[str, Any]:
    """Everything the page shows, JSON-able (NaN → null), features as columns aligned by row."""
    if not run_dir.is_dir():
        raise ReportError(f"run_dir: no such directory {str(run_dir)!r}")
    stats_path = run_dir / "features" / "feature_stats.parquet"
    if not stats_path.is_file():
        raise ReportError(
            f"run_dir: {str(stats_path)!r} is missing; run the analysis first (sae-sweep analyze)"
        )
    try:
        stats = pq.read_table(stats_path)
    except Exception as exc:
        raise ReportError(f"run_dir: cannot read {str(stats_path)!r} ({exc})") from exc
    needed = {"feature_id", "count", "mean", "max", "density", "selectivity", "dead"}
    if missing := sorted(needed - set(stats.column_names)):
        raise ReportError(f"run_dir: {str(stats_path)!r} lacks columns {missing}")

    analysis = _optional(read_analysis, RunDir(run_dir)) or Analysis()
    labels_summary = _optional(read_labels, RunDir(run_dir))
    selected = _selected(run_dir)
    ids = stats.column("feature_id").to_numpy(zero_copy_only=False).astype(np.int64)
    features = {
        "id": ids.tolist(),
        "count": stats.column("count").to_numpy(zero_copy_only=False).astype(np.int64).tolist(),
        "mean": _floats(stats.column("mean")),
        "max": _floats(stats.column("max")),
        "density": _floats(stats.column("density")),
        "sel": _floats(stats.column("selectivity")),
        "dead": stats.column("dead").to_numpy(zero_copy_only=False).astype(int).tolist(),
    }
    hist = None
    if "hist" in stats.column_names:
        # An all-zero histogram (dead features) is sent as 0 to keep the page small.
        hist = [h if h and any(h) else 0 for h in stats.column("hist").to_pylist()]
    groups = {str(i): g for g in ("top", "bottom") for i in getattr(selected, g) or []}
    return {
        "cell": _cell_name(run_dir, analysis),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "summary": _summary(analysis, labels_summary, len(ids)),
        "edges": _clean(analysis.histogram_edges),
        "f": features,
        "hist": hist,
        "groups": groups,
        "labels": _labels(RunDir(run_dir).labels_parquet),
        "examples": _examples(run_dir / "features" / "examples.parquet"),
        "nb": _neighbors(run_dir / "features" / "neighbors.parquet"),
        "corr": _correlated(run_dir / "features" / "correlation.json"),
        "dup": {str(k): int(v) for k, v in (selected.duplicate_of or {}).items()},
        "dup_rule": selected.duplicate_rule,
    }


def _cell_name(run_dir: Path, analysis: Analysis) -> str:
    try:
        return Cell.parse(run_dir.name).name
    except ValueError:
        return analysis.cell or run_dir.name


def _optional(reader: Any, run: RunDir) -> Any:
    """A run file through its `sae_core.rundir` reader, or None (logged: the error names the file and
    what to do) when it cannot be read: one bad optional file must not sink the page."""
    try:
        return reader(run)
    except RunFileError as exc:
        log.warning("browser: %s", exc)
        return None


def _selected(run_dir: Path) -> Selected:
    """features/selected.json through its reader; an empty selection when it is absent or unreadable."""
    return _optional(read_selected, RunDir(run_dir)) or Selected()


def _json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("browser: cannot read %s: %s", path, exc)
        return None
    return value if isinstance(value, dict) else None


def _round(x: float) -> float | None:
    """5 significant digits (the page shows 4); NaN/inf → None."""
    return float(f"{x:.5g}") if math.isfinite(x) else None


def _floats(column: Any) -> list[float | None]:
    values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    return [_round(v) for v in values.tolist()]


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return _round(value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def _summary(analysis: Analysis, labels: Labels | None, n: int) -> dict[str, Any]:
    """The page header's figures (each once; an absent one is null and the page shows —)."""
    summary: dict[str, Any] = {
        "dead_fraction": _clean(analysis.dead_fraction),
        "training_dead_fraction": _clean(analysis.training_dead_fraction),
        "l0": _clean(analysis.l0),
        "explained_variance": _clean(analysis.explained_variance),
        "tokens_analyzed": analysis.tokens_analyzed,
        "dead_threshold": _clean(analysis.dead_threshold),
        "dead_split": analysis.dead_split,
        "split": analysis.split,
        "dead_tokens": analysis.dead_tokens,
    }
    caption = dead_caption(summary["dead_threshold"], dead_token_set(analysis))
    # The threshold and the activations shown are in the stored activations' units: say which.
    summary["dead_caption"] = f"{caption[:-1]}; {units_text(analysis.activation_units)})"
    ce = analysis.ce_loss
    summary["ce_recovered"] = _clean(ce.recovered) if ce is not None else None
    summary["features"] = n
    if labels is None:
        summary["labels"] = "missing"
    elif labels.skipped_reason:
        summary["labels"] = f"skipped ({labels.skipped_reason})"
    else:
        summary["labels"] = "ok"
        summary["monosemanticity_rate"] = _clean(labels.monosemanticity_rate)
    return summary


def _read(path: Path, columns: list[str]) -> dict[str, list[Any]] | None:
    """Selected columns of a Parquet file as Python lists; None (logged) when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # one bad optional file must not sink the page
        log.warning("browser: cannot read %s: %s", path, exc)
        return None
    present = [c for c in columns if c in table.column_names]
    return {c: table.column(c).to_pylist() for c in present} | {"_rows": [table.num_rows]}


def _labels(path: Path) -> dict[str, dict[str, Any]]:
    cols = _read(path, ["feature_id", "group", "label", "reasoning", "polysemantic", "status", "error"])
    if not cols or "feature_id" not in cols:
        return {}
    out = {}
    for i, fid in enumerate(cols["feature_id"]):
        out[str(fid)] = {k: cols[k][i] for k in cols if k not in ("feature_id", "_rows")}
    return out


def _examples(path: Path) -> dict[str, list[dict[str, Any]]]:
    wanted = ["feature_id", "kind", "rank", "activation", "doc_id", "pos", "context_tokens", "marked_index"]
    cols = _read(path, wanted)
    if not cols or not {"feature_id", "context_tokens", "marked_index", "activation"} <= set(cols):
        return {}
    n = cols["_rows"][0]
    kind, rank = cols.get("kind", ["top"] * n), cols.get("rank", list(range(n)))
    doc, pos = cols.get("doc_id", [None] * n), cols.get("pos", [None] * n)
    out: dict[str, list[dict[str, Any]]] = {}
    for i, fid in enumerate(cols["feature_id"]):
        out.setdefault(str(fid), []).append(
            {
                "k": kind[i],
                "r": rank[i],
                "a": _round(float(cols["activation"][i])),
                "t": cols["context_tokens"][i],
                "m": cols["marked_index"][i],
                "d": doc[i],
                "p": pos[i],
            }
        )
    for examples in out.values():
        examples.sort(key=lambda e: (e["k"] != "top", e["r"]))
    return out


def _neighbors(path: Path) -> dict[str, list[list[float | None]]]:
    cols = _read(path, ["feature_id", "neighbor_ids", "cosine"])
    if not cols or not {"feature_id", "neighbor_ids", "cosine"} <= set(cols):
        return {}
    return {
        str(fid): [[int(n), _round(float(c))] for n, c in zip(nbrs or [], cos or [], strict=False)]
        for fid, nbrs, cos in zip(cols["feature_id"], cols["neighbor_ids"], cols["cosine"], strict=True)
    }


def _correlated(path: Path) -> dict[str, list[list[float | None]]]:
    """For each feature in the correlation matrix, the others with the largest |Pearson r|."""
    doc = _json(path)
    if not doc:
        return {}
    ids = doc.get("ids") or doc.get("feature_ids")
    matrix = doc.get("pearson") if doc.get("pearson") is not None else doc.get("correlation")
    if not ids or matrix is None:
        return {}
    try:
        r = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        return {}
    if r.shape != (len(ids), len(ids)):
        log.warning("browser: %s matrix shape %s does not match %d ids", path, r.shape, len(ids))
        return {}
    out = {}
    for i, fid in enumerate(ids):
        strength = np.where(np.isfinite(r[i]), np.abs(r[i]), -1.0)
        strength[i] = -1.0
        order = [j for j in np.argsort(-strength, kind="stable")[:CORRELATED_SHOWN] if strength[j] >= 0]
        out[str(fid)] = [[int(ids[j]), _round(float(r[i, j]))] for j in order]
    return out


def every_feature_examples(features: Path, skip: set[str]) -> dict[str, Any]:
    """Every alive feature's top examples, compactly: per feature one string `act doc pos|…` (rank
    order), the cited documents as indices into one vocabulary of decoded tokens, and the context
    window; the page slices each context out of its document. Features in `skip` (the selected ones,
    whose examples with quantiles are in the main payload) are left out. Empty when the analysis
    predates `top_examples.parquet`."""
    paths = [
        features / n for n in ("top_examples.parquet", "example_documents.parquet", "example_vocab.parquet")
    ]
    if not all(p.is_file() for p in paths):
        return {}
    try:
        top, docs, vocab = (pq.read_table(p) for p in paths)
    except Exception as exc:  # one bad optional file must not sink the page
        log.warning("browser: cannot read every feature's examples in %s: %s", features, exc)
        return {}
    token_ids = vocab.column("token_id").to_numpy()
    index = {int(t): i for i, t in enumerate(token_ids.tolist())}
    documents = {
        str(d): [index[int(t)] for t in ids]
        for d, ids in zip(
            docs.column("doc_id").to_pylist(), docs.column("token_ids").to_pylist(), strict=True
        )
    }
    fid, act = top.column("feature_id").to_numpy(), top.column("activation").to_numpy()
    doc, pos = top.column("doc_id").to_numpy(), top.column("pos").to_numpy()
    parts: dict[str, list[str]] = {}
    for f, a, d, p in zip(fid.tolist(), act.tolist(), doc.tolist(), pos.tolist(), strict=True):
        key = str(f)
        if key not in skip:
            parts.setdefault(key, []).append(f"{a:.4g} {d} {p}")
    window = _selected(features.parent).context_window
    return {
        "w": int(window if window is not None else 10),
        "vocab": vocab.column("token").to_pylist(),
        "docs": documents,
        "ax": {key: "|".join(rows) for key, rows in parts.items()},
    }
