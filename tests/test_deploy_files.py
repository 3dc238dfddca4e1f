"""The deployment files: prefect.yaml names what the flows expect, and the worker image's entrypoint
script behaves (run for real with bash, a stand-in `prefect` on PATH and a local health endpoint)."""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from sae_core.config import GridConfig

REPO = Path(__file__).resolve().parents[1]
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"


def test_prefect_yaml_matches_the_flows_and_config():
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert deployments["sae-sweep"]["work_pool"]["name"] == "default"
    assert deployments["train-cell"]["work_pool"]["name"] == "gpu"
    # grid.cell_deployment's default is `<flow name>/<deployment name>` of the train-cell deployment.
    from flows.train_cell import train_cell_flow

    assert f"{train_cell_flow.name}/train-cell" == GridConfig().cell_deployment
    # Extraction runs on the GPU pool too when placement is pool (it was the sweep's CPU worker's job).
    from flows.extract_flow import extract_flow

    assert deployments["extract"]["work_pool"]["name"] == "gpu"
    assert f"{extract_flow.name}/extract" == GridConfig().extract_deployment
    assert load_flow_from_entrypoint(deployments["extract"]["entrypoint"]).name == extract_flow.name
    # Packs of cells (grid.placement pool, grid.pack) are runs of train-pack on the gpu pool too.
    from flows.train_pack import train_pack_flow

    assert deployments["train-pack"]["work_pool"]["name"] == "gpu"
    assert f"{train_pack_flow.name}/train-pack" == GridConfig().pack_deployment
    assert load_flow_from_entrypoint(deployments["train-pack"]["entrypoint"]).name == train_pack_flow.name
    # The seed deployment plans its packs for an 80 GB GPU, the figure the RunPod launcher gives one.
    from flows.runpod import pack_memory_gb
    from sae_core.config import load_config

    held = load_config("seed", None, {}).training.max_memory_gb
    seed = deployments["sae-sweep-seed"]["parameters"]["overrides"]
    assert seed["grid.pack_memory_gb"] == pack_memory_gb("NVIDIA A100 80GB PCIe", held)
    # Runs on the gpu pool send heartbeats often enough for grid.lost_after_s to notice a lost worker.
    for name in ("extract", "train-cell", "train-pack"):
        env = deployments[name]["work_pool"]["job_variables"]["env"]
        assert int(env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]) < GridConfig().lost_after_s, name
    for dep in deployments.values():
        for schedule in dep.get("schedules", []):
            assert schedule["active"] is False and schedule["cron"]
    assert spec["pull"] == []

    assert load_flow_from_entrypoint(deployments["sae-sweep"]["entrypoint"]).name == "sae-sweep"


def test_run_form_offers_the_presets_and_describes_every_parameter():
    """The Custom run form showed `preset` as free text and no parameter descriptions."""
    from prefect.utilities.callables import parameter_schema

    from flows.sweep import sae_sweep
    from flows.train_cell import train_cell_flow
    from sae_core.config import preset_names

    sweep = parameter_schema(sae_sweep.fn).model_dump()["properties"]
    assert sweep["preset"]["enum"] == preset_names() == ["demo", "frontier", "seed", "smollm2"]
    cell = parameter_schema(train_cell_flow.fn).model_dump()["properties"]
    from flows.extract_flow import extract_flow

    extract = parameter_schema(extract_flow.fn).model_dump()["properties"]
    from flows.train_pack import train_pack_flow

    pack = parameter_schema(train_pack_flow.fn).model_dump()["properties"]
    for name, prop in [*sweep.items(), *cell.items(), *extract.items(), *pack.items()]:
        assert len(prop.get("description") or "") > 20, name


