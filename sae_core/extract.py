"""`sae_core.extract`, the import path earlier versions documented, kept as a thin re-export.

Its code (extraction) lives in `sae_core.extraction`; new code imports from there."""

from sae_core.extraction.extract import (
    extract_activations,
    layer_meaning,
    length_batches,
    store_key,
    store_path,
)

__all__ = [
    "extract_activations",
    "layer_meaning",
    "length_batches",
    "store_key",
    "store_path",
]
