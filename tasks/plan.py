"""The sweep's plan as its first UI artifact (`plan-<sweep>`, markdown): what `sae-sweep plan` prints,
from recorded figures (no measurement inside a sweep: the sweep's own process may not be on the GPU)."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from sae_core.config import SweepConfig
from tasks.progress import artifact_key, run_logger


@task(name="plan", task_run_name="plan-{cfg.name}", cache_policy=NO_CACHE)
def publish_plan(cfg: SweepConfig) -> str:
    """Publish the plan; a plan that cannot be made (e.g. a model whose width is unknown offline) is
    one warning, never a failed sweep: the plan informs, the sweep decides nothing from it."""
    from sae_core.errors import SaeSweepError
    from sae_core.plan import build_plan

    # With `placement: pool` the cells train on the gpu pool's workers, not in this process.
    device = "cuda" if cfg.grid.placement == "pool" else None
    try:
        text = build_plan(cfg, train_device=device).markdown()
    except (SaeSweepError, OSError, ValueError) as exc:
        run_logger().warning("plan not published: %s", exc)
        return ""
    create_markdown_artifact(
        text, key=artifact_key("plan", cfg.name), description=f"Sweep {cfg.name}: the plan before it ran"
    )
    run_logger().info("plan of sweep %s published (artifact plan-%s)", cfg.name, cfg.name)
    return text
