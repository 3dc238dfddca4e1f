"""CE-loss recovered and KL with the SAE spliced into a tiny GPT-2 built locally, and the whole analysis
of a real extraction (tokenizer-decoded examples, CE loss in analysis.json)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from sae_core.analysis import evaluation as evaluation
from sae_core.analysis.driver import analyze_run
from sae_core.analysis.evaluation import ReconstructionStats, ce_loss_recovered
from sae_core.config import load_config
from sae_core.saes.relu import SparseAutoencoder

D_MODEL = 32  # tests/conftest.py TINY_SPEC_KW


def identity_sae(d: int) -> SparseAutoencoder:
    """relu(x) − relu(−x) = x: a 2d-wide SAE that reconstructs exactly."""
    sae = SparseAutoencoder(d, 2 * d, seed=0)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def zero_sae(d: int) -> SparseAutoencoder:
    sae = SparseAutoencoder(d, 2 * d, seed=0)
    with torch.no_grad():
        for param in sae.parameters():
            param.zero_()
    return sae


@pytest.fixture(scope="module")
def documents(tiny_gpt2, tiny_texts) -> list[np.ndarray]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_gpt2))
    return [np.array(tok(t)["input_ids"][:100]) for t in tiny_texts[:12]]


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_ce_loss_recovered_is_one_for_identity_and_zero_for_zero_sae(tiny_gpt2, documents, layer):
    perfect, note = ce_loss_recovered(identity_sae(D_MODEL), str(tiny_gpt2), layer, documents, device="cpu")
    assert perfect is not None, note
    assert perfect["recovered"] == pytest.approx(1.0, abs=1e-3)
    assert perfect["sae"] == pytest.approx(perfect["clean"], abs=1e-5)
    assert perfect["kl_sae"] == pytest.approx(0.0, abs=1e-6)
    assert perfect["kl_zero"] > 1e-4 and perfect["zero"] != perfect["clean"]
    assert perfect["documents"] == len(documents)
    assert perfect["tokens"] == sum(len(d) - 2 for d in documents)  # position 0 not counted
    assert f"hidden_states[{layer}]" in note
    ablated, _ = ce_loss_recovered(zero_sae(D_MODEL), str(tiny_gpt2), layer, documents, device="cpu")
    assert ablated["recovered"] == pytest.approx(0.0, abs=1e-6)
    assert ablated["clean"] == pytest.approx(perfect["clean"])


class Recorder(nn.Module):
    """Returns its input unchanged and records it: where exactly the splice reads."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen.append(x.clone())
        return x, x


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_splice_reads_hidden_states_of_the_layer(tiny_gpt2, documents, layer):
    from transformers import AutoModelForCausalLM

    doc = documents[0]
    recorder = Recorder()
    ce_loss_recovered(recorder, str(tiny_gpt2), layer, [doc], device="cpu", skip_first_position=False)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_gpt2)).eval()
    with torch.no_grad():
        hidden = model(torch.from_numpy(doc)[None], output_hidden_states=True).hidden_states[layer][0]
    torch.testing.assert_close(recorder.seen[0], hidden, atol=1e-5, rtol=1e-5)


def test_padding_and_batching_do_not_change_the_result(tiny_gpt2, documents, monkeypatch):
    sae = SparseAutoencoder(D_MODEL, 64, seed=3)
    batched, _ = ce_loss_recovered(sae, str(tiny_gpt2), 1, documents, device="cpu")
    monkeypatch.setattr(evaluation, "CE_BATCH_TOKENS", 1)  # one document per forward, no padding
    single, _ = ce_loss_recovered(sae, str(tiny_gpt2), 1, documents, device="cpu")
    for key in ("clean", "sae", "zero", "kl_sae", "kl_zero"):
        assert batched[key] == pytest.approx(single[key], rel=1e-4, abs=1e-6), key
    assert batched["kl_sae"] > 0 and batched["recovered"] is not None


