"""The labelling stage's requests: one Prefect task run per feature, retried, bounded, cached.

- Retries: Prefect's own (`retries`, exponential `retry_delay_seconds` with jitter), allowed by
  `retry_condition_fn` only for `TransientLabelError` (429, 5xx, timeouts, malformed answers); a 429's
  Retry-After is waited inside the attempt before it fails, so the next try never comes early. 400/401/
  403 fail at once. A feature that still fails is recorded `status=failed`; the other features go on.
- Repair: after a malformed answer the next try does not resend the same prompt (at temperature 0 it
  fails the same way) but continues the conversation: the model's answer, then a user turn saying what
  was wrong. The conversation is kept per task run in this process, across tries, so an HTTP error in
  between does not lose it; each try is still one request and counts against `labeling.max_retries`.
- Concurrency: a thread-pool task runner of `labeling.concurrency` workers per cell, plus a process-wide
  semaphore per endpoint, so cells labelled at the same time still respect the bound.
- Cache: the task's cache key is (prompt version, model, examples hash) and results persist under
  `data_root/.prefect/results` (`tasks.paths.result_storage`), so a re-run (a new process included)
  sends no request already answered. Failed attempts are not cached.
- `response_format`: whether the endpoint accepts it is learned ONCE per process (a `SchemaSupport`
  per endpoint and model, shared by every cell and feature labelled here, labels and scores alike):
  a refusing endpoint costs one refused request per run, not one per feature. It is not persisted: a
  new process (another pool worker) asks once again, which also notices an endpoint upgraded since.
- The API key travels inside an `Endpoint` as a pydantic `SecretStr` (shown as `**********` wherever
  Prefect or a log prints it), is never part of a cache key, and is scrubbed from every error message.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.runtime import task_run as runtime_task_run
from pydantic import SecretStr

from sae_core.labels import (
    PROMPT_VERSION,
    LabelAttemptError,
    LabelExample,
    Repair,
    SchemaSupport,
    ScoringItem,
    label_feature,
    make_client,
    score_explanation,
)

MAX_BACKOFF_S = 300.0
NO_KEY_PLACEHOLDER = "no-key"
"""Sent as the key to a configured `base_url` when no key is set (Ollama, vLLM and llama.cpp ignore it)."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to ask; the key is a SecretStr so that reprs and logs show `**********`."""

    base_url: str | None
    api_key: SecretStr
    model: str
    temperature: float
    timeout: float
    use_json_schema: bool
    concurrency: int


# ---------------------------------------------------------------------------------------------
# Process-wide shared state: clients and per-endpoint slots (threads of this process share them)

_lock = threading.Lock()
_clients: dict[tuple[str | None, float, str], Any] = {}
_slots: dict[tuple[str | None, int], threading.BoundedSemaphore] = {}
_repairs: dict[str, Repair] = {}
"""Task run id → the conversation its next try sends after a malformed answer."""
_schemas: dict[tuple[str | None, str], SchemaSupport] = {}
"""(base_url, model) → what the endpoint said of `response_format` (asked once per process)."""


def schema_support(endpoint: Endpoint) -> SchemaSupport:
    with _lock:
        return _schemas.setdefault((endpoint.base_url, endpoint.model), SchemaSupport())


def forget_schema_support() -> None:
    """Forget what endpoints said of `response_format` (a test's fresh start; a new run in-process)."""
    with _lock:
        _schemas.clear()


def _client(endpoint: Endpoint) -> Any:
    secret = endpoint.api_key.get_secret_value()
    key = (endpoint.base_url, endpoint.timeout, hashlib.sha256(secret.encode()).hexdigest())
    with _lock:
        if key not in _clients:
            _clients[key] = make_client(secret, endpoint.base_url, endpoint.timeout)
        return _clients[key]


def _slot(endpoint: Endpoint) -> threading.BoundedSemaphore:
    with _lock:
        return _slots.setdefault(
            (endpoint.base_url, endpoint.concurrency), threading.BoundedSemaphore(endpoint.concurrency)
        )


def _no_traceback_for_label_errors(record: logging.LogRecord) -> bool:
    """Drop Prefect's "Task run failed … Retries are exhausted" record and its traceback for a
    classified labelling error: its message already says what failed and what to do, and Prefect's
    "Finished in state Failed(…)" line repeats it, once per feature. Other errors keep theirs."""
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, LabelAttemptError)


logging.getLogger("prefect.task_runs").addFilter(_no_traceback_for_label_errors)


