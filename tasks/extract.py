"""The extraction stage as a Prefect task: one store per (model, data, extraction) config."""

from __future__ import annotations

import time
from typing import Any

from prefect import task

from sae_core.config import SweepConfig
from sae_core.io import read_json
from tasks.cache import call_stage, extract_cache_key, retry_unless_user_error, store_complete
from tasks.locks import stage_lock
from tasks.progress import PrefectProgress, artifact_key, run_logger


def _cache_key(context: Any, parameters: dict[str, Any]) -> str:
    return extract_cache_key(parameters["cfg"])


@task(
    name="extract_activations",
    task_run_name="extract-activations",
    cache_key_fn=_cache_key,
    retries=1,
    retry_condition_fn=retry_unless_user_error,
)
def extract_stage(cfg: SweepConfig) -> dict[str, Any]:
    """Extract the residual stream into an ActivationStore (or find the complete one) → its path."""
    from sae_core.extraction import extract_activations, store_key

    logger = run_logger()
    start = time.perf_counter()
    progress = PrefectProgress(
        artifact_key("extract", cfg.name), f"extracting {cfg.model.name}", unit="documents"
    )
    # The lock makes a second sweep of the same config wait instead of writing the same shards.
    with stage_lock(cfg, f"extract-{store_key(cfg)}"):
        _build_demo_model(cfg)
        path = extract_activations(cfg, progress=progress)
    manifest = read_json(path / "manifest.json")
    seconds = time.perf_counter() - start
    logger.info(
        "activation store %s: %s tokens, d_model %s",
        path,
        manifest.get("num_tokens"),
        manifest.get("model", {}).get("d_model"),
    )
    return {
        "store": str(path),
        "num_tokens": manifest.get("num_tokens"),
        "d_model": manifest.get("model", {}).get("d_model"),
        "work_s": seconds,
    }


def _build_demo_model(cfg: SweepConfig) -> None:
    """Build the demo GPT-2 on first use with its own progress artifact and log lines (the first demo's
    longest wait after extraction); extraction would otherwise build it silently while loading."""
    from sae_core.extraction import DEMO_MODEL, ensure_demo_model
    from tasks.paths import data_root

    if cfg.model.name == DEMO_MODEL:
        progress = PrefectProgress(artifact_key("demo-model"), "training the demo GPT-2", unit="steps")
        ensure_demo_model(data_root(cfg), progress=progress)


def expected_store(cfg: SweepConfig) -> str:
    from sae_core.extraction import store_key
    from tasks.paths import data_root

    return str(data_root(cfg) / "activations" / store_key(cfg))


def run_extract(cfg: SweepConfig) -> dict[str, Any]:
    """Call the task from a flow, recomputing it when a cached store was deleted."""
    return call_stage(extract_stage, cfg, store_complete(expected_store(cfg)), cfg)
