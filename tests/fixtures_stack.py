"""A real Prefect stack for the integration tests, shared by the whole session (a server costs ~30 s to
start and deploy on 2 cores): `prefect server start` on a free loopback port (temporary PREFECT_HOME), the
pools created, the project deployed from deployments/prefect.yaml, a process worker on each pool. Every
process started here is stopped here."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from prefect.client.base import PrefectHttpxSyncClient

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stack:
    """Processes of one Prefect stack; `stop()` kills each with its descendants."""

    def __init__(self, home: Path, port: int) -> None:
        self.home, self.port = home, port
        self.url = f"http://127.0.0.1:{port}/api"
        self.procs: list[subprocess.Popen] = []
        self.workers: dict[str, subprocess.Popen] = {}
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            # The UI is served too, so that a test can look at the artifacts as a user does; on a port
            # other than 4200 it must be told where its API is.
            "PREFECT_UI_API_URL": self.url,
        }
        # Prefect's own client: the SQLite-backed server answers 503 while another writer holds the
        # database (workers poll every second), and its clients retry those with backoff; a bare
        # httpx client made this test fail on a busy 2-core machine.
        self.http = PrefectHttpxSyncClient(base_url=self.url, timeout=30, raise_on_all_errors=False)

    def start(self, *args: str, log: str) -> subprocess.Popen:
        out = open(self.home / log, "ab")  # noqa: SIM115 — closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", *args],
            cwd=REPO,
            env=self.env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "prefect", "--no-prompt", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def kill(self, proc: subprocess.Popen) -> None:
        try:
            family = [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]
        except psutil.NoSuchProcess:
            family = []
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                self.kill(proc)
        self.http.close()

    def start_server(self) -> subprocess.Popen:
        """`prefect server start` on this stack's port and PREFECT_HOME (its SQLite database): called
        again after `kill(server)`, it is the same server restarted."""
        self.server = self.start(
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--analytics-off",
            log="server.log",
        )
        return self.server

    def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.http.get("/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"server not healthy; log:\n{(self.home / 'server.log').read_text()[-3000:]}")

    def trigger(self, deployment: str, parameters: dict) -> str:
        dep = self.http.get(f"/deployments/name/{deployment}")
        dep.raise_for_status()
        run = self.http.post(
            f"/deployments/{dep.json()['id']}/create_flow_run", json={"parameters": parameters}
        )
        run.raise_for_status()
        return run.json()["id"]

    def state(self, flow_run_id: str) -> dict:
        return self.http.get(f"/flow_runs/{flow_run_id}").json()["state"]

    def wait_final(self, flow_run_id: str, timeout: float = 240) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state(flow_run_id)
            if state and state["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
                return state
            time.sleep(1)
        raise AssertionError(
            f"flow run {flow_run_id} not final: {self.state(flow_run_id)}; logs:\n"
            + "\n".join(self.logs(flow_run_id)[-30:])
        )

    def children(self, flow_run_id: str) -> list[dict]:
        """The flow runs a sweep started as its subflows (its extraction and cells on the pool)."""
        body = {"flow_runs": {"parent_flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}
        return self.http.post("/flow_runs/filter", json=body).json()

    def logs(self, flow_run_id: str) -> list[str]:
        body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}
        return [row["message"] for row in self.http.post("/logs/filter", json=body).json()]

    def task_states(self, flow_run_id: str) -> dict[str, str]:
        body = {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200}
        rows = self.http.post("/task_runs/filter", json=body).json()
        return {row["name"]: row["state"]["name"] for row in rows}

    def artifact_keys(self) -> set[str]:
        return {a["key"] for a in self.http.post("/artifacts/filter", json={"limit": 200}).json() if a["key"]}


class FileWitness:
    """Every version of some files, seen by polling: an atomic write renames a new inode into place, so
    a file written twice shows two (inode, mtime) pairs."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.seen: dict[Path, set[tuple[int, int]]] = {p: set() for p in paths}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            for path in self.paths:
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                self.seen[path].add((st.st_ino, st.st_mtime_ns))
            time.sleep(0.05)

    def __enter__(self) -> FileWitness:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def versions(self) -> dict[str, int]:
        return {p.name: len(v) for p, v in self.seen.items()}


@pytest.fixture(scope="session")
def deployed(tmp_path_factory) -> Iterator[Stack]:
    """One server for the module: pools created, the project deployed, a worker on each pool. Workers
    see no SAE_SWEEP_DATA_ROOT and a temporary XDG_DATA_HOME (the per-user data directory)."""
    home = tmp_path_factory.mktemp("prefect-home")
    stack = Stack(home, free_port())
    stack.env.pop("SAE_SWEEP_DATA_ROOT", None)
    stack.env["XDG_DATA_HOME"] = str(home / "xdg")
    t0 = time.monotonic()
    try:
        stack.start_server()
        stack.wait_healthy()
        stack.cli("work-pool", "create", "default", "--type", "process")
        stack.cli("work-pool", "create", "gpu", "--type", "process")
        stack.cli("deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
        print(f"deployed at {time.monotonic() - t0:.0f} s")
        stack.workers["default"] = stack.start(
            "worker", "start", "--pool", "default", "--type", "process", log="w1.log"
        )
        # One flow run at a time, as the worker image runs them (one cell or pack per GPU).
        stack.workers["gpu"] = stack.start(
            "worker", "start", "--pool", "gpu", "--type", "process", "--limit", "1", log="gpu.log"
        )
        yield stack
    finally:
        stack.stop()
    assert all(p.poll() is not None for p in stack.procs)