def label_logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("tasks.label")


# ---------------------------------------------------------------------------------------------
# Cache keys and retry policy


def _slug(model: str) -> str:
    """Model names such as `meta-llama/Llama-3-8B` made safe as a file name, kept unambiguous."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model)[:60] + "-" + hashlib.sha256(model.encode()).hexdigest()[:6]


def label_cache_key(model: str, ex_hash: str) -> str:
    """(prompt version, model, examples hash): nothing else, the key above all, goes into it."""
    return f"label-{PROMPT_VERSION}-{_slug(model)}-{ex_hash}"


def _label_key_fn(context: Any, parameters: dict[str, Any]) -> str:
    return label_cache_key(parameters["endpoint"].model, parameters["examples_hash"])


def _score_key_fn(context: Any, parameters: dict[str, Any]) -> str:
    items: list[ScoringItem] = parameters["items"]
    payload = repr(
        (
            parameters["scorer"],
            parameters["explanation"],
            parameters["batch"],
            [(i.text, i.truth) for i in items],
        )
    ).encode()
    digest = hashlib.sha256(payload).hexdigest()[:16]
    return f"score-{PROMPT_VERSION}-{_slug(parameters['endpoint'].model)}-{digest}"


def _retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    exc = state.data
    return isinstance(exc, LabelAttemptError) and exc.retryable


def _attempt(endpoint: Endpoint, call: Any) -> Any:
    """Run one request inside the endpoint's slot; on failure record the attempt number and, for a 429,
    wait its Retry-After before failing (the slot is released while waiting)."""
    attempt = runtime_task_run.get_run_count() or 1
    try:
        with _slot(endpoint):
            return call(_client(endpoint)), attempt
    except LabelAttemptError as err:
        err.attempts = attempt
        if err.retry_after:
            label_logger().info(
                "rate limited: waiting %.1f s (Retry-After) before the next attempt", err.retry_after
            )
            time.sleep(err.retry_after)
        raise


@task(
    name="label-feature",
    persist_result=True,
    cache_key_fn=_label_key_fn,
    retry_condition_fn=_retry_if_transient,
)
def label_feature_task(
    feature_id: int, examples: list[LabelExample], examples_hash: str, endpoint: Endpoint
) -> dict[str, Any]:
    """Label one feature (one attempt per task try; after a malformed answer, the try asks for a
    repair). Returns the label fields and the attempt count."""
    run_id = str(runtime_task_run.id or "")
    with _lock:
        repair = _repairs.get(run_id)
    try:
        result, attempt = _attempt(
            endpoint,
            lambda client: label_feature(
                client,
                endpoint.model,
                examples,
                temperature=endpoint.temperature,
                timeout=endpoint.timeout,
                use_json_schema=endpoint.use_json_schema,
                repair=repair,
                schema_support=schema_support(endpoint),
            ),
        )
    except LabelAttemptError as err:
        if err.repair is not None and run_id:
            with _lock:
                _repairs[run_id] = err.repair
            label_logger().info("feature %d: %s; the next attempt says what was wrong", feature_id, err)
        raise
    forget_repair(run_id)
    label_logger().info("feature %d: %s", feature_id, result.label)
    return {
        "label": result.label,
        "reasoning": result.reasoning,
        "polysemantic": result.polysemantic,
        "explanation": result.explanation,
        "attempts": attempt,
    }


def forget_repair(run_id: str) -> None:
    with _lock:
        _repairs.pop(run_id, None)


@task(
    name="score-feature",
    persist_result=True,
    cache_key_fn=_score_key_fn,
    retry_condition_fn=_retry_if_transient,
)
def score_feature_task(
    feature_id: int, scorer: str, explanation: str, items: list[ScoringItem], batch: int, endpoint: Endpoint
) -> dict[str, Any]:
    """Detection or fuzzing counts of one explanation over its held-out windows (`ScoreCounts`)."""
    counts, _ = _attempt(
        endpoint,
        lambda client: score_explanation(
            client,
            endpoint.model,
            scorer,  # type: ignore[arg-type]
            explanation,
            items,
            batch=batch,
            temperature=endpoint.temperature,
            timeout=endpoint.timeout,
            use_json_schema=endpoint.use_json_schema,
            schema_support=schema_support(endpoint),
        ),
    )
    return counts.as_dict()


# ---------------------------------------------------------------------------------------------
# Key resolution and skipping
