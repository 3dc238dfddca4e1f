#!/usr/bin/env bash
# Entrypoint of the sae-sweep worker image: wait for the Prefect API, then start one Prefect process
# worker per visible GPU (`flows/gpu_workers.py`), each pinned with CUDA_VISIBLE_DEVICES; without a GPU,
# one CPU worker. With arguments, run them instead (e.g. `sae-sweep run --preset demo`).
#
#   PREFECT_API_URL          required: the server's API, e.g. http://prefect.example.org:4200/api
#   SAE_SWEEP_POOL           work pool to poll (default: gpu)
#   SAE_SWEEP_GPUS           GPUs to use, e.g. "0,2", or "none" for one CPU worker (default: every GPU
#                            nvidia-smi lists; one CPU worker where there is no nvidia-smi)
#   SAE_SWEEP_WORKER_NAME    worker name prefix (default: the RunPod pod id or the host name); -gpu<i> added
#   SAE_SWEEP_WORKER_LIMIT   flow runs at once per worker (default: 1 — one run per GPU;
#                            flows/gpu_workers.py DEFAULT_WORKER_LIMIT)
#   SAE_SWEEP_WAIT_S         seconds to wait for the API to answer before giving up (default: 120)
#   SAE_SWEEP_WORKER_COMMAND replaces `prefect worker start` (tests); its arguments stay the same
#
# SIGTERM/SIGINT are forwarded to every worker. When one worker exits on its own, the others are stopped
# and the container exits 1, for its restart policy to start them all again (docs/deploy.md).
set -euo pipefail

if [ "$#" -gt 0 ]; then
  exec "$@"
fi

if [ -z "${PREFECT_API_URL:-}" ]; then
  echo "entrypoint: PREFECT_API_URL is not set (the Prefect server's API, e.g. http://host:4200/api)" >&2
  exit 2
fi

wait_s="${SAE_SWEEP_WAIT_S:-120}"
# The server may still be starting (compose) or the pod may boot before the network is up.
deadline=$(( $(date +%s) + wait_s ))
until python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1].rstrip('/') + '/health', timeout=5)" \
    "$PREFECT_API_URL" >/dev/null 2>&1; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "entrypoint: no answer from $PREFECT_API_URL/health after ${wait_s} s" >&2
    exit 3
  fi
  sleep 2
done

echo "entrypoint: pool ${SAE_SWEEP_POOL:-gpu} at $PREFECT_API_URL"
exec python -m flows.gpu_workers
