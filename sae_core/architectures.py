"""The registry of SAE architectures: one `ArchitectureSpec` per architecture, the only place that names
one. Plain data (no torch, no pydantic, no sae_core import), so every layer reads it: config (the
`grid.architectures` names, the `saes` sections, which strategies each takes), naming (cell names),
saes (the class, the state-dict keys, the SAELens form), training (the memory estimate), the report (the
sparsity's label, the order of rows, the plot colour) and the CLI. `tests/saes/test_registry.py` walks it and
checks that every table derived from it covers every architecture.

Adding an architecture is its module under `sae_core/saes/` (the class: activation, loss, training step,
state dict, SAELens export), one `ArchitectureSpec` in `SPECS` below, and, when it has settings, its
config section in `sae_core/config/architectures.py` (docs/architecture.md, "Adding an architecture").
"""

from __future__ import annotations

from dataclasses import dataclass, field

STRATEGY_NAMES = ("nosampling", "sampling", "auxk")
"""Every dead-latent strategy, in the report's order: plain training, resampling, Gao et al.'s AuxK."""

STUDY_STRATEGIES = ("nosampling", "sampling")
"""What every architecture takes; `auxk` needs a TopK-style selection of the dead latents' top k."""

PTH_ARCHITECTURE_KEY = "architecture"
"""The `.pth` key naming an architecture that records its name: the name's UTF-8 bytes as a uint8
tensor (`saes.state_keys.name_tensor`), so the file stays a dict of tensors that `weights_only` loads."""


@dataclass(frozen=True)
class Sparsity:
    """An architecture's sparsity parameter, the grid axis its cells take their value from."""

    axis: str
    """The `grid` field of its values: `l1_coefficients`, `k_values`, `l0_coefficients`."""

    field: str
    """The `naming.Cell` field that holds a cell's value: `l1`, `k` or `l0`."""

    keyword: str | None
    """The SAE constructor's keyword for it (`k`, `l0_coefficient`); None: relu's λ, which the trainer's
    loss reads, not the SAE."""

    label: str
    """How the report and the plots name it: `λ`, `k`, `L0 coeff`."""

    units: str
    """What a value means, in a sentence's words (the report's and the CLI's)."""

    larger_is_sparser: bool
    """Penalties (λ, the L0 coefficient) sparsify as they grow, k as it shrinks: the report lists an
    architecture's rows sparsest first."""

    @property
    def integer(self) -> bool:
        """Integer values (k), printed as such; float ones print as the study printed λ (`str(float)`)."""
        return self.field == "k"


@dataclass(frozen=True)
class Memory:
    """`training.pack_memory.cell_bytes`' terms for the architecture, per latent m and per batch row."""

    extra_params_per_latent: int = 0
    """Parameters beside the study's `2dm + m + d` (jumprelu: a threshold per latent)."""

    work_arrays: int = 4
    """[batch, m] float arrays the step holds (relu's fused step: 2; an autograd step: about 4)."""

    work_rows_per_batch: int = 3
    """[batch, d] arrays the step holds (the input, its error, the reconstruction)."""


@dataclass(frozen=True)
class ArchitectureSpec:
    """Everything the stages read about one architecture besides its class's own code."""

    name: str
    """In configs (`grid.architectures`), the `saes` section, cell names and files; no `_` (cell names
    are split on it)."""

    summary: str
    """One line: what it is and whose (the report's and the CLI's help)."""

    sae_class: str
    """`module:Class` of its `nn.Module` (imported by `sae_core.saes.registry` only)."""

    sparsity: Sparsity

    cell_prefix: str
    """Printed before the sparsity value in a cell name: `topk` → `8x_topk32_auxk`; relu's is empty
    (the study's `8x_0.0001_sampling`)."""

    strategies: tuple[str, ...] = STUDY_STRATEGIES
    """The dead-latent strategies its cells take."""

    section: str | None = None
    """Its settings' class in `sae_core.config.architectures` (the `saes.<name>` section); None: none."""

    extra_keys: tuple[str, ...] = ()
    """State-dict keys beside the study's four (`W_enc`, `b_enc`, `W_dec`, `b_dec`)."""

    records_name: bool = True
    """The `.pth` holds `PTH_ARCHITECTURE_KEY`. False for relu only: its `.pth` stays the study's four
    tensors, so a file without the key and with exactly those is relu."""

    legacy_keys: bool = False
    """Files written before `.pth`s named their architecture are told apart by their keys (topk,
    batchtopk, jumprelu); an architecture added since is never guessed."""

    saelens_architecture: str = "jumprelu"
    """The SAELens `architecture` its export is (what SAELens computes at inference)."""

    saelens_native: bool = False
    """It is the architecture SAELens' `saelens_architecture` loads back as (`load_saelens_export`)."""

    saelens_extra: tuple[str, ...] = ()
    """Tensors its SAELens weights file holds beside the four (jumprelu form: `threshold`)."""

    color: str = "#777777"
    """Its colour in the frontier plots (line and marker style are the strategy's)."""

    memory: Memory = field(default_factory=Memory)


