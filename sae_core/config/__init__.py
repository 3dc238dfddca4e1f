"""Configuration: one pydantic model per concern (a module each), the shipped YAML presets, `--set`
overrides, and errors that name the dotted field and the value — all validated before any work.

Every field carries a description: it is what `sae-sweep config show --explain`, the Prefect UI form
and the docs show.
"""

from sae_core.config.analysis import AnalysisConfig
from sae_core.config.architectures import (
    ARCHITECTURE_NAMES,
    BatchTopKConfig,
    JumpReLUConfig,
    SaesConfig,
    TopKConfig,
)
from sae_core.config.base import STRATEGIES, ConfigError, Section
from sae_core.config.credentials import (
    HUB_TOKENS,
    LABELING_KEYS,
    KeyPolicy,
    allowed_envs,
    check_key_source,
)
from sae_core.config.data_root import DATA_ROOT_ENV, anchored_data_root, default_data_root, user_data_dir
from sae_core.config.extraction import DataConfig, ExtractionConfig, ModelConfig
from sae_core.config.grid import GridConfig
from sae_core.config.labeling import LabelingConfig
from sae_core.config.loading import (
    apply_overrides,
    config_to_yaml,
    field_descriptions,
    format_validation_error,
    load_config,
    parse_set,
    preset_dict,
    preset_names,
    validate_config,
)
from sae_core.config.sweep import SweepConfig, TrackingConfig, UploadConfig
from sae_core.config.training import KEY_DUMP, TrainingConfig

__all__ = [
    "ARCHITECTURE_NAMES",
    "DATA_ROOT_ENV",
    "HUB_TOKENS",
    "KEY_DUMP",
    "LABELING_KEYS",
    "STRATEGIES",
    "AnalysisConfig",
    "BatchTopKConfig",
    "ConfigError",
    "DataConfig",
    "ExtractionConfig",
    "GridConfig",
    "JumpReLUConfig",
    "KeyPolicy",
    "LabelingConfig",
    "ModelConfig",
    "SaesConfig",
    "Section",
    "SweepConfig",
    "TopKConfig",
    "TrackingConfig",
    "TrainingConfig",
    "UploadConfig",
    "allowed_envs",
    "anchored_data_root",
    "apply_overrides",
    "check_key_source",
    "config_to_yaml",
    "default_data_root",
    "field_descriptions",
    "format_validation_error",
    "load_config",
    "parse_set",
    "preset_dict",
    "preset_names",
    "user_data_dir",
    "validate_config",
]
