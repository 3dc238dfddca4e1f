"""A killed extraction leaves only complete shards and no manifest; the re-run resumes and yields the
same store as an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sae_core.extraction.extract import extract_activations, store_path
from sae_core.store import ActivationStore
from sae_core.store.format import shard_entry

# Runs the extraction and SIGKILLs itself while the third shard is half written.
_KILLED_RUN = """
import json, os, signal, sys
from sae_core.store import format as store_format
from sae_core.config import validate_config
from sae_core.extraction.extract import extract_activations

calls = []
original = store_format.ShardWriter._write_group

def dying_write_group(self, writer, chunks):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, writer, chunks)

store_format.ShardWriter._write_group = dying_write_group
extract_activations(validate_config(json.loads(sys.argv[1])))
"""


@pytest.mark.slow
def test_killed_extraction_resumes_to_an_identical_store(tmp_path, tiny_store, tiny_store_config):
    cfg = tiny_store_config.model_copy(deep=True)
    cfg.data_root = str(tmp_path)
    out = store_path(cfg)
    assert out.name == tiny_store.name  # the key does not depend on data_root
    run = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, json.dumps(cfg.model_dump(mode="json"))],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert run.returncode == -9, run.stderr[-2000:]
    # Killed mid-shard: two complete shards, the third only as a hidden temporary, no manifest.
    assert sorted(p.name for p in out.glob("part-*.parquet")) == ["part-00000.parquet", "part-00001.parquet"]
    assert list(out.glob(".part-00002.parquet.*.tmp"))
    assert not (out / "manifest.json").exists()
    reference = ActivationStore.open(tiny_store).manifest
    for shard in ("part-00000.parquet", "part-00001.parquet"):
        assert shard_entry(out / shard)["sha256"] == _sha(reference, shard)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}

    seen = []
    assert extract_activations(cfg, lambda done, total, info: seen.append((done, info))) == out

    after = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    assert all(after[name] == stamp for name, stamp in before.items()), "complete shards were rewritten"
    assert not list(out.glob(".part-*.tmp"))
    resumed = ActivationStore.open(out).manifest
    for key in ("created_at",):
        resumed.pop(key), reference.pop(key)
    assert resumed == reference
    # Progress counts the reused shards' documents and tokens too.
    data = reference["data"]
    assert seen[-1] == (data["documents_read"] - data["documents_empty"], {"tokens": reference["num_tokens"]})


def _sha(manifest: dict, name: str) -> str:
    return next(s["sha256"] for s in manifest["shards"] if s["file"] == name)
