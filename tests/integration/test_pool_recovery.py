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
from sae_core.naming import Cell, grid_cells
from tasks.paths import run_dir
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


def worker_mid_pack(stack, workers: list, cfg, sweep_id: str, timeout: float = 300) -> tuple:
    """A worker whose flow run (its subprocess's PREFECT__FLOW_RUN_ID) is a train-pack run with every
    cell past its first checkpoint and none finished; and that pack's cells."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert stack.state(sweep_id)["type"] not in {"COMPLETED", "FAILED", "CRASHED"}, stack.logs(sweep_id)
        for worker in workers:
            try:
                runs = {
                    p.environ().get("PREFECT__FLOW_RUN_ID") for p in psutil.Process(worker.pid).children(True)
                }
            except psutil.Error:  # a flow-run process that ended meanwhile
                continue
            for run_id in runs - {None}:
                run = stack.http.get(f"/flow_runs/{run_id}").json()
                pack = run.get("parameters", {}).get("cells") or []
                outs = [run_dir(cfg, Cell.parse(c)) for c in pack]
                started = all((o / "checkpoint.pt").exists() for o in outs)
                if pack and started and not any((o / "metrics.json").exists() for o in outs):
                    return worker, pack
        time.sleep(0.1)
    raise AssertionError(f"no worker mid-pack within {timeout} s: {stack.logs(sweep_id)[-20:]}")


# The demo's 8-cell grid, equal widths (4 λ × 2 strategies at 2x), packed 4 to a pack on CPU by
# `grid.pack_memory_gb` (the same planner as local placement), trained long enough that a kill lands
# mid-pack after the cells' first checkpoint.
PACKED_GRID = {
    "grid.expansion_factors": [2],
    "grid.l1_coefficients": [0.01, 0.003, 0.001, 0.0003],
    "grid.strategies": ["nosampling", "sampling"],
    "grid.placement": "pool",
    "grid.pack": "device",
    "training.max_tokens": 64 * 1200,
    "training.resample_every": 500,
    "training.checkpoint_every": 100,
    "training.log_every": 100,
    "training.val_every": 600,
}


def memory_of_four_cells(cfg) -> float:
    """`grid.pack_memory_gb` that holds four of the grid's cells and not five (the tiny GPT-2 is 32 wide)."""
    from sae_core.training.pack_memory import cell_bytes, evaluation_bytes

    d, m, batch = 32, 64, cfg.training.batch_size
    one = cell_bytes(d, m, batch, "relu", cfg.training.val_tokens)
    return (4 * one + one // 2 + evaluation_bytes(m, cfg.training.val_tokens)) / 2**30


def test_a_packed_pool_sweep_survives_a_lost_worker(deployed, tmp_path, tiny_sweep_factory):
    """With `placement: pool` every cell used to be its own train-cell run, reading the whole split and
    training alone. Now the sweep plans packs (4 cells each here) and submits one train-pack run per pack
    to the two gpu workers. One worker is killed mid-pack (`kill -9`, with its flow run): the sweep notices
    the missing heartbeats, marks the run Crashed, submits the pack again, the other worker resumes every
    one of its cells from its checkpoint; the sweep's own train and analyze tasks are cache hits on what
    the pack runs persisted, each cell has its progress artifact, and the weights equal the same grid
    trained with local placement, bit for bit."""
    from sae_core.training import train_pack
    from tasks.progress import artifact_key

    stack = deployed
    second = stack.start(
        "worker", "start", "--pool", "gpu", "--type", "process", "--limit", "1", log="gpu2.log"
    )
    overrides = {
        **tiny_sweep_factory(tmp_path / "data"),
        **PACKED_GRID,
        "name": "lost",
        "grid.lost_after_s": 40,  # above the deployments' 30 s heartbeat
    }
    overrides["grid.pack_memory_gb"] = memory_of_four_cells(load_config("demo", None, overrides))
    cfg = load_config("demo", None, overrides)
    cells = grid_cells(cfg.grid)
    assert len(cells) == 8
    t0 = time.monotonic()
    run_id = stack.trigger("sae-sweep/sae-sweep", {"preset": "demo", "overrides": overrides})
    victim, pack = worker_mid_pack(stack, [stack.workers["gpu"], second], cfg, run_id)
    stack.kill(victim)
    killed_wall = time.time()
    print(f"killed the worker of {pack} at {time.monotonic() - t0:.0f} s")
    assert not any((run_dir(cfg, Cell.parse(c)) / "metrics.json").exists() for c in pack)  # mid-pack

    state = stack.wait_final(run_id, timeout=420)
    print(f"sweep done at {time.monotonic() - t0:.0f} s")
    assert state["type"] == "COMPLETED", (state, stack.logs(run_id)[-30:])
    children = stack.children(run_id)
    assert not [r["name"] for r in children if r["name"].startswith("cell-")]  # no run per cell
    packs = sorted(
        (r["created"], r["state"]["type"], r["id"], tuple(r["parameters"]["cells"]))
        for r in children
        if r["name"].startswith("train-pack-")
    )
    assert sorted(kind for _, kind, _, _ in packs) == ["COMPLETED", "COMPLETED", "CRASHED"], packs
    assert sorted(len(c) for _, _, _, c in packs) == [4, 4, 4]
    lost = next(p for p in packs if p[1] == "CRASHED")
    rerun = next(p for p in packs if p[1] == "COMPLETED" and p[3] == lost[3] and p[0] > lost[0])
    noticed = datetime.fromisoformat(stack.state(lost[2])["timestamp"]).timestamp() - killed_wall
    print(f"the lost pack run was marked Crashed {noticed:.0f} s after the kill")
    assert any("was lost" in m and "submitting it again" in m for m in stack.logs(run_id)), stack.logs(run_id)
    resumed = [m for m in stack.logs(rerun[2]) if "resumes from its checkpoint at step" in m]
    assert sorted(m.split()[0] for m in resumed) == sorted(lost[3]), resumed
    sweep_tasks = stack.task_states(run_id)
    for cell in cells:  # the sweep's own stages found the pack runs' results
        assert sweep_tasks[f"train-{cell.task_name}"] == "Cached", sweep_tasks
        assert sweep_tasks[f"analyze-{cell.task_name}"] == "Cached", sweep_tasks
    assert {artifact_key("train", cfg.name, c.task_name) for c in cells} <= stack.artifact_keys()

    # The same grid trained with local placement (its packs, in this process) equals the pool's.
    store = next((Path(cfg.data_root) / "activations").iterdir())
    local = {c.name: tmp_path / "local" / c.name for c in cells}
    train_pack(
        store,
        cells,
        cfg.model_copy(update={"grid": cfg.grid.model_copy(update={"placement": "local"})}),
        local,
    )
    for cell in cells:
        pooled = torch.load(run_dir(cfg, cell) / cell.weights_filename, map_location="cpu")
        reference = torch.load(local[cell.name] / cell.weights_filename, map_location="cpu")
        assert pooled.keys() == reference.keys()
        assert all(torch.equal(pooled[k], reference[k]) for k in reference), cell.name
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
