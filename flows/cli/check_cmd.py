"""`sae-sweep check RUN_DIR`: the preflight of a run's SAELens export before it leaves the machine.

Loads `RUN_DIR/saelens` with SAELens, re-evaluates it on held-out tokens of the run's store and compares
it with the run's `.pth` and analysis.json (`sae_core.analysis.preflight`). Prints the figures and every
finding; exits 1 when a check fails, 0 otherwise (warnings included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.app import app


@app.command("check")
def check(
    run: Annotated[Path, typer.Argument(help="A trained run directory (holds metrics.json and saelens/).")],
    activations: Annotated[
        Path | None,
        typer.Option("--activations", "-a", help="The run's activation store (default: metrics.json's)."),
    ] = None,
    tokens: Annotated[int, typer.Option("--tokens", min=1, help="Held-out test tokens to check on.")] = 4096,
) -> None:
    """Check RUN's SAELens export: it loads in SAELens, computes what the run's .pth computes on the
    store's test tokens, matches analysis.json's EV and L0, reconstructs with cosine ≥ 0.8 (warns below
    0.9), and keeps unit-norm decoder rows (or 1/s with the normalisation folded in)."""
    from sae_core.analysis import check_run

    result = check_run(run, store=activations, tokens=tokens)
    for line in result.lines():
        typer.echo(line)
    if not result.ok:
        raise typer.Exit(1)
