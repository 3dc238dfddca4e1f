"""The `sae-sweep` Typer application and the options every config-taking command shares."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sae_core.config import SweepConfig, load_config, parse_set

app = typer.Typer(
    name="sae-sweep",
    help="Train sparse autoencoders on a language model's residual stream and measure which "
    "features are monosemantic: extraction, a grid of SAEs, analysis, LLM labels, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

PresetOpt = Annotated[
    str | None, typer.Option("--preset", "-p", help="Preset to start from (`seed`, `demo`).")
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML file applied on top of the preset.")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override one key, e.g. --set grid.expansion_factors=[4,8] (YAML value)."
    ),
]


def resolve_config(preset: str | None, config: Path | None, sets: list[str] | None) -> SweepConfig:
    """Preset (default `demo` unless a config file is given) + file + `--set` overrides, validated."""
    if preset is None and config is None:
        preset = "demo"
    return load_config(preset, config, parse_set(sets or []))
