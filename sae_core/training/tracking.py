"""WandB tracking: one run per grid cell, as a `TrainCallback`.

`tracking.mode`: `offline` (default; no account, a local run directory to `wandb sync` later), `online`
(needs the key in `tracking.api_key_env`), `disabled` (wandb is never imported, nothing is written).
Name `sae_<exp>x_<λ>_<strategy>`, group = the sweep name, the config, step metrics, resample events and
the final summary.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from sae_core.config import TrackingConfig
from sae_core.errors import SaeSweepError
from sae_core.training.callbacks import TrainCallback

log = logging.getLogger(__name__)


class WandbCallback(TrainCallback):
    def __init__(
        self,
        tracking: TrackingConfig,
        *,
        name: str,
        group: str,
        config: dict[str, Any],
        run_dir: str | Path,
    ) -> None:
        self.tracking = tracking
        self.name = name
        self.group = group
        self.config = config
        self.run_dir = Path(run_dir)
        self.run: Any = None

    def on_start(self, total_steps: int, info: dict) -> None:
        if self.tracking.mode == "disabled":
            return
        if self.tracking.mode == "online" and not os.environ.get(self.tracking.api_key_env):
            raise SaeSweepError(
                f"tracking.mode: online needs a WandB key in ${self.tracking.api_key_env} (it is unset); "
                "use offline or disabled"
            )
        import wandb

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.tracking.project,
            entity=self.tracking.entity,
            name=self.name,
            group=self.group,
            config={**self.config, "total_steps": total_steps},
            mode=self.tracking.mode,
            dir=str(self.run_dir),
            reinit="create_new",
        )

    def _log(self, step: int, metrics: dict, prefix: str) -> None:
        if self.run is None:
            return
        values = {
            f"{prefix}/{k}": v
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "step" and math.isfinite(v)
        }
        self.run.log(values, step=step)

    def on_log(self, step: int, metrics: dict) -> None:
        self._log(step, metrics, "train")

    def on_validation(self, step: int, metrics: dict) -> None:
        self._log(step, metrics, "val")

    def on_resample(self, step: int, neurons: int) -> None:
        if self.run is not None:
            self.run.log({"resample/neurons": neurons}, step=step)

    def on_end(self, metrics: dict) -> None:
        if self.run is None:
            return
        summary = {f"final/{k}": v for k, v in (metrics.get("final") or {}).items()}
        summary.update({f"val/final_{k}": v for k, v in (metrics.get("val") or {}).items()})
        summary["training_dead_fraction"] = metrics.get("training_dead_fraction")
        summary["tokens_per_s"] = metrics.get("tokens_per_s")
        summary["resample_events"] = len(metrics.get("resample_events", []))
        self.run.summary.update(summary)
        self.run.finish()
        self.run = None

    def close(self, failed: bool = False) -> None:
        """Finish the run if training stopped early (an error must not leave the run open)."""
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None
