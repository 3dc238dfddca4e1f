"""The study's `.pt` chunks → a store (`import_pt_chunks` and `sae-sweep import-activations`)."""

from __future__ import annotations

import pytest
import torch

from flows.cli import main
from sae_core.errors import StoreError
from sae_core.store import ActivationStore, import_pt_chunks


def _write_chunks(folder, docs_per_chunk=(3, 4, 2), ctx=12, d=6, seed=0, padded_tokens=False):
    """Chunks as the study saved them: activations and token ids with padding removed (mask order)."""
    gen = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    docs = []  # (token ids, activations) per document, in order
    for k, n_docs in enumerate(docs_per_chunk):
        lengths = torch.randint(1, ctx + 1, (n_docs,), generator=gen)
        mask = (torch.arange(ctx)[None] < lengths[:, None]).long()
        padded_ids = torch.randint(0, 500, (n_docs, ctx), generator=gen)
        padded_acts = torch.randn(n_docs, ctx, d, generator=gen)
        for i in range(n_docs):
            docs.append((padded_ids[i, : lengths[i]], padded_acts[i, : lengths[i]]))
        chunk = {
            "filtered_residual_activations": padded_acts[mask.bool()],
            "token_ids": padded_ids if padded_tokens else padded_ids[mask.bool()],
            "attention_mask": mask,
        }
        torch.save(chunk, folder / f"chunk_{k}.pt")
    return docs


@pytest.mark.parametrize("padded_tokens", [False, True])
def test_chunks_become_documents_in_order(tmp_path, padded_tokens):
    docs = _write_chunks(tmp_path / "chunks", docs_per_chunk=(3, 4, 2, 5), padded_tokens=padded_tokens)
    # chunk_10 must sort after chunk_2 (numeric order)
    extra = _write_chunks(tmp_path / "more", docs_per_chunk=(2,), seed=9)
    (tmp_path / "more" / "chunk_0.pt").rename(tmp_path / "chunks" / "chunk_10.pt")
    docs += extra
    store = ActivationStore.open(
        import_pt_chunks(tmp_path / "chunks", tmp_path / "store", store_dtype="float32", shard_tokens=30)
    )
    assert store.num_tokens == sum(len(t) for t, _ in docs)
    assert store.manifest["num_documents"] == len(docs) and len(store.manifest["shards"]) > 1
    assert store.manifest["model"]["layer"] == 6 and store.drop_first_token
    found = 0
    for split in ("train", "val", "test"):
        tokens = store.documents(split)
        rows = next(store.iter_rows(split, batch_size=10**6, drop_first_token=False), None)
        for doc, ids in tokens.items():
            assert ids.tolist() == docs[doc][0].tolist()
            torch.testing.assert_close(rows.acts[torch.from_numpy(rows.doc_id == doc)], docs[doc][1])
            found += 1
    assert found == len(docs)


def test_bad_chunks_are_refused(tmp_path):
    with pytest.raises(StoreError, match="no such directory"):
        import_pt_chunks(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match=r"no chunk_<k>\.pt files"):
        import_pt_chunks(tmp_path / "empty", tmp_path / "out")
    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save({"token_ids": torch.zeros(3)}, bad / "chunk_0.pt")
    with pytest.raises(StoreError, match=r"chunk_0\.pt must be a dict with keys filtered_"):
        import_pt_chunks(bad, tmp_path / "out")
    torch.save(
        {
            "filtered_residual_activations": torch.zeros(5, 4),
            "token_ids": torch.zeros(5, dtype=torch.long),
            "attention_mask": torch.ones(2, 3),
        },
        bad / "chunk_0.pt",
    )
    with pytest.raises(StoreError, match=r"inconsistent: .*attention_mask holds 6 tokens"):
        import_pt_chunks(bad, tmp_path / "out")


def test_cli_import_activations_prints_the_store_last(tmp_path, capsys):
    _write_chunks(tmp_path / "chunks")
    out = tmp_path / "store"
    assert main(["import-activations", str(tmp_path / "chunks"), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    assert ActivationStore.open(out).store_dtype == "float16"
    assert main(["import-activations", str(tmp_path / "chunks"), "--out", str(out)]) == 2
    assert "already holds a complete store" in capsys.readouterr().err
