"""The analysis stage as a Prefect task: feature statistics, examples and evaluation for one cell."""

from __future__ import annotations

import time
from typing import Any

from prefect import task
from prefect.runtime import task_run

from sae_core.config import SweepConfig
from sae_core.naming import Cell
from sae_core.rundir import RAW_UNITS, Analysis, RunDir, dead_caption, parse, pct
from tasks.cache import analysis_complete, analyze_cache_key, call_stage, retry_unless_user_error
from tasks.paths import run_dir
from tasks.progress import PrefectProgress, artifact_key, run_logger


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
    run = RunDir(out)
    summary = parse(Analysis, analyze_run(store, out, cfg, progress=progress), run.analysis)
    seconds = time.perf_counter() - start
    never = summary.never_fired_fraction
    run_logger().info(
        "%s analysed (%s units): %s %s, never fired (> 0) %s, L0 %s, explained variance %s",
        cell,
        summary.activation_units or RAW_UNITS,
        dead_caption(summary.dead_threshold, summary.dead_split),
        pct(summary.dead_fraction) if summary.dead_fraction is not None else "missing",
        pct(never) if never is not None else "missing",
        summary.l0,
        summary.explained_variance,
    )
    shortfall = (summary.selection or {}).get("shortfall")
    if shortfall:
        run_logger().warning("%s: selection %s", cell, shortfall)
    return {
        "cell": cell,
        "run_dir": str(out),
        "analysis": str(run.analysis),
        "dead_fraction": summary.dead_fraction,
        "l0": summary.l0,
        "explained_variance": summary.explained_variance,
        "work_s": seconds,
    }


def run_analyze(store: str, cell: Cell, cfg: SweepConfig) -> dict[str, Any]:
    """Call the task from a flow, re-analysing when a cached analysis's files were deleted."""
    return call_stage(analyze_features, cfg, analysis_complete(cfg, cell), store, cell.name, cfg)
