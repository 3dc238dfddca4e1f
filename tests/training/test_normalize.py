"""Activation normalisation (issue 22 item 1): one scale per store with E‖x·s‖ = √d on the training split,
measured deterministically and cached by the store's fingerprint; a normalised run trains on x·s and
releases weights with s folded in, so its `.pth` on the raw store gives exactly the analysis a raw run
on a store of x·s gives."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sae_core.analysis.driver import analyze_run
from sae_core.errors import TrainingError
from sae_core.naming import Cell
from sae_core.saes.registry import load_any
from sae_core.store import ActivationStore, write_store
from sae_core.training import InMemoryData, train_cell
from sae_core.training.normalize import (
    CACHE_NAME,
    SCALE_TOKENS,
    ScaledData,
    expected_norm_scale,
    normalized,
    store_normalization,
)
from tests.fixtures_sae import small_config, superposition

pytestmark = pytest.mark.usefixtures("single_thread")

D, N, DOC_LEN, RAW_NORM = 16, 6_000, 40, 0.3


def _store(path, rows: np.ndarray):
    write_store(
        path, rows, np.repeat(np.arange(len(rows) // DOC_LEN), DOC_LEN), store_dtype="float32",
        model={"name": "synthetic", "layer": 1, "num_layers": 2, "d_model": D},
        data={"dataset": "synthetic-normalisation", "context_length": DOC_LEN},
    )  # fmt: skip
    return path


def _rows() -> np.ndarray:
    x, _ = superposition(N, d=D, seed=3)
    return (x * RAW_NORM / x.norm(dim=1).mean()).numpy()


def test_the_scale_makes_the_mean_norm_sqrt_d_and_is_deterministic():
    x = torch.from_numpy(_rows())
    data = InMemoryData(x)
    found = expected_norm_scale(data)
    assert found.tokens == N  # a split smaller than SCALE_TOKENS is measured whole
    assert float((x.double() * found.scale).norm(dim=1).mean()) == pytest.approx(math.sqrt(D), rel=1e-9)
    assert expected_norm_scale(InMemoryData(x.clone())).scale == found.scale
    big = InMemoryData(torch.randn(SCALE_TOKENS + 5_000, 4) * 7)
    sampled = expected_norm_scale(big)
    assert sampled.tokens == SCALE_TOKENS
    whole = math.sqrt(4) / float(big.train.double().norm(dim=1).mean())
    assert sampled.scale == pytest.approx(whole, rel=5e-3)  # a sample of rows, within 0.5 % here


def test_a_zero_store_is_refused_in_one_line():
    with pytest.raises(
        TrainingError, match=r"^training.normalize_activations: .*normalize_activations=none$"
    ):
        expected_norm_scale(InMemoryData(torch.zeros(100, D)))


def test_the_scale_is_cached_by_the_store_fingerprint(tmp_path):
    path = _store(tmp_path / "store", _rows())
    store = ActivationStore.open(path)
    data = InMemoryData(store.load_split("train"))
    first = store_normalization(data, store)
    cached = json.loads((path / CACHE_NAME).read_text())
    assert cached["scale"] == first.scale and cached["store"].startswith("store:")
    cached["scale"] = 123.0  # read back, not measured again
    (path / CACHE_NAME).write_text(json.dumps(cached))
    assert store_normalization(data, store).scale == 123.0
    cached["store"] = "store:" + "0" * 32  # another store's: measured again and rewritten
    (path / CACHE_NAME).write_text(json.dumps(cached))
    assert store_normalization(data, store).scale == first.scale
    assert json.loads((path / CACHE_NAME).read_text())["scale"] == first.scale


def test_scaled_data_scales_batches_samples_and_validation():
    x, val = torch.randn(1_000, D), torch.randn(100, D)
    data = InMemoryData(x, val)
    scaled = normalized(data, None, "expected_norm")
    assert isinstance(scaled, ScaledData) and normalized(data, None, "none") is data
    s = scaled.scale
    assert torch.equal(next(scaled.batches(64, 0, 0)), next(data.batches(64, 0, 0)) * s)
    assert torch.equal(scaled.sample(50, 1), data.sample(50, 1) * s)
    assert torch.equal(scaled.validation(30, 2), data.validation(30, 2) * s)
    assert scaled.fingerprint() == data.fingerprint()


@pytest.mark.parametrize("architecture", ["relu", "topk", "jumprelu"])
def test_a_normalised_run_equals_a_raw_run_on_the_scaled_store(architecture, tmp_path):
    """Trained on x·s (`expected_norm`) and released folded, the cell's `.pth` on the raw store encodes
    as a `none` run trained on a store of x·s: same latents, reconstruction ÷ s, the same analysis."""
    rows = _rows()
    raw = _store(tmp_path / "raw", rows)
    cell = {
        "relu": Cell(4, 1e-3, "nosampling"),
        "topk": Cell(4, 0.0, "nosampling", architecture="topk", k=6),
        "jumprelu": Cell(4, 0.0, "nosampling", architecture="jumprelu", l0=1e-3),
    }[architecture]
    extra = {"epochs": 1, "b_dec_init": "mean"}
    cfg_norm, cfg_none = small_config(**extra), small_config(normalize_activations="none", **extra)
    cfg_norm.analysis.ce_loss_documents = cfg_none.analysis.ce_loss_documents = 0
    metrics = train_cell(raw, cell, cfg_norm, tmp_path / "norm" / cell.name)
    s = metrics["normalization"]["scale"]
    train_split = ActivationStore.open(raw).load_split("train").double()
    assert float((train_split * s).norm(dim=1).mean()) == pytest.approx(math.sqrt(D), rel=1e-9)
    pre_scaled = _store(tmp_path / "scaled", (rows.astype(np.float64) * s).astype(np.float32))
    train_cell(pre_scaled, cell, cfg_none, tmp_path / "none" / cell.name)
    released = load_any(tmp_path / "norm" / cell.name / cell.weights_filename)
    trained = load_any(tmp_path / "none" / cell.name / cell.weights_filename)
    x = torch.from_numpy(rows[:500])
    with torch.no_grad():
        h_released, h_trained = released.encode(x), trained.encode(x * s)
        assert torch.allclose(h_released, h_trained, rtol=1e-3, atol=1e-4)
        assert torch.allclose(released(x)[0], trained(x * s)[0] / s, rtol=1e-3, atol=1e-5)
    a_norm = analyze_run(raw, tmp_path / "norm" / cell.name, cfg_norm)
    a_none = analyze_run(pre_scaled, tmp_path / "none" / cell.name, cfg_none)
    assert a_norm["activation_units"].startswith("normalised (x·s") and a_none["activation_units"] == "raw"
    for key in ("dead_fraction", "never_fired_fraction", "l0", "explained_variance", "max_activation"):
        assert a_norm[key] == pytest.approx(a_none[key], rel=1e-3, abs=1e-4), key
    assert a_norm["selected"] == a_none["selected"]
    saelens = json.loads((tmp_path / "norm" / cell.name / "saelens" / "cfg.json").read_text())
    assert saelens["normalize_activations"] == "none"  # folded: SAELens must not scale again
    assert saelens["metadata"]["activation_normalization"]["scale"] == metrics["normalization"]["scale"]
