"""What every Prefect task of the sweep shares: where things live, cache keys, locks, secrets, progress.

Cache keys are content keys: the config sections a stage depends on, the upstream artifact's identity
(the store's: `sae_core.store.store_fingerprint`, the one training's resume identity uses too) and
`code_version()` (a hash of sae_core's sources — Prefect's TASK_SOURCE policy would not see a change
in a helper module). Results are persisted under `data_root/.prefect/results`, so a second process (the
next `sae-sweep run`, another worker on the same volume) sees the cache, and deleting `data_root` drops
it with the data. A cached result whose files were deleted must be recomputed, not returned stale:
`configured()` passes `refresh_cache=True` when a stage's outputs are missing on disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from sae_core import rundir
from sae_core.config import KEY_DUMP, KeyPolicy, SweepConfig, check_key_source
from sae_core.errors import SaeSweepError
from sae_core.io import read_json
from sae_core.naming import Cell
from sae_core.rundir import RunDir, is_analysed, is_trained
from sae_core.version import code_version

log = logging.getLogger(__name__)

PREFECT_DIRNAME = ".prefect"


# ---------------------------------------------------------------------------------------------
# Prefect defaults for this project (applied before Prefect is imported: it reads them at import)

PREFECT_DEFAULTS = {
    # The embedded server otherwise reports usage to Prefect at start-up; offline (and on this
    # project's air-gapped workers) that attempt fails with a traceback in the middle of a normal run.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # sae_core logs through `logging`; route it into the run logs shown in the UI.
    "PREFECT_LOGGING_EXTRA_LOGGERS": "sae_core,tasks,flows",
    # The embedded server's own access log is noise in a terminal run.
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    # Its start-up (migrations on a fresh SQLite) takes 10-15 s on a laptop and more on a busy machine;
    # Prefect's 20 s default turned a slow start into a traceback.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def apply_prefect_defaults() -> None:
    """Set the project's Prefect defaults where the user has not set them."""
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)


# ---------------------------------------------------------------------------------------------
# Where things live


def data_root(cfg: SweepConfig) -> Path:
    return Path(cfg.data_root).expanduser().resolve()


def sweep_dir(cfg: SweepConfig) -> Path:
    return data_root(cfg) / "runs" / cfg.name


def run_dir(cfg: SweepConfig, cell: Cell) -> Path:
    return sweep_dir(cfg) / cell.name


def result_storage(cfg: SweepConfig) -> Path:
    """Where task results (and so the cache records) are persisted: beside the data they describe."""
    return data_root(cfg) / PREFECT_DIRNAME / "results"


def with_absolute_root(cfg: SweepConfig) -> SweepConfig:
    """The same config with `data_root` made absolute, so every task and worker agrees on the paths."""
    return cfg.model_copy(update={"data_root": str(data_root(cfg))})


# ---------------------------------------------------------------------------------------------
# Cache keys


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


# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Locks: two sweeps of the same config at once must not write the same store or run dir together.


@contextlib.contextmanager
def stage_lock(cfg: SweepConfig, name: str) -> Iterator[None]:
    """An exclusive `flock` on `data_root/.prefect/locks/<name>.lock`.

    The kernel drops the lock when its holder dies, so a worker killed mid-cell never leaves a stale
    lock behind (Prefect's file lock manager would: its locks have no expiry by default). The second
    sweep waits here, then finds the work done (extraction and training return at once when their
    outputs are complete).
    """
    lock_dir = data_root(cfg) / PREFECT_DIRNAME / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    with open(lock_dir / f"{safe}.lock", "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another run holding the lock %s", safe)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------
# Secrets: from the environment, else a Prefect Secret block; never parameters, logs or artifacts.


def resolve_secret(
    env_name: str | None, block_name: str | None, policy: KeyPolicy, url: str | None = None
) -> str | None:
    """The secret's value, or None when neither the variable nor the block is set. The names must be on
    the worker's allow-list for `policy` (`sae_core.config.credentials`; with `url`, bound to its host
    or to none). Called inside tasks only: the value is never a parameter that Prefect records."""
    check_key_source(policy, env_name, block_name, url)
    if env_name and os.environ.get(env_name):
        return os.environ[env_name]
    if block_name:
        from prefect.blocks.system import Secret

        try:
            value = Secret.load(block_name).get()
        except ValueError:
            log.warning("Prefect Secret block %r not found", block_name)
            return None
        return str(value) if value else None
    return None


