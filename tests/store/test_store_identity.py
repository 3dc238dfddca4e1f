"""One store identity (`sae_core.store.store_fingerprint`): stores that differ in anything a reader can
observe never share a completed run, a resume or a task cache key — first the reproduced case, two
stores of the same arrays with `drop_first_token` false and true, whose shards are byte-identical —
while a re-extraction that changes only provenance keeps them; runs keyed by an older identity are
trained again, never reused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from sae_core.io import read_json
from sae_core.naming import Cell
from sae_core.store import ActivationStore, store_fingerprint
from sae_core.training import TrainCallback, train_cell
from sae_core.training.checkpoint import CHECKPOINT_NAME, config_hash
from tasks import analyze, paths, train
from tests.fixtures_sae import make_store, small_config

pytestmark = pytest.mark.usefixtures("single_thread")

CELL = Cell(2, 0.02, "sampling")
TINY = {"n": 400, "d": 8, "doc_len": 20}


def _cfg(tmp_path: Path):
    cfg = small_config(
        batch_size=32, epochs=2, checkpoint_every=5, resample_every=10, resample_pool_tokens=1024,
        log_every=5, val_every=10, val_tokens=64,
    )  # fmt: skip
    return paths.with_absolute_root(cfg.model_copy(update={"data_root": str(tmp_path / "data")}))


class _Starts(TrainCallback):
    """Records where each training started (0: from scratch) and can stop it after a checkpoint."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.starts: list[int] = []
        self.kill_at = kill_at

    def on_start(self, total_steps, info):
        self.starts.append(int(info.get("resumed_from") or 0))

    def on_checkpoint(self, step, path):
        if step == self.kill_at:
            raise KeyboardInterrupt


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / CELL.weights_filename)


def _old_fingerprint(store: Path) -> str:
    """The training fingerprint before the one identity: the shards' checksums alone."""
    shards = read_json(store / "manifest.json")["shards"]
    return "store:" + hashlib.sha256(repr([s["sha256"] for s in shards]).encode()).hexdigest()[:16]


def test_drop_first_token_stores_never_share_a_run_or_a_resume(tmp_path):
    kept = make_store(tmp_path / "kept", **TINY)
    dropped = make_store(tmp_path / "dropped", drop_first_token=True, **TINY)
    a, b = ActivationStore.open(kept), ActivationStore.open(dropped)
    assert [s["sha256"] for s in a.manifest["shards"]] == [s["sha256"] for s in b.manifest["shards"]]
    assert a.num_tokens_in("train") > b.num_tokens_in("train")  # what a reader of each yields
    assert store_fingerprint(kept) != store_fingerprint(dropped)

    cfg = _cfg(tmp_path)
    fresh = train_cell(dropped, CELL, cfg, tmp_path / "fresh")
    # A completed run on the first store is trained again on the second, to the second's own result.
    first = train_cell(kept, CELL, cfg, tmp_path / "run")
    starts = _Starts()
    second = train_cell(dropped, CELL, cfg, tmp_path / "run", callbacks=[starts])
    assert starts.starts == [0]
    assert second["store"] == str(dropped) and second["tokens_trained"] == fresh["tokens_trained"]
    assert second["config_hash"] != first["config_hash"]
    for key, value in _weights(tmp_path / "fresh").items():
        assert torch.equal(_weights(tmp_path / "run")[key], value), key

    # A checkpoint of the first store is not resumed on the second: training starts from step 0.
    with pytest.raises(KeyboardInterrupt):
        train_cell(kept, CELL, cfg, tmp_path / "killed", callbacks=[_Starts(kill_at=10)])
    assert (tmp_path / "killed" / CHECKPOINT_NAME).exists()
    starts = _Starts()
    train_cell(dropped, CELL, cfg, tmp_path / "killed", callbacks=[starts])
    assert starts.starts == [0]
    for key, value in _weights(tmp_path / "fresh").items():
        assert torch.equal(_weights(tmp_path / "killed")[key], value), key


