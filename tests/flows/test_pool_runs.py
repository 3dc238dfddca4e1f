"""A run that a sweep watches must send heartbeats more often than `grid.lost_after_s`, else the sweep
takes the healthy run as lost and starts the cell a second time: such a run stops at once, saying why."""

from __future__ import annotations

import pytest

from sae_core.config import load_config


def test_a_watched_run_with_seldom_heartbeats_stops_with_the_reason(prefect_harness, tmp_path, monkeypatch):
    from prefect import flow

    from flows.extract_flow import extract_flow

    monkeypatch.delenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", raising=False)  # Prefect's default: 180 s
    config = load_config("demo", None, {"data_root": str(tmp_path)}).model_dump(mode="json")

    @flow
    def sweep_like_parent() -> None:
        extract_flow(config=config)

    with pytest.raises(
        ValueError, match=r"PREFECT_FLOWS_HEARTBEAT_FREQUENCY is 180 .*grid.lost_after_s \(90\)"
    ):
        sweep_like_parent()
    assert not (tmp_path / "activations").exists()  # stopped before extracting anything


def test_a_run_queued_behind_a_busy_pool_is_never_lost_and_a_silent_claimed_one_is(prefect_harness):
    """Packs beyond the gpu pool's workers wait Scheduled (a worker at its `--limit`, a work-pool or
    deployment concurrency limit: `AwaitingConcurrencySlot`), for longer than `grid.lost_after_s`; the
    watcher must wait with them, and still take a claimed run without heartbeats as lost."""
    import threading
    import time

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import AwaitingConcurrencySlot, Completed, Running

    from flows.pool_runs import watch

    @flow(name="queued-pack")
    def queued() -> None:
        pass

    with get_client(sync_client=True) as client:
        waiting = client.create_flow_run(queued, state=AwaitingConcurrencySlot())
        silent = client.create_flow_run(queued, state=Running())
        outcomes: dict = {}
        thread = threading.Thread(target=lambda: outcomes.update(queued=watch(waiting.id, 0.5, poll_s=0.1)))
        thread.start()
        time.sleep(2.0)  # four times lost_after_s in the queue
        assert thread.is_alive()
        client.set_flow_run_state(waiting.id, Completed(), force=True)
        thread.join(timeout=30)
        assert outcomes["queued"].state == "COMPLETED"
        assert watch(silent.id, 0.5, poll_s=0.1).state == "LOST"
        assert client.read_flow_run(silent.id).state.type.value == "CRASHED"


@pytest.mark.parametrize("queue", [None, "a100"])
def test_stage_runs_go_to_the_work_queue_grid_names(monkeypatch, queue):
    """`grid.work_queue` places every pool run (extraction, packs, cells); None: the deployment's queue."""
    import uuid

    import prefect.deployments

    import flows.pool_runs as pool_runs

    calls: list[dict] = []

    def fake_run_deployment(**kwargs):
        calls.append(kwargs)
        return type("Run", (), {"id": uuid.uuid4()})()

    monkeypatch.setattr(prefect.deployments, "run_deployment", fake_run_deployment)
    monkeypatch.setattr(pool_runs, "watch", lambda run_id, *_: pool_runs.Outcome(run_id, "r", "COMPLETED"))
    cfg = load_config("demo", None, {"grid.placement": "pool", "grid.work_queue": queue})
    pool_runs.run_stage_deployment(cfg, "extract/extract", {}, key="k", run_name="extract", what="extraction")
    assert [c["work_queue_name"] for c in calls] == [queue] and calls[0]["name"] == "extract/extract"
