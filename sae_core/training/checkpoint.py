"""Atomic, resumable training checkpoints.

A checkpoint holds everything a resumed run needs to continue exactly where the killed one stopped:
weights, Adam state, the step, RNG states, the data position (the step alone: batch order is a pure
function of seed and epoch), the firing counters, the log so far and the resample events. It also holds
the hash and the dict of the config it was trained under, so a run with another config refuses to resume
from it and says which keys differ; one trained on another store (its identity,
`sae_core.store.store_fingerprint`, is the dict's `data`) is set aside and the run starts afresh.

Only tensors and plain values (dict, list, tuple, str, int, float, bool, None) are saved, and a checkpoint
is read with `torch.load(weights_only=True)`: whoever can write to a shared data_root could otherwise plant
a pickle that runs code on every worker that resumes from it. `save_checkpoint` refuses anything else, so a
new field of another type fails at its first save rather than making every later resume unreadable.
Checkpoints written before this rule hold only such values too and load unchanged.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from sae_core.errors import TrainingError
from sae_core.io import atomic_write_with
from sae_core.rundir import CHECKPOINT

CHECKPOINT_NAME = CHECKPOINT
FORMAT_VERSION = 1

# Training keys that do not change the trained weights: a run may resume with different values.
NON_SEMANTIC_KEYS = (
    "log_every", "val_every", "checkpoint_every", "device", "compile", "capture", "max_memory_gb",
    "num_threads",
)  # fmt: skip


def resume_identity(training: dict[str, Any], cell: dict[str, Any], d_in: int, data_fingerprint: str) -> dict:
    """What must match for a checkpoint (or a completed run) to count as the same training."""
    return {
        "cell": cell,
        "d_in": d_in,
        "data": data_fingerprint,
        "training": {k: v for k, v in training.items() if k not in NON_SEMANTIC_KEYS},
    }


def config_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def describe_difference(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """`['training.lr: 0.001 in the checkpoint, 0.0001 now', ...]`."""
    out: list[str] = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(describe_difference(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} in the checkpoint, {b!r} now")
    return out


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` (plus the format version) atomically: a crash mid-write leaves the previous one, and
    a full or read-only disk raises `StorageWriteError` naming `path`."""
    path = Path(path)
    payload = {"format_version": FORMAT_VERSION, **state}
    _check_plain(payload, "checkpoint")
    atomic_write_with(path, lambda tmp: _save(payload, tmp))
    return path


def _check_plain(value: Any, where: str) -> None:
    """Raise TypeError for a value `weights_only=True` loading would refuse (a programming error)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}, not a str or int")
            _check_plain(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not isinstance(value, torch.Tensor) and type(value).__module__ != "builtins":
        # (By module, not isinstance: a numpy float is a float subclass, and its pickle names numpy.)
        raise TypeError(
            f"{where} is a {type(value).__qualname__}: a checkpoint holds tensors and plain values"
        )


def _save(payload: dict[str, Any], tmp: Path) -> None:
    # Through a Python file object: given a path, torch's C++ writer fails with "unexpected pos" and
    # drops the errno; through `write()` the OSError (ENOSPC, EROFS) stays in the exception's context.
    with open(tmp, "wb") as handle:
        torch.save(payload, handle)


def load_checkpoint(
    path: str | Path, identity: dict[str, Any], map_location: str | torch.device = "cpu"
) -> dict | None:
    """Load a checkpoint trained under `identity`; None when it differs in the data only (it was trained
    on another store, or under an older definition of the store's identity: nothing of it may be
    reused, so the run trains afresh, as a completed run of another store does); refuse (TrainingError
    naming the keys) when the config differs: that is a user's mistake to point out, not to overwrite."""
    path = Path(path)
    restart = "delete it and run again to train this cell over from step 0"
    try:
        # weights_only: tensors and plain values only, so a crafted pickle cannot run code here.
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, foreign or crafted: one line instead of a pickle traceback
        reason = " ".join(str(exc).split())
        reason = reason if len(reason) <= 160 else reason[:160] + "…"
        raise TrainingError(
            f"checkpoint: cannot read {path} ({type(exc).__name__}: {reason}); {restart}"
        ) from exc
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise TrainingError(
            f"checkpoint: {path} is not a sae-sweep checkpoint of format {FORMAT_VERSION}; {restart}"
        )
    if state.get("config_hash") != config_hash(identity):
        saved = state.get("identity", {})
        if isinstance(saved, dict) and saved.get("data") != identity.get("data"):
            rest = {k: v for k, v in identity.items() if k != "data"}
            if {k: v for k, v in saved.items() if k != "data"} == rest:
                return None
        diffs = describe_difference(state.get("identity", {}), identity) or ["(unknown)"]
        raise TrainingError(
            f"checkpoint: {path} was trained under another config, refusing to resume "
            f"({'; '.join(diffs)}); delete it or use another output directory"
        )
    return state


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
