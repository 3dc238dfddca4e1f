"""The device check's measurements (run by check.sh; see its header). Writes `$OUT/figures.json` and
prints one line per figure. `--cpu`: a smoke version at tiny sizes (seconds), so the script cannot rot.

Figures (tok/s = training or extraction tokens per wall second, steady state where it says so):
- train: d=768, 4×/8×/16×/32×, batch 32 (eager; `training.capture`; packed ×4 and ×16 cells of the
  width, captured on CUDA, per cell and in total) and batch 4096 (fp32, bf16 autocast). Steady state:
  two runs of different lengths, the difference divided (setup, the first step's allocations and the
  final evaluation cancel).
- extract: a GPT-2-small-shaped model (random weights) at context 1024: `extract_activations` end to
  end (model load, dataset, tokenizer included) vs the study's method (padding to 1024, batch 2, every
  hidden state, fp32 `torch.save`; its slow tokenizer and model load left out, so the ratio is
  conservative).
- analyze: `analyze_run` on that store with a briefly trained 8× SAE.
- projection: the seed grid (16 cells: 4 widths × 4; 20 epochs of 6.95M tokens at batch 32, one
  extraction of 6.95M tokens, 16 analyses) from those figures, one cell at a time or (packed) a width's
  4 cells as one pack.
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

SEED_TOKENS = 6_950_000
SEED_EPOCHS = 20
NOT_BUILT = "n/a: not built yet"
PACK_TIME_BOX_S = 330  # packed rows start only before this: the check stays within its 8 minutes
START = time.perf_counter()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def train_tok_s(d: int, m: int, batch: int, steps: int, device: str, **flags) -> float:
    """Steady-state training tokens/s: (T(2n) - T(n)) over n steps of `batch`."""
    from sae_core.config import TrainingConfig
    from sae_core.training import InMemoryData, train_sae

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(max(batch * 2 * steps, 4096), d, generator=gen).to(device)

    def run(n: int) -> float:
        cfg = TrainingConfig(
            lr=1e-4, batch_size=batch, epochs=None, max_tokens=batch * n, seed=0, log_every=10**9,
            val_every=10**9, val_tokens=1024, checkpoint_every=10**9, device=device, **flags,
        )  # fmt: skip
        sync(device)
        start = time.perf_counter()
        train_sae(InMemoryData(x, x[:1024]), m, cfg, l1=1e-4, strategy="nosampling", device=device)
        sync(device)
        return time.perf_counter() - start

    run(2)  # warm-up: kernels, allocator, compilation
    short, long_ = run(steps), run(2 * steps)
    if long_ <= short:  # a noisy (shared) machine: the whole longer run's rate instead
        return 2 * batch * steps / long_
    return batch * steps / (long_ - short)


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
        row = {"eager_b32": train_tok_s(args.d, m, 32, args.small_steps, device)}
        # Captured step / packed cells: measured once the options exist (issue 14 items 1 and 2).
        capture_flag = next((f for f in ("capture", "cuda_graph", "cuda_graphs") if f in fields), None)
        if device == "cuda" and capture_flag:
            row["captured_b32"] = train_tok_s(args.d, m, 32, args.small_steps, device, **{capture_flag: True})
        else:
            row["captured_b32"] = NOT_BUILT if capture_flag is None else "n/a: CUDA only"
        # torch.compile costs a compilation per run: measured while the check is inside its time box.
        if device == "cuda" and "compile" in fields and time.perf_counter() - START < 200:
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


def analysis_figures(args, device: str, root: Path, store: Path, cfg) -> dict:
    from sae_core.analysis import analyze_run
    from sae_core.naming import Cell
    from sae_core.training import train_cell

    cell = Cell(8, 1e-4, "nosampling")
    run_dir = root / "runs" / "check" / cell.name
    cfg = cfg.model_copy(
        update={"training": cfg.training.model_copy(update={
            "batch_size": 256, "epochs": None, "max_tokens": 256 * 8, "log_every": 10**9,
            "val_every": 10**9, "checkpoint_every": 10**9, "val_tokens": 1024})}
    )  # fmt: skip
    train_cell(store, cell, cfg, run_dir)
    sync(device)
    start = time.perf_counter()
    result = analyze_run(store, run_dir, cfg)
    sync(device)
    wall = time.perf_counter() - start
    tokens = int(result["tokens_analyzed"])
    # Both passes over the split and the CE-loss forwards included: tokens analysed per wall second.
    fig = {"tokens": tokens, "wall_s": wall, "tok_s": tokens / wall}
    print(f"analyze: {tokens} tokens in {wall:.1f} s ({_fmt(fig['tok_s'])} tok/s)", flush=True)
    return fig


def projection(train: dict, extract: dict, analyze: dict) -> dict:
    """The seed grid one cell at a time: per width 4 cells × 20 epochs × 6.95M tokens."""
    hours: dict = {}
    for key in ("eager_b32", "captured_b32", "compiled_b32"):
        rates = [row.get(key) for row in train.values()]
        if all(isinstance(r, float) for r in rates):
            hours[f"train_{key}_h"] = sum(4 * SEED_EPOCHS * SEED_TOKENS / r for r in rates) / 3600
    # Packed: a width's 4 cells as one pack, all advancing at the pack's per-cell rate.
    rates = [row.get("packed4_b32") for row in train.values()]
    if all(isinstance(r, float) for r in rates):
        hours["train_packed4_b32_h"] = sum(SEED_EPOCHS * SEED_TOKENS / r for r in rates) / 3600
    hours["extract_h"] = SEED_TOKENS / extract["ours_tok_s"] / 3600
    if analyze.get("tok_s"):  # the seed preset analyses the test split (10 %) and counts dead over all
        hours["analyze_h"] = 16 * 1.1 * SEED_TOKENS / analyze["tok_s"] / 3600
    best = min(v for k, v in hours.items() if k.startswith("train_"))
    hours["grid_best_h"] = best + hours["extract_h"] + hours.get("analyze_h", 0.0)
    print("projected seed grid: " + ", ".join(f"{k} {v:.2f}" for k, v in hours.items()), flush=True)
    return hours


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
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        root = Path(tmp)
        figures["train"] = training_figures(args, device)
        figures["extract"], store, cfg = extraction_figures(args, device, root)
        figures["analyze"] = analysis_figures(args, device, root, store, cfg)
    figures["projection_hours"] = projection(figures["train"], figures["extract"], figures["analyze"])
    (args.out / "figures.json").write_text(json.dumps(figures, indent=1))
    print(f"wrote {args.out / 'figures.json'}")


if __name__ == "__main__":
    main()
