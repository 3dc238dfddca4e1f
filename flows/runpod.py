"""GPU workers on RunPod: start pods from the worker image with the Prefect connection in their
environment, list them, stop them. Prefect has no RunPod integration, so this is the launcher.

Each pod runs `docker/entrypoint.sh`: one Prefect process worker per GPU of the pod (`--gpus-per-pod`),
each pinned to its GPU and polling one pool (default `gpu`), one flow run (one grid cell) at a time.
There is no default image: the one to run is `--image` or `SAE_SWEEP_IMAGE`, built from
`docker/Dockerfile` and pushed by you (or `.github/workflows/worker-image.yml`). Pods are named
`sae-sweep-<pool>-<n>-<suffix>`, which is how `down` and `status` find them. The client is the
`runpod` SDK module (`create_pod`, `get_pods`, `stop_pod`, `terminate_pod`); tests pass a fake with the
same methods.
"""

from __future__ import annotations

import os
import secrets as _random
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from flows.gpu_workers import DEFAULT_WORKER_LIMIT
from sae_core.config import HUB_TOKENS, LABELING_KEYS, allowed_envs
from sae_core.errors import SaeSweepError

POD_PREFIX = "sae-sweep"
IMAGE_ENV = "SAE_SWEEP_IMAGE"
# The Prefect connection: every pod needs it (Prefect Cloud's key, or a self-hosted server's password).
PREFECT_ENV = ("PREFECT_API_KEY", "PREFECT_API_AUTH_STRING")
# The worker's allow-lists (not secrets): a pod applies the launcher's, not the defaults, when set here.
ALLOW_LIST_ENV = (
    LABELING_KEYS.envs_var,
    LABELING_KEYS.blocks_var,
    HUB_TOKENS.envs_var,
    HUB_TOKENS.blocks_var,
)
WANDB_ENV = "WANDB_API_KEY"
CLOUD_HOSTS = {"api.prefect.cloud"}
"""Prefect Cloud authenticates with PREFECT_API_KEY; any other API must have a password."""


# GPU memory in GB (2^30 bytes, as nvidia-smi reports it, rounded down) by RunPod GPU type id: what one
# gpu worker's packs may plan for (`pack_memory_gb`). A type missing here gets no figure.
GPU_MEMORY_GB = {
    "NVIDIA GeForce RTX 3090": 24,
    "NVIDIA GeForce RTX 4090": 24,
    "NVIDIA GeForce RTX 5090": 32,
    "NVIDIA RTX A4000": 16,
    "NVIDIA RTX A5000": 24,
    "NVIDIA RTX A6000": 48,
    "NVIDIA RTX 4000 Ada Generation": 20,
    "NVIDIA RTX 6000 Ada Generation": 48,
    "NVIDIA L4": 24,
    "NVIDIA L40": 48,
    "NVIDIA L40S": 48,
    "NVIDIA A40": 48,
    "NVIDIA A100 80GB PCIe": 80,
    "NVIDIA A100-SXM4-80GB": 80,
    "NVIDIA H100 PCIe": 80,
    "NVIDIA H100 80GB HBM3": 80,
    "NVIDIA H100 NVL": 94,
    "NVIDIA H200": 141,
}

PACK_HEADROOM = 0.9
"""Share of a GPU's memory its packs plan for (the CUDA context, allocator fragmentation), as a pack
that measures its free memory does (`sae_core.training.pack_memory.HEADROOM`)."""


def pack_memory_gb(gpu_type: str, data_gb: float) -> float | None:
    """`grid.pack_memory_gb` for a worker on `gpu_type`: its memory × `PACK_HEADROOM` less `data_gb`, the
    training data held on the same GPU (at most `training.max_memory_gb`); None for a type not in
    `GPU_MEMORY_GB`, or too small to hold the data."""
    memory = GPU_MEMORY_GB.get(gpu_type)
    if memory is None:
        return None
    free = memory * PACK_HEADROOM - data_gb
    return round(free, 1) if free > 0 else None


class DeployError(SaeSweepError):
    """A worker launch that cannot work as asked (missing key, unreachable API URL, bad count)."""


@dataclass
class PodRequest:
    pool: str = "gpu"
    gpu_type: str = "NVIDIA GeForce RTX 4090"
    count: int = 1
    gpus_per_pod: int = 1
    image: str | None = None
    api_url: str | None = None
    network_volume_id: str | None = None
    volume_mount_path: str = "/workspace"
    cloud_type: str = "SECURE"
    container_disk_gb: int = 30
    extra_env: dict[str, str] = field(default_factory=dict)
    label: bool = False
    """Forward the labelling keys (the allowed LLM key variables set here): labelling runs on the pods."""
    upload: bool = False
    """Forward the Hub token: the pods' cells upload (`upload.repo_id`)."""
    track_online: bool = False
    """Forward WANDB_API_KEY: the pods' cells track online (`tracking.mode: online`)."""


def make_client() -> Any:
    """The `runpod` SDK, authenticated from `RUNPOD_API_KEY`."""
    key = os.environ.get("RUNPOD_API_KEY")
    if not key:
        raise DeployError("RUNPOD_API_KEY: not set (create a key in RunPod → Settings → API Keys)")
    import runpod

    runpod.api_key = key
    return runpod


