#!/usr/bin/env bash
# The device check: the first thing a session with a GPU runs (issue 14 item 3, issue 19 item 5). Finishes
# in <= 8 minutes on one H200 and writes $OUT/figures.json (+ $OUT/check.log); see benchmarks/gpu/check.py
# for the figures: the CUDA tests (captured TopK/BatchTopK among them), the training rates per cell shape,
# extraction, a pack of seed cells through `train_pack` + each cell's `analyze_run` (what a `train-pack`
# run executes), and the seed grid's projected wall time from those rates.
#
#   bash benchmarks/gpu/check.sh          # on the device machine (CUDA)
#   bash benchmarks/gpu/check.sh --cpu    # smoke version here or in CI: tiny sizes, CPU, seconds
#
# Wheels. The device machine has PyTorch, transformers, pyarrow, pandas, safetensors, tqdm, pyyaml, pytest
# but no pydantic, no `datasets` and no network. Carry them in `.whl/` (git-ignored, with
# gpu-check-out/), built here once for its Python 3.12:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 \
#     typing-extensions datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
# (the versions this project is tested with, 2026-11-30; about 4 MB. pydantic and pydantic-core must be a
# matching pair, and datasets wants pyarrow >= 24 there.)
# and call the device tool with carry [".whl"] and command
#   PYTHONUNBUFFERED=1 bash benchmarks/gpu/check.sh 2>&1        (timeout_s 540 leaves time for one rerun)
# The script installs every wheel in $WHEELS (default .whl) into /tmp/site with --no-deps and puts it
# first on PYTHONPATH; with no such folder it uses what is installed (as on a dev machine and in CI).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu-check-out}"
WHEELS="${WHEELS:-.whl}"
mkdir -p "$OUT"
CPU=""
if [[ "${1:-}" == "--cpu" ]]; then CPU="--cpu"; fi

if compgen -G "$WHEELS/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
export CHECK_START="${CHECK_START:-$(date +%s)}"  # check.py's time boxes count from here

{
  echo "device check $(date -u +%FT%TZ) ${CPU:-cuda}"
  if [[ -z "$CPU" ]]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    # The CUDA-only tests: the test files that ask for CUDA, their tests with "cuda" in the name.
    files=$(grep -l "cuda.is_available" tests/test_*.py || true)
    if [[ -n "$files" ]]; then
      python3 -m pytest -q -x -k cuda -p no:cacheprovider $files && echo "cuda tests: passed" \
        || echo "cuda tests: FAILED"
    fi
  else
    echo "cuda tests: skipped (--cpu)"
  fi
  python3 benchmarks/gpu/check.py $CPU --out "$OUT"
} 2>&1 | tee "$OUT/check.log"
