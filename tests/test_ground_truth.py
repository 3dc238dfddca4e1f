"""Feature recovery on ground truth, against SAELens's standard SAE (a small version of
`benchmarks/ground_truth.py`): SAELens's synthetic generator, 256 features in superposition in 64
dimensions firing 0.5–5 %, one fixed token set, the same steps and batch for both SAEs, best MCC of a λ
sweep each. Our `TrainingConfig()` defaults must recover the features at least as well as SAELens does
and clear an absolute bar that the study's initialisation (`training.init: seed`) falls far below."""

from __future__ import annotations

import pytest

try:
    import sae_lens.synthetic  # noqa: F401
except ImportError:  # pragma: no cover - CI installs the interop extra
    pytest.skip("needs SAELens's synthetic generator: pip install -e '.[interop]'", allow_module_level=True)

from benchmarks.ground_truth import GroundTruth, best, make_ground_truth, run_ours, run_saelens

pytestmark = pytest.mark.usefixtures("single_thread")

STEPS, BATCH, LR = 500, 512, 1e-3  # ~8 epochs of 32k tokens; EV ~0.85 at λ = 0.3
L1_SWEEP = (0.3, 1.0)  # SAELens units; each side is mapped to its own loss (see the benchmark)
MCC_BAR = 0.85


@pytest.fixture(scope="module")
def truth() -> GroundTruth:
    return make_ground_truth(32_768, test_tokens=8192, seed=0)


@pytest.fixture(scope="module")
def saelens_best(truth: GroundTruth) -> float:
    return best([run_saelens(truth, 4, STEPS, BATCH, l1, LR) for l1 in L1_SWEEP]).mcc


def test_default_settings_recover_the_true_features_at_least_as_well_as_saelens(truth, saelens_best):
    ours = best([run_ours(truth, 4, STEPS, BATCH, l1, LR) for l1 in L1_SWEEP])
    assert ours.mcc >= MCC_BAR, ours
    assert ours.mcc >= saelens_best, (ours, saelens_best)


def test_the_studys_settings_fall_below_the_bar(truth):
    """The issue measured 0.56 for the study's init (SAELens 0.78); here ~0.38: the bar above can fail."""
    study = {"init": "seed", "l1_warmup_fraction": 0.0}
    seed = best([run_ours(truth, 4, STEPS, BATCH, l1, LR, **study) for l1 in L1_SWEEP])
    assert seed.mcc < MCC_BAR, seed
