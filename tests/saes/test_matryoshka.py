"""Matryoshka BatchTopK: validated groups, a loss per prefix, BatchTopK's inference threshold, AuxK, the
`.pth` naming it, and a SAELens export that SAELens loads with identical encode and decode."""

from __future__ import annotations

import pytest
import torch

from sae_core.io import read_json
from sae_core.saes.batchtopk import BatchTopKSAE
from sae_core.saes.export import export_saelens, save_pth
from sae_core.saes.matryoshka import MatryoshkaBatchTopKSAE, group_sizes_of
from sae_core.saes.registry import load_any

D, M = 16, 64


def _x(n: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed)) * 2


def test_group_sizes_are_validated():
    assert group_sizes_of(64, [0.25, 0.25, 0.5]) == [16, 16, 32]
    for bad in ([0.5, 0.6], [1.0, 0.0], []):
        with pytest.raises(ValueError, match="group_fractions"):
            group_sizes_of(64, bad)
    with pytest.raises(ValueError, match="group_sizes"):
        MatryoshkaBatchTopKSAE(D, M, k=4, group_sizes=[32, 16])
    with pytest.raises(ValueError, match="group_sizes"):
        group_sizes_of(4, [0.01, 0.99])  # a group of 0 latents


def test_loss_sums_every_prefix_and_one_group_is_batchtopk():
    x = _x()
    sae = MatryoshkaBatchTopKSAE(D, M, k=4, seed=0, group_sizes=[16, 48])
    parts = sae.training_loss(x)
    h = parts.h
    inner = (h[:, :16] @ sae.W_dec[:16] + sae.b_dec - x).pow(2).mean()
    assert torch.allclose(parts.loss, inner + parts.mse, atol=1e-6)
    one = MatryoshkaBatchTopKSAE(D, M, k=4, seed=0, group_sizes=[M])
    ref = BatchTopKSAE(D, M, k=4, seed=0)
    one.step_grads(x)
    ref.step_grads(x)
    assert torch.allclose(one.W_enc.grad, ref.W_enc.grad, atol=1e-5)
    assert float(one.topk_threshold) == pytest.approx(float(ref.topk_threshold))


def test_auxk_applies_and_pth_records_the_name(tmp_path):
    sae = MatryoshkaBatchTopKSAE(D, M, k=4, seed=0, group_sizes=[16, 48])
    dead = torch.zeros(M, dtype=torch.bool)
    dead[-8:] = True
    stats = sae.step_grads(_x(), dead=dead)
    assert float(stats.l1) > 0  # the AuxK term
    path = save_pth(sae, tmp_path / "m.pth")
    loaded = load_any(path)
    assert type(loaded) is MatryoshkaBatchTopKSAE and loaded.group_sizes.tolist() == [16, 48]
    assert torch.equal(loaded.encode(_x(8)), sae.encode(_x(8)))


def test_saelens_loads_the_export_with_identical_encode_and_decode(tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    sae = MatryoshkaBatchTopKSAE(D, M, k=4, seed=3, group_sizes=[16, 16, 32])
    for seed in range(3):
        sae.training_loss(_x(seed=seed))
    out = export_saelens(sae, tmp_path / "saelens")
    assert read_json(out / "cfg.json")["architecture"] == "jumprelu"
    theirs = sae_lens.SAE.load_from_disk(str(out), device="cpu")
    x = _x(100, seed=5)
    with torch.no_grad():
        h = sae.encode(x)
        assert (h > 0).any() and (h == 0).any()
        assert torch.allclose(theirs.encode(x), h, atol=1e-5)
        assert torch.allclose(theirs.decode(h), sae.decode(h), atol=1e-5)
