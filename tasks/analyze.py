"""The analysis stage as a Prefect task: feature statistics, examples and evaluation for one cell."""

from __future__ import annotations

import time
from typing import Any

from prefect import task
from prefect.runtime import task_run

from sae_core.config import SweepConfig
from sae_core.dead_figures import dead_caption, pct
from sae_core.naming import Cell
from tasks.common import (
    PrefectProgress,
    analysis_complete,
    analyze_cache_key,
    artifact_key,
    call_stage,
    retry_unless_user_error,
    run_dir,
    run_logger,
)


def _cache_key(context: Any, parameters: dict[str, Any]) -> str:
    return analyze_cache_key(parameters["cfg"], Cell.parse(parameters["cell"]), parameters["store"])


def _run_name() -> str:
    return f"analyze-{Cell.parse(task_run.parameters['cell']).task_name}"


@task(
    name="analyze_features",
    task_run_name=_run_name,
    cache_key_fn=_cache_key,
    retries=1,
    retry_condition_fn=retry_unless_user_error,
)
def analyze_features(store: str, cell: str, cfg: SweepConfig) -> dict[str, Any]:
    """Analyse one trained cell → `features/` and `analysis.json` in its run dir."""
    from sae_core.analysis import analyze_run

    the_cell = Cell.parse(cell)
    out = run_dir(cfg, the_cell)
    progress = PrefectProgress(artifact_key("analyze", cfg.name, the_cell.task_name), f"analysing {cell}")
    start = time.perf_counter()
    summary = analyze_run(store, out, cfg, progress=progress)
    seconds = time.perf_counter() - start
    never = summary.get("never_fired_fraction")
    run_logger().info(
        "%s analysed (%s units): %s %s, never fired (> 0) %s, L0 %s, explained variance %s",
        cell,
        summary.get("activation_units", "raw"),
        dead_caption(summary.get("dead_threshold"), summary.get("dead_split")),
        pct(summary["dead_fraction"]) if summary.get("dead_fraction") is not None else "missing",
        pct(never) if never is not None else "missing",
        summary.get("l0"),
        summary.get("explained_variance"),
    )
    shortfall = (summary.get("selection") or {}).get("shortfall")
    if shortfall:
        run_logger().warning("%s: selection %s", cell, shortfall)
    return {
        "cell": cell,
        "run_dir": str(out),
        "analysis": str(out / "analysis.json"),
        "dead_fraction": summary.get("dead_fraction"),
        "l0": summary.get("l0"),
        "explained_variance": summary.get("explained_variance"),
        "work_s": seconds,
    }


def run_analyze(store: str, cell: Cell, cfg: SweepConfig) -> dict[str, Any]:
    """Call the task from a flow, re-analysing when a cached analysis's files were deleted."""
    return call_stage(analyze_features, cfg, analysis_complete(cfg, cell), store, cell.name, cfg)