def test_model_without_lm_head_is_skipped_with_a_note(tmp_path, documents):
    from transformers import GPT2Config, GPT2Model

    config = GPT2Config(n_layer=2, n_embd=D_MODEL, n_head=2, n_positions=128, vocab_size=400,
                        tie_word_embeddings=False)  # fmt: skip
    GPT2Model(config).save_pretrained(tmp_path / "base")
    result, note = ce_loss_recovered(
        identity_sae(D_MODEL), str(tmp_path / "base"), 1, documents, device="cpu"
    )
    assert result is None
    assert note.startswith("skipped:") and "language-model head" in note
    result, note = ce_loss_recovered(identity_sae(D_MODEL), None, 1, documents)
    assert result is None and "names no model" in note


def test_reconstruction_stats_are_batch_independent():
    gen = torch.Generator().manual_seed(0)
    x, x_hat = torch.randn(300, 6, generator=gen), torch.randn(300, 6, generator=gen)
    whole, parts = ReconstructionStats(6), ReconstructionStats(6)
    whole.update(x, x_hat, 30.0, 12.0)
    for lo in range(0, 300, 70):
        parts.update(
            x[lo : lo + 70],
            x_hat[lo : lo + 70],
            30.0 * len(x[lo : lo + 70]) / 300,
            0.04 * len(x[lo : lo + 70]),
        )
    a, b = whole.summary(), parts.summary()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-9), key
    assert a["l0"] == pytest.approx(0.1)


def _two_pass_explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    x64, xh64 = x.double(), x_hat.double()
    total = float((x64 - x64.mean(0)).square().sum())
    return 1.0 - float((x64 - xh64).square().sum()) / total


def test_explained_variance_is_stable_under_a_large_mean_offset():
    """x = 1e4 + noise of std 0.01 (float32), in batches whose means drift: the one-pass
    Σ‖x‖² − ‖Σx‖²/n lost every digit here; the merged centred sums match a two-pass float64 computation."""
    gen = torch.Generator().manual_seed(3)
    n, d = 20_000, 64
    drift = torch.linspace(0, 0.05, n)[:, None]  # batch means differ: the merge term is exercised
    x = (1e4 + drift + 0.01 * torch.randn(n, d, generator=gen)).float()
    x_hat = x + 0.005 * torch.randn(n, d, generator=gen)
    stats = ReconstructionStats(d)
    for lo in range(0, n, 3_000):
        stats.update(x[lo : lo + 3_000], x_hat[lo : lo + 3_000], 0.0, 0.0)
    expected = _two_pass_explained_variance(x, x_hat)
    assert 0.5 < expected < 0.97  # a meaningful figure, away from the 0/1 ends
    assert stats.summary()["explained_variance"] == pytest.approx(expected, abs=1e-6)


def test_explained_variance_matches_two_pass_on_ordinary_data():
    gen = torch.Generator().manual_seed(4)
    x = 3.0 + 2.0 * torch.randn(5_000, 16, generator=gen)
    x_hat = x + 0.7 * torch.randn(5_000, 16, generator=gen)
    stats = ReconstructionStats(16)
    for lo in range(0, 5_000, 777):
        stats.update(x[lo : lo + 777], x_hat[lo : lo + 777], 0.0, 0.0)
    assert stats.summary()["explained_variance"] == pytest.approx(
        _two_pass_explained_variance(x, x_hat), abs=1e-9
    )


