"""`sae-sweep runpod up|down|status`: GPU workers for the `gpu` work pool on RunPod (see docs/deploy.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli.app import app

runpod_app = typer.Typer(
    help="Start, list and stop RunPod GPU workers for a Prefect work pool.", no_args_is_help=True
)
app.add_typer(runpod_app, name="runpod")

PoolOpt = Annotated[str, typer.Option("--pool", help="Work pool the workers poll.")]


@runpod_app.command("up")
def up(
    pool: PoolOpt = "gpu",
    gpu_type: Annotated[
        str, typer.Option("--gpu-type", help="RunPod GPU type id.")
    ] = "NVIDIA GeForce RTX 4090",
    count: Annotated[int, typer.Option("--count", "-n", help="Pods to start.")] = 1,
    gpus_per_pod: Annotated[
        int, typer.Option("--gpus-per-pod", help="GPUs per pod; the pod runs one worker per GPU.")
    ] = 1,
    image: Annotated[
        str | None,
        typer.Option(
            help="Worker image built from docker/Dockerfile and pushed by you; default $SAE_SWEEP_IMAGE "
            "(required: there is no public default)."
        ),
    ] = None,
    api_url: Annotated[
        str | None,
        typer.Option("--api-url", help="Prefect API URL reachable from RunPod; default $PREFECT_API_URL."),
    ] = None,
    network_volume: Annotated[
        str | None,
        typer.Option(
            "--network-volume", help="RunPod network volume id, mounted at /workspace: the shared data_root."
        ),
    ] = None,
    cloud: Annotated[str, typer.Option(help="SECURE, COMMUNITY or ALL.")] = "SECURE",
    disk_gb: Annotated[int, typer.Option("--disk-gb", help="Container disk per pod.")] = 30,
    label: Annotated[
        bool, typer.Option("--label", help="Forward the allowed LLM key variables set here: cells label.")
    ] = False,
    upload: Annotated[
        bool, typer.Option("--upload", help="Forward the Hub token (HF_TOKEN): cells upload.")
    ] = False,
    track_online: Annotated[
        bool, typer.Option("--track-online", help="Forward WANDB_API_KEY: cells track online.")
    ] = False,
) -> None:
    """Start COUNT pods of GPUS_PER_POD GPUs, each GPU a Prefect worker on POOL."""
    from flows import runpod

    req = runpod.PodRequest(
        pool=pool,
        gpu_type=gpu_type,
        count=count,
        gpus_per_pod=gpus_per_pod,
        image=image,
        api_url=api_url,
        network_volume_id=network_volume,
        cloud_type=cloud,
        container_disk_gb=disk_gb,
        label=label,
        upload=upload,
        track_online=track_online,
    )
    for pod in runpod.pods_up(runpod.make_client(), req):
        typer.echo(f"started {pod['id']}  {pod['name']}")
    _echo_pack_memory(gpu_type)


def _echo_pack_memory(gpu_type: str) -> None:
    """The `grid.pack_memory_gb` a sweep on these workers plans its packs with (`placement: pool`): the
    seed preset's, its training data held on the GPU beside the packs."""
    from flows import runpod
    from sae_core.config import load_config

    held = load_config("seed", None, {}).training.max_memory_gb
    figure = runpod.pack_memory_gb(gpu_type, held)
    if figure is None:
        typer.echo(
            f"packs: no memory figure for {gpu_type!r}: set grid.pack_memory_gb on the sweep yourself "
            "(GPU memory x 0.9 less training.max_memory_gb), else each pack run takes every cell"
        )
        return
    memory = runpod.GPU_MEMORY_GB[gpu_type]
    typer.echo(
        f"packs: a worker has {memory} GB ({gpu_type}); run the seed sweep with "
        f"--set grid.pack_memory_gb={figure:g} (90 % of it less training.max_memory_gb {held:g} for the "
        "data; the sae-sweep-seed deployment's overrides carry it for an 80 GB GPU)"
    )


@runpod_app.command("down")
def down(
    pool: Annotated[str | None, typer.Option("--pool", help="Only this pool's pods (default: all).")] = None,
    stop_only: Annotated[
        bool,
        typer.Option(
            "--stop-only", help="Stop instead of terminate (keeps the pod's disk, which is still billed)."
        ),
    ] = False,
) -> None:
    """Terminate (or stop) this project's worker pods."""
    from flows import runpod

    ids = runpod.pods_down(runpod.make_client(), pool, terminate=not stop_only)
    verb = "stopped" if stop_only else "terminated"
    typer.echo(f"{verb} {len(ids)} pod(s)" + (": " + ", ".join(ids) if ids else ""))


@runpod_app.command("status")
def status(
    pool: Annotated[str | None, typer.Option("--pool", help="Only this pool's pods (default: all).")] = None,
) -> None:
    """List this project's worker pods: id, name, status, GPU, price."""
    from flows import runpod

    pods = runpod.our_pods(runpod.make_client(), pool)
    if not pods:
        typer.echo("no sae-sweep pods")
    for pod in pods:
        typer.echo(runpod.describe(pod))
