"""SAE training, shared by every cell of a sweep."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SerializationInfo, SerializerFunctionWrapHandler, model_serializer

from sae_core.config.base import Section


class TrainingConfig(Section):
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

    normalize_activations: Literal["none", "expected_norm"] = "expected_norm"
    """Scale of the SAE's input. `expected_norm`: every activation is multiplied by one scalar s per store,
    s = √d / E‖x‖ over the training split (SAELens `expected_average_only_in`, Gemma Scope), so that
    E‖x·s‖ = √d whatever the model or layer and `analysis.dead_threshold`, λ and the JumpReLU threshold
    mean the same everywhere; s is measured once per store (`sae_core.training.normalize`), recorded in
    metrics.json, and folded into the exported weights (`.pth`, SAELens), which take raw activations.
    Analysis and CE-loss recovered run those weights, so their activations, thresholds and L0 are in the
    normalised units (analysis.json's `activation_units` says so). `none`: raw activations (the `seed`
    preset: the study's units and tables)."""

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

    resample_criterion: Literal["never_fired", "threshold"] = "never_fired"
    """Which neurons the `sampling` strategy resets: `never_fired` (the study and Anthropic: no activation
    > 0 in any step of the last `resample_every` steps) or `threshold` (no activation above
    `analysis.dead_threshold` in the window: the definition the study *reported* dead % on)."""

    resample_replacement: bool = False
    """Draw the dead neurons' replacement inputs with replacement (Anthropic's recipe, and the study's:
    each draw exactly p ∝ loss², but several neurons may get the same input) or without (the default: no
    two neurons share a direction, but with many dead neurons the draw flattens towards uniform, so
    "p ∝ loss²" holds only approximately; with `resample_pool_tokens` ≫ dead neurons the two agree)."""

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
    """Initial decoder bias: zeros (the study) or the mean / geometric median of training activations.
    Adam moves b_dec by ~lr a step, so on a model whose residual stream has a large mean (SmolLM2: ‖x̄‖²
    ≈ the variance) a short run leaves it near zeros and a sparse cell pays ‖b_dec − x̄‖² on every token
    (analysis.json's `error_mean_share`; EV −0.97 for a near-empty cell): `mean` there (the `smollm2`
    and `frontier` presets)."""

    shuffle: bool = True
    """Shuffle training tokens each epoch. False reads the split in store order, so each batch holds
    consecutive tokens of one document (the study's unshuffled loader; for ablations)."""

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

    capture: bool = False
    """On CUDA, record the whole update of a step (gradients, Adam, the decoder constraint) once as a CUDA
    graph and replay it each step: at small batches such as the study's 32 the kernel launches, not the
    arithmetic, set the speed. The split stays on the device (see `max_memory_gb`); logging, validation and
    resampling run outside the graph. Not bit-identical to the eager step (capturable Adam, autograd
    instead of relu's hand-written gradients), as `compile`. On a CPU or MPS device it is a config error;
    `auxk` cells are trained eagerly (logged): their dead-latent count sizes a tensor."""

    max_memory_gb: float = Field(8.0, ge=0)
    """Memory the training data may take, in GB (2^30 bytes). A train split that fits (in the store's
    dtype: float16 rows are 2 × d_model bytes) is held whole on the training device and shuffled by
    index — the fast path; a larger one is streamed in windows of half this budget (host memory; each
    epoch reads the split once per window). Both draw the same batches, so this changes speed and
    memory, never the result; `metrics.json` records which ran (`data_path`). Set it well clear of the
    split's size (the seed preset states its choice) so the path does not flip with a few % of tokens.
    8 fits the demo and GPUs of 12 GB and more."""

    num_threads: int = Field(0, ge=0)
    """CPU threads for training (0: torch's default). Small SAEs on a machine shared with other work
    (the Prefect server, other cells) run far faster on 1 thread: idle OpenMP workers otherwise wait
    for busy cores at every small matmul — so the demo preset sets 1 for its in-flow cells. A bare
    `sae-sweep train` runs alone and takes all cores (0) instead of a preset's value (it ran 0.82x
    SAELens with the demo's 1, 1.52x with all cores); `--set training.num_threads=N` or a `--config`
    file keeps N."""

    @model_serializer(mode="wrap")
    def _leave_out_old_behaviour(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, object]:
        # Cache keys and resume identities hash this section: a config at `none` (the behaviour before
        # the field existed: the seed preset) keeps the keys it had. Only key dumps leave it out; every
        # other dump (config show, the config handed to subflows and pool workers) must keep `none`,
        # which is not the default.
        dumped = handler(self)
        if (info.context or {}).get(KEY_DUMP) and dumped.get("normalize_activations") == "none":
            del dumped["normalize_activations"]
        return dumped


KEY_DUMP = "cache_key"
"""`model_dump(context={KEY_DUMP: True})`: the dump a cache key or resume identity hashes."""