def test_analysis_of_a_real_extraction(tmp_path, tiny_store):
    """Examples decoded with the store's tokenizer, the token marked; CE loss through the real model."""
    from sae_core.store import ActivationStore

    store = ActivationStore.open(tiny_store)
    sae = SparseAutoencoder(store.d_model, 4 * store.d_model, seed=0)
    norm = store.sample(256, split="test").norm(dim=1).mean()
    with torch.no_grad():  # a random GPT-2's residual stream is tiny: scale the encoder to it
        sae.W_enc *= store.d_model**0.5 / norm
        sae.b_enc.fill_(-0.5)
    run = tmp_path / "4x_0.01_nosampling"
    run.mkdir()
    torch.save(sae.state_dict(), run / "model_weights_4x_0.01_nosampling.pth")
    cfg = load_config(
        "demo",
        overrides={"training.device": "cpu", "model.device": "cpu", "analysis.ce_loss_documents": 4,
                   "analysis.top_k_features": 3, "analysis.examples_per_feature": 5},
    )  # fmt: skip
    summary = analyze_run(tiny_store, run, cfg)
    ce = summary["ce_loss"]
    assert ce is not None, summary["ce_loss_note"]
    assert ce["documents"] == 4 and ce["tokens"] > 0
    assert ce["clean"] < ce["zero"] or ce["kl_zero"] > 0
    assert "position 0 left clean" in summary["ce_loss_note"]
    ex = pd.read_parquet(run / "features" / "examples.parquet")
    assert len(ex) > 0
    docs = store.documents(cfg.analysis.split)
    for row in ex.itertuples():
        assert docs[row.doc_id][row.pos] == row.token_id
        assert row.pos >= 1  # the store drops each document's first token by default
        assert f"**{row.token}**" in row.context_text and not row.token.startswith("<")
        assert "".join(row.context_tokens[: row.marked_index]) + f"**{row.token}**" in row.context_text
    assert json.loads((run / "analysis.json").read_text())["ce_loss"] == ce


class _ScaledSplice(nn.Module):
    """The splice a normalised run means, spelt out: the SAE sees x·s, its reconstruction ÷ s goes back."""

    def __init__(self, sae: nn.Module, scale: float):
        super().__init__()
        self.sae, self.scale = sae, scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        recon, h = self.sae(x * self.scale)
        return recon / self.scale, h


def test_a_folded_sae_splices_as_the_normalised_one_divided_by_s(tiny_gpt2, documents):
    """CE-loss recovered of a normalised run: its folded `.pth` on the raw stream gives exactly the
    splice of the trained SAE on x·s with the reconstruction ÷ s."""
    from sae_core.saes.export import fold_input_scale

    trained, s = SparseAutoencoder(D_MODEL, 4 * D_MODEL, seed=3), 0.2
    with torch.no_grad():
        trained.b_enc.normal_(0, 1, generator=torch.Generator().manual_seed(2))  # x̂(x·s)/s ≠ x̂(x)
        trained.b_dec.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    folded, _ = ce_loss_recovered(fold_input_scale(trained, s), str(tiny_gpt2), 1, documents, device="cpu")
    spelt_out, _ = ce_loss_recovered(_ScaledSplice(trained, s), str(tiny_gpt2), 1, documents, device="cpu")
    assert folded["sae"] == pytest.approx(spelt_out["sae"], rel=1e-6)
    assert folded["kl_sae"] == pytest.approx(spelt_out["kl_sae"], rel=1e-3)
    x = torch.randn(64, D_MODEL)
    with torch.no_grad():  # and the splice is not the raw one: the scale changes what goes back
        assert not torch.allclose(fold_input_scale(trained, s)(x)[0], trained(x)[0], atol=1e-2)


def test_error_mean_share_is_the_constant_part_of_the_error():
    """A reconstruction off by a constant (a decoder bias far from the data's mean, the near-empty
    JumpReLU on SmolLM2) has error_mean_share 1 and EV −‖c‖²/Var; zero-mean noise has a share near 0."""
    gen = torch.Generator().manual_seed(5)
    x = 4.0 + torch.randn(4_000, 8, generator=gen)
    offset = torch.full((8,), 4.0)
    stats = ReconstructionStats(8)
    for lo in range(0, 4_000, 900):
        stats.update(x[lo : lo + 900], x[lo : lo + 900] - offset, 0.0, 0.0)
    shifted = stats.summary()
    assert shifted["error_mean_share"] == pytest.approx(1.0)
    assert shifted["explained_variance"] < -10
    noisy = ReconstructionStats(8)
    noisy.update(x, x + 0.5 * torch.randn(4_000, 8, generator=gen), 0.0, 0.0)
    assert noisy.summary()["error_mean_share"] < 0.01
