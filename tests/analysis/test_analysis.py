"""Feature analysis against brute force on small synthetic stores: exact counts, sums, means, maxima,
histograms, selectivity, selection, examples and their contexts, Pearson, neighbours, outputs, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sae_core.analysis import feature_stats as feature_stats
from sae_core.analysis.driver import analyze_run
from sae_core.analysis.feature_stats import histogram_edges, select_features
from sae_core.config import load_config
from sae_core.errors import AnalysisError
from sae_core.saes.relu import SparseAutoencoder

D, M = 8, 32
CELL = "4x_0.001_sampling"


def make_data(n_docs: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    """Documents of 3..40 tokens; even documents in `test`, odd ones in `train`."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 40, size=n_docs)
    doc_ids = np.repeat(np.arange(n_docs), lengths).astype(np.int32)
    pos = np.concatenate([np.arange(n) for n in lengths]).astype(np.int32)
    return {
        "acts": rng.normal(size=(len(doc_ids), D)).astype(np.float32),
        "doc_ids": doc_ids,
        "pos": pos,
        "token_ids": rng.integers(0, 50, size=len(doc_ids)).astype(np.int32),
        "splits": np.where(doc_ids % 2 == 0, "test", "train"),
    }


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    return make_data()


@pytest.fixture(scope="module")
def store_path(synthetic_store_factory, data) -> Path:
    store = synthetic_store_factory(
        data["acts"], data["doc_ids"], token_ids=data["token_ids"], splits=data["splits"], shard_tokens=300
    )
    return store.path


def make_sae(bias: float = -0.3, seed: int = 1) -> SparseAutoencoder:
    sae = SparseAutoencoder(D, M, seed=seed)
    with torch.no_grad():
        sae.b_enc.fill_(bias)
        sae.b_dec.normal_(generator=torch.Generator().manual_seed(seed))
        sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True)
        sae.b_enc[3] = -100.0  # a feature that never fires
    return sae


def write_run(root: Path, sae: SparseAutoencoder, metrics: dict | None = None, cell: str = CELL) -> Path:
    run = root / cell
    run.mkdir(parents=True, exist_ok=True)
    torch.save(sae.state_dict(), run / f"model_weights_{cell}.pth")
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def config(**analysis_overrides):
    overrides = {
        "training.device": "cpu",
        "analysis.batch_size": 64,
        "analysis.top_k_features": 4,
        "analysis.examples_per_feature": 12,
        "analysis.quantile_examples": 5,
        "analysis.context_window": 10,
        "analysis.min_activations": 10,
    }
    overrides.update({f"analysis.{k}": v for k, v in analysis_overrides.items()})
    return load_config("demo", overrides=overrides)


def brute(sae: SparseAutoencoder, data: dict[str, np.ndarray], split: str = "test") -> dict[str, np.ndarray]:
    keep = data["splits"] == split
    x = torch.from_numpy(data["acts"][keep])
    with torch.no_grad():
        h = sae.encode(x)
        x_hat = sae.decode(h)
    return {
        "x": x.double().numpy(),
        "h": h.numpy(),
        "x_hat": x_hat.double().numpy(),
        **{k: data[k][keep] for k in ("doc_ids", "pos", "token_ids")},
    }


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory, store_path, data):
    """One analysis shared by the read-only checks below."""
    sae = make_sae()
    run = write_run(tmp_path_factory.mktemp("runs"), sae, {"training_dead_fraction": 0.25})
    summary = analyze_run(store_path, run, config())
    return run, sae, summary, brute(sae, data)


