"""The real thing, on the session's Prefect stack (tests/fixtures_stack.py: `prefect server start`, the
project deployed, process workers): the demo sweep triggered through the REST API as the UI does, its
extraction and cell on the gpu pool; then a sweep's own worker killed mid-training, restarted, and the
re-run resuming that cell from its checkpoint."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from sae_core.config import load_config
from sae_core.naming import Cell
from tasks.paths import run_dir, sweep_dir

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CELL = Cell(2, 0.01, "sampling")
STAGES = ("extract", "train", "analyze")  # the stages with a cache


def test_deployed_run_outputs_outlive_the_run(deployed, tiny_sweep_factory):
    """The process worker runs a flow run in a temporary directory it deletes afterwards: the default
    ./sae_data used to land there, so the outputs and the cache vanished with the run."""
    stack = deployed
    root = Path(stack.env["XDG_DATA_HOME"]) / "sae-sweep" / "sae_data"
    overrides = {**tiny_sweep_factory(root), "name": "lasting", "grid.strategies": ["sampling"]}
    del overrides["data_root"]  # the deployment's default
    first = stack.trigger("sae-sweep/sae-sweep", {"preset": "demo", "overrides": overrides})
    state = stack.wait_final(first)
    assert state["type"] == "COMPLETED", (state, stack.logs(first)[-20:])
    cfg = load_config("demo", None, {**overrides, "data_root": str(root)})
    assert (run_dir(cfg, CELL) / CELL.weights_filename).is_file()
    assert (sweep_dir(cfg) / "report" / "report.html").is_file()
    assert any("working directory is temporary" in m for m in stack.logs(first))
    assert re.fullmatch(r"demo-\d{8}-\d{6}", stack.http.get(f"/flow_runs/{first}").json()["name"])

    second = stack.trigger("sae-sweep/sae-sweep", {"preset": "demo", "overrides": overrides})
    state = stack.wait_final(second)
    assert state["type"] == "COMPLETED", (state, stack.logs(second)[-20:])
    stages = {name: state for name, state in stack.task_states(second).items() if name.startswith(STAGES)}
    assert len(stages) == 3 and set(stages.values()) == {"Cached"}, stack.task_states(second)


def test_the_sweeps_artifacts_render_in_the_ui(deployed):
    """The report artifact used to carry plots as file:// links the UI could not open: open the sweep's
    markdown report and grid table in the real UI (headless Chromium) and check that the plots are
    images the page shows and the tables are tables."""
    from tests.report.test_browser import CHROMIUM, Chromium

    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium); the UI rendering is untested")
    stack = deployed
    artifacts = stack.http.post("/artifacts/filter", json={"limit": 200, "sort": "CREATED_DESC"}).json()
    report = next(
        (a for a in artifacts if a["type"] == "markdown" and (a["key"] or "").startswith("report-")), None
    )
    grid = next((a for a in artifacts if a["type"] == "table" and (a["key"] or "").startswith("grid-")), None)
    assert report and grid, "the deployed sweep published no report or grid artifact"
    browser = Chromium(stack.home / "chromium-profile")
    try:
        base = f"http://127.0.0.1:{stack.port}/artifacts/artifact"
        browser.send("Page.navigate", url=f"{base}/{report['id']}")
        browser.wait_for(
            "[...document.querySelectorAll(\"img[src^='data:image/png']\")]"
            ".filter((i) => i.complete && i.naturalWidth > 0).length >= 2",
            timeout=90,
        )
        assert browser.js("document.querySelectorAll('table').length") >= 3  # the study's tables
        assert not browser.js("[...document.querySelectorAll('a')].some((a) => a.href.startsWith('file:'))")
        browser.screenshot("ui-report-artifact.png")
        browser.send("Page.navigate", url=f"{base}/{grid['id']}")
        # `document.body &&`: right after Page.navigate the new document may have no body yet.
        browser.wait_for("document.body && document.body.innerText.includes('monosemantic %')", timeout=90)
        assert browser.js("document.querySelectorAll('table tr, [role=row]').length") >= 2
        browser.screenshot("ui-grid-artifact.png")
    finally:
        browser.close()


def test_deploy_trigger_kill_and_resume(deployed, tmp_path, tiny_sweep_factory):
    stack = deployed
    t0 = time.monotonic()
    deployments = {d["name"]: d for d in stack.http.post("/deployments/filter", json={}).json()}
    assert {"sae-sweep", "sae-sweep-seed", "train-cell", "train-pack", "extract"} <= set(deployments)
    schedules = deployments["sae-sweep"]["schedules"]
    assert schedules and not any(s["active"] for s in schedules)  # shipped inactive
    form = stack.http.get("/deployments/name/sae-sweep/sae-sweep").json()["parameter_openapi_schema"]
    # a choice in the run form
    assert form["properties"]["preset"]["enum"] == ["demo", "frontier", "seed", "smollm2"]
    assert all(prop.get("description") for prop in form["properties"].values())

    # 1. The sweep on the default pool, its extraction and its cell as runs on the gpu pool.
    overrides = {
        **tiny_sweep_factory(tmp_path / "data"),
        "grid.strategies": ["sampling"],
        "grid.placement": "pool",
    }
    run_id = stack.trigger("sae-sweep/sae-sweep", {"preset": "demo", "overrides": overrides})
    state = stack.wait_final(run_id)
    assert state["type"] == "COMPLETED", (state, stack.logs(run_id)[-20:])
    cfg = load_config("demo", None, overrides)
    assert (run_dir(cfg, CELL) / CELL.weights_filename).is_file()
    assert (sweep_dir(cfg) / "report" / "report.html").is_file()
    assert {"grid-demo", "report-demo"} <= stack.artifact_keys()
    children = stack.children(run_id)
    assert sorted((r["name"][:21], r["work_pool_name"], r["state"]["type"]) for r in children) == [
        ("cell-2x-0.01-sampling", "gpu", "COMPLETED"),
        ("extract-activations", "gpu", "COMPLETED"),  # the sweep's own worker used to extract
    ]
    print(f"pool sweep done at {time.monotonic() - t0:.0f} s")

    # 2. Kill the worker (and its flow run) mid-training, restart it, re-run: the cell resumes.
    slow = {
        **overrides,
        "name": "resume",
        "grid.placement": "local",
        "training.max_tokens": 64 * 2500,
        "training.resample_every": 1000,
        "training.checkpoint_every": 200,
        "training.log_every": 100,
        "training.val_every": 1000,
    }
    killed_run = stack.trigger("sae-sweep/sae-sweep", {"preset": "demo", "overrides": slow})
    slow_cfg = load_config("demo", None, slow)
    checkpoint = run_dir(slow_cfg, CELL) / "checkpoint.pt"
    deadline = time.monotonic() + 240
    while not checkpoint.exists():
        assert time.monotonic() < deadline, stack.logs(killed_run)[-20:]
        assert stack.state(killed_run)["type"] not in {"COMPLETED", "FAILED", "CRASHED"}
        time.sleep(0.2)
    stack.kill(stack.workers["default"])
    print(f"killed at {time.monotonic() - t0:.0f} s")
    assert not (run_dir(slow_cfg, CELL) / "metrics.json").exists()  # it really died mid-cell
    stack.workers["default"] = stack.start(
        "worker", "start", "--pool", "default", "--type", "process", log="w2.log"
    )
    rerun = stack.trigger("sae-sweep/sae-sweep", {"preset": "demo", "overrides": slow})
    state = stack.wait_final(rerun)
    assert state["type"] == "COMPLETED", (state, stack.logs(rerun)[-20:])
    print(f"re-run done at {time.monotonic() - t0:.0f} s")
    resumed = [m for m in stack.logs(rerun) if "resumes from its checkpoint at step" in m]
    assert resumed, stack.logs(rerun)
    assert (run_dir(slow_cfg, CELL) / CELL.weights_filename).is_file()
