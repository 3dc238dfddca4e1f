"""The demo sweep with `grid.pack: device` (forced on a CPU): one `train-pack-[…]` task trains the cells
together, each cell keeps its own progress artifact, its own train task (and so its own cache key) and
its analysis; the weights equal those of the unpacked sweep; a second run is all cache hits."""

from __future__ import annotations

import pytest
import torch

from sae_core.config import load_config
from sae_core.naming import Cell
from tasks.paths import run_dir
from tests.flows.test_flow import task_states

pytestmark = pytest.mark.slow

CELLS = [Cell(2, 0.01, "nosampling"), Cell(2, 0.01, "sampling")]


def test_a_packed_sweep_is_one_training_task_with_per_cell_progress_and_caches(
    prefect_client, tiny_sweep_factory, tmp_path
):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.sweep import sae_sweep

    overrides = tiny_sweep_factory(tmp_path / "data")
    packed = {**overrides, "grid.pack": "device"}
    first = sae_sweep(preset="demo", overrides=packed, return_state=True)
    assert first.is_completed(), first.message
    flow_run_id = first.state_details.flow_run_id
    states = task_states(prefect_client, flow_run_id)
    assert states["train-pack-[2x-0.01-nosampling+2x-0.01-sampling]"] == "Completed", states
    for cell in CELLS:  # each cell's own task ran after the pack and found its run complete
        assert states[f"train-{cell.task_name}"] == "Completed"
        assert states[f"analyze-{cell.task_name}"] == "Completed"
    listed = prefect_client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )
    progress = {a.key: a.data for a in listed if a.type == "progress"}
    assert progress["train-demo-2x-1e-2-sampling"] == 100.0
    assert progress["train-demo-2x-1e-2-nosampling"] == 100.0

    # The same cells unpacked (another sweep name, so other run dirs): the same weights.
    solo = {**overrides, "grid.pack": "none", "name": "solo"}
    alone = sae_sweep(preset="demo", overrides=solo, return_state=True)
    assert alone.is_completed(), alone.message
    assert not any(
        n.startswith("train-pack") for n in task_states(prefect_client, alone.state_details.flow_run_id)
    )
    cfg_packed, cfg_solo = load_config("demo", None, packed), load_config("demo", None, solo)
    for cell in CELLS:
        a = torch.load(run_dir(cfg_packed, cell) / cell.weights_filename)
        b = torch.load(run_dir(cfg_solo, cell) / cell.weights_filename)
        assert all(torch.equal(a[k], b[k]) for k in a), cell.name

    # Second packed run: nothing to train, so no pack task; each cell's train task is a cache hit.
    second = sae_sweep(preset="demo", overrides=packed, return_state=True)
    assert second.is_completed(), second.message
    states = task_states(prefect_client, second.state_details.flow_run_id)
    assert not any(n.startswith("train-pack") for n in states), states
    assert {states[f"train-{c.task_name}"] for c in CELLS} == {"Cached"}
