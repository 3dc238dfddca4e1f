"""Extraction as a flow of its own: the `extract` deployment that a `gpu` pool worker runs when the sweep's
`grid.placement` is `pool`, so the model runs where the GPUs are (GPT-2 small over OpenWebText-10k is about
a minute on a GPU and hours on the sweep's CPU worker). The store lands under the shared `data_root`,
where the sweep and every cell read it; the task is cached by content exactly as in the sweep's process.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.data_root import lasting_root
from sae_core.config import validate_config


@flow(name="extract", flow_run_name="extract-activations")
def extract_flow(config: dict[str, Any]) -> dict[str, Any]:
    """Extract the activation store of a sweep's config (or find it complete) on shared storage.

    Args:
        config: The sweep's full, resolved config (the sweep passes it; `sae-sweep config show` prints
            one). Its `data_root` must be storage this worker shares with the sweep and the cells.
    """
    from flows.pool_runs import check_heartbeat
    from tasks.extract import run_extract

    cfg = lasting_root(validate_config(config))
    check_heartbeat(cfg)
    return run_extract(cfg)
