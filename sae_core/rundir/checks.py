"""What "trained", "analysed" and "labelled" mean on disk: the one place a stage's completion is decided
(the flow's cache checks, training's reuse of a completed run, the UI summary)."""

from __future__ import annotations

from sae_core.rundir.models import Metrics, RunFileError, read_metrics
from sae_core.rundir.paths import ANALYSIS_OUTPUTS, RunDir


def trained_metrics(run: RunDir, weights_filename: str, config_hash: str | None = None) -> Metrics | None:
    """The metrics.json of a trained run, else None. Trained: the cell's `.pth` and a metrics.json
    (written last) saying `completed` — of config hash `config_hash` when one is given (another config's
    run is not this one). A metrics.json that cannot be read is a RunFileError."""
    if not (run.metrics.is_file() and run.weights(weights_filename).is_file()):
        return None
    metrics = read_metrics(run)
    if metrics is None or metrics.completed is not True:
        return None
    return metrics if config_hash is None or metrics.config_hash == config_hash else None


def is_trained(run: RunDir, weights_filename: str, config_hash: str | None = None) -> bool:
    """`trained_metrics` as a yes/no; an unreadable metrics.json is not trained (training rewrites it)."""
    try:
        return trained_metrics(run, weights_filename, config_hash) is not None
    except RunFileError:
        return False


def is_analysed(run: RunDir) -> bool:
    """Analysed: analysis.json (written last) and the feature files the label stage and browser read."""
    return all((run.path / name).is_file() for name in ANALYSIS_OUTPUTS)


def is_labelled(run: RunDir) -> bool:
    """Labelled: labels.json exists (also written when labelling was skipped, saying why)."""
    return run.labels.is_file()