def test_runs_keyed_by_an_older_identity_are_trained_again(tmp_path):
    store = make_store(tmp_path / "store", **TINY)
    cfg = _cfg(tmp_path)
    done = train_cell(store, CELL, cfg, tmp_path / "done")
    with pytest.raises(KeyboardInterrupt):
        train_cell(store, CELL, cfg, tmp_path / "killed", callbacks=[_Starts(kill_at=10)])

    # Rewrite both as the old code keyed them: the same run, its data named by the shards alone.
    ckpt = tmp_path / "killed" / CHECKPOINT_NAME
    state = torch.load(ckpt, weights_only=False)
    state["identity"]["data"] = _old_fingerprint(store)
    state["config_hash"] = config_hash(state["identity"])
    torch.save(state, ckpt)
    metrics = read_json(tmp_path / "done" / "metrics.json")
    metrics["config_hash"] = state["config_hash"]
    (tmp_path / "done" / "metrics.json").write_text(json.dumps(metrics))

    for out in ("done", "killed"):
        starts = _Starts()
        again = train_cell(store, CELL, cfg, tmp_path / out, callbacks=[starts])
        assert starts.starts == [0], out
        assert again["config_hash"] == done["config_hash"]
        for key, value in _weights(tmp_path / out).items():
            assert torch.equal(_weights(tmp_path / "done")[key], value), (out, key)


VARIANTS = {
    "drop_first_token": {"drop_first_token": True},
    "store_dtype": {"store_dtype": "float16"},
    "val_fraction": {"val_fraction": 0.3},
    "split seed": {"seed": 1},
    "row_group_tokens": {"row_group_tokens": 64},
    "activations": {"seed_data": 1},
    "model layer": {"model": {"layer": 2}},
    "model revision": {"model": {"revision": "abc123"}},
    "model name": {"model": {"name": "other"}},
    "model dtype": {"model": {"dtype": "bfloat16"}},
}


def _variant(path: Path, store_dtype: str = "float32", seed_data: int = 0, model=None, **kw) -> Path:
    from sae_core.store import write_store
    from tests.fixtures_sae import superposition

    x, _ = superposition(TINY["n"], d=TINY["d"], seed=seed_data)
    docs = torch.arange(TINY["n"]) // TINY["doc_len"]
    base = {"name": "synthetic", "layer": 1, "num_layers": 2, "dtype": "float32"}
    write_store(path, x.numpy(), docs.numpy(), store_dtype=store_dtype, model={**base, **(model or {})}, **kw)
    return path


def _keys(cfg, store: Path) -> tuple[str, str, str]:
    params = {"store": str(store), "cell": CELL.name, "cfg": cfg}
    return store_fingerprint(store), train._cache_key(None, params), analyze._cache_key(None, params)


def test_stores_differing_in_any_observable_property_never_share_a_cache_key(tmp_path):
    cfg = _cfg(tmp_path)
    base = _variant(tmp_path / "base")
    reference = _keys(cfg, base)
    seen = {reference[0]: "base"}
    for name, change in VARIANTS.items():
        keys = _keys(cfg, _variant(tmp_path / name.replace(" ", "-"), **change))
        for ref, key in zip(reference, keys, strict=True):
            assert key != ref, name
        assert keys[0] not in seen, (name, seen.get(keys[0]))
        seen[keys[0]] = name

    # Provenance only (an identical re-extraction elsewhere, later, with newer libraries): same keys.
    manifest = read_json(base / "manifest.json")
    manifest["created_at"] = "2030-01-01T00:00:00+00:00"
    manifest["code_version"] = "9.9.9"
    manifest["data"] = {"dataset": "x", "revision": "0" * 40, "first_document_sha256": "ab"}
    manifest["versions"] = {"torch": "9", "transformers": "9", "datasets": "9"}
    manifest["model"]["resolved_path"] = "/elsewhere/snapshots/abc"
    manifest["model"]["layer_meaning"] = "reworded"
    (base / "manifest.json").write_text(json.dumps(manifest))
    assert _keys(cfg, base) == reference
