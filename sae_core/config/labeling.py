"""LLM labels of the selected features and the monosemanticity rate."""

from __future__ import annotations

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
    """Also score each label: the model picks which held-out contexts fit it (costs extra requests)."""

    detection_examples: int = Field(5, ge=1)
    """Held-out activating contexts per detection request, mixed with as many non-activating ones."""

    structured_output: bool = True
    """Ask for a JSON-schema answer (OpenAI, vLLM, Ollama and Groq support it); an endpoint that refuses
    `response_format` with a 400 falls back to the plain-text `Label:` format."""

    retry_base_delay_s: float = Field(2.0, ge=0)
    """First retry delay; each further retry doubles it (with jitter). A 429's Retry-After is waited first."""