SPECS: dict[str, ArchitectureSpec] = {}
"""Every architecture by name, in the order grids, reports and legends list them."""


def register(spec: ArchitectureSpec) -> ArchitectureSpec:
    """Add `spec` (a name registered twice, or with a `_`, is refused)."""
    if spec.name in SPECS:
        raise ValueError(f"architecture: {spec.name!r} is registered twice")
    if "_" in spec.name or "_" in spec.cell_prefix:
        raise ValueError(
            f"architecture: {spec.name!r}: no '_' in a name or cell prefix (cell names split on it)"
        )
    unknown = set(spec.strategies) - set(STRATEGY_NAMES)
    if unknown or not set(STUDY_STRATEGIES) <= set(spec.strategies):
        raise ValueError(
            f"architecture: {spec.name!r} takes {STUDY_STRATEGIES} and only strategies of {STRATEGY_NAMES}"
        )
    SPECS[spec.name] = spec
    return spec


def spec(name: str) -> ArchitectureSpec:
    """The spec of `name`; a ValueError naming the known ones otherwise."""
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"architecture: unknown architecture {name!r} (known: {list(SPECS)})") from None


def names() -> tuple[str, ...]:
    return tuple(SPECS)


_LAMBDA = Sparsity("l1_coefficients", "l1", None, "λ", "the L1 penalty coefficient", larger_is_sparser=True)
_K = Sparsity("k_values", "k", "k", "k", "active latents per token", larger_is_sparser=False)
_L0 = Sparsity(
    "l0_coefficients",
    "l0",
    "l0_coefficient",
    "L0 coeff",
    "the L0 penalty coefficient",
    larger_is_sparser=True,
)
_TOPK_STRATEGIES = (*STUDY_STRATEGIES, "auxk")

register(
    ArchitectureSpec(
        name="relu",
        summary="the study's ReLU SAE with an L1 penalty",
        sae_class="sae_core.saes.relu:SparseAutoencoder",
        sparsity=_LAMBDA,
        cell_prefix="",
        records_name=False,
        saelens_architecture="standard",
        saelens_native=True,
        color="#cc3311",
        memory=Memory(work_arrays=2),
    )
)
register(
    ArchitectureSpec(
        name="topk",
        summary="TopK (Gao et al. 2024): each token keeps its k largest pre-activations",
        sae_class="sae_core.saes.topk:TopKSAE",
        sparsity=_K,
        cell_prefix="topk",
        strategies=_TOPK_STRATEGIES,
        section="TopKConfig",
        extra_keys=("k",),
        legacy_keys=True,
        saelens_architecture="topk",
        saelens_native=True,
        color="#0077bb",
    )
)
register(
    ArchitectureSpec(
        name="batchtopk",
        summary="BatchTopK (Bussmann et al. 2024): k·B per batch in training, a threshold at inference",
        sae_class="sae_core.saes.batchtopk:BatchTopKSAE",
        sparsity=_K,
        cell_prefix="batchtopk",
        strategies=_TOPK_STRATEGIES,
        section="BatchTopKConfig",
        extra_keys=("k", "topk_threshold"),
        legacy_keys=True,
        saelens_extra=("threshold",),
        color="#009988",
    )
)
register(
    ArchitectureSpec(
        name="jumprelu",
        summary="JumpReLU (Rajamanoharan et al. 2024): a learned threshold per latent, an L0 penalty",
        sae_class="sae_core.saes.jumprelu:JumpReLUSAE",
        sparsity=_L0,
        cell_prefix="jumprelu",
        section="JumpReLUConfig",
        extra_keys=("threshold",),
        legacy_keys=True,
        saelens_native=True,
        saelens_extra=("threshold",),
        color="#ee7733",
        memory=Memory(extra_params_per_latent=1),
    )
)
register(
    ArchitectureSpec(
        name="matryoshka",
        summary="Matryoshka BatchTopK (Bussmann et al. 2025): nested dictionaries, a loss per prefix",
        sae_class="sae_core.saes.matryoshka:MatryoshkaBatchTopKSAE",
        sparsity=_K,
        cell_prefix="matryoshka",
        strategies=_TOPK_STRATEGIES,
        section="MatryoshkaConfig",
        extra_keys=("k", "topk_threshold", "group_sizes"),
        saelens_extra=("threshold",),
        color="#aa3377",
        memory=Memory(work_arrays=5, work_rows_per_batch=4),
    )
)
