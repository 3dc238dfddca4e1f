"""What a plan's wall time and token counts stand on (`sae_core.plan`): the training throughputs and
corpus sizes recorded in docs/results.md, each with its source line, and the measurement of a pack's
step on the present device (`sae-sweep plan --measure`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from sae_core.config import SweepConfig
from sae_core.naming import Cell


@dataclass(frozen=True)
class Throughput:
    """One recorded training throughput of one cell (tokens per wall second, setup included)."""

    device: str
    d: int
    m: int
    batch: int
    tokens_per_s: float
    source: str


RECORDED = (
    Throughput(
        "cpu", 768, 6144, 4096, 1568.0,
        "docs/results.md, Training (benchmarks/train.py, 8x at d=768, batch 4096), 2026-11-25, "
        "2-core CPU VM, no GPU, shared",
    ),
    Throughput(
        "cpu", 128, 256, 512, 2166 * 512 / 5.3,
        "docs/results.md, Training (demo preset as shipped: 2x cells, 2,166 steps of 512 in 5.2-5.4 s), "
        "2026-11-25, 2-core CPU, load 1.5, one thread",
    ),
    Throughput(
        "cpu", 128, 512, 512, 2166 * 512 / 9.1,
        "docs/results.md, Training (demo preset as shipped: 4x cells, 2,166 steps of 512 in 8.7-9.3 s), "
        "2026-11-25, 2-core CPU, load 1.5, one thread",
    ),
)  # fmt: skip
"""docs/results.md records no GPU training throughput yet (`benchmarks/gpu/check.sh` has not run on
one): on CUDA the plan projects no wall time unless `measure` is asked for."""


@dataclass(frozen=True)
class Corpus:
    """Recorded store rows per document of a data set at a context length."""

    match: str
    context_length: int
    tokens_per_document: float
    source: str


CORPORA = (
    Corpus(
        "openwebtext", 1024, 695.0,
        "6.95M tokens for the seed's first 10,000 OpenWebText documents at context 1024 "
        "(docs/results.md, Packed training; DESIGN.md, Where the time goes)",
    ),
    Corpus(
        "builtin:stdlib-docstrings", 128, 78.0,
        "the demo store: 185k training tokens (2,166 steps of 512 in 6 epochs) and a 23k-token test split "
        "of 3,000 documents (docs/results.md, Training, 2026-11-25)",
    ),
)  # fmt: skip

KNOWN_D_MODEL = {"gpt2": 768, "openai-community/gpt2": 768, "builtin:demo-gpt2": 128}
"""Residual widths known without the Hub (used when there is no store yet and no local model config)."""


def measure_step_s(
    cells: list[Cell], d_model: int, batch: int, cfg: SweepConfig, device: torch.device
) -> float:
    """Seconds of one training step of `cells` as a pack (each cell's step on one shared batch), measured
    on `device` with real Trainers on random rows: steps after a warm-up, about a second per pack."""
    from sae_core.device import cpu_threads
    from sae_core.training import InMemoryData, Trainer
    from sae_core.training.architectures import build_sae, cell_options

    training = cfg.training.model_copy(
        update={"max_tokens": batch * 10**6, "epochs": None, "log_every": 10**9, "val_every": 10**9,
                "checkpoint_every": 10**9, "resample_every": 10**6 - 1, "val_tokens": batch}
    )  # fmt: skip
    rows = torch.randn(batch * 4, d_model, generator=torch.Generator().manual_seed(0)).to(device)
    data = InMemoryData(rows, rows[:batch])
    trainers = []
    for cell in cells:
        m = d_model * cell.expansion
        sae = build_sae(d_model, m, training, cell.architecture, **cell_options(cell, cfg.saes, m))
        trainer = Trainer(sae, data, training, l1=cell.l1, strategy=cell.strategy, device=device)
        trainer.start()
        trainers.append(trainer)
    batches = data.batches(batch, 0, 0)

    def steps(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            x = next(batches)
            for trainer in trainers:
                trainer.train_step(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    with cpu_threads(training.num_threads, device):  # the threads the cells train with
        steps(2)  # warm-up: first-step allocations, kernels chosen
        n, spent = 2, steps(2)
        while spent < 0.25 and n < 4096:
            n *= 2
            spent = steps(n)
    return spent / n