@pytest.mark.parametrize(
    ("bias", "sparse_density", "dense_stats", "chunk"),
    [
        (-0.3, 1.1, 1.1, 1 << 22),
        (-0.3, 0.0, 1.1, 1 << 22),
        (0.2, 1.1, 1.1, 100),
        (0.2, 0.0, 0.0, 100),
        (-0.3, 1.1, 0.3, 100),
    ],
    ids=["sparse-decode", "dense-decode", "sparse-chunked", "dense-stats-chunked", "switching"],
)
def test_statistics_equal_brute_force(
    tmp_path, store_path, data, monkeypatch, bias, sparse_density, dense_stats, chunk
):
    monkeypatch.setattr(feature_stats, "SPARSE_DECODE_DENSITY", sparse_density)
    monkeypatch.setattr(feature_stats, "DENSE_STATS_DENSITY", dense_stats)
    monkeypatch.setattr(feature_stats, "CHUNK_ELEMENTS", chunk)
    monkeypatch.setattr(feature_stats, "MIN_CHUNK_ROWS", 1)
    sae = make_sae(bias)
    run = write_run(tmp_path, sae)
    cfg = config(ce_loss_documents=0, min_activations=5)
    summary = analyze_run(store_path, run, cfg)
    ref = brute(sae, data)
    h, thr = ref["h"], cfg.analysis.dead_threshold
    fired = h > np.float32(thr)
    count = fired.sum(0)
    total = np.where(fired, h.astype(np.float64), 0).sum(0)
    stats = pd.read_parquet(run / "features" / "feature_stats.parquet")
    assert stats["feature_id"].tolist() == list(range(M))
    np.testing.assert_array_equal(stats["count"], count)
    np.testing.assert_allclose(stats["sum"], total, rtol=1e-5)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        sel = np.where(count >= 5, mean / np.log(count + 1), np.nan)
    np.testing.assert_allclose(stats["mean"], mean, rtol=1e-5)
    # h comes from a matmul blocked differently than the analysis's: equal up to float32 rounding.
    np.testing.assert_allclose(stats["max"], h.max(0), rtol=1e-6)
    np.testing.assert_allclose(stats["density"], count / len(h))
    np.testing.assert_allclose(stats["selectivity"], sel, rtol=1e-5)
    np.testing.assert_array_equal(stats["dead"], count == 0)
    assert stats["dead"][3]
    hist = np.stack(stats["hist"].to_numpy())
    np.testing.assert_array_equal(hist.sum(1), count)
    edges = histogram_edges(thr)
    j = int(np.argmax(count))
    expected, _ = np.histogram(np.clip(h[fired[:, j], j], edges[0], edges[-1]), bins=edges)
    np.testing.assert_array_equal(hist[j], expected)

    x, x_hat = ref["x"], ref["x_hat"]
    err = ((x - x_hat) ** 2).sum(1)
    assert summary["tokens_analyzed"] == len(h)
    assert summary["dead_count"] == int((count == 0).sum())
    assert summary["dead_fraction"] == pytest.approx((count == 0).mean())
    assert summary["mse"] == pytest.approx(err.mean() / D, rel=1e-5)
    assert summary["explained_variance"] == pytest.approx(
        1 - err.sum() / ((x - x.mean(0)) ** 2).sum(), rel=1e-5
    )
    assert summary["l0"] == pytest.approx((h > 0).sum(1).mean())
    assert summary["l1"] == pytest.approx(h.sum(1).mean(), rel=1e-5)
    cos = (x * x_hat).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(x_hat, axis=1)
    assert summary["cosine_similarity"] == pytest.approx(cos.mean(), rel=1e-5)
    ratio = np.linalg.norm(x_hat, axis=1) / np.linalg.norm(x, axis=1)
    assert summary["l2_ratio"] == pytest.approx(ratio.mean(), rel=1e-5)


def test_dead_threshold_is_strict(tmp_path, store_path):
    """A feature whose activation equals the threshold on every token is dead; one a float32 step above
    it fires on every token."""
    thr = 0.07
    sae = make_sae(-100.0)
    with torch.no_grad():
        sae.W_enc[:, :2] = 0.0
        sae.b_enc[0] = thr
        sae.b_enc[1] = float(np.nextafter(np.float32(thr), np.float32(1)))
    run = write_run(tmp_path, sae)
    summary = analyze_run(store_path, run, config(ce_loss_documents=0, dead_threshold=thr))
    stats = pd.read_parquet(run / "features" / "feature_stats.parquet")
    assert stats["count"][0] == 0 and stats["dead"][0]
    assert stats["count"][1] == summary["tokens_analyzed"] and not stats["dead"][1]
    assert summary["dead_count"] == M - 1


