"""The offline demo: corpus and model built locally, loadable through the ordinary HF loaders."""

from __future__ import annotations

import json

import torch

from sae_core.extraction.demo import (
    DEMO_CORPUS,
    DEMO_MODEL,
    ensure_demo_corpus,
    resolve_dataset,
    resolve_model_name,
    stdlib_docstrings,
)


def test_stdlib_docstrings_are_stable_documents():
    a = stdlib_docstrings(max_docs=50)
    b = stdlib_docstrings(max_docs=50)
    assert a == b and len(a) == 50
    assert all(len(d["text"]) >= 200 and d["source"] for d in a)


def test_demo_corpus_loads_with_datasets(tmp_path):
    from datasets import load_dataset

    loader, files = resolve_dataset(DEMO_CORPUS, None, tmp_path)
    assert loader == "json"
    ds = load_dataset(loader, data_files=files, split="train")
    assert len(ds) > 1000 and "text" in ds.column_names
    path = ensure_demo_corpus(tmp_path)
    assert json.loads(path.read_text().splitlines()[0])["text"] == ds[0]["text"]


def test_tiny_model_loads_with_from_pretrained(tiny_gpt2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_gpt2))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_gpt2))
    ids = tok("Return the sum of two numbers.", return_tensors="pt")["input_ids"]
    assert tok.is_fast
    assert tok.decode(ids[0]) == "Return the sum of two numbers."
    with torch.inference_mode():
        out = model(ids, output_hidden_states=True)
    assert len(out.hidden_states) == 3 and out.hidden_states[1].shape[-1] == 32


def test_builtin_names_resolve_and_others_pass_through(tmp_path):
    assert resolve_model_name("gpt2", tmp_path) == "gpt2"
    assert resolve_dataset("Skylion007/openwebtext", None, tmp_path) == ("Skylion007/openwebtext", None)
    try:
        resolve_model_name("builtin:nope", tmp_path)
    except ValueError as exc:
        assert "model.name" in str(exc) and DEMO_MODEL in str(exc)
    else:
        raise AssertionError("unknown builtin accepted")


def test_demo_model_trains(tmp_path, tiny_texts):
    """A few training steps lower the LM loss: the demo model's features come from real training."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sae_core.extraction.demo import DemoModelSpec, build_demo_model

    spec = DemoModelSpec(n_layer=1, n_embd=32, n_head=2, n_positions=64, vocab_size=300,
                         train_steps=30, train_batch=8, train_context=32, lr=3e-3)  # fmt: skip
    heard: list[tuple[int, int | None, dict]] = []
    path = build_demo_model(tmp_path / "m", tiny_texts, spec, lambda *call: heard.append(call))
    assert heard[-1][:2] == (30, 30) and heard[-1][2]["loss"] > 0  # the UI's progress artifact
    untrained = build_demo_model(
        tmp_path / "u", tiny_texts, DemoModelSpec(**{**spec.__dict__, "train_steps": 0})
    )
    tok = AutoTokenizer.from_pretrained(str(path))
    ids = tok(tiny_texts[0], return_tensors="pt")["input_ids"][:, :64]
    with torch.inference_mode():
        trained_loss = AutoModelForCausalLM.from_pretrained(str(path))(ids, labels=ids).loss
        base_loss = AutoModelForCausalLM.from_pretrained(str(untrained))(ids, labels=ids).loss
    assert trained_loss < base_loss - 0.5


def test_demo_model_training_names_its_loss(tmp_path, tiny_texts, caplog):
    """transformers warned "`loss_type=None` was set in the config but it is unrecognized" on every
    demo model build: `GPT2LMHeadModel` matches no entry of its loss table."""
    import transformers

    from sae_core.extraction.demo import DemoModelSpec, build_demo_model

    transformers.logging.enable_propagation()
    transformers.utils.logging.warning_once.cache_clear()  # it warns once per process
    spec = DemoModelSpec(n_layer=1, n_embd=16, n_head=2, n_positions=32, vocab_size=280,
                         train_steps=2, train_batch=2, train_context=16)  # fmt: skip
    with caplog.at_level("WARNING"):
        build_demo_model(tmp_path / "m", tiny_texts, spec)
    assert not [r for r in caplog.records if "loss_type" in r.getMessage()]
