"""How a stage's Prefect task is cached, refreshed and retried.

Cache keys are content keys: the config sections a stage depends on, the upstream artifact's identity
(the store's: `sae_core.store.store_fingerprint`, the one training's resume identity uses too) and
`code_version()` (a hash of sae_core's sources — Prefect's TASK_SOURCE policy would not see a change
in a helper module). Results are persisted under `data_root/.prefect/results`, so a second process (the
next `sae-sweep run`, another worker on the same volume) sees the cache, and deleting `data_root` drops
it with the data. A cached result whose files were deleted must be recomputed, not returned stale:
`configured()` passes `refresh_cache=True` when a stage's outputs are missing on disk.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sae_core import rundir
from sae_core.config import KEY_DUMP, SweepConfig
from sae_core.errors import SaeSweepError
from sae_core.io import read_json
from sae_core.naming import Cell
from sae_core.rundir import RunDir, is_analysed, is_trained
from sae_core.version import code_version
from tasks.paths import data_root, result_storage, run_dir


def stable_hash(*parts: Any) -> str:
    """A short sha256 over JSON-encoded parts (sorted keys: dict order never changes a key)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def sections(cfg: SweepConfig, *names: str) -> dict[str, Any]:
    # The key dump: fields at the behaviour they had before they existed are left out (KEY_DUMP).
    dumped = cfg.model_dump(mode="json", context={KEY_DUMP: True})
    return {name: dumped[name] for name in names}


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a file (weights are at most a few hundred MB: well under a second)."""
    from sae_core.io import sha256_file

    return sha256_file(path)


def extract_cache_key(cfg: SweepConfig) -> str:
    return "extract-" + stable_hash(
        sections(cfg, "model", "data", "extraction"), str(data_root(cfg)), code_version()
    )


def train_cache_key(cfg: SweepConfig, cell: Cell, store_path: str | Path) -> str:
    from sae_core.store import store_fingerprint  # the store's one identity (torch: imported late)

    settings = sections(cfg, "training")
    if cell.spec.section is not None:  # a relu cell's key reads the study's sections only
        settings["saes"] = sections(cfg, "saes")["saes"][cell.architecture]
    return "train-" + stable_hash(
        cell.name,
        settings,
        store_fingerprint(store_path),
        str(run_dir(cfg, cell)),
        code_version(),
    )


def analyze_cache_key(cfg: SweepConfig, cell: Cell, store_path: str | Path) -> str:
    from sae_core.config import scoring_sample_settings
    from sae_core.store import store_fingerprint

    weights = run_dir(cfg, cell) / cell.weights_filename
    scoring = scoring_sample_settings(cfg.labeling)  # omitted at the defaults: keys stay as they were
    return "analyze-" + stable_hash(
        cell.name,
        sections(cfg, "analysis"),
        *([repr(sorted(scoring.items()))] if scoring else []),
        store_fingerprint(store_path),
        file_fingerprint(weights) if weights.exists() else "missing",
        str(run_dir(cfg, cell)),
        code_version(),
    )


# Are a stage's outputs still on disk?


def store_complete(store_path: str | Path) -> bool:
    path = Path(store_path)
    manifest = path / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        shards = read_json(manifest).get("shards", [])
    except (OSError, ValueError):
        return False
    return all((path / s["file"]).is_file() for s in shards)


def training_complete(cfg: SweepConfig, cell: Cell) -> bool:
    return is_trained(RunDir(run_dir(cfg, cell)), cell.weights_filename)


ANALYSIS_OUTPUTS = rundir.ANALYSIS_OUTPUTS


def analysis_complete(cfg: SweepConfig, cell: Cell) -> bool:
    return is_analysed(RunDir(run_dir(cfg, cell)))


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """A task's `retry_condition_fn`: a bad config, a NaN loss or a read-only disk (`SaeSweepError`)
    fails the same way again; a killed process or a flaky network may not."""
    return not isinstance(state.data, SaeSweepError)


def call_stage(task: Any, cfg: SweepConfig, outputs_present: bool, *args: Any) -> dict[str, Any]:
    """Run a stage task from a flow; its result says whether it was a cache hit (then `work_s` is 0:
    the stored figure belongs to the run that computed it)."""
    state = configured(task, cfg, outputs_present)(*args, return_state=True)
    result = dict(state.result())
    result["cached"] = state.name == "Cached"
    if result["cached"]:
        result["work_s"] = 0.0
    return result


def configured(task: Any, cfg: SweepConfig, outputs_present: bool) -> Any:
    """The task with its results persisted under data_root, and its cache refreshed (recomputed and
    rewritten under the same key) when the files a cached result points to are gone."""
    options: dict[str, Any] = {"persist_result": True, "result_storage": result_storage(cfg)}
    if not outputs_present:
        options["refresh_cache"] = True
    return task.with_options(**options)
