"""`sae_core.train`, the import path earlier versions documented, kept as a thin re-export.

Its code (training) lives in `sae_core.training`; new code imports from there."""

from sae_core.training.callbacks import ProgressCallback, TrainCallback
from sae_core.training.run_cell import train_cell
from sae_core.training.state import TrainState, total_steps_for
from sae_core.training.trainer import Trainer, build_sae, train_sae

__all__ = [
    "ProgressCallback",
    "TrainCallback",
    "TrainState",
    "Trainer",
    "build_sae",
    "total_steps_for",
    "train_cell",
    "train_sae",
]
