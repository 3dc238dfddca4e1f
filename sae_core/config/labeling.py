"""LLM labels of the selected features and the monosemanticity rate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sae_core.config.base import Section


class LabelingConfig(Section):
    base_url: str | None = None
    """OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp, Groq, …). None: OpenAI's own
    endpoint when an API key is present, otherwise labelling is skipped."""

    model: str = "gpt-4o-mini"
    """Chat model used for labels."""

    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (never put the key itself in a config)."""

    api_key_secret_block: str | None = None
    """Name of a Prefect Secret block holding the key; used when the environment variable is unset."""

    enabled: bool = True
    """Set false to skip labelling even when an endpoint is configured."""

    temperature: float = Field(0.0, ge=0, le=2)
    """Sampling temperature (0: reproducible labels)."""

    timeout_s: float = Field(60.0, gt=0)
    """Per-request timeout in seconds."""

    max_retries: int = Field(5, ge=0)
    """Retries per feature on 429, 5xx, timeouts and malformed answers."""

    concurrency: int = Field(4, ge=1)
    """Requests in flight at once against the endpoint."""

    examples_per_prompt: int = Field(25, ge=1)
    """Contexts shown to the model per feature (the study: 25)."""

    detection: bool = False
    """Also score each label by detection (delphi's convention): the model reads held-out windows as
    plain text and says which the feature activates on; class-balanced accuracy, failed predictions
    counted wrong. Costs ⌈windows / scoring_batch⌉ requests per feature."""

    fuzzing: bool = False
    """Also score each label by fuzzing: held-out activating windows with their firing tokens
    highlighted and non-activating windows highlighted at borrowed positions; the model says which
    highlightings are correct. Costs as much as detection."""

    scoring_quantiles: int = Field(10, ge=1)
    """Activation quantiles the held-out activating windows are spread over (delphi: 10)."""

    scoring_activating: int = Field(20, ge=1)
    """Held-out activating windows per feature, an equal share from each quantile (delphi: 50; fewer
    here, since each costs a share of a request per scorer and cell)."""

    scoring_non_activating: int = Field(20, ge=0)
    """Random windows where the feature never fires, per feature (delphi: 50)."""

    scoring_window: int = Field(32, ge=2)
    """Tokens per scoring window, inside one document (delphi: 32)."""

    scoring_batch: int = Field(10, ge=1)
    """Windows per scoring request."""

    scope: Literal["selected", "sample"] = "selected"
    """Which features are labelled and scored: `selected` (the study's top and bottom
    analysis.top_k_features by selectivity) or `sample`: those AND `sample_size` features drawn at
    random (seeded by training.seed) from the other eligible ones (≥ analysis.min_activations firings),
    SAEBench-style, reported as their own group `sample` (its rate and scores apart from the study's)."""

    sample_size: int = Field(100, ge=1)
    """Features in the random sample when scope is `sample` (SAEBench: 1,000; every one costs a label
    request and, when scoring, its scoring requests)."""

    max_label_chars: int = Field(80, ge=8)
    """A label longer than this many characters is flagged (labeller health) and counted as failed in
    the conservative rate (a 2–8 word label is rarely over 60)."""

    structured_output: bool = True
    """Ask for a JSON-schema answer (OpenAI, vLLM, Ollama and Groq support it); an endpoint that refuses
    `response_format` with a 400 falls back to the plain-text `Label:` format."""

    retry_base_delay_s: float = Field(2.0, ge=0)
    """First retry delay; each further retry doubles it (with jitter). A 429's Retry-After is waited first."""


SCORING_SAMPLE_KEYS = (
    "scoring_quantiles",
    "scoring_activating",
    "scoring_non_activating",
    "scoring_window",
    "scope",
    "sample_size",
)
"""The labeling keys the ANALYSIS reads (it samples the held-out windows and the random features):
part of its cache key."""


def scoring_sample_settings(lab: LabelingConfig) -> dict[str, int]:
    """The analysis's sampling settings that differ from their defaults (empty at the defaults, so an
    analysis cache key is unchanged where nobody set them; `sample_size` counts only with `sample`)."""
    fields = LabelingConfig.model_fields
    changed = {k: getattr(lab, k) for k in SCORING_SAMPLE_KEYS if getattr(lab, k) != fields[k].default}
    if lab.scope != "sample":
        changed.pop("sample_size", None)
    return changed
