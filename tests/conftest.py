"""Shared fixtures: a tiny GPT-2 and corpus built locally (never from the network).

Stage-specific fixtures live in `tests/fixtures_<stage>.py` modules, registered below, so that each
stage's tests own their helpers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# No test may reach the network: make the Hub libraries fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Real credentials in the developer's or CI's environment must never make a test reach a service.
for _secret in ("OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "RUNPOD_API_KEY"):
    os.environ.pop(_secret, None)

pytest_plugins = [
    name
    for name in (
        "tests.fixtures_store",
        "tests.fixtures_sae",
        "tests.fixtures_llm",
        "tests.fixtures_prefect",
        "tests.fixtures_stack",
    )
    if (Path(__file__).parent / f"{name.split('.')[-1]}.py").exists()
]

TINY_SPEC_KW = dict(n_layer=2, n_embd=32, n_head=2, n_positions=128, vocab_size=400, train_steps=0)


@pytest.fixture(scope="session")
def tiny_texts() -> list[str]:
    """~150 stdlib docstrings: real English-and-code text, no network."""
    from sae_core.extraction.demo import stdlib_docstrings

    return [d["text"] for d in stdlib_docstrings(max_docs=150)]


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory, tiny_texts) -> Path:
    """The tiny corpus as a JSON-lines file, loadable with `load_dataset("json", data_files=...)`."""
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in tiny_texts))
    return path


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory, tiny_texts) -> Path:
    """A 2-layer, 32-wide GPT-2 (random weights) with a locally trained BPE tokenizer, saved with
    `save_pretrained`; load it with `AutoModel.from_pretrained(str(path))`."""
    from sae_core.extraction.demo import DemoModelSpec, build_demo_model

    out = tmp_path_factory.mktemp("models") / "tiny-gpt2"
    return build_demo_model(out, tiny_texts, DemoModelSpec(**TINY_SPEC_KW))
