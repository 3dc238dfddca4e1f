"""Two `sae-sweep run` processes of one config at once, end to end: against one Prefect server (the
session's stack), and each with its own temporary server, sharing only data_root. Both must end Completed,
the cell must be trained once (the other process waits on the cell's lock and takes the result from the
cache) and no output file may be written twice (an atomic write renames a new inode into place: see
`FileWitness`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sae_core.config import load_config
from sae_core.naming import Cell
from tasks.extract import expected_store
from tasks.paths import run_dir
from tests.fixtures_stack import REPO, FileWitness

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CELL = Cell(2, 0.01, "sampling")


def start_sweep(overrides: dict, env: dict, log: Path) -> subprocess.Popen:
    args = [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    out = open(log, "wb")  # noqa: SIM115 — closed by the caller through the process
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "run",
            "--preset",
            "demo",
            *(x for a in args for x in ("--set", a)),
        ],
        cwd=REPO,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def run_twins(overrides: dict, envs: list[dict], tmp_path: Path) -> list[str]:
    """Both processes started together; their output once both ended, each asserted successful."""
    cfg = load_config("demo", None, overrides)
    out = run_dir(cfg, CELL)
    outputs_once = [
        Path(expected_store(cfg)) / "manifest.json",
        out / CELL.weights_filename,
        out / "metrics.json",
        out / "analysis.json",
        out / "features" / "examples.parquet",
    ]
    logs = [tmp_path / f"{cfg.name}-{i}.log" for i in range(len(envs))]
    with FileWitness(outputs_once) as witness:
        procs = [start_sweep(overrides, env, log) for env, log in zip(envs, logs, strict=True)]
        try:
            codes = [p.wait(timeout=600) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    outputs = [log.read_text(errors="replace") for log in logs]
    assert codes == [0, 0], [o[-3000:] for o in outputs]
    assert all(f"sweep {cfg.name} completed" in o for o in outputs)
    # Trained once: the training task logs its `trained:` line only when it ran (a cache hit does not).
    assert sum(o.count(f"{CELL.name} trained:") for o in outputs) == 1, [o[-3000:] for o in outputs]
    versions = witness.versions()
    assert versions == {p.name: 1 for p in witness.paths}, versions
    return outputs


@pytest.fixture
def twin_overrides(tmp_path, tiny_sweep_factory):
    def make(name: str) -> dict:
        return {**tiny_sweep_factory(tmp_path / "data"), "name": name, "grid.strategies": ["sampling"]}

    return make


def test_two_sweeps_of_one_config_on_one_server_train_each_cell_once(deployed, twin_overrides, tmp_path):
    """Before the cell's lock covered train → analyse → label, the second process analysed the cell again
    after the first (the analysis task missed the cache while the first was still writing)."""
    run_twins(twin_overrides("twins-one-server"), [deployed.env, deployed.env], tmp_path)


def test_two_sweeps_with_their_own_servers_share_data_root_safely(twin_overrides, tmp_path):
    """Two temporary servers know nothing of each other: only the file locks and the task cache under
    data_root keep the second process from extracting and training again."""
    envs = []
    for i in range(2):
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env["PREFECT_HOME"] = str(tmp_path / f"prefect-home-{i}")
        envs.append(env)
    run_twins(twin_overrides("twins-own-servers"), envs, tmp_path)
