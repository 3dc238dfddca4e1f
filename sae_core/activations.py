"""`sae_core.activations`, the import path earlier versions documented, kept as a thin re-export.

Its code (the activation store) lives in `sae_core.store`; new code imports from there."""

from sae_core.store import ActivationStore, RowBatch, split_codes, split_of, write_store

__all__ = [
    "ActivationStore",
    "RowBatch",
    "split_codes",
    "split_of",
    "write_store",
]
