"""The TopK family's hand-written sparse step (`sae_core.saes.sparse_step`) gives autograd's loss and
gradients on the dense formulation (`AutogradSae.training_loss`: h from the top-k, `h @ W_dec`), in
float64 on the CPU, with and without AuxK, for TopK and BatchTopK; and its statistics are the dense
step's. (Before it, TopK's backward went through autograd over dense [B, m] tensors.)"""

from __future__ import annotations

import pytest
import torch

from sae_core.saes.base import AutogradSae
from sae_core.saes.batchtopk import BatchTopKSAE
from sae_core.saes.sparse_step import Kept, bag_weight_grad
from sae_core.saes.topk import TopKSAE

pytestmark = pytest.mark.usefixtures("single_thread")

D, M, K, B = 12, 48, 5, 40
PARAMS = ("W_enc", "b_enc", "W_dec", "b_dec")


def _pair(cls: type[TopKSAE], **options) -> tuple[TopKSAE, TopKSAE]:
    """Two identical float64 SAEs with a non-zero b_dec and encoder bias (so their gradients show)."""
    pair = []
    for _ in range(2):
        sae = cls(D, M, k=K, seed=3, init="tied", **options).double()
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            sae.b_dec.copy_(torch.randn(D, generator=gen, dtype=torch.float64) * 0.3)
            sae.b_enc.copy_(torch.randn(M, generator=gen, dtype=torch.float64) * 0.1)
        pair.append(sae)
    return pair[0], pair[1]


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn(B, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2


DEAD_MASKS = {
    "no auxk": None,
    "auxk, many dead": torch.arange(M) % 3 == 0,  # 16 dead, more than auxk_k = 6
    "auxk, few dead": torch.arange(M) % 16 == 0,  # 3 dead, fewer than auxk_k: all of them are used
    "auxk, none dead": torch.zeros(M, dtype=torch.bool),
}


@pytest.mark.parametrize("cls", [TopKSAE, BatchTopKSAE])
@pytest.mark.parametrize("dead_name", list(DEAD_MASKS))
def test_hand_written_gradients_equal_autograds_in_float64(cls, dead_name):
    dead = DEAD_MASKS[dead_name]
    ours, ref = _pair(cls, auxk_k=6, auxk_coefficient=0.5)
    x = _x()
    stats = ours.step_grads(x, dead=dead, full_stats=True, exceed_threshold=0.2)
    ref.zero_grad(set_to_none=False)
    parts = AutogradSae.training_loss(ref, x, dead)
    parts.loss.backward()
    torch.testing.assert_close(stats.loss, parts.loss.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(stats.mse, parts.mse.detach(), rtol=1e-12, atol=1e-14)
    for name in PARAMS:
        torch.testing.assert_close(
            getattr(ours, name).grad, getattr(ref, name).grad, rtol=1e-10, atol=1e-13, msg=name
        )
    h = parts.h.detach()
    assert torch.equal(stats.fired, (h > 0).any(dim=0))
    assert torch.equal(stats.exceeded, (h > 0.2).any(dim=0))
    torch.testing.assert_close(stats.l0, (h > 0).sum(dim=1).double().mean().to(stats.l0.dtype))
    if cls is BatchTopKSAE:  # θ's running estimate is updated from the same kept activations
        assert ours.threshold_value == pytest.approx(ref.threshold_value, rel=1e-12)


def test_gradients_reach_only_the_kept_latents():
    """The point of the sparse step: encoder columns no token kept get exactly zero gradient."""
    sae, _ = _pair(TopKSAE)
    x = _x(seed=4)
    sae.step_grads(x)
    with torch.no_grad():
        kept = Kept.per_token(sae.pre_activation(x), K)
    touched = torch.zeros(M, dtype=torch.bool)
    touched[kept.cols[kept.pre > 0]] = True
    assert (sae.W_enc.grad[:, ~touched] == 0).all() and (sae.W_enc.grad[:, touched] != 0).any(dim=0).all()
    assert (sae.W_dec.grad[~touched] == 0).all()


def test_the_scatter_kernel_equals_the_dense_product_it_replaces():
    """`bag_weight_grad` (ATen's embedding_bag weight backward, a private op) = `Gᵀ X` with G the
    [B, m] matrix of the entries: a PyTorch upgrade that changed the op's meaning fails here."""
    gen = torch.Generator().manual_seed(5)
    pre = torch.randn(B, M, generator=gen, dtype=torch.float64)
    kept = Kept.of_batch(pre, K)  # uneven counts per token, some tokens possibly with none
    weights = torch.randn(kept.cols.shape[0], generator=gen, dtype=torch.float64)
    grad = torch.randn(B, D, generator=gen, dtype=torch.float64)
    expected = kept.dense(weights, M).t() @ grad
    torch.testing.assert_close(bag_weight_grad(kept.rows, kept.cols, weights, grad, M), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the same kernels' CUDA versions)")
@pytest.mark.parametrize("cls", [TopKSAE, BatchTopKSAE])
def test_the_sparse_step_on_cuda_equals_the_cpu_step(cls):
    cpu, _ = _pair(cls, auxk_k=6)
    gpu, _ = _pair(cls, auxk_k=6)
    cpu, gpu = cpu.float(), gpu.float().cuda()
    x, dead = _x().float(), DEAD_MASKS["auxk, many dead"]
    a = cpu.step_grads(x, dead=dead, full_stats=True)
    b = gpu.step_grads(x.cuda(), dead=dead.cuda(), full_stats=True)
    torch.testing.assert_close(b.loss.cpu(), a.loss, rtol=1e-5, atol=1e-6)
    for name in PARAMS:
        torch.testing.assert_close(
            getattr(gpu, name).grad.cpu(), getattr(cpu, name).grad, rtol=1e-4, atol=1e-5, msg=name
        )
    assert torch.equal(b.fired.cpu(), a.fired)
