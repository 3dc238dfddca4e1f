"""Prefect layer of the labelling stage for one cell: which features to label, one task run each
(`tasks.label_requests`), detection scores, the rate, `labels.parquet` / `labels.json` and the artifact."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import SecretStr

from sae_core.config import LABELING_KEYS, LabelingConfig, SweepConfig
from sae_core.encoding import markdown_text
from sae_core.io import check_writable
from sae_core.labels import (
    PROMPT_VERSION,
    SCORE_FIELDS,
    FeatureInputs,
    LabelAttemptError,
    endpoint_url,
    examples_hash,
    health_flags,
    health_summary,
    labels_frame,
    load_label_inputs,
    monosemanticity,
    scrub,
    write_labels,
)
from sae_core.naming import Cell
from sae_core.progress import Progress, no_progress
from tasks.credentials import resolve_secret
from tasks.label_requests import (
    MAX_BACKOFF_S,
    NO_KEY_PLACEHOLDER,
    Endpoint,
    forget_repair,
    label_feature_task,
    label_logger,
)
from tasks.label_scores import score_cell
from tasks.paths import result_storage
from tasks.progress import PrefectProgress, artifact_key


def skip_reason(lab: LabelingConfig, key: str | None) -> str | None:
    if not lab.enabled:
        return "labeling.enabled is false"
    if lab.base_url is None and key is None:
        where = f"${lab.api_key_env}"
        if lab.api_key_secret_block:
            where += f" or the Prefect Secret block {lab.api_key_secret_block!r}"
        return f"no LLM endpoint or API key configured (set labeling.base_url, or put a key in {where})"
    return None


def _empty_summary(lab: LabelingConfig, reason: str | None) -> dict[str, Any]:
    return {
        "monosemanticity_rate": None,
        "monosemanticity_rate_conservative": None,
        "rate_top": None,
        "rate_bottom": None,
        "rate_top_conservative": None,
        "rate_bottom_conservative": None,
        "labelled": 0,
        "polysemantic": 0,
        "failed": 0,
        "flagged": 0,
        "skipped_reason": reason,
        "model": lab.model,
        "prompt_version": PROMPT_VERSION,
    }


def _cell_label(run_dir: Path) -> str:
    try:
        return Cell.parse(run_dir.name).task_name
    except ValueError:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", run_dir.name)


# ---------------------------------------------------------------------------------------------
# The cell


def label_cell(run_dir: str, cfg: SweepConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Label a cell's selected features (call inside a Prefect flow); writes labels.parquet and
    labels.json and returns the labels.json dict. Skips with one log line when not configured.
    `progress` (features done / total) defaults to a Prefect progress artifact inside a flow run."""
    lab = cfg.labeling
    run = Path(run_dir)
    logger = label_logger()
    # Resolved here, inside the flow: never a flow or task parameter that Prefect would record.
    key = (
        resolve_secret(lab.api_key_env, lab.api_key_secret_block, LABELING_KEYS, endpoint_url(lab.base_url))
        if lab.enabled
        else None
    )
    reason = skip_reason(lab, key)
    if reason:
        logger.info("labels skipped for %s: %s", run.name, reason)
        summary = _empty_summary(lab, reason)
        write_labels(run, [], summary)
        return summary

    check_writable(run)  # before the requests: labels.json is written after the last one
    inputs = load_label_inputs(run, lab.examples_per_prompt)
    endpoint = Endpoint(
        base_url=lab.base_url,
        api_key=SecretStr(key or NO_KEY_PLACEHOLDER),
        model=lab.model,
        temperature=lab.temperature,
        timeout=lab.timeout_s,
        use_json_schema=lab.structured_output,
        concurrency=lab.concurrency,
    )
    secret = endpoint.api_key.get_secret_value()
    cell = _cell_label(run)
    options: dict[str, Any] = {
        "retries": lab.max_retries,
        # Prefect takes at most 50 delays and repeats the last; no single wait beyond MAX_BACKOFF_S.
        "retry_delay_seconds": [
            min(lab.retry_base_delay_s * 2**i, MAX_BACKOFF_S) for i in range(min(max(lab.max_retries, 1), 50))
        ],
        "retry_jitter_factor": 0.5 if lab.retry_base_delay_s > 0 else None,
        "result_storage": result_storage(cfg),
    }
    logger.info("labelling %d features of %s with %s", len(inputs.features), run.name, lab.model)
    outcomes: dict[int, dict[str, Any]] = {}
    # A near-duplicate of a feature labelled here shares its label: one request per direction.
    duplicate_of = _duplicates(run, {f.feature_id for f in inputs.features})
    with ThreadPoolTaskRunner(max_workers=lab.concurrency) as runner:
        futures = {}
        for feat in inputs.features:
            if feat.feature_id in duplicate_of:
                continue
            if not feat.examples:
                outcomes[feat.feature_id] = _failed(0, "no examples in features/examples.parquet")
                continue
            ex_hash = examples_hash(feat.examples)
            named = label_feature_task.with_options(
                task_run_name=f"label-{cell}-f{feat.feature_id}", **options
            )
            params = {
                "feature_id": feat.feature_id,
                "examples": list(feat.examples),
                "examples_hash": ex_hash,
                "endpoint": endpoint,
            }
            futures[feat.feature_id] = (ex_hash, runner.submit(named, parameters=params))
        progress = progress or _default_progress(run)
        by_id = {future.task_run_id: (fid, ex_hash) for fid, (ex_hash, future) in futures.items()}
        for done, future in enumerate(as_completed([f for _, f in futures.values()]), 1):
            fid, ex_hash = by_id[future.task_run_id]
            outcomes[fid] = {**_collect(future, secret), "examples_hash": ex_hash}
            progress(done, len(futures), {"failed": sum(o["status"] == "failed" for o in outcomes.values())})
        scoring_note = score_cell(runner, run, outcomes, endpoint, cell, options, lab, secret)

    flags = health_flags(outcomes, lab.max_label_chars)
    for fid, found in flags.items():
        outcomes[fid]["health"] = ",".join(found)
    if flags:
        logger.warning(
            "labeller health for %s: %d labels flagged (%s); they count as failed in the conservative rate",
            run.name,
            len(flags),
            ", ".join(f"f{f}: {','.join(v)}" for f, v in sorted(flags.items())),
        )

    for fid, rep in duplicate_of.items():
        note = f"near-duplicate of feature {rep}: shares its label (not requested again)"
        outcomes[fid] = {
            **outcomes[rep],
            "status": "duplicate",
            "error": note,
            "attempts": 0,
            "cached": False,
        }
    if duplicate_of:
        logger.info(
            "%d near-duplicate features of %s share their representative's label, not requested: %s",
            len(duplicate_of),
            run.name,
            ", ".join(f"{f}→{r}" for f, r in sorted(duplicate_of.items())),
        )
    rows = _rows(inputs.features, outcomes, lab.model)
    summary = {**_empty_summary(lab, None), **monosemanticity(labels_frame(rows))}
    summary["cached"] = sum(1 for o in outcomes.values() if o.get("cached"))
    summary["health"] = health_summary(rows, lab.max_label_chars)
    summary["scoring"] = _scoring_doc(lab, scoring_note)
    write_labels(run, rows, summary)
    logger.info(
        "labels for %s: %d labelled, %d polysemantic, %d failed, %d flagged, %d from cache; monosemanticity "
        "rate %s (%s counting failed and flagged features as polysemantic)",
        run.name,
        summary["labelled"],
        summary["polysemantic"],
        summary["failed"],
        summary["flagged"],
        summary["cached"],
        _fmt_rate(summary["monosemanticity_rate"]),
        _fmt_rate(summary["monosemanticity_rate_conservative"]),
    )
    _publish(run, rows, summary)
    return summary


