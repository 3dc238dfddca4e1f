"""One grid cell, start to finish: train → analyze → label → upload.

The same chain runs inside the sweep's process (`grid.placement: local`) and as the `train-cell` flow
that GPU workers pick up from the `gpu` work pool (`grid.placement: pool`). Everything a cell produces
lands in its run dir under `data_root`, which is how the sweep reads the results back either way.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from flows.data_root import lasting_root
from sae_core.config import SweepConfig, validate_config
from sae_core.naming import Cell


def run_cell_chain(store: str, cell: Cell, cfg: SweepConfig) -> dict[str, Any]:
    """The per-cell tasks in order; returns each stage's small result and the seconds of stage work."""
    from tasks.analyze import run_analyze
    from tasks.label import label_cell
    from tasks.locks import stage_lock
    from tasks.report import browse_cell
    from tasks.train import run_train
    from tasks.upload import upload_cell

    # One holder per cell from training to the last output: a second sweep of the same config (another
    # process, another server, a resubmitted run whose lost twin still runs) waits here, then finds every
    # stage a cache hit instead of writing the same files again. The kernel drops it when its holder dies.
    with stage_lock(cfg, f"cell-{cfg.name}-{cell.name}"):
        trained = run_train(store, cell, cfg)
        analysed = run_analyze(store, cell, cfg)
        start = time.perf_counter()
        labels = label_cell(trained["run_dir"], cfg)
        # The browser embeds the labels, and is uploaded with the cell: write it between the two.
        browse_cell(trained["run_dir"])
        label_s = time.perf_counter() - start
        uploaded = upload_cell(cell.name, cfg)
        return {
            "cell": cell.name,
            "status": "completed",
            "run_dir": trained["run_dir"],
            "train": trained,
            "analyze": analysed,
            "labels": labels,
            "upload": uploaded,
            # labelling submits its own tasks, so its wall time includes some Prefect work: counted as
            # stage work anyway (it is mostly waiting on the endpoint, or nothing when skipped).
            "work_s": trained.get("work_s", 0.0)
            + analysed.get("work_s", 0.0)
            + label_s
            + uploaded.get("work_s", 0.0),
        }


def _cell_run_name() -> str:
    return f"cell-{Cell.parse(flow_run.parameters['cell']).task_name}"


@flow(name="train-cell", flow_run_name=_cell_run_name)
def train_cell_flow(config: dict[str, Any], cell: str, store: str | None = None) -> dict[str, Any]:
    """Run one cell of a sweep (what a `gpu` pool worker executes): train, analyse, label, upload.

    Args:
        config: The sweep's full, resolved config (the sweep passes it; `sae-sweep config show` prints
            one). Its `data_root` must be storage this worker shares with the sweep.
        cell: The grid cell, `<expansion>x-<l1 coefficient>-<strategy>`, e.g. `4x-0.001-sampling`.
        store: The activation store to read (extracted by the sweep on shared storage); when empty it
            is extracted here, a cache hit when it exists.
    """
    cfg = lasting_root(validate_config(config))
    from flows.pool_runs import check_heartbeat
    from tasks.credentials import check_credentials

    check_credentials(cfg)  # before any work: this worker's allow-list, not the sweep's

    check_heartbeat(cfg)
    the_cell = Cell.parse(cell)
    if store is None:
        from tasks.extract import run_extract

        store = run_extract(cfg)["store"]
    return run_cell_chain(store, the_cell, cfg)
