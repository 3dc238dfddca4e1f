"""`sae-sweep plan`: what a sweep will cost before a pod is paid for (`sae_core.plan`)."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli.app import ConfigOpt, PresetOpt, SetOpt, app, resolve_config


@app.command("plan")
def plan(
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    gpu_memory_gb: Annotated[
        float | None,
        typer.Option(
            "--gpu-memory-gb", min=0.001, help="Plan the packs for one GPU of this much memory (GB)."
        ),
    ] = None,
    measure: Annotated[
        bool,
        typer.Option(help="Time a few real training steps of each pack on this machine's device."),
    ] = False,
) -> None:
    """Print the sweep's plan: data source, tokens per split, store size, cells and their packs, memory
    per pack, optimizer steps per cell and a projected training wall time (with its source)."""
    from sae_core.plan import build_plan

    cfg = resolve_config(preset, config, set_)
    typer.echo(build_plan(cfg, gpu_memory_gb=gpu_memory_gb, measure=measure).markdown().rstrip())
