"""The settings of each SAE architecture besides its sparsity axis (λ, k or the L0 coefficient, which
are grid axes). Field names are the architecture's constructor keywords in `sae_core.saes`, so a section
builds its SAE as `TopKSAE(d_in, m, k=k, **section.model_dump())`.

Which architectures exist, and which section is whose, is the registry's (`sae_core.architectures`):
`SaesConfig`, the sweep's `saes` section, has one field per architecture whose spec names a section
here, and `grid.architectures` picks which are trained.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, create_model

from sae_core.architectures import SPECS
from sae_core.config.base import Section

ARCHITECTURE_NAMES = tuple(SPECS)
"""Every architecture's name, from the registry."""
TOPK_FAMILY = tuple(name for name, s in SPECS.items() if s.sparsity.field == "k")
"""The architectures whose sparsity is k (`grid.k_values`)."""
STRATEGIES_BY_ARCHITECTURE: dict[str, tuple[str, ...]] = {name: s.strategies for name, s in SPECS.items()}
"""The dead-latent strategies each architecture takes (`auxk`: the TopK family)."""


class TopKConfig(Section):
    auxk_k: int | None = Field(None, gt=0)
    """Dead latents the AuxK loss selects per token (the `auxk` strategy); None: d_model // 2, the
    heuristic of Gao et al. (appendix B.1)."""

    auxk_coefficient: float = Field(1 / 32, ge=0)
    """Weight α of the AuxK loss (Gao et al.: 1/32), on its mean squared error over batch × d_model
    scaled as `auxk_weighting` says."""

    auxk_dead_tokens: int | None = Field(None, gt=0)
    """The `auxk` strategy's dead window, in training tokens: a latent that fired on none of the last
    this many is dead and gets the AuxK term. None: 10M tokens (Gao et al., sparsify), capped at a tenth
    of the cell's run so short runs keep a live term. A set value that is not shorter than the run is
    refused before training starts (the term would never act)."""

    auxk_weighting: Literal["variance", "mse"] = "variance"
    """`variance`: the AuxK MSE is weighed against the main MSE as Gao et al. weigh them (main ÷ Var(x),
    aux ÷ Var(e), e = x − x̂): multiplied by Var(x)/Var(e) per batch, so its pull does not fade as the
    SAE improves. `mse`: in the main loss's units (α/FVU times weaker; before this option the only
    one). Measured on ground truth in docs/results.md, "Dead-latent remedies"."""

    auxk_dead_scale: bool = False
    """Multiply the AuxK term by min(n_dead / auxk_k, 1) (sparsify's damping while few latents are
    dead)."""

    resample_encoder: Literal["entry", "scaled"] = "entry"
    """How the `sampling` strategy sizes a resampled latent's encoder column. `entry`: so that its
    pre-activation on the input it was resampled from is just above the k-th largest of the alive
    latents' there (halfway to the (k−1)-th), so it is kept on that input, and never below
    `training.resample_enc_scale` × the mean alive encoder norm. `scaled`: that floor alone, relu's
    recipe (Anthropic's), under which a TopK-family latent seldom enters the top k and stays dead
    (docs/results.md, "Resampling the TopK family")."""


class BatchTopKConfig(TopKConfig):
    threshold_decay: float = Field(0.99, ge=0, lt=1)
    """β of the inference threshold's running mean, θ ← βθ + (1 − β)·(smallest activation kept in the
    batch); the first training batch sets θ."""

    resample_encoder: Literal["entry", "scaled"] = "scaled"
    """As `saes.topk.resample_encoder`, but `scaled` by default: for BatchTopK `entry` revives the
    latents (dead % (training window) 53.7 → 18.8 on the frontier preset) yet costs explained variance
    at the same L0 (0.9927 → 0.9917) and hardly moves the dead % at inference, where θ decides
    (docs/results.md, "Resampling the TopK family")."""


class JumpReLUConfig(Section):
    threshold_init: float = Field(1e-3, ge=0)
    """Every latent's threshold θ at step 0 (Rajamanoharan et al.: 0.001, on activations scaled to unit
    mean squared norm per dimension), capped per latent as `threshold_init_quantile` says."""

    threshold_init_quantile: float = Field(0.9, gt=0, le=1)
    """At step 0 each latent's θ is at most this quantile of its pre-activations on a training sample
    (and ≥ 0), so it starts firing on at least 1 − this share of tokens: a `threshold_init` above the
    data's scale cannot start every latent dead. 1: the largest pre-activation, the cap that still
    lets every latent fire once."""

    threshold_lr_scale: float | None = Field(None, gt=0)
    """θ's Adam learning rate ÷ `training.lr`. None: 30 for `step`, 1 for `tanh`. Adam moves each θ by
    ~lr a step whatever its gradient, so at one learning rate for all the `step` form's L0 pull saturates
    above a coefficient of ~1e-3 and the coefficient stops mattering; 30× makes the L0 fall over two
    decades of it on ground truth (docs/results.md, "Dead-latent remedies")."""

    bandwidth: float = Field(1e-3, gt=0)
    """Width ε of the straight-through estimator's rectangle kernel: θ learns only from pre-activations
    within ε/2 of it (the paper: 0.001)."""

    sparsity_loss: Literal["step", "tanh"] = "step"
    """`step`: the L0 itself, θ trained through the step's STE (DeepMind's). `tanh`: Σ tanh(c·h·‖W_dec‖),
    a smooth stand-in for the L0 that also trains the encoder (Anthropic's)."""

    tanh_scale: float = Field(4.0, gt=0)
    """c in the `tanh` form (SAELens' default 4); unused by `step`."""


class MatryoshkaConfig(BatchTopKConfig):
    group_fractions: list[float] = Field(default_factory=lambda: [0.0625, 0.0625, 0.125, 0.25, 0.5])
    """The nested dictionaries' groups as shares of the width (each > 0, summing to 1): prefix i is
    groups 0..i and gets its own reconstruction loss (Bussmann et al. 2025)."""


def _sections() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, spec in SPECS.items():
        if spec.section is None:
            continue
        section = globals().get(spec.section)
        if not (isinstance(section, type) and issubclass(section, Section)):
            raise TypeError(f"architecture {name!r}: its section {spec.section!r} is not a Section here")
        doc = f"{name} cells (`grid.architectures` containing `{name}`): {spec.summary}."
        fields[name] = (section, Field(default_factory=section, description=doc))
    return fields


if TYPE_CHECKING:

    class SaesConfig(Section):
        """One section per architecture that has settings (built from the registry at import)."""

        def __getattr__(self, name: str) -> Any: ...

else:
    SaesConfig = create_model(
        "SaesConfig",
        __base__=Section,
        __doc__="One section per architecture that has settings (`sae_core.architectures`).",
        __module__=__name__,
        **_sections(),
    )


def section_of(saes: SaesConfig, architecture: str) -> Section | None:
    """`saes.<architecture>`, or None for an architecture without settings (relu)."""
    return getattr(saes, architecture) if SPECS[architecture].section is not None else None