def test_selection_follows_selectivity(sparse_run):
    run, _, summary, _ = sparse_run
    stats = pd.read_parquet(run / "features" / "feature_stats.parquet")
    sel = stats["selectivity"].to_numpy()
    eligible = np.flatnonzero(~np.isnan(sel))
    by_desc = sorted(eligible, key=lambda i: (-sel[i], i))
    selected = json.loads((run / "features" / "selected.json").read_text())
    assert selected["top"] == by_desc[:4]
    assert selected["bottom"] == by_desc[::-1][:4]
    assert selected["min_activations"] == 10 and selected["threshold"] == 0.07
    assert summary["selected"] == {"top": selected["top"], "bottom": selected["bottom"]}
    assert all(stats["count"][i] >= 10 for i in selected["top"] + selected["bottom"])


def test_selection_is_disjoint_with_few_eligible_features():
    sel = np.array([np.nan, 0.5, 0.1, np.nan, 0.9])
    assert select_features(sel, 2) == ([4, 1], [2])
    assert select_features(sel, 1) == ([4], [2])
    tie = np.array([0.3, 0.3, 0.3, 0.3])
    assert select_features(tie, 2) == ([0, 1], [3, 2])


def test_top_examples_equal_brute_force_and_contexts_stay_in_document(sparse_run, data):
    run, _, _, ref = sparse_run
    selected = json.loads((run / "features" / "selected.json").read_text())
    ex = pd.read_parquet(run / "features" / "examples.parquet")
    assert list(ex.columns) == [
        "feature_id", "group", "kind", "rank", "activation", "doc_id", "pos", "token_id", "token",
        "context_token_ids", "context_tokens", "marked_index", "context_text",
    ]  # fmt: skip
    h = ref["h"]
    for group in ("top", "bottom"):
        for f in selected[group]:
            rows = ex[(ex.feature_id == f) & (ex.kind == "top")].sort_values("rank")
            assert (rows.group == group).all()
            firing = np.flatnonzero(h[:, f] > np.float32(0.07))
            order = firing[np.lexsort((firing, -h[firing, f]))][:12]  # ties → earlier token
            np.testing.assert_allclose(rows.activation, h[order, f], rtol=1e-6)
            assert list(zip(rows.doc_id, rows.pos, strict=True)) == list(
                zip(ref["doc_ids"][order], ref["pos"][order], strict=True)
            )
    docs = {d: data["token_ids"][data["doc_ids"] == d] for d in np.unique(data["doc_ids"])}
    for row in ex.itertuples():
        doc = docs[row.doc_id]
        start = max(0, row.pos - 10)
        assert list(row.context_token_ids) == list(doc[start : row.pos + 11])
        assert row.context_token_ids[row.marked_index] == row.token_id == doc[row.pos]
        assert row.context_tokens[row.marked_index] == row.token == f"<{row.token_id}>"
        assert f"**<{row.token_id}>**" in row.context_text
        assert row.activation > 0.07


def test_quantile_examples_spread_over_firing_tokens(sparse_run):
    run, _, _, ref = sparse_run
    ex = pd.read_parquet(run / "features" / "examples.parquet")
    h = ref["h"]
    where = {(d, p): i for i, (d, p) in enumerate(zip(ref["doc_ids"], ref["pos"], strict=True))}
    quant = ex[ex.kind == "quantile"]
    assert len(quant) > 0
    for f, rows in quant.groupby("feature_id"):
        top = set(
            zip(
                ex[(ex.feature_id == f) & (ex.kind == "top")].doc_id,
                ex[(ex.feature_id == f) & (ex.kind == "top")].pos,
                strict=True,
            )
        )
        assert len(rows) <= 5
        assert rows.sort_values("rank").activation.is_monotonic_increasing
        for row in rows.itertuples():
            assert (row.doc_id, row.pos) not in top
            assert h[where[(row.doc_id, row.pos)], f] == pytest.approx(row.activation)


