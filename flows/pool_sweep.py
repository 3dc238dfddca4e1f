"""The grid on the gpu pool (`grid.placement: pool`): the cells planned into packs with the planner of
local placement (`sae_core.training.pool_packs`, against `grid.pack_memory_gb`), one run of the
`train-pack` deployment per pack of two or more cells, one run of `train-cell` per cell alone (a pack of
one, or `grid.pack` off). Every run is watched and submitted again when lost (flows/pool_runs.py).

A pack run trains and analyses its cells; the sweep then runs each cell's remaining chain here (labels,
browser, upload), its train and analyze tasks cache hits on what the pack run persisted under
`data_root`. How many runs are in flight at once is Prefect's business, not ours: every gpu worker takes
one run at a time (`--limit 1`), the others wait Scheduled, which the watcher never counts as lost.
"""

from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect.runtime import flow_run

from sae_core.config import SweepConfig
from sae_core.naming import Cell
from tasks.progress import run_logger


def _failed(cell: Cell, error: str) -> dict[str, Any]:
    return {"cell": cell.name, "status": "failed", "error": error, "work_s": 0.0}


def run_cell_on_pool(store: str, cfg: SweepConfig, cell: Cell) -> list[dict[str, Any]]:
    """One cell as a run of the `train-cell` deployment; the results are read back from data_root."""
    from flows.pool_runs import run_stage_deployment

    # The idempotency key makes a retried parent find the child it already created, never a duplicate
    # (a new attempt gets new children; the cells they find complete are all cache hits).
    try:
        outcome = run_stage_deployment(
            cfg,
            cfg.grid.cell_deployment,
            {"config": cfg.model_dump(mode="json"), "cell": cell.name, "store": store},
            key=f"{flow_run.id}:{flow_run.run_count}:{cell.name}",
            run_name=f"cell-{cell.task_name}",
            what=f"cell {cell.name}",
        )
    except Exception as exc:
        run_logger().error("cell %s failed: %s: %s", cell.name, type(exc).__name__, exc)
        return [_failed(cell, f"{type(exc).__name__}: {exc}")]
    return [{"cell": cell.name, "status": "completed", "flow_run": str(outcome.flow_run_id), "work_s": 0.0}]


def run_pack_on_pool(store: str, cfg: SweepConfig, pack: list[Cell]) -> list[dict[str, Any]]:
    """One pack as a run of the `train-pack` deployment, then each of its cells' labels, browser and
    upload here. A cell the pack run left untrained or unanalysed fails with the run's message; the
    others go on."""
    from flows.pool_runs import run_stage_deployment
    from flows.train_cell import run_cell_chain
    from tasks.cache import analysis_complete, training_complete
    from tasks.train import pack_run_name

    names = [c.name for c in pack]
    error = ""
    flow_run_id = None
    try:
        outcome = run_stage_deployment(
            cfg,
            cfg.grid.pack_deployment,
            {"config": cfg.model_dump(mode="json"), "cells": names, "store": store},
            key=f"{flow_run.id}:{flow_run.run_count}:pack:{'+'.join(names)}",
            run_name=pack_run_name(pack),
            what=f"pack {'+'.join(names)}",
        )
        flow_run_id = str(outcome.flow_run_id)
    except Exception as exc:  # a failed pack run may still have completed some of its cells
        error = f"{type(exc).__name__}: {exc}"
        run_logger().error("%s: %s", pack_run_name(pack), error)
    outcomes = []
    for cell in pack:
        if not (training_complete(cfg, cell) and analysis_complete(cfg, cell)):
            why = error or "its pack run completed without its training or analysis on data_root"
            outcomes.append(_failed(cell, why))
            continue
        try:
            outcome_of_cell = run_cell_chain(store, cell, cfg)
        except Exception as exc:
            run_logger().error("cell %s failed: %s: %s", cell.name, type(exc).__name__, exc)
            outcomes.append(_failed(cell, f"{type(exc).__name__}: {exc}"))
            continue
        outcomes.append({**outcome_of_cell, "flow_run": flow_run_id})
    return outcomes


def run_grid_on_pool(store: str, cfg: SweepConfig, cells: list[Cell]) -> list[dict[str, Any]]:
    """Every cell of the grid on the gpu pool, packed where `grid.pack` packs; the cells' outcomes in
    the grid's order."""
    from sae_core.training import pool_pack_enabled, pool_packs

    units: list[list[Cell]] = [[c] for c in cells]
    if pool_pack_enabled(cfg) and len(cells) > 1:
        units, plan = pool_packs(store, cells, cfg)
        run_logger().info("%s; one train-pack run per pack of two or more cells", plan)

    def run(unit: list[Cell]) -> list[dict[str, Any]]:
        if len(unit) == 1:
            return run_cell_on_pool(store, cfg, unit[0])
        return run_pack_on_pool(store, cfg, unit)

    # Each thread runs in a copy of the flow run's context, so its subflows belong to this flow run.
    with ThreadPoolExecutor(max_workers=len(units), thread_name_prefix="pool") as pool:
        futures = [pool.submit(contextvars.copy_context().run, run, unit) for unit in units]
        by_cell = {o["cell"]: o for f in futures for o in f.result()}
    return [by_cell[c.name] for c in cells]
