"""Prefect settings this project needs, applied before Prefect is imported (it reads them at import)."""

from __future__ import annotations

import os

PREFECT_DEFAULTS = {
    # The embedded server otherwise reports usage to Prefect at start-up; offline (and on this
    # project's air-gapped workers) that attempt fails with a traceback in the middle of a normal run.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # sae_core logs through `logging`; route it into the run logs shown in the UI.
    "PREFECT_LOGGING_EXTRA_LOGGERS": "sae_core,tasks,flows",
    # The embedded server's own access log is noise in a terminal run.
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    # Its start-up (migrations on a fresh SQLite) takes 10-15 s on a laptop and more on a busy machine;
    # Prefect's 20 s default turned a slow start into a traceback.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def apply_prefect_defaults() -> None:
    """Set the project's Prefect defaults where the user has not set them."""
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
