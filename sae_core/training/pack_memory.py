"""The memory plan of a pack (`grid.pack`), made before training: what each cell takes on the device,
what the device has, and the split of a pack that does not fit.

A cell's estimate (float32, bytes): parameters, their gradients and Adam's two moments (4 × the parameter
count), the step's work arrays (each architecture's spec says how many: relu's fused step holds two
[batch, m] arrays, the autograd steps of the others about four for the backward; a captured step keeps
them in its graph's pool), the firing counters (two int64 per feature). The validation and
final-evaluation encodes ([chunk, m], chunk = min(val_tokens, 8192)) run one cell at a time: the budget
reserves them once, for the widest cell. The training data is loaded before the plan and shared by the
pack, so on CUDA it is already out of the free memory the plan reads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from sae_core.architectures import SPECS

log = logging.getLogger(__name__)

HEADROOM = 0.9
"""Share of the measured free memory a pack may plan for (allocator fragmentation, CUDA context)."""

EVAL_CHUNK = 8192
"""Rows `evaluate` encodes at once (`sae_core.saes.relu.evaluate`)."""


def cell_bytes(d: int, m: int, batch: int, architecture: str, val_tokens: int) -> int:
    """Estimated device bytes one cell holds through a pack's training (see the module docstring);
    `val_tokens` is not held: the evaluations run one cell at a time (`evaluation_bytes`)."""
    memory = SPECS[architecture].memory  # the registry's terms (`sae_core.architectures.Memory`)
    params = 2 * d * m + m + d + memory.extra_params_per_latent * m
    work = memory.work_arrays * batch * m + memory.work_rows_per_batch * batch * d
    return 4 * (4 * params + work) + 16 * m


def evaluation_bytes(m: int, val_tokens: int) -> int:
    """The transient encode of a validation or the final evaluation ([chunk, m] activations and their
    test): one cell evaluates at a time, so a pack reserves it once, for its widest cell."""
    return 4 * 2 * min(val_tokens, EVAL_CHUNK) * m


def available_bytes(device: torch.device, memory_gb: float | None) -> tuple[int, str]:
    """Bytes a pack may take and where the figure comes from: `grid.pack_memory_gb`, else the device's
    free memory (CUDA: `mem_get_info`; CPU: `MemAvailable` of /proc/meminfo) × `HEADROOM`."""
    if memory_gb is not None:
        return int(memory_gb * 2**30), f"grid.pack_memory_gb={memory_gb}"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * HEADROOM), f"{HEADROOM:.0%} of {free / 2**30:.2f} GB free on {device}"
    available = _mem_available()
    if available is None:
        return 2**62, "no memory figure on this system: not split"
    return int(available * HEADROOM), f"{HEADROOM:.0%} of {available / 2**30:.2f} GB available (MemAvailable)"


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def split_pack(names: Sequence[str], sizes: Sequence[int], budget: int) -> list[list[str]]:
    """Cells into packs of at most `budget` bytes, first fit in the given order (each cell joins the first
    pack it fits in, so the packs stay few and keep the grid's order). A cell alone over the budget is a
    pack of its own (it would need that memory trained alone too)."""
    packs: list[list[str]] = []
    used: list[int] = []
    for name, size in zip(names, sizes, strict=True):
        for i, total in enumerate(used):
            if total + size <= budget:
                packs[i].append(name)
                used[i] += size
                break
        else:
            packs.append([name])
            used.append(size)
    return packs


def describe_plan(names: Sequence[str], sizes: Sequence[int], budget: int, source: str) -> str:
    """One log line: the cells' estimates, the budget and the packs."""
    total = sum(sizes)
    packs = split_pack(names, sizes, budget)
    per_cell = ", ".join(f"{n} {s / 2**20:.1f} MB" for n, s in zip(names, sizes, strict=True))
    head = f"pack memory plan: {len(names)} cells need {total / 2**20:.1f} MB ({per_cell}); budget "
    head += f"{budget / 2**20:.1f} MB ({source})"
    if len(packs) == 1:
        return head + ": one pack"
    return head + f": split into {len(packs)} packs: " + " | ".join("+".join(p) for p in packs)
