"""Cache keys change exactly when they should; outputs on disk decide whether a cache may be trusted;
secrets come from the environment or a Secret block; the progress artifact helper is safe to call."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sae_core.config import load_config
from sae_core.io import read_json
from sae_core.naming import Cell
from sae_core.store import write_store
from tasks import cache, credentials, locks, paths, progress

CELL = Cell(2, 0.01, "sampling")


@pytest.fixture
def cfg(tmp_path):
    return paths.with_absolute_root(load_config("demo", None, {"data_root": str(tmp_path / "data")}))


def tweak(cfg, **dotted):
    from sae_core.config import apply_overrides, validate_config

    return validate_config(apply_overrides(cfg.model_dump(mode="json"), dotted))


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(64, 8)).astype(np.float32)
    write_store(tmp_path / "store", acts, np.repeat(np.arange(8), 8))
    return tmp_path / "store"


def test_extract_key_follows_model_data_extraction_and_code_only(cfg, monkeypatch):
    key = cache.extract_cache_key(cfg)
    assert cache.extract_cache_key(cfg) == key
    for dotted, value in [
        ("model.layer", 1),
        ("data.num_documents", 10),
        ("extraction.store_dtype", "float32"),
    ]:
        assert cache.extract_cache_key(tweak(cfg, **{dotted: value})) != key, dotted
    for dotted, value in [
        ("training.lr", 0.5),
        ("grid.max_concurrency", 3),
        ("labeling.model", "x"),
        ("analysis.top_k_features", 3),
        ("upload.repo_id", "a/b"),
    ]:
        assert cache.extract_cache_key(tweak(cfg, **{dotted: value})) == key, dotted
    monkeypatch.setattr(cache, "code_version", lambda: "9.9.9+changed")
    assert cache.extract_cache_key(cfg) != key


def test_train_key_follows_training_cell_store_content_and_code(cfg, store, tmp_path, monkeypatch):
    key = cache.train_cache_key(cfg, CELL, store)
    assert cache.train_cache_key(tweak(cfg, **{"training.lr": 0.5}), CELL, store) != key
    assert cache.train_cache_key(cfg, Cell(2, 0.01, "nosampling"), store) != key
    assert cache.train_cache_key(tweak(cfg, name="other"), CELL, store) != key  # another run dir
    for dotted, value in [
        ("analysis.dead_threshold", 0.5),
        ("labeling.model", "x"),
        ("grid.placement", "pool"),
        ("grid.work_queue", "a100"),  # where a cell runs, not what it computes
        ("grid.expansion_factors", [2, 4, 8]),
        ("upload.repo_id", "a/b"),
    ]:
        assert cache.train_cache_key(tweak(cfg, **{dotted: value}), CELL, store) == key, dotted

    # The same shards written again (a re-extraction: new created_at) keep the key; other content does not.
    manifest = read_json(store / "manifest.json")
    manifest["created_at"] = "2030-01-01T00:00:00Z"
    (store / "manifest.json").write_text(json.dumps(manifest))
    assert cache.train_cache_key(cfg, CELL, store) == key
    other = tmp_path / "other-store"
    write_store(other, np.ones((64, 8), np.float32), np.repeat(np.arange(8), 8))
    assert cache.train_cache_key(cfg, CELL, other) != key
    monkeypatch.setattr(cache, "code_version", lambda: "9.9.9+changed")
    assert cache.train_cache_key(cfg, CELL, store) != key


def test_analyze_key_follows_weights_content_and_analysis_section(cfg, store):
    out = paths.run_dir(cfg, CELL)
    out.mkdir(parents=True)
    (out / CELL.weights_filename).write_bytes(b"weights v1")
    key = cache.analyze_cache_key(cfg, CELL, store)
    assert cache.analyze_cache_key(tweak(cfg, **{"analysis.dead_threshold": 0.5}), CELL, store) != key
    assert cache.analyze_cache_key(tweak(cfg, **{"training.lr": 0.5}), CELL, store) == key
    (out / CELL.weights_filename).write_bytes(b"weights v2")
    assert cache.analyze_cache_key(cfg, CELL, store) != key


def test_outputs_on_disk_decide_whether_the_cache_is_refreshed(cfg, store):
    assert cache.store_complete(store)
    shard = next(store.glob("*.parquet"))
    shard.unlink()
    assert not cache.store_complete(store)

    out = paths.run_dir(cfg, CELL)
    assert not cache.training_complete(cfg, CELL)
    out.mkdir(parents=True)
    (out / CELL.weights_filename).write_bytes(b"w")
    (out / "metrics.json").write_text(json.dumps({"completed": False}))
    assert not cache.training_complete(cfg, CELL)
    (out / "metrics.json").write_text(json.dumps({"completed": True}))
    assert cache.training_complete(cfg, CELL)
    (out / CELL.weights_filename).unlink()
    assert not cache.training_complete(cfg, CELL)

    assert not cache.analysis_complete(cfg, CELL)
    for name in cache.ANALYSIS_OUTPUTS:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("{}")
    assert cache.analysis_complete(cfg, CELL)

    class FakeTask:  # records the options it is given, like Task.with_options
        def with_options(self, **options):
            return options

    assert "refresh_cache" not in cache.configured(FakeTask(), cfg, True)
    options = cache.configured(FakeTask(), cfg, False)
    assert options["refresh_cache"] is True and options["persist_result"] is True
    assert str(options["result_storage"]).startswith(cfg.data_root)


def test_secret_from_env_then_secret_block(prefect_harness, monkeypatch):
    from prefect.blocks.system import Secret

    from sae_core.config import HUB_TOKENS, ConfigError

    monkeypatch.setenv("SAE_SWEEP_ALLOWED_HF_TOKEN_ENVS", "MY_TOKEN")
    monkeypatch.setenv("SAE_SWEEP_ALLOWED_HF_TOKEN_BLOCKS", "hub-token-test,no-such-block")
    monkeypatch.setenv("MY_TOKEN", "from-env")
    assert credentials.resolve_secret("MY_TOKEN", None, HUB_TOKENS) == "from-env"
    monkeypatch.delenv("MY_TOKEN")
    assert credentials.resolve_secret("MY_TOKEN", None, HUB_TOKENS) is None
    Secret(value="from-block").save("hub-token-test", overwrite=True)
    assert credentials.resolve_secret("MY_TOKEN", "hub-token-test", HUB_TOKENS) == "from-block"
    assert credentials.resolve_secret("MY_TOKEN", "no-such-block", HUB_TOKENS) is None
    # A block the operator did not name is refused before it is read, even when it exists.
    monkeypatch.setenv("SAE_SWEEP_ALLOWED_HF_TOKEN_BLOCKS", "no-such-block")
    with pytest.raises(ConfigError, match=r"^upload\.token_secret_block: 'hub-token-test' is not allowed"):
        credentials.resolve_secret("MY_TOKEN", "hub-token-test", HUB_TOKENS)


def test_stage_lock_is_exclusive_and_released(cfg):
    import threading

    order: list[str] = []

    def second() -> None:
        with locks.stage_lock(cfg, "extract-x"):
            order.append("b")

    with locks.stage_lock(cfg, "extract-x"):
        other = threading.Thread(target=second)
        other.start()
        other.join(0.3)
        order.append("a")
        assert other.is_alive()  # waiting for the lock
    other.join(5)
    assert order == ["a", "b"]


def test_artifact_keys_are_prefect_safe():
    assert (
        progress.artifact_key("train", "My_Sweep", "8x-0.0001-sampling") == "train-my-sweep-8x-1e-4-sampling"
    )
