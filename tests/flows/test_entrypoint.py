"""The worker image's entrypoint (`docker/entrypoint.sh` → `flows/gpu_workers.py`): one worker per GPU,
each pinned with CUDA_VISIBLE_DEVICES. Before, a pod with 4 GPUs ran one worker with limit 1: one GPU
worked, three idled.

Driven for real (bash, the supervisor, its child processes) with a fake `nvidia-smi` on PATH and a fake
worker program (`SAE_SWEEP_WORKER_COMMAND`) that records its pin and waits for a signal; a loopback
HTTP server answers the entrypoint's `/api/health` wait. No Prefect server, no GPU.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from flows import gpu_workers

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"

FAKE_WORKER = """
import json, os, signal, sys, time
out = os.environ["FAKE_WORKER_DIR"]
gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
record = {"pid": os.getpid(), "gpu": gpu, "argv": sys.argv[1:]}

def stop(signum, frame):
    with open(os.path.join(out, f"stopped-{os.getpid()}"), "w") as f:
        f.write(signal.Signals(signum).name)
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
with open(os.path.join(out, f"started-{os.getpid()}.json"), "w") as f:
    json.dump(record, f)
if gpu == os.environ.get("FAKE_DIE_ON_GPU"):  # once every worker is up (with its handler set)
    while len([n for n in os.listdir(out) if n.startswith("started-")]) < int(os.environ["FAKE_WORKERS"]):
        time.sleep(0.05)
    sys.exit(3)
while True:
    time.sleep(0.1)
"""


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/api"
    server.shutdown()


def _bin_dir(tmp_path: Path, gpus: int | None) -> Path:
    """A PATH entry with `nvidia-smi` listing `gpus` GPUs (None: no nvidia-smi at all)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    if gpus is not None:
        smi = bin_dir / "nvidia-smi"
        smi.write_text("#!/bin/sh\n" + "".join(f"echo {i}\n" for i in range(gpus)))
        smi.chmod(0o755)
    return bin_dir


def _start(tmp_path: Path, api_url: str, gpus: int | None, **env: str) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "workers"
    out.mkdir()
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    path = f"{_bin_dir(tmp_path, gpus)}:/usr/bin:/bin"
    if gpus is None and shutil.which("nvidia-smi", path=path):
        pytest.skip("this machine has a real nvidia-smi in /usr/bin or /bin")
    full_env = {
        "PATH": path,
        "PYTHONPATH": str(ROOT),
        "PREFECT_API_URL": api_url,
        "SAE_SWEEP_WORKER_COMMAND": f"{sys.executable} {script}",
        "SAE_SWEEP_WORKER_NAME": "pod1",
        "FAKE_WORKER_DIR": str(out),
        **env,
    }
    proc = subprocess.Popen(
        ["bash", str(ENTRYPOINT)], env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    return proc, out


def _records(out: Path, count: int, proc: subprocess.Popen) -> list[dict]:
    deadline = time.monotonic() + 120  # a bound on waiting, not a timing assertion
    while len(list(out.glob("started-*.json"))) < count:
        assert proc.poll() is None or count == 0, proc.communicate()
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.05)
    time.sleep(0.2)  # a worker started after the expected ones would show up here
    return [json.loads(p.read_text()) for p in sorted(out.glob("started-*.json"))]


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    return proc.returncode


def test_four_gpus_four_pinned_workers_and_sigterm_reaches_all(tmp_path, api_url):
    proc, out = _start(tmp_path, api_url, gpus=4)
    records = _records(out, 4, proc)
    assert sorted(r["gpu"] for r in records) == ["0", "1", "2", "3"]
    names = sorted(r["argv"][r["argv"].index("--name") + 1] for r in records)
    assert names == ["pod1-gpu0", "pod1-gpu1", "pod1-gpu2", "pod1-gpu3"]
    for r in records:
        argv = r["argv"]
        assert argv[argv.index("--pool") + 1] == "gpu" and argv[argv.index("--limit") + 1] == "1"
    assert _stop(proc) == 0
    stopped = sorted(p.read_text() for p in out.glob("stopped-*"))
    assert stopped == ["SIGTERM"] * 4


def test_sae_sweep_gpus_chooses(tmp_path, api_url):
    proc, out = _start(tmp_path, api_url, gpus=4, SAE_SWEEP_GPUS="0,2", SAE_SWEEP_POOL="big")
    records = _records(out, 2, proc)
    assert sorted(r["gpu"] for r in records) == ["0", "2"]
    assert {r["argv"][r["argv"].index("--pool") + 1] for r in records} == {"big"}
    assert _stop(proc) == 0


def test_sae_sweep_gpus_none_is_one_cpu_worker():
    [(argv, env)] = gpu_workers.worker_commands({"SAE_SWEEP_GPUS": "none", "SAE_SWEEP_WORKER_NAME": "w"})
    assert "CUDA_VISIBLE_DEVICES" not in env and argv[argv.index("--name") + 1] == "w"


def test_no_nvidia_smi_one_cpu_worker(tmp_path, api_url):
    proc, out = _start(tmp_path, api_url, gpus=None)
    records = _records(out, 1, proc)
    assert len(records) == 1 and records[0]["gpu"] == "unset"
    assert records[0]["argv"][records[0]["argv"].index("--name") + 1] == "pod1"
    assert _stop(proc) == 0


def test_a_dying_worker_stops_the_others_and_the_entrypoint_exits_non_zero(tmp_path, api_url):
    proc, out = _start(tmp_path, api_url, gpus=3, FAKE_DIE_ON_GPU="1", FAKE_WORKERS="3")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "exited with code 3" in err.decode()
    records = [json.loads(p.read_text()) for p in out.glob("started-*.json")]
    assert sorted(r["gpu"] for r in records) == ["0", "1", "2"]
    assert sorted(p.read_text() for p in out.glob("stopped-*")) == ["SIGTERM", "SIGTERM"]


@pytest.mark.parametrize("value", ["0,0", "zero", "1;rm"])
def test_bad_gpu_lists_are_refused(value):
    with pytest.raises(gpu_workers.WorkerSetupError, match="SAE_SWEEP_GPUS"):
        gpu_workers.visible_gpus({"SAE_SWEEP_GPUS": value})


def test_the_real_default_is_a_prefect_process_worker(monkeypatch):
    env = {"SAE_SWEEP_GPUS": "1", "SAE_SWEEP_POOL": "gpu", "SAE_SWEEP_WORKER_NAME": "w", "PATH": os.defpath}
    [(argv, worker_env)] = gpu_workers.worker_commands(env)
    assert argv[:3] == ["prefect", "worker", "start"]
    assert argv[3:] == ["--pool", "gpu", "--type", "process", "--name", "w-gpu1", "--limit", "1"]
    assert worker_env["CUDA_VISIBLE_DEVICES"] == "1"
