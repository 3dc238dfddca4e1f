"""The sparse autoencoders: the study's ReLU-L1 SAE with its loss, decoder constraint and hand-written
training step; the other architectures beside it (one module each, one interface in `base`, one entry
each in `sae_core.architectures`, their classes in `registry`), the AuxK loss; and their files (the
study's `.pth`, a SAELens folder) written and loaded back.

Every registered architecture's class is importable from here by its class name (`TopKSAE`,
`BatchTopKSAE`, …): the names come from the registry, so a new architecture needs no line here.
"""

from typing import Any

from sae_core.saes.auxk import auxk_loss
from sae_core.saes.base import AutogradSae, Sae
from sae_core.saes.export import export_saelens, load_run, load_saelens_export, save_pth, weights_path
from sae_core.saes.registry import ARCHITECTURES, architecture_class, build_sae, check_strategy, load_sae
from sae_core.saes.relu import SparseAutoencoder, l1_factor, sae_loss

_CLASSES = {cls.__name__: cls for cls in ARCHITECTURES.values()}


def __getattr__(name: str) -> Any:
    """An architecture's class by its class name (`sae_core.saes.TopKSAE`), from the registry."""
    try:
        return _CLASSES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


__all__ = [
    "ARCHITECTURES",
    "AutogradSae",
    "Sae",
    "SparseAutoencoder",
    "architecture_class",
    "auxk_loss",
    "build_sae",
    "check_strategy",
    "export_saelens",
    "l1_factor",
    "load_run",
    "load_sae",
    "load_saelens_export",
    "sae_loss",
    "save_pth",
    "weights_path",
    *sorted(set(_CLASSES) - {"SparseAutoencoder"}),
]
