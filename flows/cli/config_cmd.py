"""`sae-sweep config show|presets`: inspect the resolved configuration."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli.app import DEFAULT_PRESET, ConfigOpt, PresetOpt, SetOpt, app, config_source, resolve_config
from sae_core.config import config_to_yaml, field_descriptions, preset_names
from sae_core.naming import grid_cells

config_app = typer.Typer(help="Show the resolved configuration and the presets.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def show(
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    explain: Annotated[bool, typer.Option(help="Print every key with its description.")] = False,
    bare: Annotated[
        bool,
        typer.Option(
            "--no-preset", help="Without --preset/--config: the config's own defaults (what `train` uses)."
        ),
    ] = False,
) -> None:
    """Print the resolved config as YAML (first line: which preset it came from), then the grid's cells.
    Without --preset/--config it shows the `demo` preset the pipeline commands default to; `train`
    defaults to no preset (`--no-preset` shows that)."""
    default = None if bare else DEFAULT_PRESET
    cfg = resolve_config(preset, config, set_, default_preset=default)
    typer.echo(f"# {config_source(preset, config, default)}")
    if explain:
        values = _flatten(cfg.model_dump(mode="json"))
        for key, text in field_descriptions().items():
            typer.echo(f"{key} = {values.get(key)!r}\n    {text}")
        return
    typer.echo(config_to_yaml(cfg).rstrip())
    cells = grid_cells(cfg.grid)
    typer.echo(f"# grid: {len(cells)} cells")
    for cell in cells:
        typer.echo(f"#   {cell.name}  →  {cell.weights_filename}")


@config_app.command("presets")
def presets() -> None:
    """List the shipped presets."""
    for name in preset_names():
        typer.echo(name)


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
