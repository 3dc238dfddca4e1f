"""What the labeller reads and writes: the selected features and their examples from the analysis, the
labels (`labels.parquet`, `labels.json`) and the monosemanticity rate.

Monosemanticity rate = 1 − polysemantic / labelled, where `labelled` counts the features that got a
label (status `ok`) that the labeller-health check did not flag (`sae_core.labels.health`: a copy of a
worked example, one label on many unrelated features, over the character limit). Beside it, the
conservative rate 1 − (polysemantic + failed) / (labelled + failed) counts every failed AND every
flagged feature as polysemantic: failures are not random (long, hedging answers come from messy
features), so leaving them out can only flatter the rate; the truth lies between the two.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sae_core.errors import LabelingError
from sae_core.io import atomic_write_json, atomic_write_with
from sae_core.labels.prompt import LabelExample
from sae_core.labels.scoring import ScoringWindow
from sae_core.rundir import LABELS_FORMAT, RunDir, RunFileError, read_selected

log = logging.getLogger(__name__)

SCORE_FIELDS = ("tp", "tn", "fp", "fn", "failed", "failed_positive", "balanced_accuracy")
"""Per scorer (`detection_*`, `fuzzing_*`): counts over held-out windows, `failed` = windows without a
usable prediction (counted wrong), `failed_positive` = those of them that were activating."""
SCORE_COLUMNS = [
    (f"{scorer}_{name}", pa.float64() if name == "balanced_accuracy" else pa.int32())
    for scorer in ("detection", "fuzzing")
    for name in SCORE_FIELDS
]

LABEL_COLUMNS = pa.schema(
    [
        ("feature_id", pa.int32()),
        ("group", pa.string()),
        ("label", pa.string()),
        ("reasoning", pa.string()),
        ("polysemantic", pa.bool_()),
        ("model", pa.string()),
        ("prompt_version", pa.string()),
        ("attempts", pa.int32()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("examples_hash", pa.string()),
        ("detection_accuracy", pa.float64()),
        ("explanation", pa.string()),
        ("health", pa.string()),
        *SCORE_COLUMNS,
    ]
)
EXAMPLE_COLUMNS = ("feature_id", "group", "kind", "rank", "activation", "context_text")


# ---------------------------------------------------------------------------------------------
# Inputs: selected.json + examples.parquet


@dataclass(frozen=True)
class FeatureInputs:
    feature_id: int
    groups: tuple[str, ...]
    """`top` and/or `bottom` (a feature can be in both when few features qualify), or `sample` (a random
    eligible feature, `labeling.scope: sample`)."""
    examples: tuple[LabelExample, ...]
    """Top-activating contexts shown in the prompt, highest first."""
    heldout: tuple[LabelExample, ...] = field(default=())
    """Activating contexts NOT shown in the prompt (quantile examples, extra top ones): for detection."""


@dataclass(frozen=True)
class LabelInputs:
    run_dir: Path
    features: tuple[FeatureInputs, ...]


def load_label_inputs(run_dir: str | Path, examples_per_prompt: int = 25) -> LabelInputs:
    """Read `features/selected.json` and `features/examples.parquet`; a missing file or column is a
    `LabelingError` naming it. Features appear in selection order, top group first."""
    run = Path(run_dir)
    selected_path = run / "features" / "selected.json"
    examples_path = run / "features" / "examples.parquet"
    selected = read_selected(run)  # a RunFileError naming the file when it is not a selection
    if selected is None:
        raise LabelingError(f"{selected_path}: missing — run the analysis stage on this run first")
    order: dict[int, list[str]] = {}
    for group in ("top", "bottom", "sample"):
        ids = getattr(selected, group)
        if group == "sample" and ids is None:  # labeling.scope: selected (the default)
            continue
        if ids is None:
            raise LabelingError(f"{selected_path}: '{group}' is missing — analyse the cell again")
        for fid in ids:
            order.setdefault(int(fid), []).append(group)
    if not order:
        return LabelInputs(run, ())
    if not examples_path.is_file():
        raise LabelingError(f"{examples_path}: missing — run the analysis stage on this run first")
    try:
        df = pq.read_table(examples_path).to_pandas()
    except (pa.ArrowInvalid, OSError) as exc:
        raise LabelingError(f"{examples_path}: not a readable Parquet file ({exc})") from None
    missing = [c for c in EXAMPLE_COLUMNS if c not in df.columns]
    if missing:
        raise LabelingError(f"{examples_path}: missing columns {missing} (has {list(df.columns)})")
    df = df[df["feature_id"].isin(list(order))]
    by_feature = {int(fid): part for fid, part in df.groupby("feature_id", sort=False)}
    features = []
    for fid, groups in order.items():
        part = by_feature.get(fid)
        if part is None:
            features.append(FeatureInputs(fid, tuple(groups), ()))
            continue
        part = part.drop_duplicates(subset=["kind", "rank"])  # a feature listed in both groups
        top = part[part["kind"] == "top"].sort_values(["activation", "rank"], ascending=[False, True])
        rest = part[part["kind"] != "top"]
        shown = [_example(r) for r in top.head(examples_per_prompt).itertuples()]
        heldout = [_example(r) for r in top.iloc[examples_per_prompt:].itertuples()]
        heldout += [_example(r) for r in rest.itertuples()]
        features.append(FeatureInputs(fid, tuple(groups), tuple(shown), tuple(heldout)))
    return LabelInputs(run, tuple(features))


def _example(row: Any) -> LabelExample:
    return LabelExample(str(row.context_text), float(row.activation))


def examples_hash(examples: Sequence[LabelExample]) -> str:
    """sha256 (16 hex) over exactly what the prompt shows: each context and its activation (2 d.p.)."""
    payload = json.dumps([[e.context_text, f"{e.activation:.2f}"] for e in examples], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# The rate and the output files


def conservative_rate(labelled: int, polysemantic: int, failed: int) -> float | None:
    """1 − (polysemantic + failed) / (labelled + failed): every failed feature counted polysemantic."""
    counted = labelled + failed
    return None if counted == 0 else 1.0 - (polysemantic + failed) / counted


def _flagged(rows: pd.DataFrame) -> pd.Series:
    if "health" not in rows.columns:
        return pd.Series(False, index=rows.index)
    return (rows["status"] == "ok") & rows["health"].fillna("").astype(str).ne("")


def _rate(rows: pd.DataFrame) -> dict[str, Any]:
    flagged = _flagged(rows)
    ok = rows[(rows["status"] == "ok") & ~flagged]
    labelled = len(ok)
    poly = int(ok["polysemantic"].fillna(False).astype(bool).sum())
    failed = int((rows["status"] == "failed").sum())
    n_flagged = int(flagged.sum())
    return {
        "rate": None if labelled == 0 else 1.0 - poly / labelled,
        "rate_conservative": conservative_rate(labelled, poly, failed + n_flagged),
        "labelled": labelled,
        "polysemantic": poly,
        "failed": failed,
        "flagged": n_flagged,
    }


def scores_by_verdict(labels_df: pd.DataFrame) -> dict[str, Any]:
    """Mean detection and fuzzing balanced accuracy of the unflagged features labelled monosemantic
    and of those labelled polysemantic (scored on their closest explanation), each with the number of
    features it rests on (one row per feature: a feature in both groups counts once)."""
    rows = labels_df[(labels_df["status"] == "ok") & ~_flagged(labels_df)].drop_duplicates("feature_id")
    out: dict[str, Any] = {}
    for verdict, part in (
        ("monosemantic", rows[~rows["polysemantic"].fillna(False).astype(bool)]),
        ("polysemantic", rows[rows["polysemantic"].fillna(False).astype(bool)]),
    ):
        entry: dict[str, Any] = {"features": len(part)}
        for scorer in ("detection", "fuzzing"):
            column = f"{scorer}_balanced_accuracy"
            values = part[column].dropna() if column in part.columns else pd.Series(dtype=float)
            entry[scorer] = float(values.mean()) if len(values) else None
            entry[f"{scorer}_features"] = len(values)
        out[verdict] = entry
    return out


def monosemanticity(labels_df: pd.DataFrame) -> dict[str, Any]:
    """1 − polysemantic / labelled overall and per group (None when nothing was labelled), the
    conservative rate beside each (failed features counted polysemantic; None when there is no
    feature), the counts, the numbers failed and flagged; `detection_accuracy` is the mean detection
    balanced accuracy over features that have one, `scores` the means by verdict. Rows of the `sample`
    group (labeling.scope: sample) are left out of these and reported as `groups.sample`,
    `rate_sample`, `rate_sample_conservative` and `scores_sample`."""
    sample = labels_df[labels_df["group"] == "sample"]
    labels_df = labels_df[labels_df["group"] != "sample"]  # the study's figures: top and bottom only
    overall = _rate(labels_df)
    groups = {g: _rate(labels_df[labels_df["group"] == g]) for g in ("top", "bottom")}
    extra: dict[str, Any] = {}
    if len(sample):  # labeling.scope: sample — a random group, reported apart
        groups["sample"] = _rate(sample)
        extra = {
            "rate_sample": groups["sample"]["rate"],
            "rate_sample_conservative": groups["sample"]["rate_conservative"],
            "scores_sample": scores_by_verdict(sample),
        }
    det = labels_df.loc[labels_df["status"] == "ok", "detection_accuracy"].dropna()
    return {
        "monosemanticity_rate": overall["rate"],
        "monosemanticity_rate_conservative": overall["rate_conservative"],
        "rate_top": groups["top"]["rate"],
        "rate_bottom": groups["bottom"]["rate"],
        "rate_top_conservative": groups["top"]["rate_conservative"],
        "rate_bottom_conservative": groups["bottom"]["rate_conservative"],
        "labelled": overall["labelled"],
        "polysemantic": overall["polysemantic"],
        "failed": overall["failed"],
        "flagged": overall["flagged"],
        "groups": groups,
        "detection_accuracy": float(det.mean()) if len(det) else None,
        "scores": scores_by_verdict(labels_df),
        **extra,
    }


def labels_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows (dicts with the labels.parquet columns) as a DataFrame in the contract's column order."""
    table = pa.Table.from_pylist([{c: r.get(c) for c in LABEL_COLUMNS.names} for r in rows], LABEL_COLUMNS)
    return table.to_pandas()


