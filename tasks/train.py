"""The training stage as Prefect tasks: one SAE per grid cell, resumable, with a live progress artifact;
with `grid.pack` (local placement) first one `train_pack` task training the sweep's missing cells together,
after which each cell's own task finds its run complete (its cache key stays the cell's own)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from sae_core.config import SweepConfig
from sae_core.errors import SaeSweepError
from sae_core.naming import Cell
from sae_core.rundir import Evaluation, Metrics, RunDir, parse, pct
from tasks.cache import call_stage, retry_unless_user_error, train_cache_key, training_complete
from tasks.locks import stage_lock
from tasks.paths import run_dir
from tasks.progress import PrefectProgress, artifact_key, run_logger


def _cache_key(context: Any, parameters: dict[str, Any]) -> str:
    return train_cache_key(parameters["cfg"], Cell.parse(parameters["cell"]), parameters["store"])


def _run_name() -> str:
    return f"train-{Cell.parse(task_run.parameters['cell']).task_name}"


def progress_callback(cell: Cell, sweep: str) -> Any:
    """A `TrainCallback` that mirrors training into a Prefect progress artifact and the run log."""
    from sae_core.training import TrainCallback, progress_figures

    class PrefectTrainCallback(TrainCallback):
        def __init__(self) -> None:
            self.total_steps = 0
            self.figures: dict[str, float] = {}
            self.logger = run_logger()
            self.progress = PrefectProgress(
                artifact_key("train", sweep, cell.task_name), f"training {cell.name}", unit="steps"
            )

        def on_start(self, total_steps: int, info: dict) -> None:
            self.total_steps = total_steps
            start = int(info.get("resumed_from") or 0)
            if start:
                self.logger.info("%s resumes from its checkpoint at step %d", cell.name, start)
            self.progress(start, total_steps, {})

        def on_log(self, step: int, metrics: dict) -> None:
            self.figures = progress_figures(metrics)
            self.progress(step, self.total_steps, self.figures)

        def on_resample(self, step: int, neurons: int) -> None:
            self.logger.info("%s: resampled %d dead neurons at step %d", cell.name, neurons, step)

        def on_end(self, metrics: dict) -> None:
            self.progress(self.total_steps, self.total_steps, self.figures)  # the last line shows them

    return PrefectTrainCallback()


@task(
    name="train_sae",
    task_run_name=_run_name,
    cache_key_fn=_cache_key,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_user_error,
)
def train_sae(store: str, cell: str, cfg: SweepConfig) -> dict[str, Any]:
    """Train one cell into `runs/<sweep>/<cell>/`, resuming from its checkpoint after a crash."""
    from sae_core.training import train_cell

    the_cell = Cell.parse(cell)
    out = run_dir(cfg, the_cell)
    start = time.perf_counter()
    with stage_lock(cfg, f"train-{cfg.name}-{the_cell.name}"):
        found = train_cell(store, the_cell, cfg, out, callbacks=[progress_callback(the_cell, cfg.name)])
    seconds = time.perf_counter() - start
    run = RunDir(Path(out))
    metrics = parse(Metrics, found, run.metrics)
    final = metrics.final or Evaluation()
    dead = metrics.training_dead_fraction
    run_logger().info(
        "%s trained: %s steps, loss %s, L0 %s, dead %% (training window) %s",
        the_cell.name,
        metrics.steps,
        _rounded(final.loss),
        _rounded(final.l0),
        pct(dead) if dead is not None else "missing",
    )
    return {
        "cell": the_cell.name,
        "run_dir": str(out),
        "weights": str(run.weights(the_cell.weights_filename)),
        "steps": metrics.steps,
        "training_dead_fraction": dead,
        "work_s": seconds,
    }


def run_train(store: str, cell: Cell, cfg: SweepConfig) -> dict[str, Any]:
    """Call the task from a flow, retraining when a cached run's files were deleted."""
    return call_stage(train_sae, cfg, training_complete(cfg, cell), store, cell.name, cfg)


def _rounded(value: Any) -> str:
    """A figure for a log line: 4 significant digits, or `missing`."""
    return f"{value:.4g}" if isinstance(value, int | float) else "missing"


PACK_NAME_CELLS = 3
"""Cells a pack's task-run name lists before `+N more` (the UI's run names stay readable)."""


def pack_run_name(cells: list[Cell]) -> str:
    """`train-pack-[2x-0.01-nosampling+2x-0.01-sampling]`; past three cells `…+5 more]`."""
    shown = "+".join(c.task_name for c in cells[:PACK_NAME_CELLS])
    more = f"+{len(cells) - PACK_NAME_CELLS} more" if len(cells) > PACK_NAME_CELLS else ""
    return f"train-pack-[{shown}{more}]"


def _pack_run_name() -> str:
    return pack_run_name([Cell.parse(c) for c in task_run.parameters["cells"]])


@task(
    name="train_pack",
    task_run_name=_pack_run_name,
    cache_policy=NO_CACHE,  # each cell's own task holds the cache (its key as when trained alone)
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=retry_unless_user_error,
)
def train_pack_task(store: str, cells: list[str], cfg: SweepConfig) -> dict[str, Any]:
    """Train `cells` together (`grid.pack`), each into its run dir with its own progress artifact."""
    from sae_core.training import train_pack

    the_cells = [Cell.parse(c) for c in cells]
    start = time.perf_counter()
    with contextlib.ExitStack() as locks:
        for cell in sorted(the_cells, key=lambda c: c.name):  # one order: two sweeps cannot deadlock
            locks.enter_context(stage_lock(cfg, f"train-{cfg.name}-{cell.name}"))
        results = train_pack(
            store, the_cells, cfg, {c.name: run_dir(cfg, c) for c in the_cells},
            callbacks={c.name: [progress_callback(c, cfg.name)] for c in the_cells},
        )  # fmt: skip
    failed = {name: f"{type(r).__name__}: {r}" for name, r in results.items() if isinstance(r, Exception)}
    for name, error in failed.items():
        run_logger().error("%s failed in its pack (it is retried alone): %s", name, error)
    return {"cells": cells, "failed": failed, "work_s": time.perf_counter() - start}


def run_train_packs(store: str, cells: list[Cell], cfg: SweepConfig) -> float:
    """Before the per-cell chains (`grid.placement: local`): train the cells not yet complete as one
    pack task when `grid.pack` packs (one cell alone goes the solo way). A failed pack is logged, not
    raised: each cell's own task then resumes it from its checkpoint. Returns the seconds of work."""
    from sae_core.training import pack_enabled

    missing = [c for c in cells if not training_complete(cfg, c)]
    try:
        packing = pack_enabled(cfg)
    except SaeSweepError:  # e.g. CUDA asked for and absent: each cell's task fails with it, alone
        return 0.0
    if not packing or len(missing) < 2:
        return 0.0
    try:
        return float(train_pack_task(store, [c.name for c in missing], cfg)["work_s"])
    except Exception as exc:
        run_logger().error(
            "%s failed (%s: %s); its cells train alone", pack_run_name(missing), type(exc).__name__, exc
        )
        return 0.0
