"""A trained SAE on disk: the study's `.pth`, the SAELens `standard` export, and loaders for both.

The `.pth` is a state dict with the study's keys and shapes (`W_enc [d, m]`, `b_enc [m]`, `W_dec [m, d]`,
`b_dec [d]`), float32. SAELens' `standard` SAE computes exactly our encoder and decoder
(`relu((x − b_dec) W_enc + b_enc)`, `h W_dec + b_dec`) with the same parameter names and layout, so the
export is the same tensors plus a `cfg.json` naming the model, hook and context size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sae_core.errors import TrainingError
from sae_core.io import atomic_write_json, atomic_write_with, read_json
from sae_core.saes.relu import SparseAutoencoder

SAELENS_DIR = "saelens"
SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"


def save_pth(sae: SparseAutoencoder, path: str | Path) -> Path:
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in sae.state_dict().items()}
    atomic_write_with(path, lambda tmp: torch.save(state, tmp))
    return Path(path)


def weights_path(run_dir: str | Path) -> Path:
    """The `model_weights_*.pth` of a run directory (exactly one must exist)."""
    found = sorted(Path(run_dir).glob("model_weights_*.pth"))
    if len(found) != 1:
        raise TrainingError(
            f"run dir: expected one model_weights_*.pth in {run_dir} (got {[p.name for p in found]})"
        )
    return found[0]


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[SparseAutoencoder, dict[str, Any]]:
    """The trained SAE and the `metrics.json` of a completed run directory."""
    run_dir = Path(run_dir)
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        raise TrainingError(f"run dir: {run_dir} has no metrics.json (training not finished?)")
    return SparseAutoencoder.from_pth(weights_path(run_dir), device=device), read_json(metrics_file)


def hook_name_for_layer(layer: int, num_layers: int | None) -> str:
    """TransformerLens hook of `hidden_states[layer]`: the stream entering block `layer`; past the last
    block HF GPT-2 returns the stream after the final layer norm."""
    if num_layers is not None and layer >= num_layers:
        return "ln_final.hook_normalized"
    return f"blocks.{layer}.hook_resid_pre"


def saelens_cfg(sae: SparseAutoencoder, manifest: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    model = (manifest or {}).get("model", {})
    data = (manifest or {}).get("data", {})
    layer = model.get("layer")
    return {
        "architecture": "standard",
        "d_in": sae.d_in,
        "d_sae": sae.d_hidden,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "model_name": model.get("name"),
            "hook_name": hook_name_for_layer(layer, model.get("num_layers")) if layer is not None else None,
            "hook_head_index": None,
            "hook_layer": layer,
            "context_size": data.get("context_length"),
            "prepend_bos": False,
            "dataset_path": data.get("dataset"),
            "model_from_pretrained_kwargs": {},
            "sae_lens_training_version": None,
            **extra,
        },
    }


def export_saelens(
    sae: SparseAutoencoder, out_dir: str | Path, manifest: dict[str, Any] | None = None, **extra: Any
) -> Path:
    """Write `cfg.json` + `sae_weights.safetensors` (SAELens `standard`), each atomically."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in sae.state_dict().items()}
    atomic_write_with(out_dir / SAELENS_WEIGHTS, lambda tmp: save_file(state, str(tmp)))
    atomic_write_json(out_dir / SAELENS_CFG, saelens_cfg(sae, manifest, **extra))
    return out_dir


def load_saelens_export(path: str | Path) -> SparseAutoencoder:
    """Our SAE from a SAELens `standard` export (no SAELens needed)."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg = read_json(path / SAELENS_CFG)
    if cfg.get("architecture") != "standard":
        raise TrainingError(
            f"saelens export: architecture must be standard (got {cfg.get('architecture')!r})"
        )
    return SparseAutoencoder.from_state_dict(load_file(str(path / SAELENS_WEIGHTS)))
