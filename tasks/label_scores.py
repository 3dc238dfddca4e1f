"""Prefect layer of detection and fuzzing scores for one cell: one task run per feature and scorer over
its held-out windows (`features/scoring_examples.parquet`); the counts go into the outcome of the feature.

A scoring failure (HTTP errors past the retries) never fails the label: the feature keeps its label,
its score columns stay empty, and the log says why.
"""

from __future__ import annotations

from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner

from sae_core.config import LabelingConfig
from sae_core.labels import SCORE_FIELDS, load_scoring_windows, scoring_items, scrub
from tasks.label_requests import Endpoint, label_logger, score_feature_task


def scorers(lab: LabelingConfig) -> list[str]:
    return [name for name, on in (("detection", lab.detection), ("fuzzing", lab.fuzzing)) if on]


def score_cell(
    runner: ThreadPoolTaskRunner,
    run: Any,
    outcomes: dict[int, dict[str, Any]],
    endpoint: Endpoint,
    cell: str,
    options: dict[str, Any],
    lab: LabelingConfig,
    secret: str,
) -> str | None:
    """Score every answered feature that has an explanation (monosemantic labels, and polysemantic
    answers' closest explanation) with each scorer switched on; counts land in `outcomes` as
    `<scorer>_<field>`. Returns why nothing was scored (None when something was)."""
    wanted = scorers(lab)
    if not wanted:
        return None
    windows = load_scoring_windows(run)
    logger = label_logger()
    if isinstance(windows, str):
        logger.warning("no detection/fuzzing scores for %s: %s", run.name, windows)
        return windows
    futures = {}
    for fid, out in outcomes.items():
        explanation = out.get("explanation")
        if out["status"] != "ok" or not explanation or not windows.get(fid):
            continue
        for scorer in wanted:
            items = scoring_items(scorer, windows[fid], seed=str(fid))  # type: ignore[arg-type]
            if not items:
                continue
            named = score_feature_task.with_options(task_run_name=f"{scorer}-{cell}-f{fid}", **options)
            params = {
                "feature_id": fid,
                "scorer": scorer,
                "explanation": explanation,
                "items": items,
                "batch": lab.scoring_batch,
                "endpoint": endpoint,
            }
            futures[(fid, scorer)] = runner.submit(named, parameters=params)
    for (fid, scorer), future in futures.items():
        future.wait()
        state = future.state
        if state.is_completed():
            counts = state.result()
            outcomes[fid].update({f"{scorer}_{k}": counts[k] for k in SCORE_FIELDS})
            if scorer == "detection":
                outcomes[fid]["detection_accuracy"] = counts["balanced_accuracy"]
        else:
            exc = state.result(raise_on_failure=False)
            logger.warning("%s score of feature %d failed: %s", scorer, fid, scrub(str(exc), secret))
    return None if futures else "no answered feature has held-out windows"
