"""Prefect's share of a sweep's wall time.

Runs the sweep through `sae-sweep run` in a fresh process on a fresh data_root (nothing cached), then
compares, from that one run: the flow's wall time, the sum of the stage work the tasks measured around
their `sae_core` calls (extraction incl. building the demo model, training, analysis, labelling,
upload, report), and the process's end-to-end wall time (which adds Prefect's temporary server start-up).
Overhead = wall − stage work. Target: ≤ 15 % of the wall time.

    python benchmarks/sweep_overhead.py                 # the demo preset (a few minutes on a laptop CPU)
    python benchmarks/sweep_overhead.py --tiny          # a tiny model and 2 cells (about a minute)
    python benchmarks/sweep_overhead.py --set grid.max_concurrency=2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = [
    "model.layer=1",
    "data.num_documents=60",
    "data.context_length=64",
    "grid.expansion_factors=[2]",
    "grid.l1_coefficients=[0.01]",
    "training.epochs=1",
    "training.batch_size=64",
    "training.log_every=5",
    "training.val_every=20",
    "training.checkpoint_every=20",
    "training.resample_every=10",
    "training.resample_pool_tokens=1024",
    "training.val_tokens=256",
    "analysis.top_k_features=3",
    "analysis.examples_per_feature=3",
    "analysis.ce_loss_documents=4",
    "analysis.batch_size=512",
]

# Run inside the child: the flow itself, so its return value (wall_s, work_s) can be printed as JSON.
CHILD = """
import json, sys
from flows.sweep import sae_sweep
from sae_core.config import parse_set
sets = json.loads(sys.argv[1])
state = sae_sweep(preset=sys.argv[2], overrides=parse_set(sets), return_state=True)
print("RESULT " + json.dumps({"state": state.name, **(state.result() if state.is_completed() else {})}))
"""


def tiny_model(data_root: Path) -> None:
    from sae_core.extraction.demo import DemoModelSpec, build_demo_model, stdlib_docstrings

    texts = [d["text"] for d in stdlib_docstrings(max_docs=150)]
    spec = DemoModelSpec(n_layer=2, n_embd=32, n_head=2, n_positions=128, vocab_size=400, train_steps=0)
    build_demo_model(data_root / "builtin" / "demo-gpt2", texts, spec)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and 2 cells")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="KEY=VALUE override")
    parser.add_argument(
        "--demo-model",
        type=Path,
        help="an already built demo-gpt2 dir to copy in (skips its "
        "~80 s build, which would count as extraction work)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        data_root = Path(tmp) / "sae_data"
        sets = [f"data_root={data_root}", *(TINY if args.tiny else []), *args.sets]
        if args.tiny:
            tiny_model(data_root)
        elif args.demo_model:
            shutil.copytree(args.demo_model, data_root / "builtin" / "demo-gpt2")
        env = {**os.environ, "PREFECT_HOME": str(Path(tmp) / "prefect-home")}
        env.pop("PREFECT_API_URL", None)  # the temporary server, as a first `sae-sweep run` gets
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(sets), args.preset],
            env=env,
            capture_output=True,
            text=True,
        )
        end_to_end = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"sweep failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1].removeprefix("RESULT "))
    wall, work = result["wall_s"], result["work_s"]
    print(
        f"preset {args.preset}{' (tiny)' if args.tiny else ''}: "
        f"{len(result['cells'])} cells, {result['state']}"
    )
    print(f"end-to-end wall (process, incl. temporary server start): {end_to_end:7.1f} s")
    print(f"flow wall:                                                {wall:7.1f} s")
    print(f"stage work (sum of sae_core calls in tasks):              {work:7.1f} s")
    print(f"outside the flow (imports, temporary server start/stop):  {end_to_end - wall:7.1f} s")
    print(
        f"Prefect overhead within the flow: {wall - work:6.1f} s = "
        f"{(wall - work) / wall:.1%} of the flow wall"
    )
    print(
        f"overhead end to end (incl. server start, imports): {end_to_end - work:6.1f} s = "
        f"{(end_to_end - work) / end_to_end:.1%} of the end-to-end wall"
    )


if __name__ == "__main__":
    main()
