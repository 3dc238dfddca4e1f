"""Activation-store fixtures for every stage's tests (registered by `tests/conftest.py`).

- `tiny_store_config`: the SweepConfig of a real extraction of `tiny_gpt2` over `tiny_corpus`, layer 1.
- `tiny_store`: that extraction's store directory (a `Path`; open with `ActivationStore.open`).
- `synthetic_store_factory`: `make(activations=None, doc_ids=None, **write_store_kwargs)` writes a
  store with `write_store` into a fresh temporary directory and returns the opened `ActivationStore`;
  without arrays it draws random documents (`n_docs`, `d_model`, `doc_len=(lo, hi)`, `seed`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

TINY_STORE_OVERRIDES: dict[str, Any] = {
    "model.layer": 1,
    "model.device": "cpu",
    "data.dataset": "json",
    "data.num_documents": None,
    "data.context_length": 128,
    "data.streaming": False,
    "extraction.store_dtype": "float16",
    "extraction.shard_tokens": 4096,
    "extraction.batch_tokens": 2048,
}


@pytest.fixture(scope="session")
def tiny_store_config(tmp_path_factory, tiny_gpt2, tiny_corpus):
    from sae_core.config import load_config

    overrides = {
        **TINY_STORE_OVERRIDES,
        "data_root": str(tmp_path_factory.mktemp("tiny_store_root")),
        "model.name": str(tiny_gpt2),
        "data.data_files": str(tiny_corpus),
    }
    return load_config("demo", overrides=overrides)


@pytest.fixture(scope="session")
def tiny_store(tiny_store_config) -> Path:
    """A real extraction (several shards, float16, first token dropped by default) of `tiny_gpt2`."""
    from sae_core.extraction.extract import extract_activations

    return extract_activations(tiny_store_config)


@pytest.fixture(scope="session")
def synthetic_store_factory(tmp_path_factory) -> Callable[..., Any]:
    from sae_core.store import write_store

    def make(
        activations: Any = None,
        doc_ids: Any = None,
        *,
        n_docs: int = 40,
        d_model: int = 16,
        doc_len: tuple[int, int] = (5, 60),
        seed: int = 0,
        **write_kwargs: Any,
    ):
        if activations is None:
            rng = np.random.default_rng(seed)
            lengths = rng.integers(doc_len[0], doc_len[1], size=n_docs)
            doc_ids = np.repeat(np.arange(n_docs), lengths)
            activations = rng.standard_normal((len(doc_ids), d_model)).astype(np.float32)
            write_kwargs.setdefault("token_ids", rng.integers(0, 400, size=len(doc_ids)))
        if doc_ids is None:
            raise ValueError("synthetic_store_factory: doc_ids are required with activations")
        path = tmp_path_factory.mktemp("synthetic_store")
        token_ids = write_kwargs.pop("token_ids", None)
        positions = write_kwargs.pop("positions", None)
        return write_store(path, activations, doc_ids, positions, token_ids, **write_kwargs)

    return make
