"""`sae-sweep label --run DIR`: label one cell's selected features through a small Prefect flow.

The flow gives the per-feature task runs their retries, cache and bounded concurrency, exactly as in a
sweep. Without `PREFECT_API_URL`, Prefect starts a temporary local server for the run. The API key is
read from `$<labeling.api_key_env>` (or the Secret block) inside the flow, never passed as a parameter.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.app import ConfigOpt, PresetOpt, SetOpt, app, resolve_config
from sae_core.errors import LabelingError


@app.command("label")
def label(
    run: Annotated[
        Path, typer.Option("--run", "-r", help="A cell's run dir (with features/ from `analyze`).")
    ],
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Label a cell's top and bottom features with an LLM; write labels.parquet and labels.json."""
    cfg = resolve_config(preset, config, set_, command="label")  # fail fast, before any server starts
    if not run.is_dir():
        raise LabelingError(f"--run: no such run directory {str(run)!r}")

    from tasks.credentials import check_label_key
    from tasks.paths import with_absolute_root
    from tasks.prefect_defaults import apply_prefect_defaults

    check_label_key(cfg)  # this process's allow-list, before any server starts

    apply_prefect_defaults()
    # One line per HTTP call (Prefect's API, the endpoint) drowns the labels in a terminal.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from sae_core.rundir import Labels, RunDir, parse

    found = _label_flow()(str(run.resolve()), with_absolute_root(cfg).model_dump(mode="json"), True)
    summary = parse(Labels, found, RunDir(run).labels)
    if summary.skipped_reason:
        typer.echo(f"labels skipped: {summary.skipped_reason}")
        return
    rate = summary.monosemanticity_rate
    typer.echo(
        f"{run.name}: {summary.labelled} labelled, {summary.polysemantic} polysemantic, "
        f"{summary.failed} failed, {summary.cached or 0} from cache; monosemanticity rate "
        + ("n/a" if rate is None else f"{rate:.3f}")
    )
    typer.echo(f"labels: {RunDir(run).labels_parquet}")


def _label_flow() -> Any:
    from prefect import flow

    from sae_core.config import validate_config
    from tasks.label import label_cell

    def run_name() -> str:
        from prefect.runtime import flow_run

        return f"label-{Path(flow_run.parameters['run_dir']).name}"

    @flow(name="label-cell", flow_run_name=run_name)
    def label_cell_flow(run_dir: str, config: dict[str, Any], terminal: bool = False) -> dict[str, Any]:
        """Label one cell (parameters: the run dir and the config, which holds no secret)."""
        if not terminal:
            return label_cell(run_dir, validate_config(config))
        from sae_core.progress import TqdmProgress

        with TqdmProgress("labels", unit="feature") as bar:
            return label_cell(run_dir, validate_config(config), progress=bar)

    return label_cell_flow