# ---------------------------------------------------------------------------------------------
# Progress: the `Progress` callback as a Prefect progress artifact.


_DECIMAL = re.compile(r"(?<![A-Za-z0-9.])(\d+\.\d+(?:e[+-]?\d+)?|\d+e[+-]?\d+)(?![A-Za-z0-9.])", re.I)


def readable_number(value: float) -> str:
    """A number with only letters, digits and dashes, still readable: 0.0001 → `1e-4`, 0.00025 →
    `25e-5`, 0.01 → `1e-2`, 3.0 → `3` (an artifact key cannot hold the dot of `0.0001`)."""
    sign, digits, exponent = Decimal(repr(float(value))).normalize().as_tuple()
    mantissa = ("-" if sign else "") + "".join(map(str, digits))
    return mantissa if exponent == 0 else f"{mantissa}e{exponent}"


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only. Decimal numbers (a cell's
    λ) are written as `1e-4` first, so `train-demo-8x-1e-4-sampling`, not `…-8x-0-0001-sampling`."""
    text = _DECIMAL.sub(lambda m: readable_number(float(m.group(1))), "-".join(parts)).lower()
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text)).strip("-")


class PrefectProgress:
    """`progress(done, total, info)` → a progress artifact, updated at most every `min_interval_s`, and a
    line in the run log every `log_every_s` (and at the end): the UI shows both.

    Rate-limited because every update is an API call; a training loop reports hundreds of times. A loop
    that cannot know its total (`total` None) gets the log lines only.
    """

    def __init__(
        self,
        key: str,
        description: str,
        min_interval_s: float = 2.0,
        log_every_s: float = 30.0,
        unit: str = "",
    ) -> None:
        self.key = key
        self.description = description
        self.min_interval_s = min_interval_s
        self.log_every_s = log_every_s
        self.unit = unit
        self._artifact_id: Any = None
        self._last = 0.0
        self._last_percent = -1.0
        self._last_log: float | None = None
        self._logged_end = False

    def __call__(self, done: int, total: int | None, info: dict[str, float]) -> None:
        percent = min(100.0, 100.0 * done / total) if total else None
        now = time.monotonic()
        self._log(now, done, total, percent, info)
        if percent is None:
            return
        final = percent >= 100.0
        if not final and now - self._last < self.min_interval_s:
            return
        if percent == self._last_percent:
            return
        self._last, self._last_percent = now, percent
        text = self.description + _format_info(info)
        try:
            self._publish(percent, text)
        except Exception as exc:  # a UI nicety must never fail the stage
            log.debug("progress artifact %s not updated: %s", self.key, exc)

    def _log(self, now: float, done: int, total: int | None, percent: float | None, info: dict) -> None:
        final = percent is not None and percent >= 100.0
        due = self._last_log is None or now - self._last_log >= self.log_every_s
        if not (due or (final and not self._logged_end)) or self._logged_end:
            return
        self._last_log, self._logged_end = now, final
        unit = f" {self.unit}" if self.unit else ""
        count = f"{done:,}/{total:,}{unit}" if total else f"{done:,}{unit}"
        head = f"{percent:.0f}% ({count})" if percent is not None else count
        run_logger().info("%s: %s%s", self.description, head, _format_info(info))

    def _publish(self, percent: float, text: str) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        if self._artifact_id is None:
            self._artifact_id = create_progress_artifact(percent, key=self.key, description=text)
        else:
            update_progress_artifact(self._artifact_id, percent, description=text)


def _format_info(info: dict[str, float]) -> str:
    """` (loss 0.0123, L0 12.3, dead % (training window) 4.2%)`: rounded for reading; a key naming a
    percentage holds one (`round(100 * x, 1)`) and is shown with its `%`."""
    if not info:
        return ""
    return " (" + ", ".join(f"{k} {_format_value(k, v)}" for k, v in info.items()) + ")"


def _format_value(key: str, value: float) -> str:
    if "%" in key:
        return f"{value:.1f}%"
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a run, the module logger outside one (tests calling helpers)."""
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:
        return log
