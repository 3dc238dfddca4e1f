"""Packed training (`grid.pack`): the cells of a sweep trained together, one batch feeding every cell.

A sweep's cells share the store, the batch size, the token budget and the data seed, so they draw the
same batch at every step. A pack reads that batch once and hands it to each cell's own `Trainer` in turn
(own parameters, Adam, resampling, checkpoints, callbacks, run dir): on a GPU the cells' small matmuls
queue back to back instead of one cell's leaving it idle; the result of each cell is exactly the one it
gets alone (the same operations on the same tensors; bit-identical on a CPU, `tests/training/test_pack.py`).

Per cell, as alone: a completed run of the same config is not trained again (a pack trains only its
missing cells); a checkpoint is resumed — cells at different steps share the batch stream from the
earliest, each joining at its own step; a cell whose loss goes non-finite fails alone, the others go
on. Any architecture mix packs (each Trainer has its own step). Memory is planned before any cell is
built (`pack_memory`): a pack over the budget is split and trained part after part, the split logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from sae_core.config import SweepConfig
from sae_core.device import cpu_threads, resolve_device
from sae_core.errors import SaeSweepError
from sae_core.naming import Cell
from sae_core.training.checkpoint import config_hash
from sae_core.training.pack_memory import (
    available_bytes,
    cell_bytes,
    describe_plan,
    evaluation_bytes,
    split_pack,
)
from sae_core.training.run_cell import CellRun, cell_identity, completed_run, finish_cell, prepare_cell

log = logging.getLogger(__name__)

CELL_ERRORS = (SaeSweepError, OSError)
"""What fails one cell of a pack and not the others: its loss or config (TrainingError), its run dir's
files (StorageWriteError, OSError). Anything else (out of memory, a kill) stops the pack."""


def pack_enabled(cfg: SweepConfig) -> bool:
    """`grid.pack`: `device` packs, `none` does not, `auto` packs when training runs on CUDA."""
    if cfg.grid.pack == "auto":
        return resolve_device(cfg.training.device).type == "cuda"
    return cfg.grid.pack == "device"


def pool_pack_enabled(cfg: SweepConfig) -> bool:
    """`grid.pack` with `grid.placement: pool`: the cells train on a gpu pool worker's device, not the
    sweep's, so `auto` packs unless `training.device` names a CPU or MPS device."""
    if cfg.grid.pack == "auto":
        device = cfg.training.device
        return device == "auto" or torch.device(device).type == "cuda"
    return cfg.grid.pack == "device"


def plan_packs(
    cells: Sequence[Cell], cfg: SweepConfig, d_model: int, train_tokens: int, budget: int, source: str
) -> tuple[list[list[Cell]], str]:
    """The packs `cells` train in within `budget` bytes of device memory (`source` says where the figure
    comes from): each cell's estimate (`cell_bytes`), the budget less one evaluation for the widest cell
    (transient, one cell at a time), split first fit in the given order; and the plan as a log line."""
    training = cfg.training
    batch = min(training.batch_size, train_tokens)
    names = [c.name for c in cells]
    sizes = [
        cell_bytes(d_model, d_model * c.expansion, batch, c.architecture, training.val_tokens) for c in cells
    ]
    reserve = evaluation_bytes(max(d_model * c.expansion for c in cells), training.val_tokens)
    budget -= reserve
    source += f", less {reserve / 2**20:.1f} MB for one evaluation"
    by_name = {c.name: c for c in cells}
    groups = [[by_name[n] for n in group] for group in split_pack(names, sizes, budget)]
    return groups, describe_plan(names, sizes, budget, source)


def pool_packs(
    store_path: str | Path, cells: Sequence[Cell], cfg: SweepConfig
) -> tuple[list[list[Cell]], str]:
    """The packs of a `placement: pool` sweep, planned where the sweep runs (its store on shared storage,
    read for its width and size only) against a gpu worker's memory, `grid.pack_memory_gb`; unset, one
    pack of every cell, which the worker splits by its own free memory when it must (`train_pack`)."""
    from sae_core.store import ActivationStore

    store = ActivationStore.open(store_path)
    d_model, train_tokens = int(store.d_model), int(store.num_tokens_in("train"))
    if cfg.grid.pack_memory_gb is None:
        budget, source = 2**62, "grid.pack_memory_gb unset: one pack, split by the worker's free memory"
    else:
        budget, source = available_bytes(torch.device("cpu"), cfg.grid.pack_memory_gb)
    return plan_packs(cells, cfg, d_model, train_tokens, budget, source)


