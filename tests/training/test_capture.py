"""`training.capture` (CUDA graphs): the captured update equals the eager one, step by step and over a run
with resampling between replays; the warm-up before the capture leaves no trace. CUDA-only: run by
benchmarks/gpu/check.sh on a device (`-k cuda`); skipped with the reason elsewhere. (On a CPU the option
is a config error: tests/training/test_pack.py.)"""

from __future__ import annotations

import pytest
import torch

from sae_core.config import SaesConfig, TrainingConfig
from sae_core.naming import Cell
from sae_core.training import InMemoryData, Trainer
from sae_core.training.architectures import build_sae, cell_options

NEEDS_CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="training.capture records CUDA graphs: needs a CUDA device"
)

# The TopK family is captured (k a Python int, BatchTopK's kept entries of static shape): no fallback.
CELLS = [
    Cell(4, 0.02, "sampling"),
    Cell(4, 0.02, "nosampling"),
    Cell(4, 0.0, "nosampling", "jumprelu", l0=1e-3),
    Cell(4, 0.0, "nosampling", "topk", k=4),
    Cell(4, 0.0, "nosampling", "batchtopk", k=4),
    Cell(4, 0.0, "sampling", "topk", k=4),  # resampling (the entry recipe) between replays
]


def _trainer(cell: Cell, data: InMemoryData, capture: bool, steps: int) -> Trainer:
    cfg = TrainingConfig(
        lr=1e-3, batch_size=32, epochs=None, max_tokens=32 * steps, l1_scaling="sum", seed=0,
        resample_every=100, resample_pool_tokens=4096, log_every=50, val_every=100, val_tokens=1024,
        device="cuda", capture=capture,
    )  # fmt: skip
    d_hidden = data.d_model * cell.expansion
    sae = build_sae(
        data.d_model, d_hidden, cfg, cell.architecture, **cell_options(cell, SaesConfig(), d_hidden)
    )
    return Trainer(sae, data, cfg, l1=cell.l1, strategy=cell.strategy, device=torch.device("cuda"))


@NEEDS_CUDA
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: getattr(c, "name", None))
def test_cuda_captured_update_equals_eager_update(superposition_data, cell):
    x_train, x_val, _ = superposition_data
    data = InMemoryData(x_train.cuda(), x_val.cuda())
    eager, captured = _trainer(cell, data, False, 400), _trainer(cell, data, True, 400)
    for t in (eager, captured):
        t.start()
    batches = data.batches(32, 0, 0)
    for _ in range(8):  # the first replay follows the warm-up and the capture
        x = next(batches)
        eager.train_step(x)
        captured.train_step(x)
        assert captured._captured is not None and captured._captured.failed is None, captured._captured.failed
        for (name, a), b in zip(eager.sae.named_parameters(), captured.sae.parameters(), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=f"{cell.name} {name}")
        for a, b in zip(eager.sae.buffers(), captured.sae.buffers(), strict=True):  # k, BatchTopK's θ
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=f"{cell.name} buffer")
        torch.testing.assert_close(eager.state.last_fired, captured.state.last_fired)
    assert captured._captured.graph is not None  # replayed, not the eager fallback


@NEEDS_CUDA
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_cuda_captured_training_matches_eager_training(superposition_data, cell):
    x_train, x_val, _ = superposition_data
    data = InMemoryData(x_train.cuda(), x_val.cuda())
    eager = _trainer(cell, data, False, 300).run()
    trainer = _trainer(cell, data, True, 300)
    captured = trainer.run()
    assert trainer._captured is not None and trainer._captured.failed is None, trainer._captured.failed
    assert trainer._captured.graph is not None
    assert [e["step"] for e in captured["resample_events"]] == [e["step"] for e in eager["resample_events"]]
    assert abs(captured["final"]["explained_variance"] - eager["final"]["explained_variance"]) < 0.02
    assert abs(captured["final"]["l0"] - eager["final"]["l0"]) < 0.1 * max(1.0, eager["final"]["l0"])
    torch.testing.assert_close(trainer.sae.W_dec.norm(dim=1), torch.ones(trainer.sae.d_hidden, device="cuda"))
