#!/usr/bin/env bash
# Entrypoint of the sae-sweep worker image: wait for the Prefect API, then start a process worker on
# the pool named by SAE_SWEEP_POOL. With arguments, run them instead (e.g. `sae-sweep run --preset demo`).
#
#   PREFECT_API_URL        required: the server's API, e.g. http://prefect.example.org:4200/api
#   SAE_SWEEP_POOL         work pool to poll (default: gpu)
#   SAE_SWEEP_WORKER_NAME  worker name (default: the RunPod pod id or the host name)
#   SAE_SWEEP_WORKER_LIMIT flow runs at once on this worker (default: 1 — one cell per GPU)
#   SAE_SWEEP_WAIT_S       seconds to wait for the API to answer before giving up (default: 120)
set -euo pipefail

if [ "$#" -gt 0 ]; then
  exec "$@"
fi

if [ -z "${PREFECT_API_URL:-}" ]; then
  echo "entrypoint: PREFECT_API_URL is not set (the Prefect server's API, e.g. http://host:4200/api)" >&2
  exit 2
fi

pool="${SAE_SWEEP_POOL:-gpu}"
name="${SAE_SWEEP_WORKER_NAME:-${RUNPOD_POD_ID:-$(hostname)}}"
limit="${SAE_SWEEP_WORKER_LIMIT:-1}"
wait_s="${SAE_SWEEP_WAIT_S:-120}"

case "$limit" in
  ''|*[!0-9]*) echo "entrypoint: SAE_SWEEP_WORKER_LIMIT must be a positive integer (got '$limit')" >&2; exit 2 ;;
esac
if [ "$limit" -lt 1 ]; then
  echo "entrypoint: SAE_SWEEP_WORKER_LIMIT must be a positive integer (got '$limit')" >&2
  exit 2
fi

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

echo "entrypoint: worker $name polling pool $pool at $PREFECT_API_URL (limit $limit)"
exec prefect worker start --pool "$pool" --type process --name "$name" --limit "$limit"
