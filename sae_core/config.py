"""Typed configuration for a sweep: one pydantic model per concern, YAML presets, `--set` overrides.

Every field carries a description: it is what `sae-sweep config show --explain`, the Prefect UI form and
the docs show. Validation happens here, before any expensive work, and every error names the dotted
field and the value it refused (see `ConfigError`).
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sae_core.errors import SaeSweepError

STRATEGIES = ("nosampling", "sampling")
"""Dead-neuron strategies: plain training, or Anthropic-style resampling of dead neurons."""


class ConfigError(SaeSweepError, ValueError):
    """A configuration problem, phrased as `<dotted.field>: <problem> (got <value>)`."""


class _Section(BaseModel):
    # forbid: a misspelt key in a YAML file must fail, not be silently ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


class ModelConfig(_Section):
    name: str = "gpt2"
    """Hugging Face hub id or a local directory saved with `save_pretrained`; `builtin:demo-gpt2` is the
    small GPT-2 the demo builds (and trains briefly) under `data_root/builtin/`."""

    revision: str | None = None
    """Hub revision (branch, tag or commit); None means the default branch. Recorded in the store."""

    layer: int = Field(6, ge=0)
    """Which residual stream to read: `hidden_states[layer]` of the model, 0 being the embeddings. For
    GPT-2 small, 6 is the stream entering block 6 (the output of block 5), as the study took it."""

    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Dtype the language model runs in during extraction and CE-loss evaluation."""

    device: str = "auto"
    """`auto` (CUDA when available, else CPU), `cpu`, `cuda`, `cuda:N` or `mps`."""

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        head = value.split(":", 1)[0]
        if head not in {"auto", "cpu", "cuda", "mps"}:
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return value


class DataConfig(_Section):
    dataset: str = "Skylion007/openwebtext"
    """Hub data set id, or a `datasets` loader name (`json`, `text`, `parquet`, `csv`) used with
    `data_files`; `builtin:stdlib-docstrings` is the demo corpus built offline from Python's stdlib."""

    data_files: str | list[str] | None = None
    """Local files (or globs) for a loader-name data set; ignored for hub ids."""

    split: str = "train"
    """Split of the data set to read documents from."""

    text_column: str = "text"
    """Column holding each document's text."""

    num_documents: int | None = Field(10_000, gt=0)
    """Documents to take from the start of the split (the study: the first 10,000); None takes all."""

    context_length: int = Field(1024, gt=1)
    """Documents are truncated to this many tokens (GPT-2's context is 1024)."""

    streaming: bool = True
    """Stream the data set instead of downloading it whole (the study streamed OpenWebText)."""


class ExtractionConfig(_Section):
    store_dtype: Literal["float16", "float32"] = "float16"
    """Dtype of activations on disk. float16 halves the store; overflow is detected while writing."""

    batch_tokens: int = Field(16_384, gt=0)
    """Token budget of one forward batch (documents of similar length are batched together)."""

    num_threads: int = Field(0, ge=0)
    """CPU threads for a CPU extraction (0: torch's default, every core). Set 1 on a machine shared with
    other work, as `training.num_threads`. Like `batch_tokens`, it is not part of the store's key."""

    shard_tokens: int = Field(262_144, gt=0)
    """Rows per Parquet shard; a killed extraction resumes from the last complete shard."""

    drop_first_token: bool = True
    """Leave out each document's first token: without a BOS token GPT-2's first position has a norm in
    the hundreds and dominated the study's 'most selective' features."""

    val_fraction: float = Field(0.1, ge=0, lt=1)
    """Share of documents (by a hash of doc_id) in the validation split."""

    test_fraction: float = Field(0.1, ge=0, lt=1)
    """Share of documents (by a hash of doc_id) in the test split."""

    @model_validator(mode="after")
    def _fractions_leave_training(self) -> ExtractionConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction must be < 1 (got {self.val_fraction} + {self.test_fraction})"
            )
        return self


