"""Fixtures for the training tests: synthetic sparse features in superposition, and small stores of them.

The data are real inputs, not mocks: `k` unit directions in `d < k` dimensions, each active with
probability `p` at a magnitude in [0.5, 1.5]; an SAE that works recovers the directions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sae_core.config import SweepConfig, load_config


def superposition(n: int, d: int = 16, k: int = 32, p: float = 0.06, seed: int = 0):
    """`(x [n, d], directions [k, d])`: sparse non-negative codes over `k` unit directions."""
    gen = torch.Generator().manual_seed(seed)
    directions = torch.randn(k, d, generator=gen)
    directions /= directions.norm(dim=1, keepdim=True)
    active = torch.rand(n, k, generator=gen) < p
    magnitude = torch.rand(n, k, generator=gen) + 0.5
    return (active * magnitude) @ directions, directions


@pytest.fixture(scope="session")
def superposition_data():
    x, directions = superposition(60_000)
    return x[:50_000], x[50_000:], directions


def make_store(path: Path, n: int = 12_000, d: int = 16, doc_len: int = 50, seed: int = 0, **kw) -> Path:
    from sae_core.store import write_store

    x, _ = superposition(n, d=d, seed=seed)
    doc_ids = np.repeat(np.arange(n // doc_len + 1), doc_len)[:n]
    write_store(
        path, x.numpy(), doc_ids, store_dtype="float32",
        model={"name": "synthetic", "layer": 1, "num_layers": 2, "d_model": d},
        data={"dataset": "synthetic-superposition", "context_length": doc_len}, **kw,
    )  # fmt: skip
    return path


@pytest.fixture(scope="session")
def sae_store(tmp_path_factory) -> Path:
    """A 12k-token, d=16 store of superposition data (train/val/test by doc hash)."""
    return make_store(tmp_path_factory.mktemp("stores") / "synthetic")


def small_config(**training) -> SweepConfig:
    """The demo preset with a fast training section for d=16 stores; `training` overrides keys."""
    base = {
        "training.lr": 3e-3, "training.batch_size": 256, "training.epochs": 2, "training.seed": 0,
        "training.l1_scaling": "sum", "training.resample_every": 20, "training.resample_pool_tokens": 2048,
        "training.log_every": 10, "training.val_every": 30, "training.val_tokens": 1024,
        "training.checkpoint_every": 25, "training.device": "cpu", "tracking.mode": "disabled",
    }  # fmt: skip
    base.update({f"training.{k}": v for k, v in training.items()})
    return load_config("demo", overrides=base)


@pytest.fixture
def single_thread():
    """Tiny matmuls on a 2-core machine shared with other jobs run ~4× faster on one thread (OpenMP
    workers otherwise spin-wait for a busy core); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
