"""CE-loss recovered loads its causal LM once per process (issue 22: reloading per cell was 90 % of a
SmolLM2 cell's analysis time), never lends one instance to two cells at once, and leaves no hook behind."""

from __future__ import annotations

import numpy as np
import pytest

from sae_core.analysis import evaluation
from sae_core.analysis.evaluation import ce_loss_recovered
from sae_core.analysis.lm_cache import borrowed_lm, cache_key, cached_keys, clear_lm_cache
from tests.analysis.test_evaluation import D_MODEL, identity_sae, zero_sae


@pytest.fixture
def counted_loads(monkeypatch) -> list[str]:
    """The real loader, with each call recorded."""
    clear_lm_cache()
    calls: list[str] = []
    real = evaluation._load_causal_lm

    def load(model_path, revision, device, dtype):
        calls.append(model_path)
        return real(model_path, revision, device, dtype)

    monkeypatch.setattr(evaluation, "_load_causal_lm", load)
    yield calls
    clear_lm_cache()


def _docs(tiny_gpt2, tiny_texts) -> list[np.ndarray]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_gpt2))
    return [np.array(tok(t)["input_ids"][:60]) for t in tiny_texts[:4]]


def test_the_model_is_loaded_once_for_many_cells_and_results_do_not_change(
    tiny_gpt2, tiny_texts, counted_loads
):
    docs = _docs(tiny_gpt2, tiny_texts)
    first, _ = ce_loss_recovered(identity_sae(D_MODEL), str(tiny_gpt2), 1, docs, device="cpu")
    zero, _ = ce_loss_recovered(zero_sae(D_MODEL), str(tiny_gpt2), 1, docs, device="cpu")
    again, _ = ce_loss_recovered(identity_sae(D_MODEL), str(tiny_gpt2), 1, docs, device="cpu")
    assert counted_loads == [str(tiny_gpt2)]
    assert first is not None and zero is not None and again is not None
    assert first == again  # the cached model carries no hook or state from the cell before
    assert zero["recovered"] == pytest.approx(0.0, abs=1e-6)
    assert first["recovered"] == pytest.approx(1.0, abs=1e-3)


def test_a_different_dtype_is_a_different_model_and_only_the_last_key_is_kept(
    tiny_gpt2, tiny_texts, counted_loads
):
    docs = _docs(tiny_gpt2, tiny_texts)
    ce_loss_recovered(identity_sae(D_MODEL), str(tiny_gpt2), 1, docs, device="cpu")
    ce_loss_recovered(identity_sae(D_MODEL), str(tiny_gpt2), 1, docs, device="cpu", dtype="bfloat16")
    assert len(counted_loads) == 2
    assert cached_keys() == [cache_key(str(tiny_gpt2), None, "cpu", "bfloat16")]


def test_two_borrowers_at_once_never_share_an_instance(tiny_gpt2):
    clear_lm_cache()
    key = cache_key(str(tiny_gpt2), None, "cpu", "float32")

    def load():
        return evaluation._load_causal_lm(str(tiny_gpt2), None, "cpu", "float32")

    with borrowed_lm(key, load) as (a, _), borrowed_lm(key, load) as (b, _):
        assert a is not None and b is not None and a is not b
    assert cached_keys() == [key]
    with borrowed_lm(key, load) as (c, _):
        assert c is a or c is b  # reused, not reloaded
    clear_lm_cache()