class GridConfig(_Section):
    expansion_factors: list[int] = Field(default_factory=lambda: [4, 8, 16, 32], min_length=1)
    """SAE width as a multiple of d_model."""

    l1_coefficients: list[float] = Field(default_factory=lambda: [1e-2, 1e-4], min_length=1)
    """Sparsity penalties λ (see `training.l1_scaling` for what λ multiplies)."""

    strategies: list[Literal["nosampling", "sampling"]] = Field(
        default_factory=lambda: list(STRATEGIES), min_length=1
    )
    """Dead-neuron strategies: `nosampling` (plain training) and/or `sampling` (resampling)."""

    placement: Literal["local", "pool"] = "local"
    """`local`: cells train in the sweep's own process; `pool`: each cell is a run of the `train-cell`
    deployment on a (GPU) work pool."""

    max_concurrency: int = Field(1, ge=1)
    """Cells trained at once when `placement` is `local` (1 on a single GPU or a small CPU)."""

    cell_deployment: str = "train-cell/train-cell"
    """Deployment (`flow-name/deployment-name`) that runs one cell when `placement` is `pool`."""

    @field_validator("expansion_factors")
    @classmethod
    def _positive_expansion(cls, values: list[int]) -> list[int]:
        for value in values:
            if value <= 0:
                raise ValueError(f"every expansion factor must be > 0 (got {value})")
        if len(set(values)) != len(values):
            raise ValueError(f"expansion factors repeat (got {values})")
        return values

    @field_validator("l1_coefficients")
    @classmethod
    def _non_negative_l1(cls, values: list[float]) -> list[float]:
        for value in values:
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"every λ must be finite and >= 0 (got {value})")
        if len(set(values)) != len(values):
            raise ValueError(f"λ values repeat (got {values})")
        return values

    @field_validator("strategies")
    @classmethod
    def _unique_strategies(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError(f"strategies repeat (got {values})")
        return values


class TrainingConfig(_Section):
    lr: float = Field(1e-4, gt=0)
    """Adam learning rate (the study: 1e-4, constant)."""

    adam_beta1: float = Field(0.9, ge=0, lt=1)
    """Adam β1."""

    adam_beta2: float = Field(0.999, ge=0, lt=1)
    """Adam β2."""

    batch_size: int = Field(4096, gt=0)
    """Tokens per step (the study: 32, which starves a GPU; see `compile`)."""

    epochs: float | None = Field(1.0, gt=0)
    """Passes over the training split (the study: 20). Ignored when `max_tokens` is set."""

    max_tokens: int | None = Field(None, gt=0)
    """Training budget in tokens; overrides `epochs` when set."""

    seed: int = 42
    """Seed for initialisation, shuffling and resampling draws (the study: 42)."""

    l1_scaling: Literal["seed", "sum"] = "seed"
    """`seed`: the L1 term is averaged over the m features, as the study's code did, so the effective
    λ shrinks as the SAE widens. `sum`: summed over features per token (the blog's formula)."""

    resample_every: int = Field(25_000, gt=0)
    """Steps between dead-neuron checks for the `sampling` strategy (the study: 25,000)."""

    resample_pool_tokens: int = Field(65_536, ge=1024)
    """Random training tokens scored by reconstruction loss to draw replacement directions from
    (the study used only the current batch of 32; Anthropic ~819k)."""

    resample_enc_scale: float = Field(0.05, gt=0)
    """Encoder column of a resampled neuron = direction × mean alive encoder norm × this
    (the study: 0.05; Anthropic: 0.2)."""

    resample_bias: float = Field(-0.01, le=0)
    """Resampled neurons' `b_enc` is drawn from U(resample_bias, 0) (the study: U(-0.01, 0))."""

    stop_resampling_after: float | None = Field(None, gt=0, le=1)
    """Stop resampling after this fraction of training, so late-revived neurons can still train."""

    init: Literal["seed", "tied"] = "tied"
    """Weight initialisation. `seed`: the study's untied Gaussians (encoder N(0, 1/d), decoder N(0, 1/m)).
    `tied`: random unit-norm decoder rows and the encoder as their transpose × `init_encoder_norm`, so
    each feature starts reading the direction it writes; it recovers known features far better on
    synthetic data (docs/results.md, "Ground truth")."""

    init_encoder_norm: float = Field(0.1, gt=0)
    """For `init: tied`, the L2 norm of each encoder column at step 0 (the decoder rows are unit norm)."""

    l1_warmup_fraction: float = Field(0.05, ge=0, lt=1)
    """λ rises linearly from ~0 to λ over this fraction of the training steps (0: constant λ from the
    first step, the study). 5 % recovered known features better at strong λ (docs/results.md)."""

    b_dec_init: Literal["zeros", "mean", "geometric_median"] = "zeros"
    """Initial decoder bias: zeros (the study) or the mean / geometric median of training activations."""

    log_every: int = Field(100, gt=0)
    """Steps between logged training metrics."""

    val_every: int = Field(2_000, gt=0)
    """Steps between validation metrics on the val split."""

    val_tokens: int = Field(16_384, gt=0)
    """Validation tokens evaluated each time."""

    checkpoint_every: int = Field(5_000, gt=0)
    """Steps between checkpoints (a crashed cell resumes from the last one)."""

    device: str = "auto"
    """Device for training: `auto`, `cpu`, `cuda`, `cuda:N`, `mps`."""

    autocast_bf16: bool = False
    """On CUDA, run forward/backward under bfloat16 autocast (weights and Adam stay float32)."""

    compile: bool = False
    """On CUDA, `torch.compile` the step; it keeps a GPU busy at small batch sizes such as the study's 32."""

    max_memory_gb: float = Field(8.0, ge=0)
    """Hold the training split in (device) memory, in the store's dtype, when it needs at most this many
    GB, and shuffle by index there; a larger split is streamed from the store (memory then stays bounded)."""

    num_threads: int = Field(0, ge=0)
    """CPU threads for training (0: torch's default). Small SAEs on a machine shared with other work
    (the Prefect server, other cells) run far faster on 1 thread: idle OpenMP workers otherwise wait
    for busy cores at every small matmul."""


class AnalysisConfig(_Section):
    split: Literal["train", "val", "test"] = "test"
    """Split analysed (held-out tokens by default)."""

    max_tokens: int | None = Field(None, gt=0)
    """Cap on analysed tokens; None analyses the whole split."""

    batch_size: int = Field(8192, gt=0)
    """Tokens per encode batch."""

    dead_threshold: float = Field(0.07, ge=0)
    """A feature fires when its activation exceeds this; dead if it never does (the study: 0.07)."""

    min_activations: int = Field(10, ge=1)
    """Features with fewer firings are not ranked by selectivity (the study: 10)."""

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


class LabelingConfig(_Section):
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


class UploadConfig(_Section):
    repo_id: str | None = None
    """Hugging Face model repo receiving the weights; None skips the upload."""

    token_env: str = "HF_TOKEN"
    """Environment variable holding the Hub token."""

    token_secret_block: str | None = None
    """Prefect Secret block holding the token, used when the environment variable is unset."""

    private: bool = False
    """Create the repo as private when it does not exist."""


class TrackingConfig(_Section):
    mode: Literal["online", "offline", "disabled"] = "offline"
    """WandB mode: offline needs no account (sync later with `wandb sync`)."""

    project: str = "sae-sweep"
    """WandB project."""

    entity: str | None = None
    """WandB entity (team or user); None uses the account default."""

    api_key_env: str = "WANDB_API_KEY"
    """Environment variable holding the WandB key for online mode."""


class SweepConfig(_Section):
    name: str = "sweep"
    """Sweep name: runs go to `data_root/runs/<name>/`; also the WandB group."""

    data_root: str = "./sae_data"
    """Where stores, runs and reports live (a local path, or a network volume shared by workers)."""

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


# ---------------------------------------------------------------------------------------------
# Presets, overrides and error messages


def preset_names() -> list[str]:
    """Names of the presets shipped in the package."""
    folder = resources.files("sae_core") / "presets"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_dict(name: str) -> dict[str, Any]:
    """The raw mapping of a shipped preset."""
    if name not in preset_names():
        raise ConfigError(f"preset: unknown preset {name!r} (known: {', '.join(preset_names())})")
    text = (resources.files("sae_core") / "presets" / f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def parse_set(items: list[str]) -> dict[str, Any]:
    """`["a.b=1", "c=[4,8]"]` → `{"a.b": 1, "c": [4, 8]}`; values are parsed as YAML."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set: expected KEY=VALUE (got {item!r})")
        try:
            overrides[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{key.strip()}: value is not valid YAML (got {raw!r})") from exc
    return overrides


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a nested mapping; a key that is not a config field is an error."""
    result = _deep_copy(data)
    for dotted, value in overrides.items():
        _check_key(dotted)
        node = result
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{dotted}: {part} is not a section (got {node!r})")
        node[leaf] = value
    return result


def load_config(
    preset: str | None = "demo",
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> SweepConfig:
    """Resolve a config: preset, then a YAML file on top, then dotted overrides; validate it all."""
    data: dict[str, Any] = preset_dict(preset) if preset else {}
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config: no such file {str(path)!r}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config: {path} is not valid YAML ({exc})") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config: {path} must hold a mapping (got {type(loaded).__name__})")
        data = _deep_merge(data, loaded)
    data = apply_overrides(data, overrides or {})
    return validate_config(data)


def validate_config(data: dict[str, Any]) -> SweepConfig:
    """Build a SweepConfig, turning pydantic's errors into one `field: problem (got value)` line each."""
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "config"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        value = err.get("input")
        shown = value if not isinstance(value, dict | list) or len(repr(value)) < 80 else "…"
        if "(got " in message:  # the validator already quoted the offending value
            lines.append(f"{field}: {message}")
        else:
            lines.append(f"{field}: {message} (got {shown!r})")
    return "; ".join(lines)


def config_to_yaml(cfg: SweepConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def field_descriptions(model: type[BaseModel] = SweepConfig, prefix: str = "") -> dict[str, str]:
    """Dotted key → description for every leaf field (used by `config show --explain` and docs)."""
    out: dict[str, str] = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.update(field_descriptions(annotation, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = " ".join((info.description or "").split())
    return out


def _check_key(dotted: str) -> None:
    known = field_descriptions()
    if dotted not in known:
        near = [k for k in known if k.split(".")[-1] == dotted.split(".")[-1]]
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise ConfigError(f"{dotted}: unknown key{hint} (got {dotted!r})")


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = _deep_copy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}
