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