def test_pearson_equals_numpy_corrcoef_and_cosine_of_decoder(sparse_run):
    run, sae, _, ref = sparse_run
    corr = json.loads((run / "features" / "correlation.json").read_text())
    ids = corr["ids"]
    expected = np.corrcoef(ref["h"][:, ids].astype(np.float64), rowvar=False)
    got = np.array([[np.nan if v is None else v for v in row] for row in corr["pearson"]])
    # float32 activations from differently blocked matmuls: Pearson agrees to float32 rounding.
    np.testing.assert_allclose(got, expected, atol=1e-6, equal_nan=True)
    w = sae.W_dec.detach().double().numpy()[ids]
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    np.testing.assert_allclose(np.array(corr["decoder_cosine"]), w @ w.T, atol=1e-9)
    assert sorted(corr["order"]) == list(range(len(ids)))
    assert corr["ordered_ids"] == [ids[i] for i in corr["order"]]
    assert len(corr["clusters"]) == len(ids) and set(corr["groups"]) <= {"top", "bottom"}


def test_neighbors_are_nearest_decoder_directions(sparse_run):
    run, sae, _, _ = sparse_run
    nb = pd.read_parquet(run / "features" / "neighbors.parquet")
    w = sae.W_dec.detach().double().numpy()
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    sims = w @ w.T
    np.fill_diagonal(sims, -np.inf)
    assert nb["feature_id"].tolist() == list(range(M))
    for row in nb.itertuples():
        assert len(row.neighbor_ids) == 10
        np.testing.assert_allclose(row.cosine, np.sort(sims[row.feature_id])[::-1][:10], atol=1e-5)


