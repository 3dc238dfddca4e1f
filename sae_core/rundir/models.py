"""Typed models of a run directory's JSON files — metrics.json (training), analysis.json and
features/selected.json (analysis), labels.json (labelling) — and their one reader each.

Every key the writers write is a field (`sae_core.training.run_cell.finish_cell`,
`sae_core.analysis.driver.analyze_run`, `sae_core.labels.files.write_labels`). Each file carries its
`format`; a file without one is format 1 (written before the key existed) and reads as before, its
legacy keys included (`dead_fraction_train`, an analysis without `dead_split`, labels without the
conservative rates: see `sae_core.rundir.dead` and the report). Every field may be absent (None), so an
old or partial file reads and each consumer says what is missing; keys a later version adds are kept
(`extra="allow"`) and ignored by the readers. A file that is not JSON, not an object, of a field of the
wrong type or of a newer format than this code reads is a `RunFileError`: one line naming the file and
what to do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from sae_core.errors import SaeSweepError
from sae_core.rundir.paths import RunDir

METRICS_FORMAT = 2
"""metrics.json: 1 = no `format` key (older runs; `dead_fraction_train` where later runs have
`training_dead_fraction`); 2 = `format` written."""
ANALYSIS_FORMAT = 2
"""analysis.json: 1 = no `format` key (older analyses, perhaps without `dead_split` or the units); 2 =
`format` written."""
LABELS_FORMAT = 2
"""labels.json: 1 = no `format` key (older labels, perhaps without the conservative rates); 2 = `format`
written."""
SELECTED_FORMAT = 1
"""features/selected.json: 1 (no `format` key written yet)."""


class RunFileError(SaeSweepError):
    """A run directory's file that cannot be read as its model: one line naming it and what to do."""


class _File(BaseModel):
    """Tolerant of keys added later (kept, ignored by the readers); strict about the types it names."""

    model_config = ConfigDict(extra="allow")

    def to_json(self) -> dict[str, Any]:
        """The file's content as read (the keys it had, unknown ones included)."""
        return self.model_dump(mode="json", exclude_unset=True)


class _Part(_File):
    """A nested object of a run file."""


class _Versioned(_File):
    """A whole run file: its `format` (1 when the file predates the key)."""

    format: int = 1


# ---------------------------------------------------------------------------------------------
# metrics.json


class Evaluation(_Part):
    """metrics.json's `final` (training tokens) or `val` (val tokens) figures."""

    loss: float | None = None
    mse: float | None = None
    l1: float | None = None
    l0: float | None = None
    explained_variance: float | None = None
    never_fired_fraction: float | None = None


class ResampleEvent(_Part):
    step: int | None = None
    neurons: int | None = None


class Normalization(_Part):
    """A normalised run's `normalization`: the scale s it trained at and how it was measured."""

    rule: str | None = None
    scale: float | None = None
    mean_norm_raw: float | None = None
    measured_on: str | None = None
    folded_into_exports: bool | None = None


class Metrics(_Versioned):
    """metrics.json: a trained cell (written last by training; `completed` marks the run done)."""

    architecture: str | None = None
    """The architecture by its registry name (absent before it was recorded: relu, or read from the .pth)."""
    cell: str | None = None
    d_in: int | None = None
    d_hidden: int | None = None
    store: str | None = None
    data_path: str | None = None
    data_path_reason: str | None = None
    train_left_out: dict[str, Any] | None = None
    steps: int | None = None
    tokens_trained: int | None = None
    wall_time_s: float | None = None
    tokens_per_s: float | None = None
    final: Evaluation | None = None
    val: Evaluation | None = None
    training_dead_fraction: float | None = None
    dead_fraction_train: float | None = None
    """Format 1's training-window figure (counted a reset neuron as alive): see `rundir.dead`."""
    resample_events: list[ResampleEvent] | None = None
    training: dict[str, Any] | None = None
    normalization: Normalization | None = None
    config_hash: str | None = None
    code_version: str | None = None
    completed: bool | None = None


# ---------------------------------------------------------------------------------------------
# analysis.json


class CeLoss(_Part):
    """analysis.json's `ce_loss`: the LM's next-token loss clean, with the SAE spliced in, zero-ablated."""

    clean: float | None = None
    sae: float | None = None
    zero: float | None = None
    recovered: float | None = None
    kl_sae: float | None = None
    kl_zero: float | None = None
    documents: int | None = None
    tokens: int | None = None


class Analysis(_Versioned):
    """analysis.json: an analysed cell (written last by the analysis)."""

    format: int = 1
    cell: str | None = None
    split: str | None = None
    tokens_analyzed: int | None = None
    d_in: int | None = None
    d_hidden: int | None = None
    activation_units: str | None = None
    dead_threshold: float | None = None
    dead_split: str | None = None
    dead_tokens: int | None = None
    dead_count: int | None = None
    dead_fraction: float | None = None
    never_fired_split: str | None = None
    never_fired_count: int | None = None
    never_fired_fraction: float | None = None
    below_threshold_only_count: int | None = None
    below_threshold_only_fraction: float | None = None
    firings_below_threshold_fraction: float | None = None
    max_activation: float | None = None
    units: dict[str, Any] | None = None
    training_dead_fraction: float | None = None
    mse: float | None = None
    explained_variance: float | None = None
    l0: float | None = None
    l1: float | None = None
    cosine_similarity: float | None = None
    l2_ratio: float | None = None
    error_mean_share: float | None = None
    """Share of Σ‖x − x̂‖² that is the error's mean (a constant offset); absent before it was recorded."""
    ce_loss: CeLoss | None = None
    ce_loss_note: str | None = None
    ce_loss_tokens: str | None = None
    error_carriers: dict[str, Any] | None = None
    histogram_edges: list[float | None] | None = None
    selected: dict[str, list[int]] | None = None
    selection: dict[str, Any] | None = None
    scoring_examples: dict[str, Any] | None = None
    store: str | None = None
    drop_first_token: bool | None = None
    left_out: dict[str, Any] | None = None
    left_out_note: str | None = None
    timings_s: dict[str, float | None] | None = None
    code_version: str | None = None

    @property
    def dead_token_set(self) -> str | None:
        """The tokens dead % was counted on (`test`, `all`, …); an analysis written before
        `dead_split` counted on its analysed split."""
        return self.dead_split or self.split or None


