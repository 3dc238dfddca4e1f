"""Prefect fixtures shared by every stage's tests: ONE test harness per session (it costs ~10 s).

`prefect_harness` starts Prefect's test harness (a temporary SQLite database under a temporary
PREFECT_HOME, a local server) once for the whole session; any test that runs a flow or task asks for it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory) -> Iterator[str]:
    """Yield the temporary PREFECT_HOME of a session-wide Prefect test harness."""
    home = tmp_path_factory.mktemp("prefect-home")
    old = os.environ.get("PREFECT_HOME")
    os.environ["PREFECT_HOME"] = str(home)
    from tasks.prefect_defaults import apply_prefect_defaults

    apply_prefect_defaults()
    from prefect.testing.utilities import prefect_test_harness

    try:
        with prefect_test_harness(server_startup_timeout=120):
            yield str(home)
    finally:
        if old is None:
            os.environ.pop("PREFECT_HOME", None)
        else:
            os.environ["PREFECT_HOME"] = old


@pytest.fixture
def prefect_client(prefect_harness):
    """A synchronous Prefect client against the harness's server."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        yield client


# Overrides that make the demo sweep take seconds: a tiny GPT-2 (built beforehand, so the flow finds it),
# 60 short documents, one expansion factor, one λ, both strategies, a few dozen steps.
TINY_SWEEP = {
    "model.layer": 1,
    "data.num_documents": 60,
    "data.context_length": 64,
    "grid.expansion_factors": [2],
    "grid.l1_coefficients": [0.01],
    "training.epochs": 1,
    "training.batch_size": 64,
    "training.log_every": 5,
    "training.val_every": 20,
    "training.checkpoint_every": 20,
    "training.resample_every": 10,
    "training.resample_pool_tokens": 1024,
    "training.val_tokens": 256,
    "analysis.top_k_features": 3,
    "analysis.examples_per_feature": 3,
    "analysis.ce_loss_documents": 4,
    "analysis.batch_size": 512,
}


@pytest.fixture(scope="session")
def tiny_demo_model(tiny_gpt2):
    """The session's tiny GPT-2, to be copied where `builtin:demo-gpt2` resolves."""
    return tiny_gpt2


@pytest.fixture
def tiny_sweep_factory(tiny_demo_model):
    """`make(data_root) -> overrides`: the tiny model placed at `data_root/builtin/demo-gpt2` and the
    demo preset's overrides for a sweep of seconds."""
    import shutil
    from pathlib import Path

    def make(data_root) -> dict:
        target = Path(data_root) / "builtin" / "demo-gpt2"
        if not target.exists():
            shutil.copytree(tiny_demo_model, target)
        return {"data_root": str(data_root), **TINY_SWEEP}

    return make
