"""`train_cell`: one grid cell from an activation store into its run directory.

Writes (see docs/architecture.md, "runs/<sweep>/<cell>/"): `model_weights_<cell>.pth`, `saelens/`,
`metrics.json`, `train_log.parquet`, and `checkpoint.pt` while training. A completed run with the same
config is returned as is; a checkpoint of the same config is resumed; one of another config is refused;
a completed run or a checkpoint of another store (`sae_core.store.store_fingerprint`) is trained again.
Re-exported as `sae_core.training.trainer.train_cell`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sae_core.config import KEY_DUMP, SweepConfig
from sae_core.device import resolve_device
from sae_core.errors import TrainingError
from sae_core.io import atomic_write_json, atomic_write_with
from sae_core.naming import Cell
from sae_core.progress import Progress
from sae_core.rundir import METRICS_FORMAT, RunDir, trained_metrics
from sae_core.saes.export import SAELENS_DIR, export_saelens, fold_input_scale, save_pth
from sae_core.training.checkpoint import CHECKPOINT_NAME, config_hash, load_checkpoint, resume_identity
from sae_core.version import code_version

log = logging.getLogger(__name__)

LOG_COLUMNS = (
    "step",
    "tokens",
    "kind",
    "loss",
    "mse",
    "l1",
    "l0",
    "explained_variance",
    "window_dead_fraction",  # kind=train rows: fired in no step of the last resample_every steps
    "never_fired_fraction",  # kind=val rows: fired (> 0) on none of the validation tokens
    "lr",
)


@dataclass
class CellRun:
    """One cell set up to train: its Trainer (restored from its checkpoint, if any) and what writing its
    run dir needs afterwards. A pack (`training.pack`) holds several and steps them together."""

    cell: Cell
    out_dir: Path
    trainer: Any
    tracker: Any
    callbacks: list[Any]
    config_hash: str
    store_path: str
    store: Any
    architecture_settings: dict[str, Any] = field(default_factory=dict)
    """The cell's `saes.<architecture>` section as a dict (empty for relu): training_config.json's."""


def train_cell(
    store_path: str | Path,
    cell: Cell,
    cfg: SweepConfig,
    out_dir: str | Path,
    *,
    callbacks: Sequence[Any] = (),
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train `cell` on the store at `store_path` into `out_dir`; return the `metrics.json` dict."""
    from sae_core.training.data import open_store_data
    from sae_core.training.normalize import normalized

    if not math.isfinite(cell.l1) or cell.l1 < 0:
        raise TrainingError(f"l1: λ must be finite and >= 0 (got {cell.l1})")
    data, store = open_store_data(store_path, resolve_device(cfg.training.device), cfg.training.max_memory_gb)
    data = normalized(data, store, cfg.training.normalize_activations)  # x·s when `expected_norm`
    run = prepare_cell(store_path, data, store, cell, cfg, out_dir, callbacks=callbacks, progress=progress)
    if isinstance(run, dict):
        return run
    try:
        result = run.trainer.run()
    except BaseException:
        run.tracker.close(failed=True)
        raise
    return finish_cell(run, result)


def prepare_cell(
    store_path: str | Path,
    data: Any,
    store: Any,
    cell: Cell,
    cfg: SweepConfig,
    out_dir: str | Path,
    *,
    callbacks: Sequence[Any] = (),
    progress: Progress | None = None,
) -> CellRun | dict[str, Any]:
    """`cell` ready to train on the opened store (`data`, `store`): a `CellRun`, resumed from its
    checkpoint when one of the same config exists; or the `metrics.json` dict of a completed run of the
    same config (nothing to train)."""
    from sae_core.config.architectures import section_of
    from sae_core.training.architectures import cell_options
    from sae_core.training.callbacks import ProgressCallback
    from sae_core.training.tracking import WandbCallback
    from sae_core.training.trainer import Trainer, build_sae

    if not math.isfinite(cell.l1) or cell.l1 < 0:
        raise TrainingError(f"l1: λ must be finite and >= 0 (got {cell.l1})")
    out_dir = Path(out_dir)
    training = cfg.training
    device = resolve_device(training.device)
    d_hidden = data.d_model * cell.expansion
    identity = cell_identity(cell, cfg, data)
    chash = config_hash(identity)

    done = completed_run(out_dir, cell, chash)
    if done is not None:
        log.info("%s: already trained with this config, nothing to do", cell.name)
        return done

    sae = build_sae(
        data.d_model, d_hidden, training, cell.architecture, **cell_options(cell, cfg.saes, d_hidden)
    )
    tracker = WandbCallback(
        cfg.tracking,
        name=cell.wandb_name,
        group=cfg.name,
        config={
            "cell": cell.to_dict(),
            "training": training.model_dump(mode="json"),
            "store": str(store_path),
        },
        run_dir=out_dir,
    )
    all_callbacks = [*callbacks, tracker]
    if progress is not None:
        all_callbacks.append(ProgressCallback(progress))
    ckpt_path = out_dir / CHECKPOINT_NAME
    trainer = Trainer(
        sae, data, training, l1=cell.l1, strategy=cell.strategy, device=device,
        checkpoint_path=ckpt_path, identity=identity, callbacks=all_callbacks,
        dead_threshold=cfg.analysis.dead_threshold,
    )  # fmt: skip
    saved = load_checkpoint(ckpt_path, identity, map_location=device) if ckpt_path.exists() else None
    if saved is not None:
        trainer.restore(saved)
        log.info("%s: resuming from %s at step %d", cell.name, ckpt_path, trainer.state.step)
    elif ckpt_path.exists():  # overwritten by this run's first checkpoint
        log.info("%s: %s was trained on another store; training again", cell.name, ckpt_path)
    section = section_of(cfg.saes, cell.architecture)
    settings = section.model_dump(mode="json") if section is not None else {}
    return CellRun(cell, out_dir, trainer, tracker, all_callbacks, chash, str(store_path), store, settings)


