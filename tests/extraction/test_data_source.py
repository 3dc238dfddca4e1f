"""Where a store's documents come from: `data.revision` / `data.config_name` reach `load_dataset`, a
loading script is refused with the fixes, a parquet directory laid out like the Hub's parquet conversion
loads, and the manifest (and the report) record the source."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sae_core.config import ConfigError, load_config
from sae_core.extraction import hf_load
from sae_core.extraction.extract import extract_activations, store_key
from sae_core.extraction.hf_load import dataset_commit, hub_repository, iter_documents

_CARD = (
    "---\nconfigs:\n- config_name: plain_text\n  data_files:\n  - split: train\n"
    "    path: data/*.parquet\n---\n"
)
"""A mirror's dataset card declaring its one configuration."""

DEMO_STORE_KEY = "demo-gpt2-L2-9b0dcec87e6645bb"
"""The demo preset's store key before `data.revision` / `data.config_name` existed (and before BOS and
left-out rows: with the study's values of those fields it is still the key)."""
SEED_STORE_KEY = "gpt2-L6-447cb3bc25b2792d"
"""The seed preset's store key, unchanged by every field added since (issue 22: its raw units, its rules)."""
STUDY_EXTRACTION = {
    "extraction.prepend_bos": False,
    "extraction.exclude_special_tokens": False,
    "extraction.sink_norm_multiple": None,
}


def _parquet_shards(directory: Path, docs_per_shard: list[list[str]]) -> list[str]:
    directory.mkdir(parents=True)
    for i, texts in enumerate(docs_per_shard):
        pq.write_table(
            pa.table({"text": texts, "id": list(range(len(texts)))}), directory / f"{i:04d}.parquet"
        )
    return [t for texts in docs_per_shard for t in texts]


@pytest.fixture(scope="module")
def converted_repo(tmp_path_factory, tiny_texts) -> tuple[Path, list[str]]:
    """A local copy of a repository's `refs/convert/parquet` branch: `<config>/partial-train/NNNN.parquet`
    (the layout of a partial conversion), no card declaring configurations, and a second
    configuration that must not be read."""
    root = tmp_path_factory.mktemp("hub") / "openwebtext"
    texts = _parquet_shards(root / "plain_text" / "partial-train", [tiny_texts[:8], tiny_texts[8:20]])
    _parquet_shards(root / "other" / "partial-train", [["not this configuration"] * 5])
    return root, texts


def _cfg(tmp_path: Path, **data: Any):
    return load_config(
        "demo", overrides={"data_root": str(tmp_path), **{f"data.{k}": v for k, v in data.items()}}
    )


def test_unset_revision_and_config_leave_the_store_key_unchanged(tmp_path):
    assert store_key(load_config("seed")) == SEED_STORE_KEY
    assert store_key(load_config("demo")) != DEMO_STORE_KEY  # a BOS and left-out rows: a new store
    demo = load_config("demo", overrides=STUDY_EXTRACTION)
    assert store_key(demo) == DEMO_STORE_KEY
    assert not {"prepend_bos", "sink_norm_multiple"} & set(demo.extraction.model_dump())
    assert "revision" not in demo.data.model_dump() and "config_name" not in demo.data.model_dump()
    pinned = load_config("demo", overrides={**STUDY_EXTRACTION, "data.revision": "refs/convert/parquet"})
    assert store_key(pinned) != DEMO_STORE_KEY
    named = load_config("demo", overrides={**STUDY_EXTRACTION, "data.config_name": "plain_text"})
    assert store_key(named) != DEMO_STORE_KEY
    with pytest.raises(ConfigError, match=r"data\.revision"):
        load_config("demo", overrides={"data.revision": " "})
    seed = load_config("seed").data
    assert (seed.revision, seed.config_name, seed.split) == ("refs/convert/parquet", "plain_text", "train")


def test_revision_and_config_reach_load_dataset(tmp_path, converted_repo, monkeypatch):
    """The convert branch declares no configurations: `plain_text` is asked for by name, then read as
    its directory; the partial-train directory is datasets' train split; stream order is shard order."""
    import datasets

    root, texts = converted_repo
    calls: list[tuple[tuple, dict]] = []
    real = datasets.load_dataset

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", spy)
    cfg = _cfg(
        tmp_path,
        dataset=str(root),
        revision="refs/convert/parquet",
        config_name="plain_text",
        num_documents=12,
        streaming=True,
    )
    read = [text for _, text in iter_documents(cfg)]
    assert read == texts[:12]  # across the shard boundary, in order, none of `other/`
    assert [c[0] for c in calls] == [(str(root), "plain_text"), (str(root),)]
    assert all(c[1]["revision"] == "refs/convert/parquet" and c[1]["split"] == "train" for c in calls)
    assert calls[1][1]["data_dir"] == "plain_text"

    # A repository whose card declares the configuration is asked once, by name.
    mirror = tmp_path / "mirror"
    _parquet_shards(mirror / "data", [texts[:3]])
    (mirror / "README.md").write_text(_CARD)
    calls.clear()
    cfg = _cfg(tmp_path, dataset=str(mirror), config_name="plain_text", num_documents=None, streaming=False)
    assert [text for _, text in iter_documents(cfg)] == texts[:3]
    assert len(calls) == 1 and calls[0][0] == (str(mirror), "plain_text") and "revision" not in calls[0][1]