def selection_counts(run_dir: str | Path) -> dict[str, Any] | None:
    """The analysis's selection as labels.json carries it: how many features were asked for, how many
    qualified and were selected, and why fewer (selected.json's `shortfall`; None when full). None
    when selected.json is absent or unreadable (labels then say nothing about the selection)."""
    try:
        doc = read_selected(Path(run_dir))
    except RunFileError:
        return None
    if doc is None:
        return None
    ids = [*(doc.top or []), *(doc.bottom or [])]
    return {
        "asked": doc.asked,
        "selected": len(set(ids)),
        "eligible": doc.eligible,
        "shortfall": doc.shortfall,
    }


def write_labels(run_dir: str | Path, rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> Path:
    """Write `labels.parquet` (unless the summary says the stage was skipped; possibly with no rows) and
    `labels.json`, each atomically. labels.json carries the selection's counts and the reason it is
    short (`selection`), so a cell with nothing to label says why; it is added to `summary` in place,
    so the caller returns what the file holds."""
    run = Path(run_dir)
    summary.setdefault("format", LABELS_FORMAT)
    selection = selection_counts(run)
    if selection is not None:
        summary["selection"] = selection
        if selection["shortfall"]:
            log.warning("labels for %s: selection %s", run.name, selection["shortfall"])
    if not summary.get("skipped_reason"):
        table = pa.Table.from_pylist(
            [{c: r.get(c) for c in LABEL_COLUMNS.names} for r in rows], LABEL_COLUMNS
        )
        atomic_write_with(RunDir(run).labels_parquet, lambda tmp: pq.write_table(table, tmp))
    atomic_write_json(RunDir(run).labels, summary)
    return RunDir(run).labels


# ---------------------------------------------------------------------------------------------
# Held-out scoring windows: features/scoring_examples.parquet (written by the analysis)

SCORING_FILE = "scoring_examples.parquet"
SCORING_COLUMNS = ("feature_id", "kind", "tokens", "firing")


def load_scoring_windows(run_dir: str | Path) -> dict[int, list[ScoringWindow]] | str:
    """Each selected feature's held-out windows, or a sentence saying why there are none (an analysis
    from before they were saved, or a file without the columns)."""
    path = Path(run_dir) / "features" / SCORING_FILE
    if not path.is_file():
        return f"{path} is missing (an analysis from before scoring windows were saved): re-run the analysis"
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        return f"{path}: not a readable Parquet file ({exc})"
    missing = [c for c in SCORING_COLUMNS if c not in table.column_names]
    if missing:
        return f"{path}: missing columns {missing}"
    out: dict[int, list[ScoringWindow]] = {}
    for row in table.select(list(SCORING_COLUMNS)).to_pylist():
        window = ScoringWindow(
            tuple(row["tokens"]), tuple(bool(f) for f in row["firing"]), row["kind"] == "activating"
        )
        out.setdefault(int(row["feature_id"]), []).append(window)
    return out
