"""Where `data_root` is by default, and how a deployed run anchors a relative one (its process worker's
working directory is temporary and deleted with the run)."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT_ENV = "SAE_SWEEP_DATA_ROOT"
"""Environment variable holding the default `data_root` (the deployments and the worker image set it)."""


def default_data_root() -> str:
    """`$SAE_SWEEP_DATA_ROOT` when set, else `./sae_data` (relative to the working directory)."""
    return os.environ.get(DATA_ROOT_ENV) or "./sae_data"


def user_data_dir() -> Path:
    """The per-user data directory: `$XDG_DATA_HOME/sae-sweep`, by default `~/.local/share/sae-sweep`."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path("~/.local/share").expanduser())
    return Path(base).expanduser() / "sae-sweep"


def anchored_data_root(data_root: str, base: Path) -> str:
    """`data_root` as an absolute path: `~` expanded, and a relative path taken under `base` (not under
    the working directory, which a deployed run's process worker deletes when the run ends)."""
    path = Path(data_root).expanduser()
    return str(path if path.is_absolute() else base / path)
