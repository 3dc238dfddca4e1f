"""`sae-sweep config show|presets`: inspect the resolved configuration."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli.app import ConfigOpt, PresetOpt, SetOpt, app, resolve_config
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
) -> None:
    """Print the resolved config as YAML, then the grid's cells."""
    cfg = resolve_config(preset, config, set_)
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
