"""Where a sweep's things live under `data_root`: the sweep's runs, a cell's run dir, Prefect's results."""

from __future__ import annotations

from pathlib import Path

from sae_core.config import SweepConfig
from sae_core.naming import Cell

PREFECT_DIRNAME = ".prefect"
"""Prefect's results and the stage locks, under data_root."""


def data_root(cfg: SweepConfig) -> Path:
    return Path(cfg.data_root).expanduser().resolve()


def sweep_dir(cfg: SweepConfig) -> Path:
    return data_root(cfg) / "runs" / cfg.name


def run_dir(cfg: SweepConfig, cell: Cell) -> Path:
    return sweep_dir(cfg) / cell.name


def result_storage(cfg: SweepConfig) -> Path:
    """Where task results (and so the cache records) are persisted: beside the data they describe."""
    return data_root(cfg) / PREFECT_DIRNAME / "results"


def with_absolute_root(cfg: SweepConfig) -> SweepConfig:
    """The same config with `data_root` made absolute, so every task and worker agrees on the paths."""
    return cfg.model_copy(update={"data_root": str(data_root(cfg))})
