"""`sae-sweep analyze`: feature statistics, examples, correlation and evaluation of one trained cell.

Prints a short summary, then the path of `analysis.json` as the last line of standard output; the
progress bar (tokens/s, L0) goes to standard error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.app import ConfigOpt, PresetOpt, SetOpt, app, resolve_config


@app.command("analyze")
def analyze(
    activations: Annotated[Path, typer.Option("--activations", "-a", help="Activation store directory.")],
    run: Annotated[Path, typer.Option("--run", "-r", help="Run directory holding model_weights_*.pth.")],
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Analyse the SAE in RUN on the store's `analysis.split`: writes RUN/features/ and RUN/analysis.json
    (dead %, selectivity, examples, correlation, reconstruction metrics, CE-loss recovered)."""
    cfg = resolve_config(preset, config, set_, command="analyze")
    from sae_core.analysis import analyze_run
    from sae_core.rundir import Analysis, RunDir, dead_caption, parse, pct

    bar = _LazyBar(f"analysing {run.name}")
    try:
        summary = parse(Analysis, analyze_run(activations, run, cfg, bar), RunDir(run).analysis)
    finally:
        bar.close()
    ce = summary.ce_loss
    dead = f"{summary.dead_count}/{summary.d_hidden}"
    fraction = pct(summary.dead_fraction) if summary.dead_fraction is not None else "n/a"
    selected = summary.selected or {}
    typer.echo(
        f"{summary.cell}: {summary.tokens_analyzed} {summary.split} tokens, "
        f"{dead_caption(summary.dead_threshold, summary.dead_split)} {dead} ({fraction}), "
        f"L0 {_fmt(summary.l0)}, explained variance {_fmt(summary.explained_variance)}, "
        f"CE-loss recovered {_fmt(ce.recovered) if ce else summary.ce_loss_note}"
    )
    typer.echo(f"selected: top {selected.get('top')} bottom {selected.get('bottom')}")
    typer.echo(str(RunDir(run).analysis))


class _LazyBar:
    """A tqdm bar opened at the first progress report: bad input fails before any bar is drawn."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar = None

    def __call__(self, done: int, total: int | None, info: dict[str, float]) -> None:
        if self.bar is None:
            from sae_core.progress import TqdmProgress

            self.bar = TqdmProgress(self.desc, unit="tok")
        self.bar(done, total, info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"
