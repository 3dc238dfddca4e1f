"""The sparse autoencoders: the study's ReLU-L1 SAE with its loss, decoder constraint and hand-written
training step, and their files (the study's `.pth`, a SAELens folder) written and loaded back."""

from sae_core.saes.export import export_saelens, load_run, load_saelens_export, save_pth, weights_path
from sae_core.saes.relu import SparseAutoencoder, l1_factor, sae_loss

__all__ = [
    "SparseAutoencoder",
    "export_saelens",
    "l1_factor",
    "load_run",
    "load_saelens_export",
    "sae_loss",
    "save_pth",
    "weights_path",
]
