"""Feature recovery on ground truth, against SAELens's standard SAE (a small version of
`benchmarks/ground_truth.py`): SAELens's synthetic generator, 256 features in superposition in 64
dimensions firing 0.5–5 %, one fixed token set, the same steps and batch for both SAEs, best MCC of a λ
sweep each. Our `TrainingConfig()` defaults must recover the features at least as well as SAELens does
and clear an absolute bar that the study's initialisation (`training.init: seed`) falls far below; our
TopK at k near the data's true L0 must recover them as well as relu's best."""

from __future__ import annotations

import pytest

try:
    import sae_lens.synthetic  # noqa: F401
except ImportError:  # pragma: no cover - CI installs the interop extra
    pytest.skip("needs SAELens's synthetic generator: pip install -e '.[interop]'", allow_module_level=True)

from benchmarks.ground_truth import (
    GroundTruth,
    Result,
    best,
    make_ground_truth,
    run_architecture,
    run_ours,
    run_saelens,
    true_l0,
)

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.slow]  # a 269 s fixture

STEPS, BATCH, LR = 500, 512, 1e-3  # ~8 epochs of 32k tokens; EV ~0.85 at λ = 0.3
L1_SWEEP = (0.3, 1.0)  # SAELens units; each side is mapped to its own loss (see the benchmark)
MCC_BAR = 0.85
TOPK_MARGIN = 0.01  # measured: topk k=7 0.992 vs relu's best 0.993 (λ = 1, L0 19.6); relu at L0 7: 0.984


@pytest.fixture(scope="module")
def truth() -> GroundTruth:
    return make_ground_truth(32_768, test_tokens=8192, seed=0)


@pytest.fixture(scope="module")
def saelens_best(truth: GroundTruth) -> float:
    return best([run_saelens(truth, 4, STEPS, BATCH, l1, LR) for l1 in L1_SWEEP]).mcc


@pytest.fixture(scope="module")
def relu_best(truth: GroundTruth) -> Result:
    return best([run_ours(truth, 4, STEPS, BATCH, l1, LR) for l1 in L1_SWEEP])


def test_default_settings_recover_the_true_features_at_least_as_well_as_saelens(relu_best, saelens_best):
    ours = relu_best
    assert ours.mcc >= MCC_BAR, ours
    assert ours.mcc >= saelens_best, (ours, saelens_best)


def test_the_studys_settings_fall_below_the_bar(truth):
    """The issue measured 0.56 for the study's init (SAELens 0.78); here ~0.38: the bar above can fail."""
    study = {"init": "seed", "l1_warmup_fraction": 0.0}
    seed = best([run_ours(truth, 4, STEPS, BATCH, l1, LR, **study) for l1 in L1_SWEEP])
    assert seed.mcc < MCC_BAR, seed


def test_topk_at_the_true_l0_recovers_the_features_as_well_as_relus_best(truth, relu_best):
    """TopK (its hand-written sparse step, the Trainer, `TrainingConfig()` defaults) with k = the data's
    true L0 (6.8 → 7): its MCC is relu's best of the λ sweep minus a small margin, or better."""
    k = round(true_l0())
    topk = run_architecture(truth, "topk", 4, STEPS, BATCH, LR, options={"k": k})
    assert abs(topk.l0 - k) < 0.5, topk  # exactly k per token, unless some pre-activations are <= 0
    assert topk.mcc >= MCC_BAR, topk
    assert topk.mcc >= relu_best.mcc - TOPK_MARGIN, (topk, relu_best)
