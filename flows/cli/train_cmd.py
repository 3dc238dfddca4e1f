"""`sae-sweep train`: train one SAE (one grid cell) from an activation store, with a progress bar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.app import ConfigOpt, PresetOpt, SetOpt, app, resolve_config
from sae_core.architectures import SPECS

_OPTION = {"l1": "--l1", "k": "--k", "l0": "--l0"}
"""The option each sparsity field (`Sparsity.field`) is given with."""


def _takers(field: str) -> str:
    return ", ".join(n for n, s in SPECS.items() if s.sparsity.field == field)


_ARCHITECTURE_HELP = "; ".join(f"`{n}` ({_OPTION[s.sparsity.field]}): {s.summary}" for n, s in SPECS.items())
_AUXK_TAKERS = "/".join(n for n, s in SPECS.items() if "auxk" in s.strategies)


@app.command("train")
def train(
    activations: Annotated[Path, typer.Option("--activations", "-a", help="Activation store directory.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Run directory to write (resumes if it holds one).")
    ],
    expansion: Annotated[int, typer.Option(help="SAE width as a multiple of d_model.")] = 8,
    l1: Annotated[float, typer.Option("--l1", help="Sparsity penalty λ (see training.l1_scaling).")] = 1e-4,
    strategy: Annotated[
        str,
        typer.Option(help=f"`sampling` (resample dead neurons), `nosampling`, or `auxk` ({_AUXK_TAKERS})."),
    ] = "sampling",
    architecture: Annotated[
        str,
        typer.Option(help=_ARCHITECTURE_HELP),
    ] = "relu",
    k: Annotated[int | None, typer.Option("--k", help=f"Active latents per token ({_takers('k')}).")] = None,
    l0: Annotated[
        float | None, typer.Option("--l0", help=f"L0 penalty coefficient ({_takers('l0')}).")
    ] = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Train one SAE cell; writes the .pth, the SAELens export, metrics.json and train_log.parquet."""
    from sae_core.errors import TrainingError
    from sae_core.io import check_writable
    from sae_core.naming import Cell
    from sae_core.progress import TqdmProgress
    from sae_core.rundir import Metrics, RunDir, parse
    from sae_core.training import train_cell

    # No preset named: one cell's documented TrainingConfig defaults, not the demo's (said on stderr).
    cfg = resolve_config(preset, config, set_, default_preset=None, command="train")
    cfg = standalone_threads(cfg, config, set_)
    check_writable(out)  # before training: a read-only --out was found at the first checkpoint
    try:
        field = SPECS[architecture].sparsity.field if architecture in SPECS else None
        if field == "l1":
            cell = Cell(expansion, float(l1), strategy, architecture)
        else:  # λ is relu's: another architecture's cell has l1 = 0 and its own sparsity
            cell = Cell(expansion, 0.0, strategy, architecture, k=k, l0=l0)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    with TqdmProgress(f"train {cell.name}") as bar:
        metrics = parse(Metrics, train_cell(activations, cell, cfg, out, progress=bar), RunDir(out).metrics)
    summary = {
        "cell": metrics.cell,
        "steps": metrics.steps,
        "tokens_trained": metrics.tokens_trained,
        "tokens_per_s": metrics.tokens_per_s,
        "training_dead_fraction": metrics.training_dead_fraction,
        "final": metrics.final.to_json() if metrics.final is not None else None,
        "resample_events": len(metrics.resample_events or []),
    }
    typer.echo(json.dumps(summary, indent=2))
    typer.echo(f"wrote {out / cell.weights_filename}")


def standalone_threads(cfg: Any, config: Path | None, sets: list[str] | None) -> Any:
    """`sae-sweep train` runs alone: a preset's `training.num_threads` (the demo's 1 is for cells trained
    beside the Prefect server) becomes 0, all cores, unless `--set training.num_threads=N` or a
    `--config` file says otherwise. With the demo's 1 the whole process ran 0.82x SAELens; all cores,
    1.52x (docs/results.md, "Fixed costs")."""
    named = any(s.split("=", 1)[0].strip() == "training.num_threads" for s in sets or [])
    if config is not None or named or cfg.training.num_threads == 0:
        return cfg
    return cfg.model_copy(update={"training": cfg.training.model_copy(update={"num_threads": 0})})