def _train_left_out(store: Any) -> dict[str, Any]:
    """The training split's rows the store's reader left out, per rule (none for tensors given)."""
    counts = getattr(store, "left_out_counts", None)
    return {"train_left_out": counts("train")} if counts is not None else {}


def finish_cell(run: CellRun, result: dict[str, Any]) -> dict[str, Any]:
    """Write the trained cell's run dir (metrics.json last) and return the metrics dict. A normalised run
    (trained on x·s) releases its weights with s folded in (`fold_input_scale`): they take raw
    activations, and analysis, CE-loss recovered and every user of the `.pth` or SAELens folder see
    h(x·s) and x̂(x·s)/s without knowing s."""
    from sae_core.training.architectures import export_metadata
    from sae_core.training.normalize import input_scale, normalization_record
    from sae_core.training.release_record import TRAINING_CONFIG_NAME, training_config_record

    cell, out_dir, trainer = run.cell, run.out_dir, run.trainer
    training = trainer.cfg
    d_hidden = trainer.sae.d_hidden
    data = trainer.data
    metrics = {
        "format": METRICS_FORMAT,
        "cell": cell.name,
        "architecture": cell.architecture,  # by name: loading reads it (`saes.export.load_run`)
        "d_in": data.d_model,
        "d_hidden": d_hidden,
        "store": run.store_path,
        "data_path": data.data_path,
        "data_path_reason": data.data_path_reason,
        **_train_left_out(run.store),
        **result,
        "training": training.model_dump(mode="json"),
        **({"normalization": norm} if (norm := normalization_record(data)) else {}),
        "config_hash": run.config_hash,
        "code_version": code_version(),
        "completed": True,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    released = fold_input_scale(trainer.sae, input_scale(data))
    save_pth(released, out_dir / cell.weights_filename)
    # SAELens' sparsity file and `l0` come from the training tokens `final` was evaluated on (the same
    # seeded sample); its `num_dead_features` is the training-window count, as SAELens' trainer writes.
    dead_window = result.get("training_dead_fraction", result.get("dead_fraction_train"))
    export_saelens(
        released, out_dir / SAELENS_DIR, getattr(run.store, "manifest", None),
        frequency=trainer.final_frequency,
        num_dead_features=round(dead_window * d_hidden) if dead_window is not None else None,
        sparsity_tokens=trainer.final_tokens,
        sparsity_source=f"{trainer.final_tokens} random training tokens, encoded after the last step",
        l1_coefficient=cell.l1, l1_scaling=training.l1_scaling, strategy=cell.strategy, cell=cell.name,
        **export_metadata(cell),
        **({"activation_normalization": norm} if norm else {}),
    )  # fmt: skip
    manifest = getattr(run.store, "manifest", None)
    record = training_config_record(cell, metrics, manifest, run.architecture_settings)
    atomic_write_json(out_dir / SAELENS_DIR / TRAINING_CONFIG_NAME, record)
    write_train_log(RunDir(out_dir).train_log, trainer.state.log_rows)
    atomic_write_json(RunDir(out_dir).metrics, metrics)  # last: its presence marks the run complete
    (out_dir / CHECKPOINT_NAME).unlink(missing_ok=True)
    for cb in run.callbacks:
        cb.on_end(metrics)
    return metrics


def cell_identity(cell: Cell, cfg: SweepConfig, data: Any) -> dict[str, Any]:
    """What a checkpoint or a completed run of `cell` must have been trained under (`config_hash` of it
    is the run's key in metrics.json)."""
    from sae_core.training.architectures import cell_settings

    trained_by = cfg.training.model_dump(mode="json", context={KEY_DUMP: True})  # seed's keys as before
    if cfg.training.resample_criterion == "threshold":  # then analysis.dead_threshold shapes the run too
        trained_by["resample_threshold"] = cfg.analysis.dead_threshold
    trained_by |= cell_settings(cell, cfg.saes)  # the architecture's settings (nothing for relu)
    return resume_identity(trained_by, cell.to_dict(), data.d_model, data.fingerprint())


def completed_run(out_dir: Path, cell: Cell, chash: str) -> dict[str, Any] | None:
    """The metrics.json dict of a completed run of config hash `chash` in `out_dir`, else None (a
    metrics.json that cannot be read is a RunFileError naming it)."""
    run = RunDir(out_dir)
    if not run.metrics.is_file() or not run.weights(cell.weights_filename).is_file():
        return None
    metrics = trained_metrics(run, cell.weights_filename, chash)
    if metrics is not None:
        return metrics.to_json()
    log.info("%s: %s holds a run of another config or store; training again", cell.name, out_dir)
    return None


def write_train_log(path: Path, rows: list[dict[str, Any]]) -> None:
    """`train_log.parquet`: one row per logged train step, validation and resample event."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [("step", pa.int64()), ("tokens", pa.int64()), ("kind", pa.string())]
        + [(c, pa.float64()) for c in LOG_COLUMNS[3:]]
        + [("neurons_resampled", pa.int64())]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    atomic_write_with(path, lambda tmp: pq.write_table(table, tmp))


def load_train_log(run_dir: str | Path) -> Any:
    """`train_log.parquet` of a run directory as a pandas DataFrame."""
    import pandas as pd

    return pd.read_parquet(RunDir(Path(run_dir)).train_log)