# ---------------------------------------------------------------------------------------------
# labels.json


class LabelSelection(_Part):
    """labels.json's `selection`: the analysis's selection counts (from features/selected.json)."""

    asked: int | None = None
    selected: int | None = None
    eligible: int | None = None
    shortfall: str | None = None


class Labels(_Versioned):
    """labels.json: a labelled cell (also written when labelling was skipped, `skipped_reason` saying why)."""

    monosemanticity_rate: float | None = None
    monosemanticity_rate_conservative: float | None = None
    rate_top: float | None = None
    rate_bottom: float | None = None
    rate_top_conservative: float | None = None
    rate_bottom_conservative: float | None = None
    labelled: int | None = None
    polysemantic: int | None = None
    failed: int | None = None
    flagged: int | None = None
    skipped_reason: str | None = None
    model: str | None = None
    prompt_version: str | None = None
    groups: dict[str, Any] | None = None
    detection_accuracy: float | None = None
    scores: dict[str, Any] | None = None
    rate_sample: float | None = None
    rate_sample_conservative: float | None = None
    scores_sample: dict[str, Any] | None = None
    cached: int | None = None
    health: dict[str, Any] | None = None
    scoring: dict[str, Any] | None = None
    selection: LabelSelection | None = None


# ---------------------------------------------------------------------------------------------
# Reading


class Selected(_Versioned):
    """features/selected.json: the analysis's selection (`sae_core.analysis.driver.analyze_run`)."""

    top: list[int] | None = None
    bottom: list[int] | None = None
    sample: list[int] | None = None
    """labeling.scope: sample — the random group (absent otherwise)."""
    sample_rule: str | None = None
    min_activations: int | None = None
    min_activations_counted_on: str | None = None
    threshold: float | None = None
    top_k_features: int | None = None
    eligible: int | None = None
    asked: int | None = None
    shortfall: str | None = None
    activation_units: str | None = None
    selectivity: str | None = None
    split: str | None = None
    tokens_analyzed: int | None = None
    duplicate_of: dict[str, int] | None = None
    """A selected feature (its id as a string) → the earlier one whose direction it repeats."""
    duplicate_rule: str | None = None
    context_window: int | None = None


M = TypeVar("M", bound=_Versioned)

_FILES: dict[type[_Versioned], tuple[str, int, str]] = {
    Metrics: ("metrics.json", METRICS_FORMAT, "delete it and train the cell again (sae-sweep train)"),
    Analysis: ("analysis.json", ANALYSIS_FORMAT, "delete it and analyse the cell again (sae-sweep analyze)"),
    Labels: ("labels.json", LABELS_FORMAT, "delete it and label the cell again (sae-sweep label)"),
    Selected: ("features/selected.json", SELECTED_FORMAT, "analyse the cell again (sae-sweep analyze)"),
}


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    got = repr(err.get("input"))
    got = got if len(got) <= 40 else got[:37] + "..."
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {err['msg'].lower()} (got {got}){more}"


def parse(model: type[M], doc: Any, path: str | Path | None = None) -> M:
    """`doc` (a file's parsed JSON, or the dict a writer returned) as `model`; RunFileError naming
    `path` (or the file's name) and what to do when it does not fit."""
    name, newest, fix = _FILES[model]
    where = str(path) if path is not None else name
    if not isinstance(doc, dict):
        raise RunFileError(f"{where}: not a JSON object ({type(doc).__name__}); {fix}")
    try:
        parsed = model.model_validate(doc)
    except ValidationError as exc:
        raise RunFileError(f"{where}: not a valid {name} ({_first_error(exc)}); {fix}") from None
    if parsed.format > newest:
        raise RunFileError(
            f"{where}: format {parsed.format} was written by a newer sae-sweep (this one reads {name} "
            f"up to format {newest}); upgrade sae-sweep to read it"
        )
    return parsed


def _read(model: type[M], path: Path) -> M | None:
    name, _, fix = _FILES[model]
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RunFileError(f"{path}: unreadable {name} ({detail}); {fix}") from None
    return parse(model, doc, path)


def _run(run: RunDir | str | Path) -> RunDir:
    return run if isinstance(run, RunDir) else RunDir(Path(run))


def read_metrics(run: RunDir | str | Path) -> Metrics | None:
    """The run's metrics.json (None when absent; RunFileError when unreadable)."""
    return _read(Metrics, _run(run).metrics)


def read_analysis(run: RunDir | str | Path) -> Analysis | None:
    """The run's analysis.json (None when absent; RunFileError when unreadable)."""
    return _read(Analysis, _run(run).analysis)


def read_labels(run: RunDir | str | Path) -> Labels | None:
    """The run's labels.json (None when absent; RunFileError when unreadable)."""
    return _read(Labels, _run(run).labels)


def read_selected(run: RunDir | str | Path) -> Selected | None:
    """The run's features/selected.json (None when absent; RunFileError when unreadable)."""
    return _read(Selected, _run(run).selected)
