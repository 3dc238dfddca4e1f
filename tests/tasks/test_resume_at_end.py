"""Resume at the end (issue 23 item 5; SAELens #682, whose resume argument was silently ignored): for
every architecture, training a cell whose run is already complete trains zero steps and leaves every
file of its run dir bit-identical and unwritten — called directly and as the sweep's Prefect task, and
with the checkpoint of its last segment left behind beside a complete run."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
import torch

from sae_core.architectures import SPECS
from sae_core.naming import Cell
from sae_core.training import TrainCallback, train_cell
from sae_core.training.checkpoint import CHECKPOINT_NAME
from tests.fixtures_sae import small_config

pytestmark = pytest.mark.usefixtures("single_thread")

CELLS = [
    Cell(2, 0.001, "sampling"),
    Cell(2, 0.0, "auxk", "topk", k=4),
    Cell(2, 0.0, "sampling", "batchtopk", k=4),
    Cell(2, 0.0, "sampling", "jumprelu", l0=0.01),
    Cell(2, 0.0, "auxk", "matryoshka", k=4),
]


def test_every_architecture_is_resumed():
    assert {c.architecture for c in CELLS} == set(SPECS)


class _Counts(TrainCallback):
    def __init__(self) -> None:
        self.started = 0
        self.logged: list[int] = []

    def on_start(self, total_steps: int, info: dict) -> None:
        self.started += 1

    def on_log(self, step: int, metrics: dict) -> None:
        self.logged.append(step)


class _KeepLastCheckpoint(TrainCallback):
    """Copies each checkpoint aside: the last one is the run's state one segment before the end."""

    def __init__(self, where: Path) -> None:
        self.where = where

    def on_checkpoint(self, step: int, path: Path) -> None:
        shutil.copy2(path, self.where)


def _snapshot(run: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(run)): (p.read_bytes(), p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.architecture)
def test_a_finished_cell_trains_zero_steps_and_changes_no_file(cell, sae_store, tmp_path):
    cfg = small_config(epochs=1)
    run = tmp_path / "run"
    kept = tmp_path / "last-checkpoint.pt"
    first = train_cell(sae_store, cell, cfg, run, callbacks=[_KeepLastCheckpoint(kept)])
    assert first["completed"] is True and first["steps"] > 0 and kept.is_file()
    before = _snapshot(run)
    assert CHECKPOINT_NAME not in before  # a complete run keeps no checkpoint

    counts = _Counts()
    again = train_cell(sae_store, cell, cfg, run, callbacks=[counts])
    assert again == first and counts.started == 0 and counts.logged == []
    assert _snapshot(run) == before  # same bytes, and not even rewritten (same mtimes)

    # A checkpoint left beside a complete run (a kill between metrics.json and its removal): the
    # complete run still wins, nothing trains, and the stray checkpoint is not resumed.
    shutil.copy2(kept, run / CHECKPOINT_NAME)
    again = train_cell(sae_store, cell, cfg, run, callbacks=[counts])
    assert again == first and counts.started == 0
    after = _snapshot(run)
    after.pop(CHECKPOINT_NAME, None)
    assert after == before


@pytest.mark.integration
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.architecture)
def test_the_train_task_on_a_finished_cell_trains_zero_steps(cell, sae_store, prefect_client, tmp_path):
    from prefect import flow

    from tasks.paths import run_dir
    from tasks.train import run_train

    cfg = small_config(epochs=1).model_copy(
        update={"data_root": str(tmp_path / "data"), "name": "resume-end"}
    )

    @flow(name="resume-at-end")
    def once() -> dict:
        return run_train(str(sae_store), cell, cfg)

    first = once()
    run = run_dir(cfg, cell)
    before = _snapshot(run)
    second = once()  # the task's cache or the completed run: either way, nothing trains
    assert second["steps"] == first["steps"] and second["run_dir"] == first["run_dir"]
    assert _snapshot(run) == before
    (run / "metrics.json").unlink()  # an incomplete run dir: the task trains again, to the same weights
    third = once()
    assert third["steps"] == first["steps"]
    # torch.save writes a fresh serialization id into each file: the tensors are what must be equal
    a = torch.load(io.BytesIO(before[cell.weights_filename][0]), weights_only=True)
    b = torch.load(run / cell.weights_filename, weights_only=True)
    assert sorted(a) == sorted(b) and all(torch.equal(a[key], b[key]) for key in a)