def test_outputs_follow_the_contract(sparse_run):
    run, _, summary, _ = sparse_run
    for name in ("correlation.png", "density.png"):
        assert (run / "features" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((run / "analysis.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for key in (
        "cell", "split", "tokens_analyzed", "dead_threshold", "dead_split", "dead_tokens", "dead_count",
        "dead_fraction",
        "training_dead_fraction", "l0", "l1", "mse", "explained_variance", "cosine_similarity", "l2_ratio",
        "ce_loss", "ce_loss_note", "histogram_edges", "selected", "code_version",
    ):  # fmt: skip
        assert key in on_disk, key
    assert on_disk["cell"] == CELL and on_disk["split"] == "test"
    assert on_disk["training_dead_fraction"] == 0.25
    assert on_disk["dead_split"] == "test" and on_disk["dead_tokens"] == on_disk["tokens_analyzed"]
    assert on_disk["ce_loss"] is None and "skipped" in on_disk["ce_loss_note"]
    assert len(on_disk["histogram_edges"]) == 65
    assert not list(run.rglob("*.tmp"))


def test_max_tokens_caps_both_passes(tmp_path, store_path, data):
    sae = make_sae()
    run = write_run(tmp_path, sae)
    summary = analyze_run(store_path, run, config(max_tokens=100, ce_loss_documents=0))
    assert summary["tokens_analyzed"] == 100
    ref = brute(sae, data)
    stats = pd.read_parquet(run / "features" / "feature_stats.parquet")
    np.testing.assert_array_equal(stats["count"], (ref["h"][:100] > np.float32(0.07)).sum(0))
    ex = pd.read_parquet(run / "features" / "examples.parquet")
    first_100 = set(zip(ref["doc_ids"][:100], ref["pos"][:100], strict=True))
    assert set(zip(ex.doc_id, ex.pos, strict=True)) <= first_100


# ---------------------------------------------------------------------------------------------
# Bad input


def test_run_dir_without_weights(tmp_path, store_path):
    (tmp_path / CELL).mkdir()
    with pytest.raises(AnalysisError, match=r"run: .*4x_0\.001_sampling holds no model_weights_\*\.pth"):
        analyze_run(store_path, tmp_path / CELL, config())
    with pytest.raises(AnalysisError, match="no such run directory"):
        analyze_run(store_path, tmp_path / "nowhere", config())


def test_weights_that_do_not_match_the_store(tmp_path, store_path):
    run = write_run(tmp_path, SparseAutoencoder(D + 1, M, seed=0))
    with pytest.raises(AnalysisError, match=r"d_in=9 .* d_model=8"):
        analyze_run(store_path, run, config())


def test_unreadable_weights(tmp_path, store_path):
    run = tmp_path / CELL
    run.mkdir()
    (run / f"model_weights_{CELL}.pth").write_bytes(b"not a state dict")
    with pytest.raises(AnalysisError, match="cannot load the SAE weights"):
        analyze_run(store_path, run, config())


def test_negative_threshold(tmp_path, store_path):
    run = write_run(tmp_path, make_sae())
    cfg = config()
    bad = cfg.model_copy(update={"analysis": cfg.analysis.model_copy(update={"dead_threshold": -0.1})})
    with pytest.raises(AnalysisError, match=r"analysis\.dead_threshold: must be >= 0 \(got -0\.1\)"):
        analyze_run(store_path, run, bad)


def test_split_without_tokens(tmp_path, store_path):
    run = write_run(tmp_path, make_sae())
    with pytest.raises(AnalysisError, match=r"analysis\.split: .* no tokens in split 'val'"):
        analyze_run(store_path, run, config(split="val"))


def test_selectivity_uses_natural_log():
    assert feature_stats.selectivity(np.array([2.0]), np.array([10]), 10)[0] == pytest.approx(
        2 / math.log(11)
    )
    assert math.isnan(feature_stats.selectivity(np.array([2.0]), np.array([9]), 10)[0])


@pytest.mark.parametrize(("rows", "cols", "offset"), [(7, 16, 0), (5, 9, 0), (6, 12, 3), (1, 1, 0)])
def test_positive_entries_match_a_plain_scan(rows, cols, offset):
    """The word-at-a-time scan against `nonzero` on h > 0, at sizes that are and are not a multiple of
    8 and on an h that starts mid-storage; -0.0, zeros and NaN are never positive."""
    gen = torch.Generator().manual_seed(rows * cols + offset)
    base = torch.relu(torch.randn(rows * cols + offset, generator=gen) - 0.8)
    base[::5] = -0.0
    base[1::7] = float("nan")
    h = base[offset:].view(rows, cols)
    got_rows, got_cols, got_vals = feature_stats.positive_entries(h)
    expected = (h > 0).nonzero()
    assert torch.equal(got_rows, expected[:, 0]) and torch.equal(got_cols, expected[:, 1])
    assert torch.equal(got_vals, h[expected[:, 0], expected[:, 1]])


def test_cpu_threads_applies_to_cpu_only_and_restores():
    from sae_core.device import cpu_threads

    original = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with cpu_threads(1, torch.device("cpu")):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with cpu_threads(0, torch.device("cpu")):
            assert torch.get_num_threads() == 2  # 0: torch's own setting
        with cpu_threads(1, torch.device("meta")):
            assert torch.get_num_threads() == 2  # other devices keep every CPU thread
        with pytest.raises(RuntimeError), cpu_threads(1, torch.device("cpu")):
            raise RuntimeError("restored on errors too")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(original)


@pytest.mark.parametrize("max_tokens", [None, 100], ids=["whole-split", "capped"])
def test_dead_split_all_counts_every_token_of_the_store(tmp_path, store_path, data, max_tokens):
    # A feature that exceeds the threshold only on train tokens is dead on the test split but alive over
    # all tokens, as the study counted; eligibility for selectivity follows the same counts.
    sae = make_sae(bias=-0.3)
    x_all = torch.from_numpy(data["acts"])
    train = torch.from_numpy(data["splits"] == "train")
    with torch.no_grad():
        # feature 5 reaches 0.5 on one train token (its encoder points at it) and stays below 0.07 on
        # the test tokens
        j = int(torch.nonzero(train)[0])
        sae.b_enc[5] = -1.0
        sae.W_enc[:, 5] = (x_all[j] - sae.b_dec) / (x_all[j] - sae.b_dec).pow(2).sum() * 1.5
    h_all = sae.encode(x_all).detach().numpy()
    test = ~train.numpy()
    assert h_all[test, 5].max() <= 0.07 < h_all[~test, 5].max()
    run = write_run(tmp_path, sae)
    test_only = analyze_run(store_path, run, config(ce_loss_documents=0, max_tokens=max_tokens))
    all_cfg = config(ce_loss_documents=0, max_tokens=max_tokens, dead_split="all", min_activations=1)
    everything = analyze_run(store_path, run, all_cfg)
    analysed = h_all[test][: max_tokens or None]
    assert test_only["dead_split"] == "test" and test_only["dead_tokens"] == len(analysed)
    assert test_only["dead_count"] == int(((analysed > 0.07).sum(0) == 0).sum())
    count_all = (h_all > 0.07).sum(0)
    assert everything["dead_split"] == "all" and everything["dead_tokens"] == len(h_all)
    assert everything["dead_count"] == int((count_all == 0).sum())
    stats = pd.read_parquet(run / "features" / "feature_stats.parquet")
    np.testing.assert_array_equal(stats["dead"], count_all == 0)
    assert not stats["dead"][5] and stats["dead"][3]
    np.testing.assert_array_equal(stats["count"], (analysed > 0.07).sum(0))  # stats stay the analysed tokens'
    # eligible by its firings over all tokens, but no analysed firing to rank it by: NaN, never selected
    assert math.isnan(stats["selectivity"][5])
    selected = json.loads((run / "features" / "selected.json").read_text())
    assert selected["min_activations_counted_on"] == "all"

    # min_activations follows the same token set: a feature short of it on the analysed tokens but not
    # over all of them is ranked with `all` only
    count_test = (analysed > 0.07).sum(0)
    j = int(np.flatnonzero((count_test > 0) & (count_all > count_test))[0])
    need = int(count_test[j]) + 1
    for split, eligible in (("test", False), ("all", True)):
        cfg = config(ce_loss_documents=0, max_tokens=max_tokens, dead_split=split, min_activations=need)
        analyze_run(store_path, run, cfg)
        sel = pd.read_parquet(run / "features" / "feature_stats.parquet")["selectivity"]
        assert (not math.isnan(sel[j])) is eligible, split


def _every_feature_top(h: np.ndarray, k: int) -> dict[int, np.ndarray]:
    out = {}
    for f in range(h.shape[1]):
        firing = np.flatnonzero(h[:, f] > np.float32(0.07))
        if firing.size:
            out[f] = firing[np.lexsort((firing, -h[firing, f]))][:k]  # ties → earlier token
    return out


@pytest.mark.parametrize("dense_stats", [1.1, 0.0], ids=["sparse-stats", "dense-stats"])
def test_every_alive_feature_has_its_top_examples(tmp_path, store_path, data, monkeypatch, dense_stats):
    """Was: examples for the 2k selected features only (the browser said "No examples" elsewhere)."""
    from sae_core.analysis import examples as feature_examples

    monkeypatch.setattr(feature_stats, "DENSE_STATS_DENSITY", dense_stats)
    monkeypatch.setattr(feature_stats, "CHUNK_ELEMENTS", 100)
    monkeypatch.setattr(feature_stats, "MIN_CHUNK_ROWS", 1)
    monkeypatch.setattr(feature_examples, "COMPACT_MIN_ENTRIES", 50)  # compact many times
    sae = make_sae()
    run = write_run(tmp_path, sae)
    analyze_run(store_path, run, config(ce_loss_documents=0))
    ref = brute(sae, data)
    expected = _every_feature_top(ref["h"], 12)
    top = pd.read_parquet(run / "features" / "top_examples.parquet")
    assert sorted(top.feature_id.unique()) == sorted(expected) and 3 not in expected  # dead: none
    assert len(expected) > 2 * 4  # more than the selected features
    for f, order in expected.items():
        rows = top[top.feature_id == f].sort_values("rank")
        assert rows["rank"].tolist() == list(range(len(order)))
        np.testing.assert_allclose(rows.activation, ref["h"][order, f], rtol=1e-6)
        assert rows.doc_id.tolist() == ref["doc_ids"][order].tolist()
        assert rows.pos.tolist() == ref["pos"][order].tolist()
        assert rows.token_id.tolist() == ref["token_ids"][order].tolist()
    docs = pd.read_parquet(run / "features" / "example_documents.parquet")
    assert set(docs.doc_id) == set(top.doc_id)
    for row in docs.itertuples():
        assert list(row.token_ids) == data["token_ids"][data["doc_ids"] == row.doc_id].tolist()
    vocab = pd.read_parquet(run / "features" / "example_vocab.parquet")
    assert set(vocab.token_id) == {t for ids in docs.token_ids for t in ids}
    assert (vocab.token == [f"<{t}>" for t in vocab.token_id]).all()


def test_near_duplicates_are_flagged_once_with_their_representative(tmp_path, store_path):
    """Two features with the same encoder and decoder direction: the later one is a duplicate."""
    sae = make_sae(bias=0.0)
    with torch.no_grad():
        for twin in (5, 6):  # 5 and 6 copy feature 7 (6 slightly scaled: same direction, r = 1)
            sae.W_enc[:, twin] = sae.W_enc[:, 7] * (1.0 if twin == 5 else 1.01)
            sae.b_enc[twin] = sae.b_enc[7]
            sae.W_dec[twin] = sae.W_dec[7]
    run = write_run(tmp_path, sae)
    analyze_run(store_path, run, config(ce_loss_documents=0, top_k_features=16, min_activations=1))
    selected = json.loads((run / "features" / "selected.json").read_text())
    order = selected["top"] + selected["bottom"]
    twins = [f for f in order if f in (5, 6, 7)]
    assert len(twins) == 3, order
    first = twins[0]
    assert selected["duplicate_of"] == {str(f): first for f in twins[1:]}
    assert "decoder cosine > 0.95" in selected["duplicate_rule"]
    corr = json.loads((run / "features" / "correlation.json").read_text())
    assert corr["duplicate_of"] == selected["duplicate_of"]


def test_near_duplicates_need_both_direction_and_correlation():
    from sae_core.analysis.correlation import near_duplicates

    ids = [10, 11, 12, 10]  # 10 is in both groups: never its own duplicate
    r = np.array([[1, 0.95, 0.95, 1], [0.95, 1, 0.5, 0.95], [0.95, 0.5, 1, 0.95], [1, 0.95, 0.95, 1]])
    cos = np.array([[1, 0.99, 0.5, 1], [0.99, 1, 0.99, 0.99], [0.5, 0.99, 1, 0.5], [1, 0.99, 0.5, 1]])
    assert near_duplicates(ids, r, cos) == {11: 10}


def test_never_fired_and_below_threshold_figures_equal_brute_force(sparse_run):
    _, _, summary, ref = sparse_run
    h, thr = ref["h"], summary["dead_threshold"]
    peak = h.max(0)
    assert summary["activation_units"] == "raw"
    assert summary["never_fired_count"] == int((peak <= 0).sum()) >= 1  # feature 3 never fires
    assert summary["below_threshold_only_count"] == int(((peak > 0) & (peak <= thr)).sum())
    assert summary["dead_count"] == summary["never_fired_count"] + summary["below_threshold_only_count"]
    below = ((h > 0) & (h <= thr)).sum() / (h > 0).sum()
    assert summary["firings_below_threshold_fraction"] == pytest.approx(below)
    assert summary["max_activation"] == pytest.approx(float(peak.max()))
    selection = summary["selection"]
    assert selection["selected"] == len(summary["selected"]["top"]) + len(summary["selected"]["bottom"])
    assert (selection["shortfall"] is None) == (selection["selected"] >= selection["asked"])