def _fmt_rate(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.3f}"


def _duplicates(run: Path, selected: set[int]) -> dict[int, int]:
    """selected.json's `duplicate_of` (feature → representative), for representatives labelled here."""
    try:
        doc = json.loads((run / "features" / "selected.json").read_text())
    except (OSError, ValueError):
        return {}
    pairs = doc.get("duplicate_of") if isinstance(doc, dict) else None
    if not isinstance(pairs, dict):
        return {}
    return {int(f): int(r) for f, r in pairs.items() if int(f) in selected and int(r) in selected}


def _default_progress(run: Path) -> Progress:
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return no_progress
    return PrefectProgress(artifact_key("labels", run.name), f"Labelling the features of {run.name}")


def _failed(attempts: int, error: str) -> dict[str, Any]:
    return {"status": "failed", "attempts": attempts, "error": error}


def _collect(future: Any, secret: str) -> dict[str, Any]:
    """The outcome of one task run: its result, or `failed` with the scrubbed error and attempt count."""
    future.wait()
    forget_repair(str(future.task_run_id))  # a run that failed for good leaves its conversation
    state = future.state
    if state.is_completed():
        return {**state.result(), "status": "ok", "error": None, "cached": state.name == "Cached"}
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as err:  # a crashed run whose result cannot be read
        exc = err
    if isinstance(exc, LabelAttemptError):
        return _failed(exc.attempts, scrub(str(exc), secret))
    return _failed(
        1,
        scrub(
            f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(state.message), secret
        ),
    )


