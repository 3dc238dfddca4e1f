"""Training: one SAE from shuffled store batches (the fused step, the decoder constraint, resampling,
metrics, checkpoints, tracking); `train_cell` trains one grid cell into its run directory, `train_pack`
several on shared batches (`grid.pack`)."""

from sae_core.training.callbacks import ProgressCallback, TrainCallback, progress_figures
from sae_core.training.data import InMemoryData, StreamingData, TrainingData, open_store_data
from sae_core.training.pack import pack_enabled, plan_packs, pool_pack_enabled, pool_packs, train_pack
from sae_core.training.run_cell import load_train_log, train_cell
from sae_core.training.trainer import Trainer, train_sae

__all__ = [
    "InMemoryData",
    "ProgressCallback",
    "StreamingData",
    "TrainCallback",
    "Trainer",
    "TrainingData",
    "load_train_log",
    "open_store_data",
    "pack_enabled",
    "plan_packs",
    "pool_pack_enabled",
    "pool_packs",
    "progress_figures",
    "train_cell",
    "train_pack",
    "train_sae",
]
