"""The `sae-sweep` Typer application and the options every config-taking command shares."""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)

PresetOpt = Annotated[
    str | None,
    typer.Option(
        "--preset",
        "-p",
        help="Preset to start from (`seed`, `demo`); without it and --config, `train` uses the documented "
        "config defaults and the other commands the `demo` preset (each says so in its first log line).",
    ),
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


DEFAULT_PRESET = "demo"
"""The preset a pipeline command (`run`, `extract`, `analyze`, …) starts from when given neither
--preset nor --config: the config's own defaults name the study's full-size model and data. `train`
takes one cell's TrainingConfig defaults instead (`default_preset=None`)."""


def resolve_config(
    preset: str | None,
    config: Path | None,
    sets: list[str] | None,
    *,
    default_preset: str | None = DEFAULT_PRESET,
    command: str | None = None,
) -> SweepConfig:
    """Preset (`default_preset` when neither --preset nor --config is given; None: the config's own
    documented defaults) + file + `--set` overrides, validated. With `command`, a preset the user did
    not name is said in the command's first log line."""
    chosen = preset if preset is not None or config is not None else default_preset
    cfg = load_config(chosen, config, parse_set(sets or []))
    if command is not None and preset is None:
        log.info("sae-sweep %s: %s", command, config_source(preset, config, default_preset))
    return cfg


def config_source(preset: str | None, config: Path | None, default_preset: str | None) -> str:
    """Where a resolved config came from: `preset 'seed' (given)`, `preset 'demo' (defaulted: …)` or
    `no preset: …`, followed by the --config file when there is one."""
    if preset is not None:
        source = f"preset {preset!r} (given)"
    elif config is None and default_preset is not None:
        source = f"preset {default_preset!r} (defaulted: no --preset or --config given)"
    else:
        source = "no preset: the config's documented defaults (docs: `sae-sweep config show --explain`)"
    return source if config is None else f"{source}, then {config}"