def test_loading_script_is_refused_with_the_fixes(tmp_path):
    repo = tmp_path / "openwebtext"
    repo.mkdir()
    (repo / "openwebtext.py").write_text("import datasets\n")
    (repo / "train.jsonl").write_text(json.dumps({"text": "a document"}) + "\n")
    with pytest.raises(ConfigError) as caught:
        next(iter_documents(_cfg(tmp_path, dataset=str(repo))))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("data.dataset: ")
    assert "openwebtext.py" in message and "loading script" in message
    for fix in ("data.revision=refs/convert/parquet", "data.config_name", "data.data_files", "mirror"):
        assert fix in message


def test_unknown_config_name_names_the_field(tmp_path, converted_repo):
    root, texts = converted_repo
    with pytest.raises(ConfigError, match=r"^data\.config_name: .*no directory 'nope'"):
        next(iter_documents(_cfg(tmp_path, dataset=str(root), config_name="nope")))
    mirror = tmp_path / "mirror"
    _parquet_shards(mirror / "data", [texts[:3]])
    (mirror / "README.md").write_text(_CARD)
    with pytest.raises(
        ConfigError,
        match=r"^data\.config_name: .* no configuration 'nope' \(configurations: \['plain_text'\]\)$",
    ):
        next(iter_documents(_cfg(tmp_path, dataset=str(mirror), config_name="nope")))


def test_commit_is_asked_of_the_hub_only_for_hub_repositories(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    asked: list[tuple[str, str | None]] = []

    def dataset_info(self: Any, repo: str, revision: str | None = None, **kw: Any) -> Any:
        asked.append((repo, revision))
        if repo == "down/repo":
            raise ConnectionError("unreachable")
        return SimpleNamespace(sha="c0ffee" * 6 + "beef")

    monkeypatch.setattr(HfApi, "dataset_info", dataset_info)
    for var in hf_load._OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    hub = _cfg(tmp_path, dataset="Skylion007/openwebtext", revision="refs/convert/parquet")
    assert dataset_commit(hub) == "c0ffee" * 6 + "beef"
    assert dataset_commit(_cfg(tmp_path, dataset="down/repo")) is None  # never fails an extraction
    assert asked == [("Skylion007/openwebtext", "refs/convert/parquet"), ("down/repo", None)]
    for local in ("json", str(tmp_path), "builtin:stdlib-docstrings"):
        assert not hub_repository(local) and dataset_commit(_cfg(tmp_path, dataset=local)) is None
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert dataset_commit(hub) is None and len(asked) == 2


def test_parquet_store_records_its_source_and_the_report_prints_it(
    tmp_path, converted_repo, tiny_store_config, tiny_store
):
    from sae_core.report.cells import store_provenance
    from sae_core.report.render import provenance_text

    root, texts = converted_repo
    cfg = tiny_store_config.model_copy(deep=True)
    cfg.data_root = str(tmp_path)
    cfg.data.dataset, cfg.data.data_files = str(root), None
    cfg.data.revision, cfg.data.config_name = "refs/convert/parquet", "plain_text"
    cfg.data.num_documents = 10
    store = extract_activations(cfg)
    manifest = json.loads((store / "manifest.json").read_text())
    source = manifest["source"]
    assert source == {
        "repository": str(root),
        "revision": "refs/convert/parquet",
        "commit": None,  # a local directory: no Hub to ask
        "config_name": "plain_text",
        "data_files": None,
        "split": "train",
        "documents": 10,
        "first_document_sha256": hashlib.sha256(texts[0].encode()).hexdigest(),
    }
    assert set(manifest["versions"]) == {"torch", "transformers", "datasets", "sae-sweep"}
    assert all(manifest["versions"].values())

    # The report: the cells' metrics.json name the store; an old manifest (no source) still reports.
    old = json.loads((tiny_store / "manifest.json").read_text())
    assert old["source"]["data_files"] == tiny_store_config.data.data_files
    old_dir = tmp_path / "old-store"
    old_dir.mkdir()
    (old_dir / "manifest.json").write_text(
        json.dumps({k: v for k, v in old.items() if k not in {"source", "versions"}})
    )
    stores = (store, old_dir, tmp_path / "gone", store)
    cells = [SimpleNamespace(metrics=SimpleNamespace(store=str(s))) for s in stores]
    provenance = store_provenance(cells)  # type: ignore[arg-type]
    assert [p["store"] for p in provenance] == sorted({str(store), str(old_dir), str(tmp_path / "gone")})
    texts_by_store = {p["store"]: provenance_text(p) for p in provenance}
    new_text = texts_by_store[str(store)]
    assert source["first_document_sha256"] in new_text and "revision `refs/convert/parquet`" in new_text
    assert "config `plain_text`" in new_text and "10 documents" in new_text and "torch " in new_text
    assert "predates source records" in texts_by_store[str(old_dir)]
    assert "not found" in texts_by_store[str(tmp_path / "gone")]
