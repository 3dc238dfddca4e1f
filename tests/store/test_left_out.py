"""Rows every reader leaves out (issue 22 item 2): attention sinks measured by the norm rule, a prepended
BOS and special tokens; EV, selection, examples, samples and the CE splice never use them; old stores
leave nothing out; the report counts them and flags suspect EVs with the rows that carry them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from sae_core.analysis.driver import analyze_run
from sae_core.config import ConfigError
from sae_core.errors import StoreError
from sae_core.extraction.sinks import plan_bos
from sae_core.naming import Cell
from sae_core.report.cells import CellData
from sae_core.report.token_checks import ev_flags, left_out_lines
from sae_core.store import ActivationStore, store_fingerprint, write_store
from sae_core.store.left_out import LeftOutRules, kept_rows, row_keys
from sae_core.training.data import open_store_data
from tests.analysis.test_analysis import config, make_data, make_sae, write_run

SINK_RULE = LeftOutRules(sink_norm_multiple=10.0)
SINK_SCALE = 100.0


def _with_sinks(data: dict[str, np.ndarray], docs: list[int]) -> dict[str, np.ndarray]:
    """`data` with one extra row at position 1 of each of `docs`: a real row of that document scaled to
    SINK_SCALE × the median norm (a sink: the same direction as ordinary rows, a hundred times longer)."""
    median = float(np.median(np.linalg.norm(data["acts"], axis=1)))
    parts: dict[str, list[np.ndarray]] = {k: [] for k in data}
    for doc in np.unique(data["doc_ids"]):
        rows = np.flatnonzero(data["doc_ids"] == doc)
        if doc in docs:
            sink = data["acts"][rows[1]] / np.linalg.norm(data["acts"][rows[1]]) * SINK_SCALE * median
            order = np.r_[rows[:1], rows[1], rows[1:]]  # the sink's metadata copied from its donor row
            acts = np.r_[data["acts"][rows[:1]], sink[None], data["acts"][rows[1:]]]
        else:
            order, acts = rows, data["acts"][rows]
        parts["acts"].append(acts.astype(np.float32))
        parts["pos"].append(np.arange(len(order), dtype=np.int32))
        for key in ("doc_ids", "token_ids", "splits"):
            parts[key].append(data[key][order])
    return {k: np.concatenate(v) for k, v in parts.items()}


def _store(tmp_path, name, data, rules=None):
    return write_store(
        tmp_path / name,
        data["acts"],
        data["doc_ids"],
        data["pos"],
        data["token_ids"],
        splits=data["splits"],
        shard_tokens=300,
        row_group_tokens=128,
        left_out=rules,
    )


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """The same rows three ways: plain; with sinks left out by the norm rule; with sinks kept."""
    root = tmp_path_factory.mktemp("left_out")
    data = make_data()
    sink_docs = [0, 2, 4, 1, 3]  # even documents are test, odd train (make_data)
    with_sinks = _with_sinks(data, sink_docs)
    return {
        "plain": _store(root, "plain", data),
        "left_out": _store(root, "left_out", with_sinks, SINK_RULE),
        "kept": _store(root, "kept", with_sinks),
        "data": with_sinks,
    }


@pytest.fixture(scope="module")
def analyses(tmp_path_factory, stores):
    sae = make_sae()
    out = {}
    for name in ("plain", "left_out", "kept"):
        run = write_run(tmp_path_factory.mktemp(f"run_{name}"), sae)
        out[name] = (run, analyze_run(stores[name].path, run, config(ce_loss_documents=0)))
    return out


def test_sinks_left_out_give_the_plain_store_s_figures_and_are_counted(stores, analyses):
    plain, left, kept = (analyses[k][1] for k in ("plain", "left_out", "kept"))
    assert left["tokens_analyzed"] == plain["tokens_analyzed"]
    for key in ("explained_variance", "mse", "l0", "dead_fraction", "never_fired_fraction"):
        assert left[key] == pytest.approx(plain[key], rel=1e-6, abs=1e-9), key
    assert left["selected"] == plain["selected"]
    # Kept, the three test sinks decide the figure: the test can fail.
    assert abs(kept["explained_variance"] - plain["explained_variance"]) > 0.5
    counts = left["left_out"]
    assert counts["test"]["left_out"] == {"sink": 3} and counts["train"]["left_out"] == {"sink": 2}
    assert "10 × its split's median row norm" in counts["test"]["definitions"]["sink"]
    assert stores["left_out"].manifest["left_out"]["counts"]["test"]["sink"] == 3
    assert kept["left_out"]["test"]["left_out"] == {}  # no rule: nothing left out, and it says so


def test_examples_and_selection_never_use_a_left_out_row(stores, analyses):
    run, _ = analyses["left_out"]
    sinks = stores["left_out"].left_out.rows("test")
    left = set(row_keys(sinks["doc_id"], sinks["pos"]).tolist())
    assert len(left) == 3
    for name in ("examples.parquet", "top_examples.parquet"):
        table = pd.read_parquet(run / "features" / name)
        assert len(table)
        assert not set(row_keys(table["doc_id"].to_numpy(), table["pos"].to_numpy()).tolist()) & left
    # Kept, the sinks are the first examples of the features they excite.
    kept_run, _ = analyses["kept"]
    top = pd.read_parquet(kept_run / "features" / "top_examples.parquet")
    assert set(row_keys(top["doc_id"].to_numpy(), top["pos"].to_numpy()).tolist()) & left


def test_training_reads_and_resampling_pools_hold_no_left_out_row(stores):
    store = stores["left_out"]
    median = store.manifest["left_out"]["median_norm"]["train"]
    for budget in (1.0, 1e-9):  # in memory, then streamed
        data, _ = open_store_data(store.path, torch.device("cpu"), max_memory_gb=budget)
        assert data.train_tokens == store.num_tokens_in("train")
        pool = data.sample(10_000, seed=0)  # resampling's candidate pool: all of the split
        assert len(pool) == data.train_tokens
        assert float(pool.norm(dim=1).max()) < 10 * median
        first = next(data.batches(64, seed=0, start_step=0))
        assert float(first.norm(dim=1).max()) < 10 * median
    batches = list(store.batches("train", batch_size=50, shuffle=True, seed=1))
    assert sum(len(b) for b in batches) == store.num_tokens_in("train")
    assert float(torch.cat(batches).norm(dim=1).max()) < 10 * median
    assert float(store.load_split("train").norm(dim=1).max()) < 10 * median


def test_kept_rows_is_the_one_row_filter():
    split = np.array([True, True, True, False, True])
    doc = np.array([1, 1, 1, 2, 2])
    pos = np.array([0, 1, 2, 0, 1])
    keys = np.sort(row_keys(np.array([1, 2]), np.array([2, 1])))
    assert kept_rows(split, doc, pos, False, None).tolist() == [True, True, True, False, True]
    assert kept_rows(split, doc, pos, True, keys).tolist() == [False, True, False, False, False]


def test_a_store_without_the_index_leaves_nothing_out_and_keeps_its_identity(tmp_path, stores):
    plain = stores["plain"]
    assert "left_out" not in plain.manifest and plain.left_out.keys("train") is None
    assert plain.num_tokens_in("test") == plain.manifest["splits"]["test"]["tokens"]
    assert "left_out" not in json.dumps(plain.manifest)
    # The index is part of the identity, and a listed index that is gone is refused.
    assert store_fingerprint(stores["left_out"]) != store_fingerprint(stores["kept"])
    copy = tmp_path / "copy"
    shutil.copytree(stores["left_out"].path, copy)
    (copy / "left_out.parquet").unlink()
    with pytest.raises(StoreError, match=r"left_out\.parquet"):
        ActivationStore.open(copy)


def test_special_tokens_and_bos_rows_are_counted_under_their_rule(tmp_path):
    data = make_data()
    data["token_ids"][data["pos"] == 0] = 99  # a prepended BOS, id 99
    data["token_ids"][5] = 98  # one special token inside a document
    rules = LeftOutRules(bos_prepended=True, special_token_ids=(98, 99), sink_norm_multiple=None)
    store = _store(tmp_path, "special", data, rules)
    docs = {s: len(np.unique(data["doc_ids"][data["splits"] == s])) for s in ("train", "test")}
    split_of_5 = str(data["splits"][5])
    assert store.left_out_counts("test")["left_out"]["bos"] == docs["test"]
    assert store.left_out_counts(split_of_5)["left_out"]["special"] == 1
    # drop_first_token counts only first rows no other rule took: here none.
    assert store.left_out_counts("train", drop_first_token=True)["left_out"]["first_token"] == 0
    rows = next(store.iter_rows("train", batch_size=10**6, drop_first_token=False))
    assert (rows.pos != 0).all() and not np.isin(rows.token_id, [98, 99]).any()


def _tokenizer(bos: str | None, adds_bos: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<s>": 0, "a": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if adds_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, unk_token="[UNK]")


def test_prepend_bos_auto_follows_what_the_tokenizer_declares_and_adds():
    declared = plan_bos(_tokenizer("<s>", adds_bos=False), "auto")
    assert declared.prepend and declared.token_id == 0 and declared.token == "<s>"
    assert not plan_bos(_tokenizer("<s>", adds_bos=True), "auto").prepend
    assert not plan_bos(_tokenizer(None, adds_bos=False), "auto").prepend
    assert not plan_bos(_tokenizer("<s>", adds_bos=False), False).prepend
    with pytest.raises(ConfigError, match=r"extraction\.prepend_bos"):
        plan_bos(_tokenizer(None, adds_bos=False), True)


def test_extraction_prepends_the_local_tokenizer_s_bos_and_leaves_it_out(tiny_store, tiny_gpt2):
    from transformers import AutoTokenizer

    bos_id = AutoTokenizer.from_pretrained(str(tiny_gpt2)).bos_token_id
    store = ActivationStore.open(tiny_store)
    assert store.manifest["bos"]["prepended"] is True and store.manifest["bos"]["token_id"] == bos_id
    docs = store.documents("train")
    assert all(int(t[0]) == bos_id for t in docs.values())
    assert max(len(t) for t in docs.values()) == 128  # the BOS counts in data.context_length
    counts = store.left_out_counts("train")
    assert counts["left_out"]["bos"] == len(docs) and counts["left_out"]["first_token"] == 0
    assert store.manifest["left_out"]["sink_norm_multiple"] == 5.0  # the default rule ran too
    assert "special" in counts["left_out"] and "sink" in counts["left_out"]
    rows = next(store.iter_rows("train", batch_size=10**7, drop_first_token=False))
    assert (rows.pos != 0).all() and not (rows.token_id == bos_id).any()
    assert store.num_tokens_in("train") == len(rows.pos)


def test_ce_splice_leaves_left_out_positions_clean_and_uncounted(tiny_gpt2, tiny_texts):
    from transformers import AutoTokenizer

    from sae_core.analysis.evaluation import ce_loss_recovered
    from tests.analysis.test_evaluation import D_MODEL, identity_sae

    tok = AutoTokenizer.from_pretrained(str(tiny_gpt2))
    docs = [np.array(tok(t)["input_ids"][:40]) for t in tiny_texts[:4]]
    plain, _ = ce_loss_recovered(identity_sae(D_MODEL), str(tiny_gpt2), 1, docs, device="cpu")
    left = [np.array([3, 7]) for _ in docs]
    fewer, note = ce_loss_recovered(
        identity_sae(D_MODEL), str(tiny_gpt2), 1, docs, left_out=left, device="cpu"
    )
    assert fewer["tokens"] == plain["tokens"] - 2 * len(docs)
    assert "8 left-out rows" in note


def _cell(name_l1: float, ev: float, l0: float, carriers: bool = True) -> CellData:
    rows = [{"doc_id": 3, "pos": 1, "token_id": 7, "token": "<s>", "norm": 5400.0, "share_of_error": 0.7,
             "share_of_variance": 0.75}]  # fmt: skip
    analysis = {
        "explained_variance": ev,
        "l0": l0,
        "store": "/s",
        "error_carriers": {"rows": rows if carriers else [], "explained_variance_without": 0.61},
        "left_out": {
            s: {"left_out": {"sink": n}, "rows_in_split": 100, "definitions": {"sink": "row norm > 10 ×"}}
            for s, n in (("train", 8), ("val", 0), ("test", 2))
        },
    }
    return CellData(Cell(4, name_l1, "nosampling"), path=None, exists=True, analysis=analysis)  # type: ignore[arg-type]


def test_report_flags_negative_and_jumping_ev_with_its_carriers_and_counts_left_out_rows():
    cells = [_cell(0.01, 0.55, 10), _cell(0.004, -0.27, 20), _cell(0.001, 0.66, 40)]
    flags = ev_flags(cells)
    assert len(flags) == 1 and flags[0].startswith("4x_0.004_nosampling: negative EV -0.270")
    assert "at a smaller L0" in flags[0] and "doc 3 pos 1 '<s>' norm 5400" in flags[0]
    assert "EV without the top 1 rows 0.610" in flags[0]
    assert ev_flags([_cell(0.01, 0.55, 10), _cell(0.004, 0.58, 20), _cell(0.001, 0.66, 40)]) == []
    (line,) = left_out_lines(cells)
    assert "sink 8/0/2 (row norm > 10 ×)" in line and "train/val/test" in line


def test_report_flags_an_error_that_is_mostly_a_constant_offset():
    def offset_cell(share: float) -> CellData:
        base = _cell(0.004, 0.3, 0.2, carriers=False)
        analysis = {**base.analysis.model_dump(exclude_none=True), "error_mean_share": share}  # type: ignore[union-attr]
        return CellData(base.cell, path=None, exists=True, analysis=analysis)  # type: ignore[arg-type]

    (flag,) = ev_flags([offset_cell(0.49)])
    assert flag.startswith("4x_0.004_nosampling: 49.0 % of Σ‖x − x̂‖² is a constant offset")
    assert "training.b_dec_init: mean" in flag
    assert ev_flags([offset_cell(0.1)]) == []
