"""Which architecture a state dict belongs to, and whether it is the one asked for (relu.py and the other
architectures both use it to say what a wrong `.pth` is).

Every architecture stores the study's four parameters (`W_enc`, `b_enc`, `W_dec`, `b_dec`) and the extra
keys its spec lists (`sae_core.architectures`). A `.pth` names its architecture at
`PTH_ARCHITECTURE_KEY` (its UTF-8 bytes, a uint8 tensor), except relu's, which stays exactly the study's
four tensors: a file with those four and no name is relu. Files written before the name was recorded
(topk, batchtopk, jumprelu) are told apart by their extra keys, a legacy fallback (`architecture_of_keys`);
an architecture added since is never guessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from sae_core.architectures import PTH_ARCHITECTURE_KEY, SPECS

PARAM_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")
EXTRA_KEYS: dict[str, tuple[str, ...]] = {name: s.extra_keys for name, s in SPECS.items()}
"""Each architecture's state-dict keys beside the study's four, from the registry."""


def expected_keys(architecture: str) -> set[str]:
    """The keys of a state dict of `architecture` as its module holds it (without the name)."""
    return {*PARAM_NAMES, *EXTRA_KEYS[architecture]}


def architecture_of_keys(keys: Iterable[str]) -> str | None:
    """Legacy fallback: the architecture written before `.pth` files named theirs (relu, topk,
    batchtopk, jumprelu) whose state dict has exactly these keys, or None."""
    found = set(keys) - {PTH_ARCHITECTURE_KEY}
    for name, spec in SPECS.items():
        if (spec.legacy_keys or not spec.records_name) and found == expected_keys(name):
            return name
    return None


def name_tensor(name: str) -> torch.Tensor:
    """`name` as the `.pth` records it: its UTF-8 bytes, a uint8 tensor."""
    return torch.tensor(list(name.encode()), dtype=torch.uint8)


def recorded_name(state: Mapping[str, Any]) -> str | None:
    """The architecture a state dict names at `PTH_ARCHITECTURE_KEY`, or None when it names none."""
    named = state.get(PTH_ARCHITECTURE_KEY)
    if isinstance(named, torch.Tensor):
        return bytes(named.to("cpu", torch.uint8).tolist()).decode(errors="replace")
    return named if isinstance(named, str) else None


def architecture_of_state(state: Mapping[str, Any]) -> str | None:
    """The architecture a `.pth`'s state dict names (`PTH_ARCHITECTURE_KEY`), else the legacy guess from
    its keys; None when neither says."""
    named = recorded_name(state)
    if named is not None:
        return named if named in SPECS else None
    return architecture_of_keys(state)


def tensors_of(state: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict without the architecture's name (what `load_state_dict` takes)."""
    return {k: v for k, v in state.items() if k != PTH_ARCHITECTURE_KEY}


def check_state_keys(keys: Iterable[str] | Mapping[str, Any], architecture: str) -> None:
    """Raise a ValueError naming both architectures when `keys` (or a state dict, whose recorded name is
    read too) are not `architecture`'s."""
    named = recorded_name(keys) if isinstance(keys, Mapping) else None
    if named is not None and named != architecture:
        raise ValueError(
            f"architecture: this state dict is a {named} SAE's, it cannot be loaded as {architecture}"
        )
    found = sorted(set(keys) - {PTH_ARCHITECTURE_KEY})
    if set(found) == expected_keys(architecture):
        return
    other = architecture_of_keys(found)
    if other is not None:
        raise ValueError(
            f"architecture: this state dict is a {other} SAE's, it cannot be loaded as {architecture} "
            f"(got keys {found})"
        )
    raise ValueError(
        f"state dict: a {architecture} SAE holds exactly {sorted(expected_keys(architecture))} (got {found})"
    )
