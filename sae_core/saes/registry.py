"""Architecture names → classes, the dead-latent strategies each accepts, and loading a `.pth` as the
architecture it claims to be."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sae_core.saes.base import Sae
from sae_core.saes.batchtopk import BatchTopKSAE
from sae_core.saes.jumprelu import JumpReLUSAE
from sae_core.saes.relu import SparseAutoencoder
from sae_core.saes.state_keys import architecture_of_keys, check_state_keys
from sae_core.saes.topk import TopKSAE

ARCHITECTURES: dict[str, type[Any]] = {
    "relu": SparseAutoencoder,
    "topk": TopKSAE,
    "batchtopk": BatchTopKSAE,
    "jumprelu": JumpReLUSAE,
}
"""Every architecture by its name in configs, cell names and files."""

STRATEGIES_BY_ARCHITECTURE: dict[str, tuple[str, ...]] = {
    "relu": ("nosampling", "sampling"),
    "topk": ("nosampling", "sampling", "auxk"),
    "batchtopk": ("nosampling", "sampling", "auxk"),
    "jumprelu": ("nosampling", "sampling"),
}
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
    """The `.pth` at `path` as the architecture its keys name (`state_keys`)."""
    state = torch.load(Path(path), map_location=device, weights_only=True)
    architecture = architecture_of_keys(state)
    if architecture is None:
        raise ValueError(f"{path}: not the state dict of any architecture (got keys {sorted(state)})")
    return ARCHITECTURES[architecture].from_state_dict(state).to(device)
