"""The demo sweep through Prefect (the session's test harness), with relu and TopK cells (nosampling,
sampling, auxk): every cell's files, skipped labels, the report and the artifacts, the study's λ tables
holding the relu cells only; a second run is all cache hits; deleted outputs are recomputed; a failing
cell does not sink the others and the final state names it."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

import pytest

from flows.cli import main
from sae_core.config import load_config
from sae_core.naming import Cell
from tasks.paths import run_dir, sweep_dir

pytestmark = pytest.mark.slow

CELLS = [Cell(2, 0.01, "nosampling"), Cell(2, 0.01, "sampling")]
TOPK_CELLS = [Cell(2, 0.0, s, "topk", k=4) for s in ("nosampling", "sampling", "auxk")]
ALL_CELLS = CELLS + TOPK_CELLS
ARCHITECTURES = {
    "grid.architectures": ["relu", "topk"],
    "grid.strategies": ["nosampling", "sampling", "auxk"],
    "grid.k_values": [4],
}


def task_states(client, flow_run_id) -> dict[str, str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name: run.state.name for run in runs}


def run_logs(
    client, flow_run_id, expect: Callable[[list[str]], bool] = bool, timeout: float = 30
) -> list[str]:
    """The run's log messages, every page of them, read again until `expect` holds or `timeout` passes:
    Prefect ships log lines to the API in the background, so a read right after the flow returns can
    miss the last ones."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    while True:
        messages: list[str] = []
        while True:
            page = client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200, offset=len(messages)
            )
            messages += [log.message for log in page]
            if len(page) < 200:
                break
        if expect(messages) or time.monotonic() > deadline:
            return messages
        time.sleep(0.5)