@pytest.fixture
def fake_prefect(tmp_path):
    """A `prefect` executable that records its arguments instead of starting a worker."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv.txt"
    script = bin_dir / "prefect"
    script.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {record}\n')
    script.chmod(0o755)
    return bin_dir, record


@pytest.fixture
def health_server():
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/api/health" else 404)
            self.end_headers()
            self.wfile.write(b"true")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api"
    server.shutdown()
    server.server_close()


def run_entrypoint(env: dict[str, str], bin_dir: Path, *args: str) -> subprocess.CompletedProcess:
    base = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *args], env={**base, **env}, capture_output=True, text=True, timeout=60
    )


def test_entrypoint_starts_a_worker_on_the_named_pool(fake_prefect, health_server):
    bin_dir, record = fake_prefect
    env = {"PREFECT_API_URL": health_server, "SAE_SWEEP_POOL": "gpu", "RUNPOD_POD_ID": "abc123"}
    done = run_entrypoint({**env, "SAE_SWEEP_GPUS": "none"}, bin_dir)
    # The fake worker exits at once: the supervisor reports it and exits 1 for a container restart.
    assert done.returncode == 1 and "exited with code 0" in done.stderr, done.stderr
    assert record.read_text().split() == [
        "worker",
        "start",
        "--pool",
        "gpu",
        "--type",
        "process",
        "--name",
        "abc123",
        "--limit",
        "1",
    ]


def test_entrypoint_refuses_without_api_url_or_with_a_bad_limit(fake_prefect, health_server):
    bin_dir, record = fake_prefect
    done = run_entrypoint({}, bin_dir)
    assert done.returncode == 2 and "PREFECT_API_URL is not set" in done.stderr
    done = run_entrypoint({"PREFECT_API_URL": health_server, "SAE_SWEEP_WORKER_LIMIT": "two"}, bin_dir)
    assert done.returncode == 2 and "SAE_SWEEP_WORKER_LIMIT" in done.stderr
    assert not record.exists()


def test_entrypoint_gives_up_on_an_unreachable_api(fake_prefect):
    bin_dir, record = fake_prefect
    done = run_entrypoint({"PREFECT_API_URL": "http://127.0.0.1:9/api", "SAE_SWEEP_WAIT_S": "1"}, bin_dir)
    assert done.returncode == 3 and "no answer from http://127.0.0.1:9/api/health" in done.stderr
    assert not record.exists()


def test_entrypoint_runs_a_given_command_instead(fake_prefect):
    bin_dir, record = fake_prefect
    done = run_entrypoint({}, bin_dir, "echo", "hello")
    assert done.returncode == 0 and done.stdout.strip() == "hello" and not record.exists()


def test_the_shipped_server_requires_a_password():
    """The probe: compose served the API on 0.0.0.0:4200 with no `PREFECT_SERVER_API_AUTH_STRING`, so
    anyone reaching it read Secret blocks and started runs. Now compose refuses to start without one
    (`${VAR:?message}`, never a default) and the worker presents the same string."""
    import re

    spec = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    services = spec["services"]
    required = re.compile(r"^\$\{PREFECT_SERVER_API_AUTH_STRING:\?[^}]+\}$")
    assert required.match(services["prefect-server"]["environment"]["PREFECT_SERVER_API_AUTH_STRING"])
    assert required.match(services["cpu-worker"]["environment"]["PREFECT_API_AUTH_STRING"])
    text = (REPO / "docker" / "compose.yaml").read_text()
    assert not re.search(r"AUTH_STRING:-", text)  # no default value anywhere
    # The database password too: required, never a default, wherever compose reads it.
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert not re.search(r"POSTGRES_PASSWORD:-", text)
    # compose reads `$(` outside a comment as an invalid interpolation: messages must not hold one.
    assert not [line for line in text.splitlines() if "$(" in line and not line.lstrip().startswith("#")]
    deploy = (REPO / "docs" / "deploy.md").read_text()
    assert "PREFECT_SERVER_API_AUTH_STRING" in deploy and "PREFECT_API_AUTH_STRING" in deploy
    assert "## Security model" in deploy


def test_one_default_worker_limit_everywhere(monkeypatch):
    """Compose said 2, RunPod and the code 1: now one constant, and every place that starts a worker
    agrees with it (compose leaves the variable unset, so the image's default holds)."""
    import re

    from flows import gpu_workers, runpod

    limit = gpu_workers.DEFAULT_WORKER_LIMIT
    assert limit == 1  # one run per GPU
    # The entrypoint's default: the supervisor's, when SAE_SWEEP_WORKER_LIMIT is unset.
    [(argv, _)] = gpu_workers.worker_commands({"SAE_SWEEP_GPUS": "none", "SAE_SWEEP_WORKER_NAME": "w"})
    assert argv[argv.index("--limit") + 1] == str(limit)
    documented = re.search(r"SAE_SWEEP_WORKER_LIMIT .*\(default: (\d+)", ENTRYPOINT.read_text())
    assert documented and documented.group(1) == str(limit)
    # compose: no override (or, if one comes back, the same figure).
    services = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())["services"]
    for name, service in services.items():
        assert service.get("environment", {}).get("SAE_SWEEP_WORKER_LIMIT", str(limit)) == str(limit), name
    # RunPod: the pods' environment states it.
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "u:p")
    env = runpod.worker_env(runpod.PodRequest(api_url="http://prefect.example.org:4200/api"))
    assert env["SAE_SWEEP_WORKER_LIMIT"] == str(limit)
    # The docs' hand-started workers: `--limit` is the same figure wherever they give one.
    for doc in ("README.md", "docs/deploy.md"):
        limits = set(re.findall(r"prefect worker start [^`\n]*--limit (\d+)", (REPO / doc).read_text()))
        assert limits <= {str(limit)}, (doc, limits)
