"""Seed-shaped scale on CPU: what breaks at the study's widths, found without a GPU.

A GPT-2-small-shaped model (random weights, `GPT2Config()`: 12 blocks, d=768) with a locally trained
byte-level BPE tokenizer, a few hundred documents of stdlib docstrings at context 1024 (the extraction
benchmark's corpus), and one 32× cell (m = 24,576, the seed grid's widest) trained for a few steps of
4096, then analysed with the `seed` preset's analysis settings, labelled against a local
OpenAI-compatible fake (tests/fixtures_llm.py: real HTTP, the real `openai` client), browsed and
reported. Every stage is the `sae-sweep` CLI as a whole process, as a user runs it; each prints its wall
time and its peak resident memory (`ru_maxrss` of that process, from `os.wait4`), so anything that grows
with m² or with all tokens shows up as a stage whose memory jumps.

Run: `python benchmarks/seed_scale.py [--docs 300] [--steps 4] [--expansion 32]` (about 10 minutes on 2
cores at the defaults; `--docs 20 --steps 2 --expansion 4` checks the script in a minute).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAGES = ("extract", "train", "analyze", "label", "browse", "report")
sys.path[:0] = [str(HERE), str(HERE.parent)]  # extract.py's corpus builder; tests/fixtures_llm.py


def _stage(name: str, args: list[str], env: dict[str, str], rows: list[dict], skip=()) -> str:
    """Run one CLI stage as its own process; record wall seconds and that process's peak RSS. A
    skipped stage (`--from`) runs too, its figures not recorded: its outputs exist, so it returns at once
    (a complete store, a finished run) with the path later stages need."""
    if name in skip:
        rows = []
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out_box: dict[str, str] = {}
    readers = [
        threading.Thread(target=lambda: out_box.__setitem__("out", proc.stdout.read())),
        threading.Thread(target=lambda: out_box.__setitem__("err", proc.stderr.read())),
    ]
    for t in readers:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    for t in readers:
        t.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(out_box.get("out", "") + out_box.get("err", ""))
        raise SystemExit(f"stage {name} failed with exit code {proc.returncode}")
    cpu = usage.ru_utime + usage.ru_stime  # the steadier figure on a shared machine
    rows.append({"stage": name, "wall_s": wall, "cpu_s": cpu, "peak_rss_mib": usage.ru_maxrss / 1024})
    done = " (done before: outputs reused)" if name in skip else ""
    print(f"{name:10s} {wall:7.1f} s wall {cpu:7.1f} s cpu  peak RSS {usage.ru_maxrss / 1024:7.0f} MiB{done}")
    lines = out_box.get("out", "").strip().splitlines()
    return lines[-1].strip() if lines else ""


def start_fake_llm() -> tuple[ThreadingHTTPServer, str]:
    from tests.fixtures_llm import FakeLLM, _handler

    state = FakeLLM()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="fake-llm", daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=300, help="documents (mean ≈ 614 tokens)")
    parser.add_argument(
        "--steps", type=int, default=4, help="training steps of --batch tokens (≥ 2: one resampling)"
    )
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--expansion", type=int, default=32)
    parser.add_argument("--no-labels", action="store_true", help="skip the labelling stage")
    parser.add_argument("--json", type=Path, help="also write the table here")
    parser.add_argument(
        "--root", type=Path, help="reuse this folder (kept) and its earlier stages' outputs (with --from)"
    )
    parser.add_argument("--from", dest="start", choices=STAGES, default="extract", help="first stage run")
    parser.add_argument("--setup", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if args.setup is not None:
        from extract import build_model_and_docs

        _, texts = build_model_and_docs(args.setup, args.docs, seed=0)
        (args.setup / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        return

    root = args.root or Path(tempfile.mkdtemp(prefix="bench-seed-scale-"))
    server = None
    try:
        start = time.perf_counter()
        # In a child process: a child forked from a large parent starts with the parent's peak RSS.
        data_file, model_dir = root / "docs.jsonl", root / "gpt2-small-random"
        if not data_file.exists():
            setup = [sys.executable, __file__, "--setup", str(root), "--docs", str(args.docs)]
            subprocess.run(setup, check=True)
        print(f"setup (model, tokenizer, {args.docs} documents): {time.perf_counter() - start:.1f} s")
        run_stage = functools.partial(_stage, skip=STAGES[: STAGES.index(args.start)])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
        }
        common = [
            "--preset", "seed", "--set", f"data_root={root / 'data'}", "--set", "model.device=cpu",
            "--set", "tracking.mode=disabled",
        ]  # fmt: skip
        rows: list[dict] = []
        store = run_stage(
            "extract",
            [
                "extract", *common, "--set", f"model.name={model_dir}", "--set", "data.dataset=json",
                "--set", f"data.data_files={data_file}", "--set", "data.num_documents=null",
                "--set", "data.streaming=false",
            ],
            env,
            rows,
        )  # fmt: skip
        manifest = json.loads((Path(store) / "manifest.json").read_text())
        print(f"store: {manifest['num_tokens']} tokens, splits {manifest['splits']}", flush=True)
        m = args.expansion * 768
        cell = f"{args.expansion}x_0.0001_sampling"
        run_dir = root / "data" / "runs" / "scale" / cell
        run_stage(
            "train",
            [
                "train", "--activations", store, "--out", str(run_dir), "--expansion", str(args.expansion),
                "--l1", "0.0001", "--strategy", "sampling", *common[:2],
                "--set", "training.device=cpu", "--set", f"training.batch_size={args.batch}",
                "--set", "training.epochs=null", "--set", f"training.max_tokens={args.batch * args.steps}",
                "--set", "training.val_tokens=4096", "--set", "tracking.mode=disabled",
                "--set", f"training.resample_every={max(1, args.steps - 1)}",
            ],
            env,
            rows,
        )  # fmt: skip
        run_stage("analyze", ["analyze", "--activations", store, "--run", str(run_dir), *common], env, rows)
        if not args.no_labels:
            server, url = start_fake_llm()
            run_stage(
                "label",
                [
                    "label", "--run", str(run_dir), *common, "--set", f"labeling.base_url={url}",
                    "--set", "labeling.model=fake",
                ],
                {**env, "OPENAI_API_KEY": "sk-local-fake"},
                rows,
            )  # fmt: skip
        run_stage("browse", ["browse", "--run", str(run_dir)], env, rows)
        run_stage("report", ["report", "--sweep", str(run_dir.parent), *common], env, rows)
        sizes = {p.name: p.stat().st_size for p in run_dir.rglob("*") if p.is_file()}
        big = sorted(sizes.items(), key=lambda kv: -kv[1])[:6]
        print(f"m = {m}; largest files: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in big))
        print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        if args.json:
            args.json.write_text(json.dumps({"m": m, "docs": args.docs, "stages": rows}, indent=1))
    finally:
        if server is not None:
            server.shutdown()
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
