"""`sae_core.train_data`, the import path earlier versions documented, kept as a thin re-export.

Its code (training data) lives in `sae_core.training.data`; new code imports from there."""

from sae_core.training.data import (
    InMemoryData,
    StreamingData,
    TrainingData,
    epoch_seed,
    geometric_median,
    open_store_data,
    steps_per_epoch,
    store_fingerprint,
)

__all__ = [
    "InMemoryData",
    "StreamingData",
    "TrainingData",
    "epoch_seed",
    "geometric_median",
    "open_store_data",
    "steps_per_epoch",
    "store_fingerprint",
]
