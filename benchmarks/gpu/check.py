"""The device check's measurements (run by check.sh; see its header). Writes `$OUT/figures.json` and
prints one line per figure. `--cpu`: a smoke version at tiny sizes (seconds), so the script cannot rot.

Figures (tok/s = training or extraction tokens per wall second, steady state where it says so):
- train: d=768, 4×/8×/16×/32×, batch 32 (eager; `training.capture`; packed ×4 and ×16 cells of the
  width, captured on CUDA, per cell and in total) and batch 4096 (fp32, bf16 autocast); TopK and
  BatchTopK (k = 32) at batch 32, eager and under `training.capture` (whether the step was captured or
  fell back to eager is recorded beside the figure). Steady state: two runs of different lengths, the
  difference divided (setup, the first step's allocations and the final evaluation cancel).
- extract: a GPT-2-small-shaped model (random weights) at context 1024: `extract_activations` end to
  end (model load, dataset, tokenizer included) vs the study's method (padding to 1024, batch 2, every
  hidden state, fp32 `torch.save`; its slow tokenizer and model load left out, so the ratio is
  conservative).
- deployed_pack: what a `train-pack` run executes, on that store: `train_pack` (the sweep's pack code:
  memory plan, shared batches, run dirs, checkpoints, resampling) of seed-preset cells, one per width,
  then `analyze_run` of each cell on the same device (the seed preset's analysis); `analyze` holds each
  width's analysis rate (store tokens read per wall second: both passes and the dead-count pass).
- projection: the seed grid from the seed preset (`seed_workload`: its cells, steps per cell, packs as
  the planner packs them on this device) and the measured rates per cell shape (`project_seed_grid`):
  one cell at a time (eager, captured) or packed, plus extraction and the 16 analyses.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

NOT_BUILT = "n/a: not built yet"
# Time boxes on the whole check's clock (check.sh's start, its CUDA tests included: CHECK_START), so that
# it stays within its 8 minutes: the extraction and the deployed pack run first, then the training rows;
# the rows that may be skipped start only before these.
COMPILE_TIME_BOX_S = 200
PACK_TIME_BOX_S = 330  # a 16-cell pack at 32x (three runs, ~5 GB of weights each) can take a minute
TOPK_TIME_BOX_S = 380
TOPK_K = 32  # the grid's default `k_values`
START = time.perf_counter() - max(0.0, time.time() - float(os.environ.get("CHECK_START", time.time())))


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def train_tok_s(d: int, m: int, batch: int, steps: int, device: str, **flags) -> float:
    """Steady-state training tokens/s of relu: (T(2n) - T(n)) over n steps of `batch`."""
    return arch_tok_s(d, m, batch, steps, device, "relu", **flags)[0]


def arch_tok_s(
    d: int, m: int, batch: int, steps: int, device: str, architecture: str, **flags
) -> tuple[float, str | None]:
    """Steady-state training tokens/s of `architecture` (the Trainer, as `train_sae`) and, with
    `capture`, why the step was not captured (None: it was)."""
    from sae_core.config import TrainingConfig
    from sae_core.training import InMemoryData, Trainer
    from sae_core.training.architectures import build_sae

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(max(batch * 2 * steps, 4096), d, generator=gen).to(device)
    options = {} if architecture == "relu" else {"k": TOPK_K}
    not_captured: list[str | None] = []

    def run(n: int) -> float:
        cfg = TrainingConfig(
            lr=1e-4, batch_size=batch, epochs=None, max_tokens=batch * n, seed=0, log_every=10**9,
            val_every=10**9, val_tokens=1024, checkpoint_every=10**9, device=device, **flags,
        )  # fmt: skip
        sae = build_sae(d, m, cfg, architecture, **options)
        trainer = Trainer(
            sae, InMemoryData(x, x[:1024]), cfg, l1=1e-4, strategy="nosampling", device=torch.device(device)
        )
        sync(device)
        start = time.perf_counter()
        trainer.run()
        sync(device)
        captured = trainer._captured
        not_captured.append("off" if captured is None else captured.failed)
        return time.perf_counter() - start

    run(2)  # warm-up: kernels, allocator, compilation
    short, long_ = run(steps), run(2 * steps)
    reason = next((r for r in not_captured if r), None)
    if long_ <= short:  # a noisy (shared) machine: the whole longer run's rate instead
        return 2 * batch * steps / long_, reason
    return batch * steps / (long_ - short), reason


def packed_tok_s(args, m: int, cells: int, device: str, **flags) -> tuple[float, float]:
    """Steady-state tokens/s of `cells` cells of width `m` (λ apart) trained as one pack (`train_pack`,
    the sweep's code: a store, run dirs, each cell's outputs) at batch 32: (per cell, all cells)."""
    import numpy as np

    from sae_core.config import load_config
    from sae_core.naming import Cell
    from sae_core.store import write_store
    from sae_core.training import train_pack

    batch, steps = 32, args.small_steps
    root = Path(tempfile.mkdtemp(prefix="pack-"))
    tokens = int(batch * (2 * steps + 2) / 0.7) + 4096  # the train split is ~80 % of the documents
    x = torch.randn(tokens, args.d, generator=torch.Generator().manual_seed(0))
    store = write_store(
        root / "store", x.numpy(), np.arange(tokens) // 64, store_dtype="float32",
        model={"name": "random", "layer": 0, "num_layers": 1, "d_model": args.d},
        data={"dataset": "random", "context_length": 64},
    )  # fmt: skip
    grid = [Cell(m // args.d, 10.0 ** -(2 + i / 4), "nosampling") for i in range(cells)]

    def run(n: int, tag: str) -> float:
        cfg = load_config("demo", overrides={
            "data_root": str(root / tag), "tracking.mode": "disabled", "grid.pack": "device",
            "training.device": device, "training.batch_size": batch, "training.epochs": None,
            "training.max_tokens": batch * n, "training.log_every": 10**9, "training.val_every": 10**9,
            "training.checkpoint_every": 10**9, "training.val_tokens": 1024,
            "training.num_threads": 1 if device == "cpu" else 0,  # the smoke run: tiny matmuls
            **{f"training.{k}": v for k, v in flags.items()},
        })  # fmt: skip
        sync(device)
        start = time.perf_counter()
        train_pack(store.path, grid, cfg, {c.name: root / tag / c.name for c in grid})
        sync(device)
        return time.perf_counter() - start

    try:
        run(2, "warm")
        short, long_ = run(steps, "short"), run(2 * steps, "long")
    finally:  # 16 cells at 32x write ~5 GB of weights per run
        shutil.rmtree(root, ignore_errors=True)
    per_cell = 2 * batch * steps / long_ if long_ <= short else batch * steps / (long_ - short)
    return per_cell, per_cell * cells


def training_figures(args, device: str) -> dict:
    from sae_core.config import GridConfig, TrainingConfig

    out: dict = {}
    fields = TrainingConfig.model_fields
    for exp in args.widths:
        m = exp * args.d
        row: dict = {"eager_b32": train_tok_s(args.d, m, 32, args.small_steps, device)}
        # Captured step / packed cells: measured once the options exist (issue 14 items 1 and 2).
        capture_flag = next((f for f in ("capture", "cuda_graph", "cuda_graphs") if f in fields), None)
        if device == "cuda" and capture_flag:
            row["captured_b32"] = train_tok_s(args.d, m, 32, args.small_steps, device, **{capture_flag: True})
        else:
            row["captured_b32"] = NOT_BUILT if capture_flag is None else "n/a: CUDA only"
        row |= topk_family_rows(args, m, device, capture_flag)
        # torch.compile costs a compilation per run: measured while the check is inside its time box.
        if device == "cuda" and "compile" in fields and time.perf_counter() - START < COMPILE_TIME_BOX_S:
            row["compiled_b32"] = train_tok_s(args.d, m, 32, args.small_steps, device, compile=True)
        if "pack" in GridConfig.model_fields:
            # Captured too where capture exists on this device: the pack's fast configuration.
            flags = {capture_flag: True} if device == "cuda" and capture_flag else {}
            for cells in (4, 16):
                if time.perf_counter() - START > PACK_TIME_BOX_S:
                    row[f"packed{cells}_b32"] = "n/a: skipped (the check's time box)"
                    continue
                per_cell, total = packed_tok_s(args, m, cells, device, **flags)
                row[f"packed{cells}_b32"], row[f"packed{cells}_b32_total"] = per_cell, total
        else:
            row["packed4_b32"] = row["packed16_b32"] = NOT_BUILT
        row["fp32_b4096"] = train_tok_s(args.d, m, args.big_batch, args.big_steps, device)
        if device == "cuda":
            row["bf16_b4096"] = train_tok_s(
                args.d, m, args.big_batch, args.big_steps, device, autocast_bf16=True
            )
        else:
            row["bf16_b4096"] = "n/a: CUDA only"
        out[f"{exp}x"] = row
        print(f"train {exp}x (m={m}): " + ", ".join(f"{k} {_fmt(v)}" for k, v in row.items()), flush=True)
    return out


def topk_family_rows(args, m: int, device: str, capture_flag: str | None) -> dict:
    """TopK and BatchTopK at batch 32, eager and under `training.capture` (CUDA): the rate, and
    `<arch>_capture`: "captured" or the reason the step fell back to eager."""
    row: dict = {}
    for arch in ("topk", "batchtopk"):
        if time.perf_counter() - START > TOPK_TIME_BOX_S:
            row[f"{arch}_eager_b32"] = row[f"{arch}_captured_b32"] = "n/a: skipped (the check's time box)"
            continue
        row[f"{arch}_eager_b32"] = arch_tok_s(args.d, m, 32, args.small_steps, device, arch)[0]
        if device != "cuda" or capture_flag is None:
            row[f"{arch}_captured_b32"] = "n/a: CUDA only" if capture_flag else NOT_BUILT
            continue
        rate, reason = arch_tok_s(args.d, m, 32, args.small_steps, device, arch, **{capture_flag: True})
        row[f"{arch}_captured_b32"] = rate
        row[f"{arch}_capture"] = "captured" if reason is None else f"eager fallback: {reason}"
    return row


def build_model_and_docs(root: Path, n_docs: int, tiny: bool) -> tuple[Path, list[str]]:
    """GPT-2 small's shape (random weights; `tiny`: 2 blocks of 64) and a locally trained byte-level
    BPE tokenizer; stdlib docstrings, uniform in [0.2, 1.0] × 1024 tokens (as benchmarks/extract.py)."""
    import numpy as np
    from transformers import GPT2Config, GPT2Model

    from sae_core.extraction.demo import stdlib_docstrings, train_tokenizer

    corpus = [d["text"] for d in stdlib_docstrings(max_docs=600 if tiny else None)]
    tokenizer = train_tokenizer(corpus[: 300 if tiny else 4000], vocab_size=512 if tiny else 8192)
    torch.manual_seed(0)
    shape = {"n_layer": 2, "n_embd": 64, "n_head": 2} if tiny else {}
    model_dir = root / "gpt2-small-random"
    GPT2Model(GPT2Config(vocab_size=len(tokenizer), **shape)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    stream = [i for text in corpus for i in tokenizer(text)["input_ids"]]
    docs, at = [], 0
    for target in np.random.default_rng(0).uniform(0.2, 1.0, size=n_docs) * 1024:
        docs.append(tokenizer.decode(stream[at : at + int(target)]))
        at += int(target)
    return model_dir, docs


def extraction_figures(args, device: str, root: Path) -> tuple[dict, Path]:
    from transformers import AutoModel, AutoTokenizer

    from sae_core.config import load_config
    from sae_core.extraction.extract import extract_activations

    model_dir, texts = build_model_and_docs(root, args.docs, tiny=args.cpu)
    layer = 1 if args.cpu else 6
    data_file = root / "docs.jsonl"
    data_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    cfg = load_config(
        "seed",
        overrides={
            "data_root": str(root / "data"), "model.name": str(model_dir), "model.device": device,
            "model.layer": layer, "data.dataset": "json", "data.data_files": str(data_file),
            "data.num_documents": None, "data.streaming": False, "tracking.mode": "disabled",
            "training.device": device,
        },
    )  # fmt: skip
    sync(device)
    start = time.perf_counter()
    store = extract_activations(cfg)
    sync(device)
    ours = time.perf_counter() - start
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    ids = [i for i in tok(texts, truncation=True, max_length=1024)["input_ids"] if i]
    n_tokens = sum(len(i) for i in ids)
    model = AutoModel.from_pretrained(str(model_dir)).to(device).eval()
    sync(device)
    start = time.perf_counter()
    kept = []
    for i in range(0, len(ids), 2):  # the study's loop: pad to 1024, batch 2, every hidden state
        pair = ids[i : i + 2]
        x = torch.zeros(len(pair), 1024, dtype=torch.long)
        mask = torch.zeros(len(pair), 1024, dtype=torch.long)
        for row, doc in enumerate(pair):
            x[row, : len(doc)], mask[row, : len(doc)] = torch.tensor(doc), 1
        with torch.no_grad():
            out = model(input_ids=x.to(device), attention_mask=mask.to(device), output_hidden_states=True)
        kept.append(out.hidden_states[layer][mask.to(device).bool()].cpu())
    torch.save({"filtered_residual_activations": torch.cat(kept)}, root / "chunk_0.pt")
    sync(device)
    study = time.perf_counter() - start
    fig = {
        "tokens": n_tokens, "ours_tok_s": n_tokens / ours, "study_tok_s": n_tokens / study,
        "ratio": study / ours,
    }  # fmt: skip
    print(f"extract: {n_tokens} tokens, ours {fig['ours_tok_s']:,.0f} tok/s, study's method "
          f"{fig['study_tok_s']:,.0f} tok/s, ratio {fig['ratio']:.2f}", flush=True)  # fmt: skip
    return fig, store, cfg


def deployed_pack_figures(args, device: str, root: Path, store: Path, cfg) -> tuple[dict, dict]:
    """What a `train-pack` run executes, on the extracted store: `train_pack` of seed-preset cells (one
    per measured width: the seed grid's cells in order, the i-th of width i, so both λ and both
    strategies occur), then `analyze_run` of each cell on the same device. Returns the pack's figures
    and each width's analysis figures (store tokens read per wall second)."""
    from sae_core.analysis import analyze_run
    from sae_core.naming import grid_cells
    from sae_core.store import ActivationStore
    from sae_core.training import train_pack

    seed_cells = grid_cells(cfg.grid)
    cells = [[c for c in seed_cells if c.expansion == e][i % 4] for i, e in enumerate(args.widths)]
    steps = args.small_steps
    training = {
        "batch_size": 32, "epochs": None, "max_tokens": 32 * steps, "log_every": max(1, steps // 4),
        "val_every": max(1, steps // 2), "checkpoint_every": max(1, steps // 2), "val_tokens": 1024,
        "resample_every": max(1, steps // 2),  # the sampling cells resample once, as in a real run
        "capture": device == "cuda",  # the pack's fast configuration on a GPU
    }  # fmt: skip
    cfg = cfg.model_copy(
        update={
            "training": cfg.training.model_copy(update=training),
            "grid": cfg.grid.model_copy(update={"pack": "device"}),
        }
    )
    out_dirs = {c.name: root / "runs" / cfg.name / c.name for c in cells}
    sync(device)
    start = time.perf_counter()
    results = train_pack(store, cells, cfg, out_dirs)
    sync(device)
    train_wall = time.perf_counter() - start
    failed = {name: r for name, r in results.items() if isinstance(r, Exception)}
    if failed:
        raise SystemExit(f"deployed pack: cells failed: {failed}")
    reader = ActivationStore.open(store)
    per_cell: dict = {}
    analyze: dict = {}
    for cell in cells:
        sync(device)
        start = time.perf_counter()
        result = analyze_run(store, out_dirs[cell.name], cfg)
        sync(device)
        wall = time.perf_counter() - start
        read = analysis_tokens_read(int(result["tokens_analyzed"]), reader.num_tokens, cfg)
        per_cell[cell.name] = {
            "steps": results[cell.name]["steps"], "analysis_wall_s": wall,
            "explained_variance": result.get("explained_variance"), "l0": result.get("l0"),
            "dead_fraction": result.get("dead_fraction"),
        }  # fmt: skip
        analyze[f"{cell.expansion}x"] = {
            "cell": cell.name, "tokens": int(result["tokens_analyzed"]), "tokens_read": read,
            "wall_s": wall, "tok_s": read / wall,
        }  # fmt: skip
        print(f"analyze {cell.name}: {read} store tokens read in {wall:.1f} s "
              f"({_fmt(read / wall)})", flush=True)  # fmt: skip
    fig = {
        "cells": [c.name for c in cells], "steps": steps, "capture": training["capture"],
        "train_wall_s": train_wall, "per_cell": per_cell,
    }  # fmt: skip
    analysed = sum(c["analysis_wall_s"] for c in per_cell.values())
    print(f"deployed pack: {len(cells)} cells ({', '.join(fig['cells'])}), {steps} steps in "
          f"{train_wall:.1f} s, then {analysed:.1f} s of analyses", flush=True)  # fmt: skip
    return fig, analyze


def analysis_tokens_read(tokens_analyzed: int, store_tokens: int, cfg) -> int:
    """Store tokens an analysis reads: its split twice (the two passes), and with `dead_split: all` the
    rest of the store once (the dead-count pass). The CE-loss documents' forwards are a fixed cost
    inside the measured wall time (so the rate is conservative on a small store)."""
    rest = store_tokens - tokens_analyzed if cfg.analysis.dead_split == "all" else 0
    return 2 * tokens_analyzed + rest


# ---- the seed grid's projection ---------------------------------------------------------------------
# `seed_workload` is what the plan (`sae-sweep plan`) computes from the seed preset; once that module is
# on main, take the work from it and keep `project_seed_grid`, which combines it with this check's rates.

SEED_TOKENS = 6_950_000
"""Tokens of the seed store (10,000 OpenWebText documents, first token dropped; docs/deploy.md)."""


def seed_workload(device: str, widths: list[int]) -> dict:
    """The seed preset's work, from its config: its cells of the measured `widths` (all four on CUDA;
    the smoke run measures two), tokens per split (`SEED_TOKENS` split by the extraction's val/test
    fractions), optimizer steps per cell (`total_steps_for`, the Trainer's count), the tokens each
    analysis reads and the packs the pack planner makes (`pack_memory`) on one GPU of this device's
    memory (80 GB off CUDA), less the float16 train split the pack holds."""
    from sae_core.config import load_config
    from sae_core.naming import grid_cells
    from sae_core.training.pack_memory import HEADROOM, cell_bytes, evaluation_bytes, split_pack
    from sae_core.training.state import total_steps_for

    cfg = load_config("seed")
    ext, training = cfg.extraction, cfg.training
    test = round(SEED_TOKENS * ext.test_fraction)
    train = SEED_TOKENS - test - round(SEED_TOKENS * ext.val_fraction)
    every = grid_cells(cfg.grid)
    cells = [c for c in every if c.expansion in widths]
    d = 768
    if device == "cuda":
        gpu_bytes, gpu = torch.cuda.get_device_properties(0).total_memory, torch.cuda.get_device_name()
    else:
        gpu_bytes, gpu = 80 * 2**30, "an 80 GB GPU (nominal: not on CUDA)"
    widest = d * max(c.expansion for c in cells)
    budget = int(gpu_bytes * HEADROOM) - train * d * 2 - evaluation_bytes(widest, training.val_tokens)
    sizes = [
        cell_bytes(d, d * c.expansion, training.batch_size, c.architecture, training.val_tokens)
        for c in cells
    ]
    return {
        "tokens": SEED_TOKENS, "train_tokens": train, "test_tokens": test,
        "batch_size": training.batch_size, "steps": total_steps_for(training, train),
        "cells": [{"name": c.name, "width": f"{c.expansion}x"} for c in cells],
        "cells_left_out": [c.name for c in every if c not in cells],  # widths not measured here
        "packs": split_pack([c.name for c in cells], sizes, budget), "gpu": gpu,
        "analysis_tokens_read": analysis_tokens_read(test, SEED_TOKENS, cfg),
    }  # fmt: skip


def project_seed_grid(work: dict, train: dict, extract: dict, analyze: dict) -> dict:
    """Hours of the seed grid (`seed_workload`) at the measured rates per cell shape: each cell's steps
    one cell at a time (eager, captured, compiled), or as the planned packs, each pack stepping all its
    cells per batch (a step of a pack = the sum of its cells' per-cell step times in a pack: the ×16
    rate for a pack of more than 4 cells, else the ×4 one, measured with cells of one width); plus one
    extraction and every cell's analysis (its width's read rate). A row whose rates were not measured
    on this device is left out."""
    width = {c["name"]: c["width"] for c in work["cells"]}
    cell_tokens = work["steps"] * work["batch_size"]

    def seconds(names: list[str], key: str) -> float | None:
        rates = [train.get(width[n], {}).get(key) for n in names]
        if not all(isinstance(r, float) and r > 0 for r in rates):
            return None
        return sum(cell_tokens / r for r in rates)

    hours: dict = {}
    names = list(width)
    for key in ("eager_b32", "captured_b32", "compiled_b32"):
        alone = seconds(names, key)
        if alone is not None:
            hours[f"train_{key}_h"] = alone / 3600
    # A pack's cells take turns on each shared batch: its wall is the sum of their in-pack step times.
    packed = [seconds(p, "packed16_b32" if len(p) > 4 else "packed4_b32") for p in work["packs"]]
    if all(s is not None for s in packed):
        hours["train_packed_h"] = sum(s for s in packed if s is not None) / 3600
    hours["extract_h"] = work["tokens"] / extract["ours_tok_s"] / 3600
    reads = [analyze.get(width[n], {}).get("tok_s") for n in names]
    if all(reads):
        hours["analyze_h"] = sum(work["analysis_tokens_read"] / r for r in reads if r) / 3600
    best = min(v for k, v in hours.items() if k.startswith("train_"))
    hours["grid_best_h"] = best + hours["extract_h"] + hours.get("analyze_h", 0.0)
    return hours


def print_rates(train: dict, analyze: dict) -> None:
    """The measured tok/s per cell shape, one line per width (what the projection is made of)."""
    keys = ("eager_b32", "captured_b32", "packed4_b32", "packed16_b32", "topk_captured_b32",
            "batchtopk_captured_b32")  # fmt: skip
    for w, row in train.items():
        parts = [f"{k} {_fmt(row.get(k, 'n/a'))}" for k in keys]
        parts.append(f"analysis {_fmt(analyze.get(w, {}).get('tok_s', 'n/a'))}")
        print(f"rates {w}: " + ", ".join(parts), flush=True)


def _fmt(v) -> str:
    return f"{v:,.0f} tok/s" if isinstance(v, float) else str(v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="smoke version: tiny sizes, CPU, seconds")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check-out")))
    args = parser.parse_args()
    device = "cpu" if args.cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --cpu for the smoke version")
    sizes = (16, [4, 8], 4, 64, 2, 4) if args.cpu else (768, [4, 8, 16, 32], 300, 4096, 20, 200)
    args.d, args.widths, args.small_steps, args.big_batch, args.big_steps, args.docs = sizes
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    figures: dict = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()), "mode": "cpu-smoke" if args.cpu else "cuda",
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
    }  # fmt: skip
    elapsed: dict = {}

    def section(name: str) -> None:  # where the check's minutes go (its budget is 8 on one H200)
        elapsed[name] = round(time.perf_counter() - START - sum(elapsed.values()), 1)

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        root = Path(tmp)
        section("before")  # imports; with CHECK_START, check.sh's CUDA tests too
        figures["extract"], store, cfg = extraction_figures(args, device, root)
        section("extract")
        figures["deployed_pack"], figures["analyze"] = deployed_pack_figures(args, device, root, store, cfg)
        section("deployed_pack")
        figures["train"] = training_figures(args, device)
        section("train")
    figures["seed_work"] = seed_workload(device, args.widths)
    figures["projection_hours"] = project_seed_grid(
        figures["seed_work"], figures["train"], figures["extract"], figures["analyze"]
    )
    print_rates(figures["train"], figures["analyze"])
    work = figures["seed_work"]
    of = len(work["cells"]) + len(work["cells_left_out"])
    print(f"seed grid: {len(work['cells'])} of {of} cells x {work['steps']:,} steps of {work['batch_size']}, "
          f"{len(work['packs'])} pack(s) on {work['gpu']}", flush=True)  # fmt: skip
    print("projected seed grid: " + ", ".join(f"{k} {v:.2f}" for k, v in figures["projection_hours"].items()),
          flush=True)  # fmt: skip
    figures["elapsed_s"] = elapsed
    print("check sections (s): " + ", ".join(f"{k} {v}" for k, v in elapsed.items()), flush=True)
    (args.out / "figures.json").write_text(json.dumps(figures, indent=1))
    print(f"wrote {args.out / 'figures.json'}")


if __name__ == "__main__":
    main()
