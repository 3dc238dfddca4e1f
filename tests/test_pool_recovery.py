"""The pool sweep survives the real world, on the session's Prefect stack (tests/fixtures_stack.py): a gpu
worker killed (`kill -9`, with its flow-run process) mid-training, and the Prefect server stopped for 20 s
and started again on the same database. The sweep must end Completed on its own, without a manual re-run,
and train nothing twice."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest
import torch

from sae_core.config import load_config
from sae_core.naming import Cell
from tasks.common import run_dir
from tests.fixtures_stack import FileWitness

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CELL = Cell(2, 0.01, "sampling")
# Long enough (~2500 steps) that a kill or an outage lands mid-training, after the first checkpoint.
SLOW_TRAINING = {
    "grid.strategies": ["sampling"],
    "grid.placement": "pool",
    "training.max_tokens": 64 * 2500,
    "training.resample_every": 1000,
    "training.checkpoint_every": 200,
    "training.log_every": 100,
    "training.val_every": 1000,
}


def cell_outputs(cfg) -> list[Path]:
    out = run_dir(cfg, CELL)
    return [out / CELL.weights_filename, out / "metrics.json", out / "analysis.json"]


def wait_for(path: Path, stack, run_id: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, stack.logs(run_id)[-20:]
        assert stack.state(run_id)["type"] not in {"COMPLETED", "FAILED", "CRASHED"}, stack.logs(run_id)[-20:]
        time.sleep(0.2)


def worker_running_a_flow(workers: list) -> object:
    """The worker process whose flow-run subprocess is alive."""
    busy = [w for w in workers if w.poll() is None and psutil.Process(w.pid).children(recursive=True)]
    assert len(busy) == 1, [w.pid for w in busy]
    return busy[0]


def test_a_lost_worker_is_noticed_and_its_cell_resumes(deployed, tmp_path, tiny_sweep_factory):
    """A gpu worker killed mid-cell left its flow run Running for ever and the sweep waiting on it; the
    cell resumed only after a manual re-run. Now the sweep notices the missing heartbeats, marks the run
    Crashed, submits the cell again, the other worker resumes it from its checkpoint, and the weights
    equal an uninterrupted run's."""
    stack = deployed
    second = stack.start("worker", "start", "--pool", "gpu", "--type", "process", log="gpu2.log")
    overrides = {
        **tiny_sweep_factory(tmp_path / "data"),
        **SLOW_TRAINING,
        "name": "lost",
        "grid.lost_after_s": 40,  # above the deployments' 30 s heartbeat
    }
    cfg = load_config("demo", None, overrides)
    t0 = time.monotonic()
    run_id = stack.trigger("sae-sweep/sae-sweep", {"preset": "demo", "overrides": overrides})
    wait_for(run_dir(cfg, CELL) / "checkpoint.pt", stack, run_id)
    victim = worker_running_a_flow([stack.workers["gpu"], second])
    stack.kill(victim)
    killed_at, killed_wall = time.monotonic(), time.time()
    print(f"killed the cell's worker at {killed_at - t0:.0f} s")
    assert not (run_dir(cfg, CELL) / "metrics.json").exists()  # it really died mid-cell

    state = stack.wait_final(run_id, timeout=420)
    print(f"sweep done at {time.monotonic() - t0:.0f} s")
    assert state["type"] == "COMPLETED", (state, stack.logs(run_id)[-30:])
    cells = sorted(
        (r["created"], r["state"]["type"], r["id"])
        for r in stack.children(run_id)
        if r["name"].startswith("cell-")
    )
    assert [kind for _, kind, _ in cells] == ["CRASHED", "COMPLETED"], cells
    lost = stack.http.get(f"/flow_runs/{cells[0][2]}").json()["state"]["timestamp"]
    noticed = datetime.fromisoformat(lost).timestamp() - killed_wall
    print(f"the lost run was marked Crashed {noticed:.0f} s after the kill")
    assert any("was lost" in m and "submitting it again" in m for m in stack.logs(run_id)), stack.logs(run_id)
    assert any("resumes from its checkpoint at step" in m for m in stack.logs(cells[-1][2]))

    # The same cell trained without interruption, in this process, equals the resumed one bit for bit.
    from sae_core.training import train_cell

    store = next((Path(cfg.data_root) / "activations").iterdir())
    train_cell(store, CELL, cfg, tmp_path / "uninterrupted")
    resumed = torch.load(run_dir(cfg, CELL) / CELL.weights_filename, map_location="cpu")
    reference = torch.load(tmp_path / "uninterrupted" / CELL.weights_filename, map_location="cpu")
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
    stack.workers["gpu"] = second if victim is not second else stack.workers["gpu"]


def test_a_server_restart_mid_sweep_loses_nothing(deployed, tmp_path, tiny_sweep_factory):
    """The Prefect server stopped for 20 s mid-training and started again on the same database: the
    sweep, its cell's run and the workers ride it out (the clients retry), the sweep ends Completed, and
    the cell was trained once (one cell run, each output file written once)."""
    stack = deployed
    overrides = {**tiny_sweep_factory(tmp_path / "data"), **SLOW_TRAINING, "name": "outage"}
    cfg = load_config("demo", None, overrides)
    t0 = time.monotonic()
    with FileWitness(cell_outputs(cfg)) as witness:
        run_id = stack.trigger("sae-sweep/sae-sweep", {"preset": "demo", "overrides": overrides})
        wait_for(run_dir(cfg, CELL) / "checkpoint.pt", stack, run_id)
        stack.kill(stack.server)
        print(f"server stopped at {time.monotonic() - t0:.0f} s")
        time.sleep(20)
        stack.start_server()
        stack.wait_healthy()
        print(f"server back at {time.monotonic() - t0:.0f} s")
        state = stack.wait_final(run_id, timeout=420)
    print(f"sweep done at {time.monotonic() - t0:.0f} s")
    assert state["type"] == "COMPLETED", (state, stack.logs(run_id)[-30:])
    cells = [r for r in stack.children(run_id) if r["name"].startswith("cell-")]
    assert [r["state"]["type"] for r in cells] == ["COMPLETED"], cells
    assert witness.versions() == {p.name: 1 for p in cell_outputs(cfg)}
