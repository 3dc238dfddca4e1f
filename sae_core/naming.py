"""Names of grid cells and of the files they produce, shared by every stage and by the Hub upload.

The study named its weights `model_weights_{expansion}x_{λ}.pth` and `..._sampling.pth`, with λ printed by
Python's `str`; we keep that spelling (`0.01`, `0.0001`) and always name the strategy.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

from sae_core.config import STRATEGIES, GridConfig


def format_l1(l1: float) -> str:
    """λ as the study printed it: Python's `str(float(λ))` — `0.01`, `0.0001`, `1e-05`."""
    return str(float(l1))


@dataclass(frozen=True, order=True)
class Cell:
    """One grid cell: an expansion factor, an L1 coefficient and a dead-neuron strategy."""

    expansion: int
    l1: float
    strategy: str

    def __post_init__(self) -> None:
        if self.expansion <= 0:
            raise ValueError(f"expansion: must be > 0 (got {self.expansion})")
        if self.l1 < 0:
            raise ValueError(f"l1: must be >= 0 (got {self.l1})")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy: must be one of {STRATEGIES} (got {self.strategy!r})")

    @property
    def name(self) -> str:
        """Directory and run name: `8x_0.0001_sampling`."""
        return f"{self.expansion}x_{format_l1(self.l1)}_{self.strategy}"

    @property
    def weights_filename(self) -> str:
        """`model_weights_8x_0.0001_sampling.pth`."""
        return f"model_weights_{self.name}.pth"

    @property
    def task_name(self) -> str:
        """Prefect task-run suffix: `8x-0.0001-sampling`."""
        return f"{self.expansion}x-{format_l1(self.l1)}-{self.strategy}"

    @property
    def wandb_name(self) -> str:
        return f"sae_{self.name}"

    @classmethod
    def parse(cls, name: str) -> Cell:
        """Inverse of `name`: `8x_0.0001_sampling` → Cell(8, 1e-4, 'sampling')."""
        try:
            exp, l1, strategy = name.split("_")
            return cls(int(exp.removesuffix("x")), float(l1), strategy)
        except ValueError as exc:
            raise ValueError(f"cell: not a cell name like 8x_0.0001_sampling (got {name!r})") from exc

    def to_dict(self) -> dict[str, object]:
        return {"expansion": self.expansion, "l1": self.l1, "strategy": self.strategy}


def grid_cells(grid: GridConfig) -> list[Cell]:
    """All cells of a grid, in a stable order (expansion, then λ, then strategy)."""
    return [
        Cell(e, float(l1), s)
        for e, l1, s in product(grid.expansion_factors, grid.l1_coefficients, grid.strategies)
    ]
