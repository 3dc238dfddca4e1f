"""Presets, YAML files and `--set` overrides into a validated `SweepConfig`; error messages that name
the dotted field and the value."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sae_core.config.base import ConfigError
from sae_core.config.sweep import SweepConfig


def preset_names() -> list[str]:
    """Names of the presets shipped in the package."""
    folder = resources.files("sae_core.config") / "presets"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_dict(name: str) -> dict[str, Any]:
    """The raw mapping of a shipped preset."""
    if name not in preset_names():
        raise ConfigError(f"preset: unknown preset {name!r} (known: {', '.join(preset_names())})")
    text = (resources.files("sae_core.config") / "presets" / f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def parse_set(items: list[str]) -> dict[str, Any]:
    """`["a.b=1", "c=[4,8]"]` → `{"a.b": 1, "c": [4, 8]}`; values are parsed as YAML."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set: expected KEY=VALUE (got {item!r})")
        try:
            overrides[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{key.strip()}: value is not valid YAML (got {raw!r})") from exc
    return overrides


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a nested mapping; a key that is not a config field is an error."""
    result = _deep_copy(data)
    for dotted, value in overrides.items():
        _check_key(dotted)
        node = result
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{dotted}: {part} is not a section (got {node!r})")
        node[leaf] = value
    return result


def load_config(
    preset: str | None = "demo",
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> SweepConfig:
    """Resolve a config: preset, then a YAML file on top, then dotted overrides; validate it all."""
    data: dict[str, Any] = preset_dict(preset) if preset else {}
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config: no such file {str(path)!r}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config: {_yaml_problem(path, exc)}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config: {path} must hold a mapping (got {type(loaded).__name__})")
        data = _deep_merge(data, loaded)
    data = apply_overrides(data, overrides or {})
    return validate_config(data)


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> str:
    """`file:line:col: problem (context)` on one line; PyYAML's own text spans seven lines with the
    offending source quoted twice, which a terminal or a Prefect log shows as a wall."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return f"{path} is not valid YAML: {' '.join(str(exc).split())}"
    mark = exc.problem_mark
    problem = " ".join((exc.problem or "invalid YAML").split())
    where = f"{path}:{mark.line + 1}:{mark.column + 1}"
    context = ""
    if exc.context:
        context = " ".join(exc.context.split())
        if exc.context_mark is not None:
            context += f" at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1}"
        context = f" ({context})"
    return f"{where}: {problem}{context}; fix the YAML there"


def validate_config(data: dict[str, Any]) -> SweepConfig:
    """Build a SweepConfig, turning pydantic's errors into one `field: problem (got value)` line each."""
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "config"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        value = err.get("input")
        shown = value if not isinstance(value, dict | list) or len(repr(value)) < 80 else "…"
        if "(got " in message:  # the validator already quoted the offending value
            lines.append(f"{field}: {message}")
        else:
            lines.append(f"{field}: {message} (got {shown!r})")
    return "; ".join(lines)


def config_to_yaml(cfg: SweepConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def field_descriptions(model: type[BaseModel] = SweepConfig, prefix: str = "") -> dict[str, str]:
    """Dotted key → description for every leaf field (used by `config show --explain` and docs)."""
    out: dict[str, str] = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.update(field_descriptions(annotation, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = " ".join((info.description or "").split())
    return out


def _check_key(dotted: str) -> None:
    known = field_descriptions()
    if dotted not in known:
        near = [k for k in known if k.split(".")[-1] == dotted.split(".")[-1]]
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise ConfigError(f"{dotted}: unknown key{hint} (got {dotted!r})")


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = _deep_copy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}
