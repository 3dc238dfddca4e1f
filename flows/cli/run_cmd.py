"""`sae-sweep run`: the whole sweep, through the same Prefect flow the UI triggers.

Without `PREFECT_API_URL` Prefect starts a temporary local server for the run (SQLite under
`PREFECT_HOME`); with it, the run shows in that server's UI. The config is validated before Prefect
starts, so a wrong key costs no server start-up.
"""

from __future__ import annotations

import logging

import typer

from flows.cli.app import ConfigOpt, PresetOpt, SetOpt, app, resolve_config
from sae_core.config import parse_set


@app.command("run")
def run(preset: PresetOpt = None, config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Run the sweep (extract, train every cell, analyse, label, upload, report) as a Prefect flow."""
    cfg = resolve_config(preset, config, set_, command="run")  # fail fast, before any server starts
    from sae_core.io import check_writable
    from tasks.credentials import check_credentials
    from tasks.paths import data_root
    from tasks.prefect_defaults import apply_prefect_defaults

    if cfg.grid.placement == "local":  # pool workers check their own allow-lists
        check_credentials(cfg)  # this process's allow-list, before any server starts
    # Then storage, still before any server starts (creates data_root: after the checks that write nothing).
    check_writable(data_root(cfg))

    apply_prefect_defaults()
    # One line per HTTP call to the local API server would drown the run's own log lines.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from flows.sweep import sae_sweep

    if config is None:
        # Preset + overrides: the run's parameters read as the user typed them.
        state = sae_sweep(preset=preset or "demo", overrides=parse_set(set_ or []), return_state=True)
    else:
        # The config replaces the preset; the run is named after the config's name.
        state = sae_sweep(preset=preset or "demo", config=cfg.model_dump(mode="json"), return_state=True)

    from tasks.paths import sweep_dir

    report = sweep_dir(cfg) / "report" / "report.html"
    if state.is_completed():
        summary = state.result()
        wall, work = summary["wall_s"], summary["work_s"]
        typer.echo(
            f"sweep {cfg.name} completed in {wall:.0f} s (stage work {work:.0f} s, "
            f"Prefect overhead {max(wall - work, 0.0) / wall:.0%})"
        )
        typer.echo(f"report: {report}")
        return
    typer.echo(f"sweep {cfg.name} {state.name.lower()}: {state.message}", err=True)
    if report.exists():
        typer.echo(f"report (partial): {report}")
    # SystemExit, not typer.Exit: the CLI runs click with standalone_mode=False, where Exit is swallowed.
    raise SystemExit(1)
