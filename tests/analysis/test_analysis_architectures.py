"""The analysis stage on every architecture: a topk / batchtopk / jumprelu run dir loads (the `.pth`
names its architecture) and its dead counts over all tokens equal a brute-force full encode (a relu
sub-SAE of the undecided columns would count TopK and JumpReLU latents wrongly)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from sae_core.analysis.driver import analyze_run
from sae_core.saes.batchtopk import BatchTopKSAE
from sae_core.saes.jumprelu import JumpReLUSAE
from sae_core.saes.topk import TopKSAE
from tests.analysis.test_analysis import D, M, config, data, store_path, write_run  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("single_thread")


def _sae(name: str, x: torch.Tensor):
    if name == "topk":
        sae = TopKSAE(D, M, k=3, seed=1)
    elif name == "batchtopk":
        sae = BatchTopKSAE(D, M, k=3, seed=1)
        sae.training_loss(x[:200])  # its inference threshold
    else:
        sae = JumpReLUSAE(D, M, seed=1)
        with torch.no_grad():
            sae.threshold.copy_(torch.linspace(0.0, 0.6, M))
    with torch.no_grad():
        sae.b_enc.fill_(0.1)
        sae.b_enc[3] = -100.0  # never fires
        if name != "topk":
            # latent 7: a constant pre-activation above 0.07 but below its threshold — dead here, alive
            # for a plain ReLU of its column
            theta = float(sae.topk_threshold) if name == "batchtopk" else 0.5
            if name == "jumprelu":
                sae.threshold[7] = theta
            sae.W_enc[:, 7] = 0.0
            sae.b_enc[7] = (0.07 + theta) / 2
    return sae


@pytest.mark.parametrize("name", ["topk", "batchtopk", "jumprelu"])
def test_dead_counts_over_all_tokens_equal_the_full_encode(name, tmp_path, store_path, data):  # noqa: F811
    x_all = torch.from_numpy(data["acts"])
    sae = _sae(name, x_all)
    run = write_run(
        tmp_path, sae, cell=f"4x_{name}3_nosampling" if name != "jumprelu" else "4x_jumprelu0.1_sampling"
    )
    # min_activations above every count: every column is "undecided" and recounted over the other tokens
    summary = analyze_run(
        store_path, run, config(ce_loss_documents=0, dead_split="all", min_activations=10**6)
    )
    with torch.no_grad():
        h_all = sae.encode(x_all).numpy()
    count_all = (h_all > 0.07).sum(0)
    assert summary["dead_split"] == "all" and summary["dead_tokens"] == len(h_all)
    assert summary["dead_count"] == int((count_all == 0).sum())
    stats = pd.read_parquet(run / "features" / "feature_stats.parquet")
    np.testing.assert_array_equal(stats["dead"], count_all == 0)
    assert stats["dead"][3] and not stats["dead"].all()
    assert stats["dead"][7] == (name != "topk")


@pytest.mark.parametrize("name", ["topk", "batchtopk", "jumprelu"])
def test_selected_features_examples_are_the_full_encodes_activations(name, tmp_path, store_path, data):  # noqa: F811
    # The second pass used to encode the selected columns as a relu sub-SAE: a TopK latent then fired
    # wherever its pre-activation was positive, not only where it was among the token's k largest.
    x_all = torch.from_numpy(data["acts"])
    sae = _sae(name, x_all)
    run = write_run(
        tmp_path, sae, cell=f"4x_{name}3_nosampling" if name != "jumprelu" else "4x_jumprelu0.1_sampling"
    )
    analyze_run(store_path, run, config(ce_loss_documents=0, min_activations=1))
    with torch.no_grad():
        h = sae.encode(x_all).numpy()
    where = {(int(d), int(p)): i for i, (d, p) in enumerate(zip(data["doc_ids"], data["pos"], strict=True))}
    examples = pd.read_parquet(run / "features" / "examples.parquet")
    assert len(examples) > 0 and set(examples["kind"]) >= {"top", "quantile"}
    for row in examples.itertuples():  # top and quantile examples alike: the activation at that token
        expected = float(h[where[(row.doc_id, row.pos)], row.feature_id])
        assert row.activation == pytest.approx(expected, rel=1e-5, abs=1e-6), (row.feature_id, row.kind)
