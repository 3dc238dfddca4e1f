"""Where a flow run writes: somewhere that outlives the run.

A process worker runs each flow run of a deployment in a temporary working directory and deletes it when
the run ends. A relative `data_root` (the default `./sae_data` included) would put the weights, reports
and the task cache there, so in a deployed run it is taken under the per-user data directory instead;
the deployments and the worker image set `SAE_SWEEP_DATA_ROOT` to an absolute path, which wins.
"""

from __future__ import annotations

from pathlib import Path

from prefect.runtime import deployment

from sae_core.config import SweepConfig, anchored_data_root, user_data_dir
from tasks.paths import with_absolute_root
from tasks.progress import run_logger


def in_deployed_run() -> bool:
    """True inside a flow run created from a deployment (what a worker executes)."""
    return deployment.id is not None


def lasting_root(cfg: SweepConfig, deployed: bool | None = None) -> SweepConfig:
    """`cfg` with an absolute `data_root`; in a deployed run a relative one goes under `user_data_dir()`."""
    deployed = in_deployed_run() if deployed is None else deployed
    if deployed and not Path(cfg.data_root).expanduser().is_absolute():
        anchored = anchored_data_root(cfg.data_root, user_data_dir())
        run_logger().warning(
            "data_root %r is relative and this deployed run's working directory is temporary (the "
            "worker deletes it): writing under %s instead. Set data_root or SAE_SWEEP_DATA_ROOT to an "
            "absolute path to choose.",
            cfg.data_root,
            anchored,
        )
        cfg = cfg.model_copy(update={"data_root": anchored})
    return with_absolute_root(cfg)
