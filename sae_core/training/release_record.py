"""`training_config.json`: how a released SAE was trained, beside its SAELens folder, for whoever loads
it from the Hub without the run dir, the store or this code.

It says what the weights' numbers depend on: the tokens actually trained (not the config's budget), the
optimisation (steps, batch, lr and its schedule, seeds, init), the sparsity parameter with its units,
the dead-latent strategy with its settings, the data (source, revision, documents, the first document's
hash), the model and layer, which residual stream (Hugging Face `hidden_states[L]` and the
TransformerLens options that give the same tensor), BOS and first-token handling and the tokens left
out, the activation normalisation (folded into the weights: they take raw activations), and the library
versions of the extraction and of the training, with sae-sweep's git revision.
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from sae_core.architectures import SPECS
from sae_core.naming import Cell
from sae_core.version import code_version, library_versions

TRAINING_CONFIG_NAME = "training_config.json"
TRAINING_CONFIG_FORMAT = 1

# The TrainingConfig keys of the optimisation, headlined (every key is under `training_settings`).
_OPTIMISATION_KEYS = (
    "batch_size", "epochs", "max_tokens", "lr", "adam_beta1", "adam_beta2", "l1_warmup_fraction", "seed",
    "init", "init_encoder_norm", "b_dec_init", "shuffle", "autocast_bf16",
)  # fmt: skip

# The TrainingConfig keys that belong to a dead-latent strategy, not to the optimisation.
_RESAMPLING_KEYS = (
    "resample_every",
    "resample_pool_tokens",
    "resample_enc_scale",
    "resample_bias",
    "resample_criterion",
    "resample_replacement",
    "stop_resampling_after",
)


def git_revision() -> dict[str, Any] | None:
    """sae-sweep's git commit and whether the checkout had uncommitted changes, when it runs from a git
    checkout (an editable install); None for an installed wheel or without git."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def training_versions() -> dict[str, str | None]:
    """The libraries of this (the training) process, sae-lens included."""
    versions = library_versions()
    try:
        versions["sae-lens"] = metadata.version("sae-lens")
    except metadata.PackageNotFoundError:
        versions["sae-lens"] = None
    return versions


def _sparsity(cell: Cell, l1_scaling: str) -> dict[str, Any]:
    spec = SPECS[cell.architecture]
    value = getattr(cell, spec.sparsity.field)
    record = {"parameter": spec.sparsity.field, "label": spec.sparsity.label, "value": value}
    record["units"] = spec.sparsity.units
    if spec.sparsity.field == "l1":
        record["l1_scaling"] = l1_scaling
    return record


def _schedule(cell: Cell, training: dict[str, Any], steps: int | None) -> dict[str, Any]:
    """The lr is constant (Adam); a relu cell's λ rises linearly over the first `l1_warmup_fraction` of
    the steps (0: constant, the study); the other architectures' sparsity parameters are constant."""
    fraction = float(training.get("l1_warmup_fraction") or 0.0)
    warm = cell.architecture == "relu" and fraction > 0
    return {
        "lr": "constant",
        "sparsity": f"linear warm-up over the first {fraction:g} of the steps" if warm else "constant",
        "sparsity_warmup_steps": round(fraction * steps) if warm and steps is not None else 0,
    }


def _residual_stream(model: dict[str, Any]) -> dict[str, Any]:
    from sae_core.saes.export import hook_name_for_layer, model_from_pretrained_kwargs

    layer, num_layers = model.get("layer"), model.get("num_layers")
    if layer is None:
        return {}
    return {
        "huggingface": f"hidden_states[{layer}]",
        "meaning": model.get("layer_meaning"),
        "transformer_lens_hook": hook_name_for_layer(layer, num_layers),
        "transformer_lens_from_pretrained_kwargs": model_from_pretrained_kwargs(layer, num_layers),
    }


def training_config_record(
    cell: Cell,
    metrics: dict[str, Any],
    manifest: dict[str, Any] | None,
    architecture_settings: dict[str, Any],
) -> dict[str, Any]:
    """The record, from the run's metrics.json dict (`metrics`), the store's manifest and the cell's
    architecture section (`saes.<name>` as a dict, empty for relu)."""
    manifest = manifest or {}
    training = dict(metrics.get("training") or {})
    model = manifest.get("model") or {}
    data = manifest.get("data") or {}
    extraction = manifest.get("extraction") or {}
    strategy_settings = (
        {k: training[k] for k in _RESAMPLING_KEYS if k in training} if cell.strategy == "sampling" else {}
    )
    if cell.strategy == "auxk":
        strategy_settings = {k: v for k, v in architecture_settings.items() if k.startswith("auxk")}
    normalization = metrics.get("normalization")
    return {
        "format": TRAINING_CONFIG_FORMAT,
        "cell": cell.name,
        "architecture": cell.architecture,
        "architecture_summary": SPECS[cell.architecture].summary,
        "d_in": metrics.get("d_in"),
        "d_sae": metrics.get("d_hidden"),
        "expansion_factor": cell.expansion,
        "sparsity": _sparsity(cell, str(training.get("l1_scaling"))),
        "architecture_settings": architecture_settings,
        "strategy": {"name": cell.strategy, "settings": strategy_settings},
        "tokens_trained": metrics.get("tokens_trained"),
        "steps": metrics.get("steps"),
        "optimisation": {key: training.get(key) for key in _OPTIMISATION_KEYS},
        "schedule": _schedule(cell, training, metrics.get("steps")),
        "training_settings": training,
        "activation_normalization": normalization
        or {"mode": "none", "note": "trained on the raw activations"},
        "weights_take": "raw activations (any normalisation scale is folded into the weights)",
        "model": {
            key: model.get(key)
            for key in ("name", "revision", "architecture", "num_layers", "layer", "d_model", "dtype")
        },
        "residual_stream": _residual_stream(model),
        "data": {
            "source": manifest.get("source"),
            "context_length": data.get("context_length"),
            "documents": data.get("documents_read", data.get("num_documents")),
            "text_column": data.get("text_column"),
            "store": Path(str(metrics.get("store", ""))).name or None,
            "store_dtype": manifest.get("store_dtype"),
        },
        "tokens_left_out": {
            "bos": manifest.get("bos"),
            "drop_first_token": manifest.get("drop_first_token", extraction.get("drop_first_token")),
            "rules": (manifest.get("left_out") or {}).get("rules"),
            "training_split": metrics.get("train_left_out"),
        },
        "final": {"training_sample": metrics.get("final"), "validation": metrics.get("val")},
        "versions": {
            "extraction": manifest.get("versions"),
            "training": training_versions(),
            "sae-sweep": {"code_version": code_version(), "git": git_revision()},
        },
    }
