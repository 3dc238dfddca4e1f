"""`sae-sweep runpod up|down|status` against a fake RunPod client with the SDK's methods (no network)."""

from __future__ import annotations

import pytest

from flows import runpod
from flows.cli import main


class FakeRunPod:
    """The `runpod` module's pod calls, keeping pods in memory as RunPod's API describes them."""

    def __init__(self) -> None:
        self.pods: list[dict] = [{"id": "other1", "name": "someone-elses-pod", "desiredStatus": "RUNNING"}]
        self.created: list[dict] = []
        self.terminated: list[str] = []
        self.stopped: list[str] = []

    def create_pod(self, name: str, image_name: str = "", gpu_type_id: str | None = None, **kwargs) -> dict:
        pod = {
            "id": f"pod{len(self.created)}",
            "name": name,
            "imageName": image_name,
            "desiredStatus": "RUNNING",
            "machine": {"gpuDisplayName": gpu_type_id},
            "costPerHr": 0.69,
        }
        self.created.append({"name": name, "image_name": image_name, "gpu_type_id": gpu_type_id, **kwargs})
        self.pods.append(pod)
        return pod

    def get_pods(self) -> list[dict]:
        return list(self.pods)

    def terminate_pod(self, pod_id: str) -> None:
        self.terminated.append(pod_id)
        self.pods = [p for p in self.pods if p["id"] != pod_id]

    def stop_pod(self, pod_id: str) -> None:
        self.stopped.append(pod_id)


@pytest.fixture
def fake(monkeypatch):
    client = FakeRunPod()
    monkeypatch.setattr(runpod, "make_client", lambda: client)
    monkeypatch.setenv("PREFECT_API_URL", "https://prefect.example.org/api")
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "admin:server-password-7c1e")
    monkeypatch.delenv(runpod.IMAGE_ENV, raising=False)
    return client


