"""A pack of grid cells on one GPU worker (`grid.placement: pool` with `grid.pack`): the `train-pack` flow
trains the pack's cells together on shared batches (the `train_pack` task of local placement), then
analyses each cell on the same device. Labels, upload and the report stay with the sweep, which reads the
results back from `data_root` and finds each cell's train and analyze tasks cache hits (their results
persist under `data_root/.prefect/results`, keyed by content: the same key in any process).

A lost pack run submitted again resumes every cell from its checkpoint; a partly trained pack trains only
its missing cells (a completed cell is not trained again: `run_train_packs`).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Failed

from flows.data_root import lasting_root
from sae_core.config import SweepConfig, validate_config
from sae_core.naming import Cell


def run_pack_chain(store: str, cells: list[Cell], cfg: SweepConfig) -> dict[str, Any]:
    """Train `cells` as one pack, then each cell's own train task (a run already complete: it records
    the cache entry the sweep's hits on) and its analysis. A cell that fails is recorded, the others go
    on. Returns `{"cells": {name: "completed" | "failed: <error>"}, "work_s": seconds}`."""
    from tasks.analyze import run_analyze
    from tasks.locks import stage_lock
    from tasks.progress import run_logger
    from tasks.train import run_train, run_train_packs

    status: dict[str, str] = {}
    start = time.perf_counter()
    # The cells' locks, as each cell's chain takes it (one order: two holders cannot deadlock): a pack
    # run submitted again while its lost twin still runs waits here, then finds its cells done.
    with contextlib.ExitStack() as locks:
        for cell in sorted(cells, key=lambda c: c.name):
            locks.enter_context(stage_lock(cfg, f"cell-{cfg.name}-{cell.name}"))
        run_train_packs(store, cells, cfg)
        for cell in cells:
            try:
                run_train(store, cell, cfg)  # trains a cell its pack failed, alone, from its checkpoint
                run_analyze(store, cell, cfg)
                status[cell.name] = "completed"
            except Exception as exc:
                run_logger().error("cell %s failed: %s: %s", cell.name, type(exc).__name__, exc)
                status[cell.name] = f"failed: {type(exc).__name__}: {exc}"
    return {"cells": status, "work_s": time.perf_counter() - start}


def _pack_run_name() -> str:
    from tasks.train import pack_run_name

    return pack_run_name([Cell.parse(c) for c in flow_run.parameters["cells"]])


@flow(name="train-pack", flow_run_name=_pack_run_name)
def train_pack_flow(config: dict[str, Any], cells: list[str], store: str) -> Any:
    """Train a pack of cells of a sweep on shared batches, then analyse each (what a `gpu` pool worker
    executes when the sweep packs its cells); labels, upload and the report stay with the sweep.

    Args:
        config: The sweep's full, resolved config (the sweep passes it; `sae-sweep config show` prints
            one). Its `data_root` must be storage this worker shares with the sweep.
        cells: The pack's grid cells, each `<expansion>x-<l1 coefficient>-<strategy>` (or another
            architecture's cell name), e.g. ["4x-0.001-sampling", "8x-0.001-sampling"].
        store: The activation store to read, extracted by the sweep's `extract` run on shared storage.
    """
    cfg = lasting_root(validate_config(config))
    from flows.pool_runs import check_heartbeat

    check_heartbeat(cfg)
    result = run_pack_chain(store, [Cell.parse(c) for c in cells], cfg)
    failed = {name: s for name, s in result["cells"].items() if s != "completed"}
    if failed:
        # Failed, not Crashed: the sweep does not submit it again (a NaN loss fails the same way again).
        message = "; ".join(f"{name} {s}" for name, s in failed.items())
        return Failed(message=f"{len(failed)} of {len(cells)} cells failed: {message}", data=result)
    return result