def _scoring_doc(lab: LabelingConfig, note: str | None) -> dict[str, Any]:
    """labels.json's `scoring`: which scorers ran, their definition and sizes, or why none."""
    return {
        "scorers": [n for n, on in (("detection", lab.detection), ("fuzzing", lab.fuzzing)) if on],
        "note": note,
        "score": (
            "class-balanced accuracy ½(TP/activating + TN/non-activating) over held-out windows; a window "
            "without a usable prediction counts as wrong (failed)"
        ),
        "windows": "features/scoring_examples.parquet (analysis.json's scoring_examples says which tokens)",
        "batch": lab.scoring_batch,
    }


def _rows(features: tuple[FeatureInputs, ...], outcomes: dict[int, dict[str, Any]], model: str) -> list[dict]:
    rows = []
    for feat in features:
        out = outcomes[feat.feature_id]
        for group in feat.groups:
            rows.append(
                {
                    "feature_id": feat.feature_id,
                    "group": group,
                    "label": out.get("label"),
                    "reasoning": out.get("reasoning"),
                    "polysemantic": out.get("polysemantic"),
                    "model": model,
                    "prompt_version": PROMPT_VERSION,
                    "attempts": out["attempts"],
                    "status": out["status"],
                    "error": out.get("error"),
                    "examples_hash": out.get("examples_hash"),
                    "detection_accuracy": out.get("detection_accuracy"),
                    "explanation": out.get("explanation"),
                    "health": out.get("health"),
                    **{
                        f"{scorer}_{k}": out.get(f"{scorer}_{k}")
                        for scorer in ("detection", "fuzzing")
                        for k in SCORE_FIELDS
                    },
                }
            )
    return rows


def _publish(run: Path, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """A table artifact of the labels when running inside a flow (none from a plain script). The UI
    renders each string cell and the description as Markdown, and a label is an LLM's answer to corpus
    text: it goes in as `markdown_text`, so no image, link or HTML in it is live."""
    from prefect.artifacts import create_table_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return
    create_table_artifact(
        key=artifact_key("labels", run.name)[:100],  # the progress artifact's key: the table succeeds it
        table=[
            {
                "feature_id": r["feature_id"],
                "group": markdown_text(r["group"]),
                "label": markdown_text(r["label"]),
                "status": markdown_text(r["status"]),
                "attempts": r["attempts"],
            }
            for r in rows
        ],
        description=(
            f"Labels of {markdown_text(run.name)} ({markdown_text(summary['model'])}, {PROMPT_VERSION}): "
            "monosemanticity rate "
            f"{_fmt_rate(summary['monosemanticity_rate'])} ("
            f"{_fmt_rate(summary['monosemanticity_rate_conservative'])} counting failed features as "
            f"polysemantic), {summary['labelled']} labelled, {summary['failed']} failed."
        ),
    )