def worker_env(req: PodRequest) -> dict[str, str]:
    """The pod's environment: where Prefect is, which pool to poll, and the secrets set here."""
    api_url = req.api_url or os.environ.get("PREFECT_API_URL")
    if not api_url:
        raise DeployError("--api-url: no Prefect API URL (pass --api-url or set PREFECT_API_URL)")
    host = urlparse(api_url).hostname or ""
    if host in {"localhost", "127.0.0.1", "0.0.0.0", "::1"}:
        raise DeployError(
            f"--api-url: a pod cannot reach {host}; use an address reachable from RunPod (got {api_url!r})"
        )
    # Stated, not left to the image: a pod running an older image gets the same one run per GPU.
    limit = str(DEFAULT_WORKER_LIMIT)
    env = {"PREFECT_API_URL": api_url, "SAE_SWEEP_POOL": req.pool, "SAE_SWEEP_WORKER_LIMIT": limit}
    names = [*PREFECT_ENV, *ALLOW_LIST_ENV, *secret_names(req)]
    env.update({name: os.environ[name] for name in names if os.environ.get(name)})
    if host not in CLOUD_HOSTS and not env.get("PREFECT_API_AUTH_STRING"):
        raise DeployError(
            "PREFECT_API_AUTH_STRING: not set; the pods would need an API without a password, which "
            "lets anyone who reaches it read Secret blocks and start runs. Set it to the server's "
            "PREFECT_SERVER_API_AUTH_STRING (docs/deploy.md, Security model)"
        )
    env.update(req.extra_env)
    return env


def secret_names(req: PodRequest) -> list[str]:
    """The keys the pods' stages need, by the launch options: none unless asked. Fails when an asked
    stage has no key here (use a Secret block instead and leave the option off)."""
    wanted: list[tuple[str, str, list[str]]] = []
    if req.label:
        wanted.append(("--label", LABELING_KEYS.envs_var, sorted(allowed_envs(LABELING_KEYS))))
    if req.upload:
        wanted.append(("--upload", HUB_TOKENS.envs_var, sorted(allowed_envs(HUB_TOKENS))))
    if req.track_online:
        wanted.append(("--track-online", WANDB_ENV, [WANDB_ENV]))
    names = []
    for option, _, candidates in wanted:
        present = [n for n in candidates if os.environ.get(n)]
        if not present:
            raise DeployError(
                f"{option}: none of {', '.join(candidates)} is set here to forward to the pods (set one, "
                "or keep the key in a Prefect Secret block named in the config and drop the option)"
            )
        names += present
    return names


def worker_image(req: PodRequest) -> str:
    """`--image`, else `$SAE_SWEEP_IMAGE`; there is no default (no public image is maintained)."""
    image = req.image or os.environ.get(IMAGE_ENV)
    if not image:
        raise DeployError(
            f"--image: no worker image (pass --image or set {IMAGE_ENV}); build docker/Dockerfile and "
            "push it where RunPod can pull it, e.g. ghcr.io/<you>/sae-sweep-worker:<tag> (docs/deploy.md)"
        )
    return image


def _check(req: PodRequest) -> None:
    if req.count < 1:
        raise DeployError(f"--count: must be >= 1 (got {req.count})")
    if req.gpus_per_pod < 1:
        raise DeployError(f"--gpus-per-pod: must be >= 1 (got {req.gpus_per_pod})")
    if not req.pool or any(c in req.pool for c in " /"):
        raise DeployError(f"--pool: must be a work pool name without spaces or slashes (got {req.pool!r})")


def pods_up(client: Any, req: PodRequest) -> list[dict[str, Any]]:
    """Start `req.count` worker pods of `req.gpus_per_pod` GPUs (one worker each); returns [{id, name}]."""
    _check(req)
    env = worker_env(req)
    image = worker_image(req)
    suffix = _random.token_hex(3)
    started = []
    for index in range(req.count):
        name = f"{POD_PREFIX}-{req.pool}-{index}-{suffix}"
        pod = client.create_pod(
            name=name,
            image_name=image,
            gpu_type_id=req.gpu_type,
            cloud_type=req.cloud_type,
            gpu_count=req.gpus_per_pod,
            container_disk_in_gb=req.container_disk_gb,
            network_volume_id=req.network_volume_id,
            volume_mount_path=req.volume_mount_path,
            env=env,
            start_ssh=False,
            support_public_ip=False,
        )
        started.append({"id": pod.get("id"), "name": name})
    return started


def our_pods(client: Any, pool: str | None = None) -> list[dict[str, Any]]:
    """This project's pods (all pools, or one)."""
    prefix = f"{POD_PREFIX}-{pool}-" if pool else f"{POD_PREFIX}-"
    return [p for p in client.get_pods() or [] if str(p.get("name", "")).startswith(prefix)]


def pods_down(client: Any, pool: str | None, *, terminate: bool = True) -> list[str]:
    """Terminate (or only stop: the pod's disk is kept and still billed) this project's pods."""
    done = []
    for pod in our_pods(client, pool):
        (client.terminate_pod if terminate else client.stop_pod)(pod["id"])
        done.append(pod["id"])
    return done


def describe(pod: dict[str, Any]) -> str:
    machine = pod.get("machine") or {}
    gpu = machine.get("gpuDisplayName") or pod.get("gpuTypeId") or "?"
    cost = pod.get("costPerHr")
    price = f"${cost}/h" if cost is not None else "-"
    return f"{pod.get('id')}  {pod.get('name')}  {pod.get('desiredStatus', '?')}  {gpu}  {price}"
