"""The worker image's supervisor: one Prefect process worker per GPU, each pinned to its GPU.

`docker/entrypoint.sh` runs `python -m flows.gpu_workers` once the Prefect API answers. It lists the
GPUs (`SAE_SWEEP_GPUS="0,2"` or `none` when set, else `nvidia-smi`; none: one CPU worker), starts
`prefect worker start --pool $SAE_SWEEP_POOL --type process --name <name>-gpu<i> --limit 1` (the limit:
`SAE_SWEEP_WORKER_LIMIT`, default `DEFAULT_WORKER_LIMIT`) for each with
`CUDA_VISIBLE_DEVICES=<i>`, and then:

- forwards SIGTERM / SIGINT to every worker and exits 0 once they have all stopped (`docker stop`);
- when a worker exits on its own, stops the others and exits 1: the container's restart policy (compose
  `restart: unless-stopped`, RunPod's restart of an exited container) starts the pod's workers afresh.
  A pod with a dead worker would look healthy while a GPU idles; the runs the others were training resume
  from their checkpoints.
- reaps every process re-parented to it (it is PID 1 in the container: flow-run subprocesses of a dead
  worker would otherwise stay zombies).

Why one worker per GPU rather than one worker handing out GPUs: a Prefect process worker has no notion
of a free GPU, and a run's environment is fixed when the worker starts it; pinning the worker pins its
runs, with no bookkeeping that could leak a GPU when a run crashes. `SAE_SWEEP_WORKER_COMMAND` replaces
`prefect worker start` (the arguments stay), so tests can drive the supervisor without a server.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping

DEFAULT_COMMAND = "prefect worker start"
DEFAULT_WORKER_LIMIT = 1
"""Flow runs at once per worker (`--limit`) unless `SAE_SWEEP_WORKER_LIMIT` says otherwise: one run per
GPU (a second run on the same GPU would share its memory and its compute), and one sweep at a time on the
compose CPU worker. The RunPod launcher and the docs use this figure; `tests/test_deploy_files.py` checks
that compose and the entrypoint agree with it."""
_GPU_ID = re.compile(r"^(\d+|GPU-[0-9A-Za-z-]+|MIG-[0-9A-Za-z/-]+)$")


class WorkerSetupError(Exception):
    """The environment names GPUs or settings the supervisor cannot use."""


def visible_gpus(env: Mapping[str, str]) -> list[str]:
    """GPU ids to pin one worker each to: `SAE_SWEEP_GPUS` (comma-separated indices or UUIDs, or `none`)
    when set, else the indices `nvidia-smi` lists; [] (one CPU worker) without `nvidia-smi` or with
    `none`."""
    override = env.get("SAE_SWEEP_GPUS", "").strip()
    if override.lower() == "none":  # a CPU worker even where GPUs are visible
        return []
    if override:
        gpus = [g.strip() for g in override.split(",") if g.strip()]
        bad = [g for g in gpus if not _GPU_ID.match(g)]
        if bad or len(set(gpus)) != len(gpus):
            raise WorkerSetupError(
                f"SAE_SWEEP_GPUS: expected distinct GPU indices or UUIDs like '0,2' (got {override!r})"
            )
        return gpus
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(env),
        )
    except FileNotFoundError:
        return []
    if listed.returncode != 0:
        # A GPU image whose driver is missing must not quietly train on the CPU.
        raise WorkerSetupError(
            f"nvidia-smi: failed with exit code {listed.returncode} ({listed.stderr.strip()[:200]}); "
            "set SAE_SWEEP_GPUS to choose GPUs, or check the container's --gpus option"
        )
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()]


def _positive(env: Mapping[str, str], key: str, default: str) -> str:
    value = env.get(key, default)
    if not value.isdigit() or int(value) < 1:
        raise WorkerSetupError(f"{key}: must be a positive integer (got {value!r})")
    return value


def worker_commands(env: Mapping[str, str]) -> list[tuple[list[str], dict[str, str]]]:
    """(argv, environment) of each worker to start."""
    pool = env.get("SAE_SWEEP_POOL", "gpu")
    limit = _positive(env, "SAE_SWEEP_WORKER_LIMIT", str(DEFAULT_WORKER_LIMIT))
    base = env.get("SAE_SWEEP_WORKER_NAME") or env.get("RUNPOD_POD_ID") or socket.gethostname()
    program = shlex.split(env.get("SAE_SWEEP_WORKER_COMMAND") or DEFAULT_COMMAND)
    gpus = visible_gpus(env)
    commands = []
    for gpu in gpus or [None]:
        name = base if gpu is None else f"{base}-gpu{gpu}"
        argv = [*program, "--pool", pool, "--type", "process", "--name", name, "--limit", limit]
        worker_env = dict(env)
        if gpu is not None:
            worker_env["CUDA_VISIBLE_DEVICES"] = gpu
        commands.append((argv, worker_env))
    return commands


def supervise(commands: list[tuple[list[str], dict[str, str]]]) -> int:
    """Run the workers until a signal (→ 0) or until one exits on its own (→ 1, the others stopped)."""
    stopping: list[int] = []
    procs: dict[int, subprocess.Popen] = {}

    def forward(signum: int, _frame: object) -> None:
        stopping.append(signum)
        for proc in procs.values():
            _signal(proc, signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    for argv, env in commands:
        # A session of its own: a terminal's Ctrl-C reaches the workers once, through `forward`
        # (Prefect's worker takes a second SIGINT as "kill now").
        proc = subprocess.Popen(argv, env=env, start_new_session=True)
        procs[proc.pid] = proc
        print(f"gpu_workers: started {' '.join(argv)} (pid {proc.pid}, "
              f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '(unset)')})", flush=True)  # fmt: skip
    code = 0
    while procs:
        try:
            pid, status = os.wait()  # also reaps orphans re-parented to us (PID 1)
        except ChildProcessError:
            break
        proc = procs.pop(pid, None)
        if proc is None:
            continue
        proc.returncode = os.waitstatus_to_exitcode(status)
        if not stopping:
            print(f"gpu_workers: worker pid {pid} ({proc.args[-3]}) exited with code {proc.returncode}; "
                  "stopping the others so the container restarts", file=sys.stderr, flush=True)  # fmt: skip
            stopping.append(signal.SIGTERM)
            code = 1
            for other in procs.values():
                _signal(other, signal.SIGTERM)
    return code


def _signal(proc: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signum)


def main() -> int:
    try:
        commands = worker_commands(os.environ)
    except WorkerSetupError as exc:
        print(f"gpu_workers: {exc}", file=sys.stderr)
        return 2
    return supervise(commands)


if __name__ == "__main__":
    sys.exit(main())
