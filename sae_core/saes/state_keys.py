"""Which architecture a state dict belongs to, read from its keys alone (no imports: relu.py and the
other architectures both use it to say what a wrong `.pth` is).

Every architecture stores the study's four parameters (`W_enc`, `b_enc`, `W_dec`, `b_dec`); the others
add keys of their own, so a `.pth` names its architecture without a side file: `k` (topk), `k` and
`topk_threshold` (batchtopk), `threshold` (jumprelu).
"""

from __future__ import annotations

from collections.abc import Iterable

PARAM_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")
EXTRA_KEYS: dict[str, tuple[str, ...]] = {
    "relu": (),
    "topk": ("k",),
    "batchtopk": ("k", "topk_threshold"),
    "jumprelu": ("threshold",),
}


def architecture_of_keys(keys: Iterable[str]) -> str | None:
    """The architecture whose state dict has exactly these keys, or None when none has."""
    found = set(keys)
    for name, extra in EXTRA_KEYS.items():
        if found == {*PARAM_NAMES, *extra}:
            return name
    return None


def check_state_keys(keys: Iterable[str], architecture: str) -> None:
    """Raise a ValueError naming both architectures when `keys` are not `architecture`'s."""
    keys = sorted(keys)
    if set(keys) == {*PARAM_NAMES, *EXTRA_KEYS[architecture]}:
        return
    other = architecture_of_keys(keys)
    if other is not None:
        raise ValueError(
            f"architecture: this state dict is a {other} SAE's, it cannot be loaded as {architecture} "
            f"(got keys {keys})"
        )
    expected = sorted({*PARAM_NAMES, *EXTRA_KEYS[architecture]})
    raise ValueError(f"state dict: a {architecture} SAE holds exactly {expected} (got {keys})")
