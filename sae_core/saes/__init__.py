"""The sparse autoencoders: the study's ReLU-L1 SAE with its loss, decoder constraint and hand-written
training step; TopK, BatchTopK and JumpReLU beside it (one module each, one interface in `base`, named
in `registry`), the AuxK loss; and their files (the study's `.pth`, a SAELens folder) written and loaded
back."""

from sae_core.saes.auxk import auxk_loss
from sae_core.saes.base import AutogradSae, Sae
from sae_core.saes.batchtopk import BatchTopKSAE
from sae_core.saes.export import export_saelens, load_run, load_saelens_export, save_pth, weights_path
from sae_core.saes.jumprelu import JumpReLUSAE
from sae_core.saes.registry import ARCHITECTURES, architecture_class, build_sae, check_strategy, load_sae
from sae_core.saes.relu import SparseAutoencoder, l1_factor, sae_loss
from sae_core.saes.topk import TopKSAE

__all__ = [
    "ARCHITECTURES",
    "AutogradSae",
    "BatchTopKSAE",
    "JumpReLUSAE",
    "Sae",
    "SparseAutoencoder",
    "TopKSAE",
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
]
