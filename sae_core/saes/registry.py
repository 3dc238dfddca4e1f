"""Architecture names → classes (each spec's `sae_class` in `sae_core.architectures`), the dead-latent
strategies each accepts, and loading a `.pth` as the architecture it records."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from sae_core.architectures import SPECS
from sae_core.saes.base import Sae
from sae_core.saes.state_keys import architecture_of_state, check_state_keys


def _import_class(path: str) -> type[Any]:
    module, _, name = path.partition(":")
    cls: type[Any] = getattr(importlib.import_module(module), name)
    return cls


ARCHITECTURES: dict[str, type[Any]] = {name: _import_class(s.sae_class) for name, s in SPECS.items()}
"""Every architecture by its name in configs, cell names and files (from the registry)."""

for _name, _cls in ARCHITECTURES.items():
    if getattr(_cls, "architecture", None) != _name:
        raise TypeError(f"architecture {_name!r}: {_cls.__name__}.architecture must be {_name!r}")

STRATEGIES_BY_ARCHITECTURE: dict[str, tuple[str, ...]] = {name: s.strategies for name, s in SPECS.items()}
"""`auxk` (Gao et al.'s auxiliary loss) is defined for the TopK family only."""


def architecture_class(name: str) -> type[Any]:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"architecture: unknown architecture {name!r} (known: {sorted(ARCHITECTURES)})"
        ) from None


def check_strategy(architecture: str, strategy: str) -> None:
    """Raise naming both values when `strategy` is not a remedy `architecture` has."""
    allowed = STRATEGIES_BY_ARCHITECTURE[architecture_class(architecture).architecture]
    if strategy not in allowed:
        raise ValueError(
            f"strategy: {strategy!r} is not available for architecture {architecture!r} (it takes {allowed})"
        )


def build_sae(architecture: str, d_in: int, d_hidden: int, **options: Any) -> Sae:
    """A fresh SAE of `architecture`; `options` are its constructor's keywords (seed, init, k, …)."""
    return architecture_class(architecture)(d_in, d_hidden, **options)


def load_sae(path: str | Path, architecture: str, device: str | torch.device = "cpu") -> Sae:
    """The `.pth` at `path` as `architecture`; a file of another architecture is refused, naming both."""
    cls = architecture_class(architecture)
    state = torch.load(Path(path), map_location=device, weights_only=True)
    try:
        check_state_keys(state, architecture)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return cls.from_state_dict(state).to(device)


def load_any(path: str | Path, device: str | torch.device = "cpu") -> Sae:
    """The `.pth` at `path` as the architecture it records (`state_keys`: its name; relu: the study's four
    tensors; files older than the name: their keys)."""
    state = torch.load(Path(path), map_location=device, weights_only=True)
    architecture = architecture_of_state(state)
    if architecture is None:
        raise ValueError(f"{path}: not the state dict of any architecture (got keys {sorted(state)})")
    return ARCHITECTURES[architecture].from_state_dict(state).to(device)
