"""The whole sweep: every section, plus the Hub upload and WandB tracking."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from sae_core.config.analysis import AnalysisConfig
from sae_core.config.architectures import SaesConfig
from sae_core.config.base import ConfigError, Section
from sae_core.config.data_root import default_data_root
from sae_core.config.extraction import DataConfig, ExtractionConfig, ModelConfig
from sae_core.config.grid import GridConfig
from sae_core.config.labeling import LabelingConfig
from sae_core.config.training import TrainingConfig


class UploadConfig(Section):
    repo_id: str | None = None
    """Hugging Face model repo receiving the weights; None skips the upload."""

    token_env: str = "HF_TOKEN"
    """Environment variable holding the Hub token."""

    token_secret_block: str | None = None
    """Prefect Secret block holding the token, used when the environment variable is unset."""

    private: bool = False
    """Create the repo as private when it does not exist."""


class TrackingConfig(Section):
    mode: Literal["online", "offline", "disabled"] = "offline"
    """WandB mode: offline needs no account (sync later with `wandb sync`)."""

    project: str = "sae-sweep"
    """WandB project."""

    entity: str | None = None
    """WandB entity (team or user); None uses the account default."""

    api_key_env: str = "WANDB_API_KEY"
    """Environment variable holding the WandB key for online mode."""


class SweepConfig(Section):
    name: str = "sweep"
    """Sweep name: runs go to `data_root/runs/<name>/`; also the WandB group."""

    data_root: str = Field(default_factory=lambda: default_data_root())
    """Where stores, runs and reports live (a local path, or a network volume shared by workers).
    Default: `$SAE_SWEEP_DATA_ROOT`, else `./sae_data`. In a run started from a deployment a relative
    path resolves under the per-user data directory (`~/.local/share/sae-sweep`): the worker's working
    directory there is temporary."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    """The language model and the layer read."""

    data: DataConfig = Field(default_factory=DataConfig)
    """The documents."""

    extraction: ExtractionConfig = Field(default_factory=ExtractionConfig)
    """How activations are extracted and stored."""

    grid: GridConfig = Field(default_factory=GridConfig)
    """The grid of cells."""

    training: TrainingConfig = Field(default_factory=TrainingConfig)
    """SAE training, shared by every cell."""

    saes: SaesConfig = Field(default_factory=SaesConfig)
    """Settings of the architectures beside relu (their sparsity axes are in `grid`)."""

    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    """Feature statistics and evaluation."""

    labeling: LabelingConfig = Field(default_factory=LabelingConfig)
    """LLM labels and the monosemanticity rate."""

    upload: UploadConfig = Field(default_factory=UploadConfig)
    """Hugging Face Hub upload."""

    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    """WandB tracking."""

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not value or any(c in value for c in "/\\ ") or value.startswith("."):
            raise ValueError("must be a non-empty name without slashes, spaces or a leading dot")
        return value

    def check_layer(self, num_layers: int) -> None:
        """Fail when `model.layer` is past the model's depth (`hidden_states` has num_layers + 1)."""
        if self.model.layer > num_layers:
            raise ConfigError(
                f"model.layer: {self.model.name} has {num_layers} layers, so the layer must be "
                f"0..{num_layers} (got {self.model.layer})"
            )
