"""A trained SAE on disk: the study's `.pth`, the SAELens export, and loaders for both.

The `.pth` is a state dict with the study's keys and shapes (`W_enc [d, m]`, `b_enc [m]`, `W_dec [m, d]`,
`b_dec [d]`), float32. SAELens' `standard` SAE computes exactly our encoder and decoder
(`relu((x − b_dec) W_enc + b_enc)`, `h W_dec + b_dec`) with the same parameter names and layout, so the
export is the same tensors plus a `cfg.json` naming the model, hook and context size, and a
`sparsity.safetensors` of each feature's log10 firing frequency with the final L0 and dead count in the
metadata (as SAELens' own trainer writes them).

The other architectures export as SAELens computes them at inference (`AutogradSae.saelens_export`):
topk as SAELens `topk` with its `k` (and `rescale_acts_by_decoder_norm: false`: our decoder rows are unit
norm and the top k is taken on the raw pre-activations); jumprelu as `jumprelu` with its thresholds; and
batchtopk as `jumprelu` with its estimated threshold for every latent, which is how SAELens saves its own
BatchTopK SAEs for inference. Their weights files hold SAELens' keys only (no `k`, no `topk_threshold`).

The hook is read the way the ecosystem reads it: SAELens hands `model_from_pretrained_kwargs` to
TransformerLens, whose default `center_writing_weights=True` makes `blocks.L.hook_resid_pre` the stream
minus each token's mean, not the `hidden_states[L]` we trained on; the export therefore says
`center_writing_weights: false` (SAELens' own default for HookedTransformer SAEs), and for the final
layer `fold_ln: false`, without which the unembedding's input lacks the final norm's weight and bias.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, TypeVar

import torch

from sae_core.architectures import PTH_ARCHITECTURE_KEY, SPECS
from sae_core.errors import TrainingError
from sae_core.io import atomic_write_json, atomic_write_with, read_json
from sae_core.saes.base import AutogradSae, Sae
from sae_core.saes.registry import ARCHITECTURES, load_any, load_sae
from sae_core.saes.state_keys import name_tensor

SAELENS_DIR = "saelens"
SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SAELENS_SPARSITY = "sparsity.safetensors"
SAELENS_FORMAT_VERSION = "6.47.0"
"""The SAELens cfg format the export follows (metadata `l0` / `num_dead_features` came in 6.47). Written as
`metadata.sae_lens_version`: without it SAELens reads a cfg as pre-6.0 and drops the whole metadata
(hook, model, loading kwargs) on load."""
FoldedT = TypeVar("FoldedT", bound=Sae)
SPARSITY_EPS = 1e-10
"""Added before log10, as SAELens does: a feature that never fired is written as −10."""


def fold_input_scale(sae: FoldedT, scale: float) -> FoldedT:
    """A copy of `sae`, trained on activations × `scale`, that takes raw activations and gives the same
    latents and the reconstruction ÷ `scale` (SAELens' `fold_activation_norm_scaling_factor`).

    Every architecture computes `pre = (x − b_dec) W_enc + b_enc` and `x̂ = h W_dec + b_dec`. With
    W_enc·s, b_dec/s and W_dec/s: `(x − b_dec/s)(s W_enc) + b_enc = (s x − b_dec) W_enc + b_enc`, the very
    pre-activations of training, so what acts on them — b_enc, JumpReLU's thresholds, batchtopk's
    estimated threshold, topk's selection of the k largest — is unchanged, and the latents h are those
    of x·s (in normalised units); `h (W_dec/s) + b_dec/s = x̂(x·s)/s`. The decoder rows then have norm
    1/s (SAELens' folded SAEs too); the topk export ranks the raw pre-activations
    (`rescale_acts_by_decoder_norm: false`), so the row norm moves no selection."""
    if scale == 1.0:
        return sae
    folded = copy.deepcopy(sae)
    with torch.no_grad():
        folded.W_enc.mul_(scale)
        folded.W_dec.div_(scale)
        folded.b_dec.div_(scale)
    return folded


SAELENS_LOADERS: dict[str, str] = {s.saelens_architecture: n for n, s in SPECS.items() if s.saelens_native}
"""SAELens architecture → ours that computes it (`standard` relu, `topk`, `jumprelu`), from the registry."""


def save_pth(sae: Sae, path: str | Path) -> Path:
    """The state dict, float tensors as float32 (topk's integer `k` stays an integer), with the
    architecture's name at `PTH_ARCHITECTURE_KEY` where its spec records it (every one but relu, whose
    `.pth` stays the study's four tensors)."""
    state: dict[str, Any] = {
        k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
        for k, v in sae.state_dict().items()
    }
    if SPECS[sae.architecture].records_name:
        state[PTH_ARCHITECTURE_KEY] = name_tensor(sae.architecture)
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


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[Sae, dict[str, Any]]:
    """The trained SAE and the `metrics.json` of a completed run directory: the architecture its
    metrics.json names (`architecture`), else (older runs) the one its `.pth` records."""
    from sae_core.rundir import read_metrics

    run_dir = Path(run_dir)
    read = read_metrics(run_dir)  # a RunFileError naming the file when it is not a metrics.json
    if read is None:
        raise TrainingError(f"run dir: {run_dir} has no metrics.json (training not finished?)")
    metrics = read.to_json()
    if read.architecture is not None:
        return load_sae(weights_path(run_dir), read.architecture, device=device), metrics
    return load_any(weights_path(run_dir), device=device), metrics


def hook_name_for_layer(layer: int, num_layers: int | None) -> str:
    """TransformerLens hook of `hidden_states[layer]`: the stream entering block `layer`; past the last
    block HF GPT-2 returns the final layer norm's output (weight and bias applied), which is the input of
    the unembedding (`ln_final.hook_normalized` is taken before the norm's weight and bias)."""
    if num_layers is not None and layer >= num_layers:
        return "unembed.hook_in"
    return f"blocks.{layer}.hook_resid_pre"


def model_from_pretrained_kwargs(layer: int | None, num_layers: int | None) -> dict[str, Any]:
    """TransformerLens loading options under which the export's hook equals `hidden_states[layer]`."""
    kwargs: dict[str, Any] = {"center_writing_weights": False}
    if layer is not None and num_layers is not None and layer >= num_layers:
        kwargs["fold_ln"] = False  # folded, the norm's weight and bias move into the unembedding
    return kwargs


def firing_frequency(sae: Sae, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Fraction of the rows of `x` on which each feature's activation is > 0 ([d_hidden], float32)."""
    counts = torch.zeros(sae.d_hidden, dtype=torch.float64)
    with torch.no_grad():
        for lo in range(0, len(x), chunk):
            batch = x[lo : lo + chunk].to(sae.W_enc.device, torch.float32)
            counts += (sae.encode(batch) > 0).sum(0).to("cpu", torch.float64)
    return (counts / max(1, len(x))).float()


def saelens_cfg(
    sae: Sae,
    manifest: dict[str, Any] | None,
    *,
    architecture: str = "standard",
    fields: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """SAELens' `cfg.json`: `architecture` and its own `fields` (topk: `k`), then the shared fields."""
    model = (manifest or {}).get("model", {})
    data = (manifest or {}).get("data", {})
    layer = model.get("layer")
    num_layers = model.get("num_layers")
    return {
        "architecture": architecture,
        **(fields or {}),
        "d_in": sae.d_in,
        "d_sae": sae.d_hidden,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "model_name": model.get("name"),
            "hook_name": hook_name_for_layer(layer, num_layers) if layer is not None else None,
            "hook_head_index": None,
            "hook_layer": layer,
            "context_size": data.get("context_length"),
            "prepend_bos": False,
            "dataset_path": data.get("dataset"),
            "model_from_pretrained_kwargs": model_from_pretrained_kwargs(layer, num_layers),
            "sae_lens_version": SAELENS_FORMAT_VERSION,
            "sae_lens_training_version": None,  # not trained by SAELens
            **extra,
        },
    }


def export_saelens(
    sae: Sae,
    out_dir: str | Path,
    manifest: dict[str, Any] | None = None,
    *,
    frequency: torch.Tensor | None = None,
    num_dead_features: int | None = None,
    **extra: Any,
) -> Path:
    """Write `cfg.json` + `sae_weights.safetensors` (relu as SAELens `standard`, the other architectures
    as their SAELens inference form, see the module docstring), each atomically.

    With `frequency` (each feature's firing frequency, [d_hidden]) also `sparsity.safetensors`
    (`sparsity` = log10(frequency + 1e-10), SAELens' key and formula) and the metadata `l0` (the sum of
    the frequencies: mean active features per token); `num_dead_features` goes to the metadata as is.
    Say in `extra` what the frequencies were measured on."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    architecture: str = "standard"
    fields: dict[str, Any] = {}
    if isinstance(sae, AutogradSae):
        architecture, fields, state = sae.saelens_export()
    else:
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in sae.state_dict().items()}
    atomic_write_with(out_dir / SAELENS_WEIGHTS, lambda tmp: save_file(state, str(tmp)))
    if frequency is not None:
        if tuple(frequency.shape) != (sae.d_hidden,):
            raise TrainingError(
                f"saelens export: frequency must have shape ({sae.d_hidden},) (got {tuple(frequency.shape)})"
            )
        freq = frequency.detach().to("cpu", torch.float32)
        sparsity = {"sparsity": torch.log10(freq + SPARSITY_EPS).contiguous()}
        atomic_write_with(out_dir / SAELENS_SPARSITY, lambda tmp: save_file(sparsity, str(tmp)))
        extra = {"l0": float(freq.double().sum()), **extra}
    if num_dead_features is not None:
        extra = {"num_dead_features": int(num_dead_features), **extra}
    cfg = saelens_cfg(sae, manifest, architecture=architecture, fields=fields, **extra)
    atomic_write_json(out_dir / SAELENS_CFG, cfg)
    return out_dir


def load_saelens_export(path: str | Path) -> Sae:
    """Our SAE from a SAELens `standard`, `topk` or `jumprelu` export (`SAELENS_LOADERS`; no SAELens
    needed). A batchtopk export comes back as the jumprelu SAE SAELens sees (the same encode and decode)."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg = read_json(path / SAELENS_CFG)
    state = load_file(str(path / SAELENS_WEIGHTS))
    architecture = cfg.get("architecture")
    if cfg.get("rescale_acts_by_decoder_norm"):
        raise TrainingError("saelens export: rescale_acts_by_decoder_norm must be false (got true)")
    ours = SAELENS_LOADERS.get(str(architecture))
    if ours is None:
        raise TrainingError(
            f"saelens export: architecture must be {', '.join(SAELENS_LOADERS)} (got {architecture!r})"
        )
    loaded: Sae = ARCHITECTURES[ours].from_saelens(cfg, state)
    return loaded
