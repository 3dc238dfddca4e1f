"""Feature statistics, dead %, examples and evaluation of a trained SAE."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sae_core.config.base import Section


class AnalysisConfig(Section):
    split: Literal["train", "val", "test"] = "test"
    """Split analysed (held-out tokens by default)."""

    max_tokens: int | None = Field(None, gt=0)
    """Cap on analysed tokens; None analyses the whole split."""

    batch_size: int = Field(8192, gt=0)
    """Tokens per encode batch."""

    dead_threshold: float = Field(0.07, ge=0)
    """A feature fires when its activation exceeds this; dead if it never does (the study: 0.07)."""

    dead_split: Literal["test", "all"] = "test"
    """Token set the dead % (and the `min_activations` eligibility) is counted on: `test` (the analysed
    split, held-out tokens) or `all` (every split of the store, training tokens included, as the study
    counted). A feature is dead when it never exceeds `dead_threshold` on that set."""

    min_activations: int = Field(10, ge=1)
    """Features with fewer firings (on the `dead_split` tokens) are not ranked by selectivity (the study:
    10)."""

    top_k_features: int = Field(25, ge=1)
    """The k most and k least selective features are selected for examples and labels (the study: 25)."""

    examples_per_feature: int = Field(25, ge=1)
    """Top-activating examples kept per selected feature."""

    quantile_examples: int = Field(5, ge=0)
    """Extra examples per selected feature drawn across the activation range."""

    context_window: int = Field(10, ge=0)
    """Tokens of context either side of an example's token (never crossing its document)."""

    ce_loss_documents: int = Field(64, ge=0)
    """Held-out documents used for CE-loss recovered and KL; 0 skips that evaluation."""

    neighbors: int = Field(10, ge=0)
    """Nearest features by decoder-direction cosine listed per feature (features/neighbors.parquet)."""

    num_threads: int = Field(0, ge=0)
    """CPU threads for the analysis (0: torch's default, every core). On a machine shared with other
    work (concurrent cells, the Prefect server) set 1: the many small scans after each encode otherwise
    wait for busy cores in every parallel region."""
