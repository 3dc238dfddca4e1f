"""The sweep as a Prefect flow: extract once, then per grid cell train → analyze → label → upload, then
the report. Triggered from the Prefect UI (the `sae-sweep` deployment) or by `sae-sweep run`.

Parameters are the preset and dotted overrides (exactly like the CLI's `--set`), or a full config; the
UI renders them as a form. Secrets are never parameters: tasks read them from the environment or from
Prefect Secret blocks named in the config.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal

from tasks.prefect_defaults import apply_prefect_defaults

apply_prefect_defaults()

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402
from prefect.states import Failed  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from flows.data_root import lasting_root  # noqa: E402
from flows.train_cell import run_cell_chain  # noqa: E402
from sae_core.config import (  # noqa: E402
    SweepConfig,
    apply_overrides,
    load_config,
    preset_names,
    validate_config,
)
from sae_core.io import check_writable  # noqa: E402
from sae_core.naming import Cell, grid_cells  # noqa: E402
from tasks.paths import data_root, sweep_dir  # noqa: E402
from tasks.progress import run_logger  # noqa: E402

# The presets shipped in sae_core/presets, as a choice in the deployment's run form.
PresetName = Literal[tuple(preset_names())]  # type: ignore[valid-type]


def resolve_sweep_config(
    preset: str = "demo", overrides: dict[str, Any] | None = None, config: dict[str, Any] | None = None
) -> SweepConfig:
    """`config` (a full mapping) replaces the preset when given; `overrides` apply on top of either."""
    if config is not None:
        cfg = validate_config(apply_overrides(config, overrides or {}))
    else:
        cfg = load_config(preset, None, overrides or {})
    return lasting_root(cfg)


def _sweep_run_name() -> str:
    """`<preset or config name>-<when the run was asked for, UTC>`: the scheduled start (the creation
    time for a run started now), not the start, so a retry or a queued run keeps the name it got."""
    params = flow_run.parameters
    label = (params.get("config") or {}).get("name") or params.get("preset") or "sweep"
    when = flow_run.scheduled_start_time or datetime.now(UTC)
    return f"{label}-{when.astimezone(UTC):%Y%m%d-%H%M%S}"


# Not cached itself (its stages are, each by content) and never retried as a whole (each stage retries
# its own transient errors): a cell's train, analyze, label, browse and upload task runs are its children.
@task(name="cell", task_run_name="cell-{cell.task_name}", cache_policy=NO_CACHE, retries=0)
def cell_task(store: str, cell: Cell, cfg: SweepConfig) -> dict[str, Any]:
    """One grid cell of a local sweep, start to finish (`flows.train_cell.run_cell_chain`)."""
    return run_cell_chain(store, cell, cfg)


def _failed(cell: Cell, exc: BaseException) -> dict[str, Any]:
    run_logger().error("cell %s failed: %s: %s", cell.name, type(exc).__name__, exc)
    return {"cell": cell.name, "status": "failed", "error": f"{type(exc).__name__}: {exc}", "work_s": 0.0}


def run_cells(store: str, cells: list[Cell], cfg: SweepConfig) -> list[dict[str, Any]]:
    """Every cell as a `cell` task run, in grid order, `grid.max_concurrency` at once through Prefect's
    thread-pool task runner. A failed cell is recorded, not raised: the others go on.

    At 1 the cells run one after another in the flow's own thread, as task runs called, not submitted:
    SIGTERM or Ctrl-C then interrupts the cell where it is (`flows/cli/stopping.py`), where a worker
    thread would train on, unseen, until the hard stop. Above 1, a runner of their own, not the flow's:
    the bound is the config's, and what a cell submits (the labelling requests) goes to runners of its
    own, so it never waits for a slot its cell holds."""
    if cfg.grid.max_concurrency <= 1:
        outcomes = []
        for cell in cells:
            try:
                outcomes.append(cell_task(store, cell, cfg))
            except Exception as exc:
                outcomes.append(_failed(cell, exc))
        return outcomes
    with ThreadPoolTaskRunner(max_workers=cfg.grid.max_concurrency) as runner:
        futures = [runner.submit(cell_task, {"store": store, "cell": cell, "cfg": cfg}) for cell in cells]
        outcomes = []
        for cell, future in zip(cells, futures, strict=True):
            try:
                outcomes.append(future.result())
            except Exception as exc:
                outcomes.append(_failed(cell, exc))
        return outcomes


def _extract(cfg: SweepConfig) -> dict[str, Any]:
    """The activation store: extracted here (`placement: local`), or by a run of the `extract`
    deployment on the GPU pool (`placement: pool`), read back from the shared data_root."""
    from tasks.cache import store_complete
    from tasks.extract import expected_store, run_extract

    if cfg.grid.placement == "local":
        return run_extract(cfg)
    from flows.pool_runs import run_stage_deployment

    run_stage_deployment(
        cfg,
        cfg.grid.extract_deployment,
        {"config": cfg.model_dump(mode="json")},
        key=f"{flow_run.id}:{flow_run.run_count}:extract",
        run_name="extract-activations",
        what="extraction",
    )
    store = expected_store(cfg)
    if not store_complete(store):
        raise RuntimeError(
            f"{cfg.grid.extract_deployment} completed but the store {store} is not on this machine: "
            "data_root must be storage the sweep and the gpu workers share"
        )
    return {"store": store, "work_s": 0.0}


@flow(name="sae-sweep", flow_run_name=_sweep_run_name)
def sae_sweep(
    preset: PresetName = "demo",  # type: ignore[valid-type]
    overrides: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> Any:
    """Run a sweep: extract once, then train, analyse, label and upload every grid cell, then report.

    Args:
        preset: A shipped preset: `demo` (a small GPT-2 built locally, a 2x2x2 grid, minutes on a laptop
            CPU) or `seed` (the study: GPT-2 small, layer 6, OpenWebText-10k, 16 cells). Ignored when
            `config` is given.
        overrides: Dotted keys set on top of the preset (or of `config`), exactly like the CLI's --set,
            e.g. {"grid.expansion_factors": [4, 8], "training.lr": 0.0003, "data_root": "/srv/sae_data"}.
            `sae-sweep config show --explain` lists every key.
        config: A full config mapping (what `sae-sweep config show` prints) used instead of the preset;
            leave it empty to use the preset.
    """
    wall_start = time.perf_counter()
    logger = run_logger()
    cfg = resolve_sweep_config(preset, overrides, config)
    if cfg.grid.placement == "local":  # pool workers check their own allow-lists (train_cell_flow)
        from tasks.credentials import check_credentials

        check_credentials(cfg)
    # Before any work: a read-only data_root otherwise failed at extraction's first shard, retried.
    check_writable(data_root(cfg))
    cells = grid_cells(cfg.grid)
    from tasks.plan import publish_plan

    publish_plan(cfg)  # the first artifact: what the sweep will take, before it takes it
    logger.info(
        "sweep %s: %d cells, placement %s, data_root %s",
        cfg.name,
        len(cells),
        cfg.grid.placement,
        cfg.data_root,
    )

    extracted = _extract(cfg)
    store = extracted["store"]
    pack_s = 0.0
    if cfg.grid.placement == "local":
        from tasks.train import run_train_packs

        pack_s = run_train_packs(store, cells, cfg)  # grid.pack: the cells' training, shared batches
        outcomes = run_cells(store, cells, cfg)
    else:
        from flows.pool_sweep import run_grid_on_pool

        outcomes = run_grid_on_pool(store, cfg, cells)  # packs as train-pack runs, lone cells as train-cell

    report: dict[str, Any] = {}
    report_error = None
    report_s = 0.0
    try:
        from tasks.report import report_sweep

        report_start = time.perf_counter()
        report = report_sweep(str(sweep_dir(cfg)), cfg) or {}
        report_s = time.perf_counter() - report_start
    except Exception as exc:
        report_error = f"{type(exc).__name__}: {exc}"
        logger.error("report failed: %s", report_error)

    failed = [o["cell"] for o in outcomes if o["status"] != "completed"]
    work_s = extracted.get("work_s", 0.0) + pack_s + sum(o.get("work_s", 0.0) for o in outcomes)
    work_s += report_s  # the report task publishes its own artifacts: counted as stage work
    summary = {
        "sweep": cfg.name,
        "sweep_dir": str(sweep_dir(cfg)),
        "store": store,
        "cells": {o["cell"]: o["status"] for o in outcomes},
        "failed": failed,
        "report": report.get("report_html") or str(sweep_dir(cfg) / "report" / "report.html"),
        "wall_s": time.perf_counter() - wall_start,
        "work_s": work_s,
    }
    _publish(cfg, summary, outcomes, report_error)
    if failed or report_error:
        parts = []
        if failed:
            parts.append(f"{len(failed)} of {len(cells)} cells failed: {', '.join(failed)}")
        if report_error:
            parts.append(f"report failed: {report_error}")
        return Failed(message="; ".join(parts), data=summary)
    logger.info("sweep %s done in %.0f s; report: %s", cfg.name, summary["wall_s"], summary["report"])
    return summary


def _publish(
    cfg: SweepConfig, summary: dict[str, Any], outcomes: list[dict[str, Any]], report_error: str | None
) -> None:
    """The sweep's two artifacts: the grid table and the markdown report (see tasks/report.py)."""
    from tasks.report import hub_browser_links, publish_grid, publish_report

    publish_grid(cfg)
    publish_report(cfg, outcomes, report_error, hub_browser_links(cfg, outcomes))