def test_demo_sweep_caches_recomputes_and_isolates_failures(
    prefect_client, tiny_sweep_factory, tmp_path, capsys
):
    from flows.sweep import sae_sweep

    relu_only = tiny_sweep_factory(tmp_path / "data")
    overrides = {**relu_only, **ARCHITECTURES}
    cfg = load_config("demo", None, overrides)

    first = sae_sweep(preset="demo", overrides=overrides, return_state=True)
    assert first.is_completed(), first.message
    summary = first.result()
    assert summary["failed"] == [] and set(summary["cells"]) == {c.name for c in ALL_CELLS}
    for cell in ALL_CELLS:
        out = run_dir(cfg, cell)
        assert (out / cell.weights_filename).is_file()  # model_weights_2x_0.01_sampling.pth, …
        assert (out / "saelens" / "cfg.json").is_file() and (out / "analysis.json").is_file()
        assert (out / "labels.json").is_file()  # skipped: no endpoint configured
    report = sweep_dir(cfg) / "report"
    assert (report / "report.md").is_file() and (report / "report.html").is_file()
    report_md = (report / "report.md").read_text()
    assert "2x_topk4_auxk" in report_md  # the per-cell table lists every cell
    # the study's λ tables hold the relu cells only: no λ = 0 row (a topk cell has no λ)
    assert not [line for line in report_md.splitlines() if line.startswith("| 0.0 |")]
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    listed = prefect_client.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[first.state_details.flow_run_id])
        )
    )
    # The plan first, then one table and one markdown report (was five); progress per stage or cell.
    assert sorted(a.key for a in listed if a.type != "progress") == ["grid-demo", "plan-demo", "report-demo"]
    plan = {a.key: a for a in listed}["plan-demo"]
    assert plan.created == min(a.created for a in listed)  # before extraction's progress, even
    assert "# Plan of sweep `demo`" in plan.data and re.search(r"5 cells in \d+ packs", plan.data)
    progress = {a.key: a for a in listed if a.type == "progress"}
    assert "train-demo-2x-1e-2-sampling" in progress and "analyze-demo-2x-1e-2-nosampling" in progress
    assert all(a.data == 100.0 for a in progress.values())
    grid = {a.key: a for a in listed}["grid-demo"]
    assert "skipped [1]" in str(grid.data) and grid.description.count("labelling skipped") == 1
    assert "dead % (>0.07, test tokens)" in grid.description  # the threshold and token set counted on
    assert "data:image/png;base64," in {a.key: a for a in listed}["report-demo"].data
    # Extraction used to publish no progress (its total was unknown) and log nothing while it ran.
    assert progress["extract-demo"].data == 100.0

    def complete(messages: list[str]) -> bool:  # the extraction's and the training's last lines arrived
        return any(m.startswith("extracting ") and ": 100% " in m for m in messages) and any(
            m.startswith("training 2x_0.01_sampling: 100% ") for m in messages
        )

    logs = run_logs(prefect_client, first.state_details.flow_run_id, complete)
    assert any(re.match(r"extracting .*: 100% \(\d+/\d+ documents\)", m) for m in logs), logs
    trained = [m for m in logs if m.startswith("training 2x_0.01_sampling: 100% ")]
    assert trained and re.search(r"dead % \(training window\) \d+\.\d%\)$", trained[-1]), logs
    first_states = task_states(prefect_client, first.state_details.flow_run_id)
    assert first_states["train-2x-0.01-sampling"] == "Completed"
    assert first_states["cell-2x-0.01-sampling"] == first_states["cell-2x-0.01-nosampling"] == "Completed"

    # Second run of the same config: every stage with a cache is a hit, nothing is trained.
    log_mtimes = {c: (run_dir(cfg, c) / "train_log.parquet").stat().st_mtime_ns for c in ALL_CELLS}
    second = sae_sweep(preset="demo", overrides=overrides, return_state=True)
    assert second.is_completed(), second.message
    states = task_states(prefect_client, second.state_details.flow_run_id)
    cached = {
        name: state for name, state in states.items() if name.startswith(("extract", "train", "analyze"))
    }
    assert len(cached) == 1 + 2 * len(ALL_CELLS) and set(cached.values()) == {"Cached"}, states
    assert {c: (run_dir(cfg, c) / "train_log.parquet").stat().st_mtime_ns for c in ALL_CELLS} == log_mtimes

    # `sae-sweep run` goes through the same flow (cached now) and says where the report is.
    sets = [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    assert main(["run", "--preset", "demo", *[x for kv in sets for x in ("--set", kv)]]) == 0
    printed = capsys.readouterr().out
    assert "sweep demo completed in" in printed and f"report: {report / 'report.html'}" in printed

    # A deleted weights file is not served stale from the cache: that cell retrains, the other does not.
    gone = CELLS[1]
    (run_dir(cfg, gone) / gone.weights_filename).unlink()
    third = sae_sweep(preset="demo", overrides=overrides, return_state=True)
    assert third.is_completed(), third.message
    states = task_states(prefect_client, third.state_details.flow_run_id)
    assert states["train-2x-0.01-sampling"] == "Completed" and states["train-2x-0.01-nosampling"] == "Cached"
    assert (run_dir(cfg, gone) / gone.weights_filename).is_file()

    # A cell that cannot be written fails alone; the report still comes; the final state names it.
    broken = {**relu_only, "name": "broken"}  # the two relu cells
    bad_cfg = load_config("demo", None, broken)
    run_dir(bad_cfg, CELLS[0]).parent.mkdir(parents=True)
    run_dir(bad_cfg, CELLS[0]).write_text("a file where the run dir should be")
    broken_sets = [x for key, value in broken.items() for x in ("--set", f"{key}={json.dumps(value)}")]
    assert main(["run", "--preset", "demo", *broken_sets]) == 1
    assert "1 of 2 cells failed: 2x_0.01_nosampling" in capsys.readouterr().err
    assert (run_dir(bad_cfg, CELLS[1]) / CELLS[1].weights_filename).is_file()
    assert (sweep_dir(bad_cfg) / "report" / "report.md").is_file()


@pytest.mark.parametrize("bound", [1, 2])
def test_cells_run_as_task_runs_bounded_by_max_concurrency(prefect_client, monkeypatch, bound):
    """Each cell is a `cell-<cell>` task run of Prefect's thread-pool runner, at most
    `grid.max_concurrency` at once; a failing cell is recorded and the others go on; a stage a cell
    runs is a task run of its own, the cell's child."""
    import threading

    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    import flows.sweep as sweep

    cells = [Cell(2, 0.01, "nosampling"), Cell(2, 0.01, "sampling"), Cell(4, 0.01, "nosampling")]
    cfg = load_config("demo", None, {"grid.max_concurrency": bound})
    lock = threading.Lock()
    running = [0]
    peak = [0]

    @task(task_run_name="stage-{name}", cache_policy=NO_CACHE)
    def stage(name: str) -> None:
        time.sleep(0.1)

    def chain(store, cell, cfg):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        deadline = time.monotonic() + 10
        while cells.index(cell) < bound and peak[0] < bound and time.monotonic() < deadline:
            time.sleep(0.01)  # the first `bound` cells wait for each other: the peak is the bound, no less
        try:
            stage(cell.task_name)
            if cell == cells[1]:
                raise RuntimeError("disk full")
            return {"cell": cell.name, "status": "completed", "work_s": 1.0}
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(sweep, "run_cell_chain", chain)

    @flow
    def parent():
        return sweep.run_cells("store", cells, cfg)

    state = parent(return_state=True)
    outcomes = state.result()
    assert [o["cell"] for o in outcomes] == [c.name for c in cells]  # grid order, whatever finished first
    assert [o["status"] for o in outcomes] == ["completed", "failed", "completed"]
    assert outcomes[1] == {
        "cell": cells[1].name, "status": "failed", "error": "RuntimeError: disk full", "work_s": 0.0
    }  # fmt: skip
    assert peak[0] == bound
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = prefect_client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    )
    by_name = {run.name: run for run in runs}
    assert {n: r.state.name for n, r in by_name.items() if n.startswith("cell-")} == {
        "cell-2x-0.01-nosampling": "Completed",
        "cell-2x-0.01-sampling": "Failed",
        "cell-4x-0.01-nosampling": "Completed",
    }
    for cell in cells:
        parents = {i.id for i in by_name[f"stage-{cell.task_name}"].task_inputs.get("__parents__", [])}
        assert parents == {by_name[f"cell-{cell.task_name}"].id}, cell


def test_run_refuses_a_bad_config_before_starting_prefect(capsys):
    assert main(["run", "--set", "grid.expansion_factors=[0]"]) == 2
    assert "grid.expansion_factors: every expansion factor must be > 0 (got 0)" in capsys.readouterr().err


def test_flow_parameters_resolve_like_the_cli(tmp_path):
    from flows.sweep import resolve_sweep_config
    from sae_core.config import ConfigError

    cfg = resolve_sweep_config("demo", {"training.lr": 0.5, "data_root": "rel/data"})
    assert cfg.training.lr == 0.5 and cfg.grid.expansion_factors == [2, 4]
    assert cfg.data_root.startswith("/") and cfg.data_root.endswith("rel/data")  # absolute for workers
    full = load_config("seed").model_dump(mode="json")
    from_config = resolve_sweep_config("demo", {"grid.expansion_factors": [4]}, config=full)
    assert from_config.model.name == "gpt2" and from_config.grid.expansion_factors == [4]
    with pytest.raises(ConfigError, match=r"training\.lrr: unknown key"):
        resolve_sweep_config("demo", {"training.lrr": 1})
