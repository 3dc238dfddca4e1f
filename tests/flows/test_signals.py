"""SIGTERM and SIGINT end a command within seconds and leave no process behind (issue 20 item 5).

Python's default SIGTERM skipped the `atexit` that stops Prefect's temporary server (orphaned, 2 of 2),
and worker threads blocked in HTTP requests and retry delays kept an interrupted run alive for minutes.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from sae_core.config import load_config
from sae_core.naming import Cell
from tasks.cache import training_complete
from tasks.paths import run_dir
from tests.fixtures_llm import write_analysis
from tests.fixtures_stack import REPO

EXIT_WITHIN_S = 20.0


def _cli(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    out = open(log, "wb")  # noqa: SIM115 — closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=REPO,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: every process it starts can be found
    )


def _group(pgid: int) -> list[psutil.Process]:
    alive = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


def _terminate_and_time(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> float:
    """Send `sig` to the leader only (as `kill PID` or `timeout` would), return how long it took to
    exit; then no process of its group may be left."""
    start = time.monotonic()
    proc.send_signal(sig)
    try:
        proc.wait(timeout=60)
    finally:
        survivors = _group(proc.pid)
        for p in [*survivors, psutil.Process(proc.pid)] if proc.poll() is None else survivors:
            p.kill()
    elapsed = time.monotonic() - start
    deadline = time.monotonic() + 5
    while (survivors := _group(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not survivors, [p.cmdline() for p in survivors]
    return elapsed


def _wait_for(predicate, proc: subprocess.Popen, log: Path, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
        time.sleep(0.1)


@pytest.mark.integration
@pytest.mark.slow
def test_sigterm_stops_a_sweep_and_its_server_and_a_rerun_resumes(
    tmp_path, tiny_sweep_factory, prefect_harness
):
    # Long enough training (~240 steps, a checkpoint every 20) to be caught in the middle of it.
    overrides = {**tiny_sweep_factory(tmp_path / "data"), "training.epochs": 4, "name": "sigterm"}
    overrides["grid.strategies"] = ["nosampling"]
    cfg = load_config("demo", None, overrides)
    cell = Cell(2, 0.01, "nosampling")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # the temporary server
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    sets = [x for key, value in overrides.items() for x in ("--set", f"{key}={json.dumps(value)}")]
    log = tmp_path / "run.log"
    proc = _cli(["run", "--preset", "demo", *sets], env, log)
    t_start = time.monotonic()
    try:
        _wait_for(lambda: (run_dir(cfg, cell) / "checkpoint.pt").is_file(), proc, log)
        servers = [p for p in _group(proc.pid) if "uvicorn" in " ".join(p.cmdline())]
        assert servers, "the run's temporary Prefect server was not found in its process group"
        print(f"first checkpoint after {time.monotonic() - t_start:.1f} s")
    finally:
        elapsed = _terminate_and_time(proc)
    output = log.read_text(errors="replace")
    assert elapsed < EXIT_WITHIN_S, output[-3000:]
    assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "stopping on SIGTERM" in output
    assert not training_complete(cfg, cell)

    # The same command again (against the session's server, to spare a second server start) resumes
    # from the checkpoint the interrupted run left and completes.
    from flows.cli import main

    lines: list[str] = []
    record = logging.Handler()
    record.emit = lambda r: lines.append(r.getMessage())  # type: ignore[method-assign]
    resumer = logging.getLogger("sae_core.training.run_cell")  # Prefect's config stops propagation
    resumer.addHandler(record)
    level = resumer.level
    resumer.setLevel(logging.INFO)
    try:
        t0 = time.monotonic()
        assert main(["run", "--preset", "demo", *sets]) == 0
    finally:
        resumer.removeHandler(record)
        resumer.setLevel(level)
    assert training_complete(cfg, cell)
    assert any(f"{cell.name}: resuming from" in line for line in lines), lines
    print(f"SIGTERM to exit: {elapsed:.1f} s; re-run {time.monotonic() - t0:.1f} s")


@pytest.mark.integration
def test_sigterm_ends_labelling_blocked_on_an_endpoint_that_never_answers(tmp_path, prefect_harness):
    """The probe's `timeout 100 sae-sweep label` took 314 s to exit."""
    from prefect.settings import PREFECT_API_URL

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []

    def hold() -> None:  # accept every connection and never answer
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=hold, daemon=True).start()
    run = write_analysis(tmp_path / "run", {5: ("top", "Paris"), 9: ("bottom", "Rome")})
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "SIGNAL_TEST_KEY": "sk-test",
        "SAE_SWEEP_ALLOWED_KEY_ENVS": "SIGNAL_TEST_KEY@127.0.0.1",  # the operator allows it, bound to here
    }
    sets = {
        "labeling.base_url": f"http://127.0.0.1:{listener.getsockname()[1]}/v1",
        "labeling.api_key_env": "SIGNAL_TEST_KEY",
        "labeling.timeout_s": 300,
        "labeling.max_retries": 5,
        "data_root": str(tmp_path / "data"),
    }
    args = ["label", "--run", str(run), *(x for k, v in sets.items() for x in ("--set", f"{k}={v}"))]
    log = tmp_path / "label.log"
    proc = _cli(args, env, log)
    try:
        _wait_for(lambda: len(accepted) >= 1, proc, log, timeout=120)
    finally:
        elapsed = _terminate_and_time(proc)
        listener.close()
    output = log.read_text(errors="replace")
    assert elapsed < EXIT_WITHIN_S, output[-3000:]
    assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]