def train_pack(
    store_path: str | Path,
    cells: Sequence[Cell],
    cfg: SweepConfig,
    out_dirs: Mapping[str, str | Path],
    *,
    callbacks: Mapping[str, Sequence[Any]] | None = None,
) -> dict[str, dict[str, Any] | Exception]:
    """Train `cells` together on the store at `store_path`, each into `out_dirs[cell.name]` with
    `callbacks[cell.name]`; return each cell's `metrics.json` dict, or the exception it failed with
    (`CELL_ERRORS`: a bad cell does not stop the others; any other exception stops the pack, every
    cell keeping its last checkpoint)."""
    from sae_core.training.data import open_store_data
    from sae_core.training.normalize import normalized

    training = cfg.training
    device = resolve_device(training.device)
    data, store = open_store_data(store_path, device, training.max_memory_gb)
    data = normalized(data, store, training.normalize_activations)  # one s for every cell of the store
    results: dict[str, dict[str, Any] | Exception] = {}
    todo: list[Cell] = []
    for cell in cells:
        done = completed_run(Path(out_dirs[cell.name]), cell, config_hash(cell_identity(cell, cfg, data)))
        if done is not None:
            log.info("%s: already trained with this config, nothing to do", cell.name)
            results[cell.name] = done
        else:
            todo.append(cell)
    if not todo:
        return results
    budget, source = available_bytes(device, cfg.grid.pack_memory_gb)
    groups, plan = plan_packs(todo, cfg, data.d_model, data.train_tokens, budget, source)
    log.info("%s", plan)
    for group in groups:
        runs: list[CellRun] = []
        for cell in group:
            name = cell.name
            try:
                prepared = prepare_cell(
                    store_path,
                    data,
                    store,
                    cell,
                    cfg,
                    out_dirs[name],
                    callbacks=(callbacks or {}).get(name, ()),
                )
            except CELL_ERRORS as exc:  # e.g. a checkpoint of another config: that cell only
                log.error("%s cannot join its pack: %s", name, exc)
                results[name] = exc
                continue
            if isinstance(prepared, dict):  # completed meanwhile (another sweep of the same config)
                results[name] = prepared
            else:
                runs.append(prepared)
        results |= train_together(runs, data, cfg)
    return results


def train_together(runs: Sequence[CellRun], data: Any, cfg: SweepConfig) -> dict[str, Any]:
    """Step every run's Trainer on one shared batch stream to the end; write each run dir."""
    training = cfg.training
    results: dict[str, Any] = {}
    live: list[CellRun] = []

    def fail(run: CellRun, exc: Exception) -> None:
        log.error("%s failed in its pack: %s", run.cell.name, exc)
        run.tracker.close(failed=True)
        results[run.cell.name] = exc

    if not runs:
        return results
    device = runs[0].trainer.device
    with cpu_threads(training.num_threads, device):
        try:
            for run in runs:
                try:
                    run.trainer.start()
                    live.append(run)
                except CELL_ERRORS as exc:
                    fail(run, exc)
            step = min((r.trainer.state.step for r in live), default=0)
            batch = runs[0].trainer.batch_size
            batches = data.batches(batch, training.seed, step, shuffle=training.shuffle)
            while any(not r.trainer.done for r in live):
                x = next(batches)
                for run in list(live):
                    if run.trainer.state.step != step:  # resumed from a later checkpoint: joins there
                        continue
                    try:
                        run.trainer.train_step(x)
                    except CELL_ERRORS as exc:
                        live.remove(run)
                        fail(run, exc)
                step += 1
            for run in list(live):
                try:
                    results[run.cell.name] = finish_cell(run, run.trainer.finish())
                except CELL_ERRORS as exc:
                    fail(run, exc)
                live.remove(run)
        except BaseException:
            for run in live:
                run.tracker.close(failed=True)
            raise
    return results
