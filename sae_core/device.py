"""Device, dtype and CPU-thread settings shared by extraction, training, analysis and evaluation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` → CUDA when available, then MPS, else CPU; anything else is taken as given."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        from sae_core.errors import SaeSweepError

        raise SaeSweepError(f"device: CUDA was requested but is not available (got {name!r})")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        from sae_core.errors import SaeSweepError

        raise SaeSweepError(f"dtype: must be one of {', '.join(DTYPES)} (got {name!r})")
    return DTYPES[name]


@contextlib.contextmanager
def cpu_threads(count: int, device: torch.device) -> Iterator[None]:
    """Run the block with `count` torch CPU threads on a CPU device (0: leave torch's setting), then
    restore the previous count."""
    before = torch.get_num_threads()
    if count and device.type == "cpu":
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
