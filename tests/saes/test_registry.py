"""The registry (`sae_core.architectures`) is the one place an architecture is named: every table
derived from it covers every architecture, and a hand-written step never hides a subclass's loss."""

from __future__ import annotations

import torch

from sae_core.architectures import SPECS, STRATEGY_NAMES
from sae_core.config import GridConfig, SaesConfig
from sae_core.config.architectures import ARCHITECTURE_NAMES, STRATEGIES_BY_ARCHITECTURE
from sae_core.naming import Cell, grid_cells
from sae_core.report.compare import ARCHITECTURE_ORDER, SPARSITY_NAMES
from sae_core.report.frontier import _COLORS
from sae_core.saes import registry
from sae_core.saes.batchtopk import BatchTopKSAE
from sae_core.saes.export import SAELENS_LOADERS
from sae_core.saes.state_keys import EXTRA_KEYS
from sae_core.training.pack_memory import cell_bytes


def test_every_derived_table_covers_every_architecture():
    names = set(SPECS)
    tables = (ARCHITECTURE_NAMES, STRATEGIES_BY_ARCHITECTURE, registry.ARCHITECTURES, EXTRA_KEYS)
    tables += (registry.STRATEGIES_BY_ARCHITECTURE, ARCHITECTURE_ORDER, SPARSITY_NAMES, _COLORS)
    for table in tables:
        assert set(table) == names
    assert set(SaesConfig.model_fields) == {n for n, s in SPECS.items() if s.section is not None}
    assert set(SAELENS_LOADERS.values()) <= names
    for name, spec in SPECS.items():
        assert registry.ARCHITECTURES[name].architecture == name
        assert set(spec.strategies) <= set(STRATEGY_NAMES)
        assert cell_bytes(8, 32, 4, name, 16) > 0
        grid = GridConfig(architectures=[name], strategies=list(spec.strategies), expansion_factors=[4])
        for cell in grid_cells(grid):
            assert Cell.parse(cell.name) == cell and cell.architecture == name


def test_a_subclass_overriding_the_loss_trains_through_it_not_the_sparse_step():
    class Doubled(BatchTopKSAE):
        def training_loss(self, x, dead=None):
            parts = super().training_loss(x, dead)
            parts.loss = parts.loss * 2
            return parts

    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    plain, doubled = BatchTopKSAE(8, 32, k=2, seed=0), Doubled(8, 32, k=2, seed=0)
    plain.step_grads(x)
    doubled.step_grads(x)
    assert torch.allclose(doubled.W_dec.grad, 2 * plain.W_dec.grad, atol=1e-6)
