"""`sae-sweep report` (the sweep's tables and plots) and `sae-sweep browse` (one cell's feature browser)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.app import ConfigOpt, PresetOpt, SetOpt, app, resolve_config


@app.command("report")
def report(
    sweep: Annotated[
        Path | None,
        typer.Option("--sweep", help="Sweep directory (data_root/runs/<name>); default from the config."),
    ] = None,
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    published: Annotated[
        bool | None,
        typer.Option(
            "--published/--no-published",
            help="Show the study's published numbers beside ours (default: only for the seed preset).",
        ),
    ] = None,
    browsers: Annotated[
        bool, typer.Option("--browsers/--no-browsers", help="Also write each analysed cell's browser.")
    ] = True,
) -> None:
    """Write <sweep>/report/: report.md, report.html (self-contained), tables.json and the plots."""
    from sae_core.progress import TqdmProgress
    from sae_core.report import build_report, write_browsers

    # The config adds the expected grid (cells never run show as missing) and the preset's name.
    given = preset is not None or config is not None or bool(set_) or sweep is None
    cfg = resolve_config(preset, config, set_, command="report") if given else None
    sweep_dir = sweep if sweep is not None else Path(cfg.data_root) / "runs" / cfg.name  # type: ignore[union-attr]
    if browsers:
        for cell, page in write_browsers(sweep_dir).items():
            typer.echo(f"browser {cell}: {page}")
    with TqdmProgress("report", unit="step") as bar:
        out = build_report(sweep_dir, cfg, compare_published=published, progress=bar)
    typer.echo(f"report: {out / 'report.html'}")
    typer.echo(f"        {out / 'report.md'}")


@app.command("browse")
def browse(
    run: Annotated[Path, typer.Option("--run", help="A cell's run directory (runs/<sweep>/<cell>).")],
    open_: Annotated[bool, typer.Option("--open", help="Open the page in the default web browser.")] = False,
) -> None:
    """Write <run>/browser.html, the self-contained feature browser, and print its path."""
    from sae_core.report import write_browser

    page = write_browser(run)
    typer.echo(str(page))
    if open_:
        import webbrowser

        webbrowser.open(page.resolve().as_uri())
