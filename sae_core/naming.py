"""Names of grid cells and of the files they produce, shared by every stage and by the Hub upload.

The study named its weights `model_weights_{expansion}x_{λ}.pth` and `..._sampling.pth`, with λ printed by
Python's `str`; we keep that spelling (`0.01`, `0.0001`) and always name the strategy. The other
architectures put their name and sparsity where λ stands: `8x_topk32_auxk`, `8x_batchtopk32_sampling`
(k = 32), `8x_jumprelu0.001_nosampling` (L0 coefficient 0.001, spelt as λ is), so a relu cell's names
never change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import product

from sae_core.architectures import SPECS, ArchitectureSpec
from sae_core.config import GridConfig

_PREFIXES = sorted((s.cell_prefix for s in SPECS.values() if s.cell_prefix), key=len, reverse=True)
_SPARSITY = re.compile(rf"^({'|'.join(map(re.escape, _PREFIXES))})(.+)$")
"""A cell name's sparsity part: an architecture's prefix (the longest first) and its value."""
_BY_PREFIX = {s.cell_prefix: s for s in SPECS.values()}


def format_l1(l1: float) -> str:
    """λ as the study printed it: Python's `str(float(λ))` — `0.01`, `0.0001`, `1e-05`."""
    return str(float(l1))


def _join(names: list[str]) -> str:
    """`a`, `a and b`, `a, b and c`: a list as a sentence reads it."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


@dataclass(frozen=True, order=True)
class Cell:
    """One grid cell: an expansion factor, an L1 coefficient and a dead-neuron strategy; for the other
    architectures `l1` is 0 and the sparsity is `k` (topk, batchtopk) or `l0` (jumprelu's coefficient)."""

    expansion: int
    l1: float
    strategy: str
    architecture: str = "relu"
    k: int | None = None
    l0: float | None = None

    def __post_init__(self) -> None:
        if self.expansion <= 0:
            raise ValueError(f"expansion: must be > 0 (got {self.expansion})")
        if self.l1 < 0:
            raise ValueError(f"l1: must be >= 0 (got {self.l1})")
        spec = SPECS.get(self.architecture)
        if spec is None:
            raise ValueError(
                f"architecture: unknown architecture {self.architecture!r} (known: {list(SPECS)})"
            )
        if self.strategy not in spec.strategies:
            raise ValueError(
                f"strategy: {self.strategy!r} is not available for architecture {self.architecture!r} "
                f"(it takes {spec.strategies})"
            )
        field = spec.sparsity.field
        for name in ("k", "l0"):
            if (field == name) != (getattr(self, name) is not None):
                takers = [a for a, s in SPECS.items() if s.sparsity.field == name]
                raise ValueError(
                    f"{name}: set for {_join(takers)} cells only "
                    f"(got {getattr(self, name)} for {self.architecture})"
                )
        if field == "k" and (isinstance(self.k, bool) or not isinstance(self.k, int) or self.k <= 0):
            raise ValueError(f"k: must be an integer > 0 (got {self.k!r})")
        if self.l0 is not None and not self.l0 >= 0:
            raise ValueError(f"l0: must be >= 0 (got {self.l0})")
        if field != "l1" and self.l1 != 0:
            raise ValueError(f"l1: a {self.architecture} cell has no λ, it must be 0 (got {self.l1})")

    @property
    def spec(self) -> ArchitectureSpec:
        """The registry's entry for the cell's architecture."""
        return SPECS[self.architecture]

    @property
    def sparsity_value(self) -> float:
        """The cell's sparsity parameter as a number (λ, k or the L0 coefficient)."""
        return float(getattr(self, self.spec.sparsity.field))

    @property
    def sparsity_label(self) -> str:
        """The middle part of the name: λ (`0.0001`), `topk32`, `batchtopk32`, `jumprelu0.001`."""
        spec = self.spec
        value = getattr(self, spec.sparsity.field)
        return f"{spec.cell_prefix}{value if spec.sparsity.integer else format_l1(value)}"

    @property
    def name(self) -> str:
        """Directory and run name: `8x_0.0001_sampling`, `8x_topk32_auxk`."""
        return f"{self.expansion}x_{self.sparsity_label}_{self.strategy}"

    @property
    def weights_filename(self) -> str:
        """`model_weights_8x_0.0001_sampling.pth`."""
        return f"model_weights_{self.name}.pth"

    @property
    def task_name(self) -> str:
        """Prefect task-run suffix: `8x-0.0001-sampling`, `8x-topk32-auxk`."""
        return f"{self.expansion}x-{self.sparsity_label}-{self.strategy}"

    @property
    def wandb_name(self) -> str:
        return f"sae_{self.name}"

    @classmethod
    def parse(cls, name: str) -> Cell:
        """Inverse of `name`: `8x_0.0001_sampling` → Cell(8, 1e-4, 'sampling'); `8x_topk32_auxk` →
        Cell(8, 0.0, 'auxk', 'topk', k=32)."""
        try:
            exp, sparsity, strategy = name.split("_")
            expansion = int(exp.removesuffix("x"))
            other = _SPARSITY.match(sparsity)
            spec = _BY_PREFIX[other.group(1) if other else ""]
            text = other.group(2) if other else sparsity
            value = int(text) if spec.sparsity.integer else float(text)
            if spec.sparsity.field == "l1":
                return cls(expansion, value, strategy, spec.name)
            return cls(expansion, 0.0, strategy, spec.name, **{spec.sparsity.field: value})  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"cell: not a cell name like 8x_0.0001_sampling (got {name!r})") from exc

    def to_dict(self) -> dict[str, object]:
        """The cell's fields; a relu cell's are the study's three (its resume identity is unchanged)."""
        out: dict[str, object] = {"expansion": self.expansion, "l1": self.l1, "strategy": self.strategy}
        if self.architecture != "relu":
            out |= {"architecture": self.architecture, "k": self.k, "l0": self.l0}
        return out


def grid_cells(grid: GridConfig) -> list[Cell]:
    """All cells of a grid, in a stable order: the relu cells first (expansion, then λ, then strategy:
    the study's order), then each other architecture of `grid.architectures` in its order (expansion,
    then its sparsity, then strategy), each with the listed strategies it takes."""
    cells: list[Cell] = []
    for arch in grid.architectures:
        spec = SPECS[arch]
        strategies = [s for s in grid.strategies if s in spec.strategies]
        field, values = spec.sparsity.field, getattr(grid, spec.sparsity.axis)
        for e, v, s in product(grid.expansion_factors, values, strategies):
            value = int(v) if spec.sparsity.integer else float(v)
            if field == "l1":
                cells.append(Cell(e, value, s, arch))
            else:
                cells.append(Cell(e, 0.0, s, arch, **{field: value}))  # type: ignore[arg-type]
    relu = [c for c in cells if c.architecture == "relu"]
    return relu + [c for c in cells if c.architecture != "relu"]