def test_up_status_down(fake, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    code = main(
        [
            "runpod",
            "up",
            "--pool",
            "gpu",
            "--gpu-type",
            "NVIDIA H100 80GB HBM3",
            "--count",
            "2",
            "--network-volume",
            "vol123",
            "--image",
            "me/worker:1",
            "--upload",
        ]
    )
    assert code == 0
    assert len(fake.created) == 2
    first = fake.created[0]
    assert first["gpu_type_id"] == "NVIDIA H100 80GB HBM3" and first["image_name"] == "me/worker:1"
    assert first["network_volume_id"] == "vol123" and first["volume_mount_path"] == "/workspace"
    assert first["env"]["PREFECT_API_URL"] == "https://prefect.example.org/api"
    assert first["env"]["SAE_SWEEP_POOL"] == "gpu" and first["env"]["HF_TOKEN"] == "hf_secret_value"
    assert first["name"].startswith("sae-sweep-gpu-0-") and first["gpu_count"] == 1
    out = capsys.readouterr().out
    assert "hf_secret_value" not in out and out.count("started pod") == 2
    assert "--set grid.pack_memory_gb=56 " in out  # 80 GB x 0.9 less the seed's 16 GB of data: its packs

    assert main(["runpod", "status", "--pool", "gpu"]) == 0
    listed = capsys.readouterr().out
    assert "sae-sweep-gpu-1-" in listed and "someone-elses-pod" not in listed and "$0.69/h" in listed

    assert main(["runpod", "down", "--pool", "gpu"]) == 0
    assert sorted(fake.terminated) == ["pod0", "pod1"] and fake.pods[0]["id"] == "other1"
    assert "terminated 2 pod(s)" in capsys.readouterr().out


def test_down_stop_only_keeps_pods(fake, capsys):
    runpod.pods_up(fake, runpod.PodRequest(count=1, image="me/worker:1"))
    assert main(["runpod", "down", "--stop-only"]) == 0
    assert fake.stopped == ["pod0"] and fake.terminated == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["runpod", "up", "--count", "0"], "--count: must be >= 1 (got 0)"),
        (
            ["runpod", "up", "--image", "me/w:1", "--gpus-per-pod", "0"],
            "--gpus-per-pod: must be >= 1 (got 0)",
        ),
        (["runpod", "up"], "--image: no worker image (pass --image or set SAE_SWEEP_IMAGE)"),
        (["runpod", "up", "--api-url", "http://127.0.0.1:4200/api"], "a pod cannot reach 127.0.0.1"),
        (["runpod", "up", "--pool", "my pool"], "--pool: must be a work pool name"),
    ],
)
def test_bad_requests_fail_before_any_pod(fake, capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err and fake.created == []


def test_missing_keys_are_named(monkeypatch, capsys):
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    assert main(["runpod", "status"]) == 2
    assert "RUNPOD_API_KEY: not set" in capsys.readouterr().err
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(runpod.DeployError, match="PREFECT_API_URL"):
        runpod.worker_env(runpod.PodRequest())


def test_gpus_per_pod_and_the_image_from_the_environment(fake, monkeypatch, capsys):
    """A multi-GPU pod is asked for as such (its entrypoint starts one worker per GPU); the image may
    come from SAE_SWEEP_IMAGE. Before, every pod had one GPU and a default image no one had published."""
    monkeypatch.setenv(runpod.IMAGE_ENV, "ghcr.io/me/sae-sweep-worker:v1")
    assert main(["runpod", "up", "--gpus-per-pod", "4", "--count", "2"]) == 0
    assert [c["gpu_count"] for c in fake.created] == [4, 4]
    assert {c["image_name"] for c in fake.created} == {"ghcr.io/me/sae-sweep-worker:v1"}
    assert {c["env"]["SAE_SWEEP_WORKER_LIMIT"] for c in fake.created} == {"1"}  # per worker, i.e. per GPU


def test_a_pod_gets_the_server_password_and_only_the_keys_its_stages_need(fake, monkeypatch, capsys):
    """The probe: every pod got every key (HF, OpenAI, WandB, Prefect) whatever its work, and not the
    self-hosted server's password, so pods could only reach an open server."""
    keys = {"HF_TOKEN": "hf_x1", "OPENAI_API_KEY": "sk-x2", "GROQ_API_KEY": "gsk_x3", "WANDB_API_KEY": "w4"}
    for name, value in {**keys, "SECRET_OF_SOMETHING_ELSE": "nope"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SAE_SWEEP_ALLOWED_KEY_ENVS", "OPENAI_API_KEY,GROQ_API_KEY")
    base = {"PREFECT_API_URL", "SAE_SWEEP_POOL", "SAE_SWEEP_WORKER_LIMIT"}

    env = runpod.worker_env(runpod.PodRequest())
    assert env["PREFECT_API_AUTH_STRING"] == "admin:server-password-7c1e"
    assert set(env) == base | {"PREFECT_API_AUTH_STRING", "SAE_SWEEP_ALLOWED_KEY_ENVS"}
    labelling = runpod.worker_env(runpod.PodRequest(label=True))
    assert {n for n in labelling if n in keys} == {"OPENAI_API_KEY", "GROQ_API_KEY"}
    everything = runpod.worker_env(runpod.PodRequest(label=True, upload=True, track_online=True))
    assert {n for n in everything if n in keys} == set(keys) and "SECRET_OF_SOMETHING_ELSE" not in everything

    monkeypatch.delenv("WANDB_API_KEY")
    with pytest.raises(runpod.DeployError, match=r"^--track-online: none of WANDB_API_KEY is set here"):
        runpod.worker_env(runpod.PodRequest(track_online=True))
    # No password for a self-hosted API: refused before any pod (Prefect Cloud needs PREFECT_API_KEY only).
    monkeypatch.delenv("PREFECT_API_AUTH_STRING")
    assert main(["runpod", "up", "--image", "me/worker:1"]) == 2
    assert "PREFECT_API_AUTH_STRING: not set" in capsys.readouterr().err and fake.created == []
    monkeypatch.setenv("PREFECT_API_KEY", "pnu_cloud")
    cloud = runpod.worker_env(
        runpod.PodRequest(api_url="https://api.prefect.cloud/api/accounts/a/workspaces/w")
    )
    assert cloud["PREFECT_API_KEY"] == "pnu_cloud" and "PREFECT_API_AUTH_STRING" not in cloud
