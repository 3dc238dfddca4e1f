"""Extraction and store-reading throughput, measured side by side in one run (ratios, not absolutes).

A GPT-2-small-shaped model with random weights (`GPT2Config()`: 12 blocks, d=768; the cost does not
depend on the weights) and a byte-level BPE tokenizer trained locally, layer 6, context 1024, documents
of varied length (uniform in [0.2, 1.0] × 1024 tokens, mean ≈ 0.6 × 1024) built from stdlib docstrings.

- ours: `extract_activations` end to end (dataset load, fast tokenizer, early stop after block 5,
  length-bucketed batches, float16 Parquet shards, checksums, manifest).
- original: the study's method on the same token ids: a slow (pure-Python) byte-level BPE tokenizer over
  the texts, padding to 1024, batch 2, a full 12-block forward with `output_hidden_states=True`, padding
  removed with the mask, fp32 `torch.save`. transformers 5 has no pure-Python GPT2Tokenizer any more;
  `ClvpTokenizer` (GPT-2's byte-level BPE algorithm in Python) over the same vocab/merges stands in.
- bare: embeddings + blocks 0–5 called directly, one unpadded document at a time, no tokenizer, no I/O;
  as loaded (Python `gelu_new`) and with the fused GELU extraction uses (`fuse_gelu`).
- reading: a float16 store at d=768 written with `write_store`, read as shuffled float32 batches of 4096.

Run: `python benchmarks/extract.py [--docs 8] [--read-tokens 131072]` (about 2–3 minutes on 2 cores).

Whole processes (`--whole-process`, 40 documents by default, as a new user meets it): `sae-sweep extract`
from process start to exit (interpreter, imports, dataset load and its cache, model load, extraction,
store) against the study's method as its own process (imports, model load, slow tokenizer, the loop,
`torch.save`), alternating rounds; prints the ratio (target ≥ 3).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


LOAD_CLOCKS: list[Clock] = []
"""Model loads timed by the bare runs: ours loads its model inside its timed call, the baselines before."""


class Clock:
    """Wall and CPU time (all threads) of a block: on a shared machine CPU time is the steadier figure."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def build_model_and_docs(root: Path, n_docs: int, seed: int) -> tuple[Path, list[str]]:
    from transformers import GPT2Config, GPT2Model

    from sae_core.extraction.demo import stdlib_docstrings, train_tokenizer

    corpus = [d["text"] for d in stdlib_docstrings()]
    tokenizer = train_tokenizer(corpus[:4000], vocab_size=8192)
    torch.manual_seed(seed)
    model = GPT2Model(GPT2Config(vocab_size=len(tokenizer)))
    model_dir = root / "gpt2-small-random"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    tokenizer.backend_tokenizer.model.save(str(model_dir))  # vocab.json + merges.txt for the slow one
    rng = np.random.default_rng(seed)
    stream = [i for text in corpus for i in tokenizer(text)["input_ids"]]
    docs, at = [], 0
    for target in rng.uniform(0.2, 1.0, size=n_docs) * 1024:
        ids = stream[at : at + int(target)]
        at += int(target)
        docs.append(tokenizer.decode(ids))
    return model_dir, docs


def run_ours(root: Path, model_dir: Path, data_file: Path) -> tuple[Clock, Path]:
    from sae_core.config import load_config
    from sae_core.extraction.extract import extract_activations

    cfg = load_config(
        "seed",
        overrides={
            "data_root": str(root / "data"),
            "model.name": str(model_dir),
            "model.device": "cpu",
            "data.dataset": "json",
            "data.data_files": str(data_file),
            "data.num_documents": None,
            "data.streaming": False,
        },
    )
    with Clock() as clock:
        path = extract_activations(cfg)
    return clock, path


def run_original(model_dir: Path, texts: list[str], token_ids: list[list[int]], out: Path) -> Clock:
    """The study's loop (see the seed notes), on the same token ids as ours."""
    from transformers import AutoModel, ClvpTokenizer

    model = AutoModel.from_pretrained(str(model_dir)).eval()
    slow = ClvpTokenizer(str(model_dir / "vocab.json"), str(model_dir / "merges.txt"))
    with Clock() as clock:
        for text in texts:
            slow(text)
        kept = []
        for i in range(0, len(token_ids), 2):
            pair = token_ids[i : i + 2]
            ids = torch.zeros(len(pair), 1024, dtype=torch.long)
            mask = torch.zeros(len(pair), 1024, dtype=torch.long)
            for row, doc in enumerate(pair):
                ids[row, : len(doc)] = torch.tensor(doc)
                mask[row, : len(doc)] = 1
            with torch.no_grad():
                out_ = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            kept.append(out_.hidden_states[6][mask.bool()])
        torch.save({"filtered_residual_activations": torch.cat(kept)}, out)
    return clock


def run_bare(model_dir: Path, token_ids: list[list[int]], fused: bool = False) -> Clock:
    from transformers import AutoModel

    from sae_core.extraction.extract import fuse_gelu

    with Clock() as load:
        model = AutoModel.from_pretrained(str(model_dir)).eval()
    LOAD_CLOCKS.append(load)
    if fused:  # the same kernel swap extraction makes: isolates what the pipeline around it costs
        fuse_gelu(model)
    with Clock() as clock, torch.inference_mode():
        for doc in token_ids:
            ids = torch.tensor(doc)[None]
            hidden = model.wte(ids) + model.wpe(torch.arange(len(doc))[None])
            for block in model.h[:6]:
                out = block(hidden)
                hidden = out[0] if isinstance(out, tuple) else out
    return clock


def run_reading(root: Path, n_tokens: int) -> dict[str, Clock | int]:
    """Shuffled float32 batches of 4096 from a float16 d=768 store, against Arrow decoding the same
    column with nothing else (the floor any Parquet reader pays)."""
    import pyarrow.parquet as pq

    from sae_core.store import write_store

    rng = np.random.default_rng(0)
    lengths = rng.integers(200, 1024, size=n_tokens // 400)
    doc_ids = np.repeat(np.arange(len(lengths)), lengths)[:n_tokens]
    acts = rng.standard_normal((len(doc_ids), 768), dtype=np.float32).astype(np.float16)
    store = write_store(root / "read-store", acts, doc_ids, store_dtype="float16", drop_first_token=True)
    del acts
    out: dict[str, Clock | int] = {"rows": store.num_tokens_in("train"), "all_rows": store.num_tokens}
    with Clock() as out["first"]:  # includes the one-off checksum verification and split index
        sum(len(b) for b in store.batches("train", batch_size=4096, seed=1))
    with Clock() as out["shuffled"]:
        sum(len(b) for b in store.batches("train", batch_size=4096, seed=2))
    store.read_workers = 1
    with Clock() as out["one_thread"]:
        sum(len(b) for b in store.batches("train", batch_size=4096, seed=3))
    with Clock() as out["arrow"]:
        for shard in store.manifest["shards"]:
            parquet = pq.ParquetFile(store.path / shard["file"], memory_map=True)
            for group in range(parquet.num_row_groups):
                parquet.read_row_group(group, columns=["act"])
    return out


def report(n_tokens, ours, orig, bare, bare2, fused, store_bytes, orig_bytes, read) -> None:
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    runs = (("ours", ours), ("original", orig), ("bare", bare), ("bare again", bare2), ("bare fused", fused))
    for name, c in runs:
        print(f"{name:10s} {n_tokens / c.wall:8.0f} tok/s wall ({c.wall:6.1f} s), cpu {c.cpu:6.1f} s")
    bare_wall, bare_cpu = (bare.wall + bare2.wall) / 2, (bare.cpu + bare2.cpu) / 2
    load_wall = sum(c.wall for c in LOAD_CLOCKS) / len(LOAD_CLOCKS)
    load_cpu = sum(c.cpu for c in LOAD_CLOCKS) / len(LOAD_CLOCKS)
    print(f"model load (timed in ours, not in the baselines): {load_wall:.1f} s wall, {load_cpu:.1f} s cpu")
    print(
        f"ratio ours/original, model load left out = {orig.wall / (ours.wall - load_wall):.2f}x wall, "
        f"{orig.cpu / (ours.cpu - load_cpu):.2f}x cpu"
    )
    print(
        f"ratio ours/original     = {orig.wall / ours.wall:.2f}x wall, "
        f"{orig.cpu / ours.cpu:.2f}x cpu (target >= 3)"
    )
    print(
        f"ratio ours/bare forward = {bare_wall / ours.wall:.2f} wall, "
        f"{bare_cpu / ours.cpu:.2f} cpu (target >= 0.85)"
    )
    print(
        f"ratio ours/bare forward with the fused GELU = {fused.wall / ours.wall:.2f} wall, "
        f"{fused.cpu / ours.cpu:.2f} cpu (what tokenizing, batching and writing cost)"
    )
    print(f"bytes/token ours float16 = {store_bytes / n_tokens:.0f} (target <= 1600)")
    print(f"bytes/token original fp32 torch.save = {orig_bytes / n_tokens:.0f}")
    rows, all_rows = read["rows"], read["all_rows"]
    print("store read: shuffled float32 batches of 4096, d=768, float16 store (target >= 250,000 tok/s)")
    for name in ("first", "shuffled", "one_thread"):
        c = read[name]
        print(f"  {name:12s} {rows / c.wall:9,.0f} tok/s wall, {rows / c.cpu:9,.0f} tok/cpu-s")
    arrow = read["arrow"]
    print(
        f"  {'Arrow alone':12s} {all_rows / arrow.wall:9,.0f} tok/s wall, "
        f"{all_rows / arrow.cpu:9,.0f} tok/cpu-s"
    )
    ratio = (rows / read["shuffled"].cpu) / (all_rows / arrow.cpu)
    print(f"ratio reader/Arrow decode alone (tokens per cpu-s) = {ratio:.2f}")


def study_process(model_dir: Path, data_file: Path, out: Path) -> None:
    """The study's method as a whole process (`--study-process`): everything it needs, loaded here."""
    from transformers import AutoTokenizer

    texts = [json.loads(line)["text"] for line in data_file.read_text().splitlines()]
    fast = AutoTokenizer.from_pretrained(str(model_dir))  # the same ids as ours (cheap next to the rest)
    token_ids = [ids for ids in fast(texts, truncation=True, max_length=1024)["input_ids"] if ids]
    run_original(model_dir, texts, token_ids, out)


def whole_process(root: Path, model_dir: Path, data_file: Path, n_tokens: int, rounds: int) -> None:
    import subprocess
    import sys

    here = Path(__file__).resolve()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(here.parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    ours_cmd = [
        sys.executable, "-m", "flows.cli", "extract", "--preset", "seed", "--set", "model.device=cpu",
        "--set", f"model.name={model_dir}", "--set", "data.dataset=json",
        "--set", f"data.data_files={data_file}", "--set", "data.num_documents=null",
        "--set", "data.streaming=false", "--set", "tracking.mode=disabled",
    ]  # fmt: skip
    ours, theirs = [], []
    for r in range(rounds):
        start = time.perf_counter()
        subprocess.run([*ours_cmd, "--set", f"data_root={root / f'data{r}'}"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        study = [
            sys.executable,
            str(here),
            "--study-process",
            str(model_dir),
            str(data_file),
            str(root / "c.pt"),
        ]
        subprocess.run(study, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        theirs.append(time.perf_counter() - start)
        print(f"round {r}: sae-sweep extract {ours[-1]:.1f} s, the study's method {theirs[-1]:.1f} s")
    print(
        f"{n_tokens} tokens; load average (1 min) at the end: {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores"
    )
    print(f"RATIO whole-process ours/study's method: {min(theirs) / min(ours):.2f}  (target >= 3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=None, help="documents (default 8; 40 whole-process)")
    parser.add_argument("--read-tokens", type=int, default=131_072, help="tokens in the reading test store")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--whole-process", action="store_true", help="CLI process vs the study's process")
    parser.add_argument("--rounds", type=int, default=1, help="whole-process rounds (alternating)")
    parser.add_argument("--study-process", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.study_process:
        study_process(*args.study_process)
        return
    if args.docs is None:
        args.docs = 40 if args.whole_process else 8
    root = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    try:
        model_dir, texts = build_model_and_docs(root, args.docs, args.seed)
        data_file = root / "docs.jsonl"
        data_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        from transformers import AutoTokenizer

        fast = AutoTokenizer.from_pretrained(str(model_dir))
        token_ids = [ids for ids in fast(texts, truncation=True, max_length=1024)["input_ids"] if ids]
        n_tokens = sum(len(t) for t in token_ids)
        print(f"{len(token_ids)} documents, {n_tokens} tokens (mean {n_tokens / len(token_ids):.0f})")

        if args.whole_process:
            whole_process(root, model_dir, data_file, n_tokens, args.rounds)
            return
        import datasets  # noqa: F401  (a one-off import, not throughput: ours would pay it inside the clock)

        bare = run_bare(model_dir, token_ids)
        ours, store = run_ours(root, model_dir, data_file)
        orig = run_original(model_dir, texts, token_ids, root / "chunk_0.pt")
        bare2 = run_bare(model_dir, token_ids)  # again, to bracket the others against load drift
        fused = run_bare(model_dir, token_ids, fused=True)
        store_bytes = sum(p.stat().st_size for p in store.iterdir() if p.is_file())
        orig_bytes = (root / "chunk_0.pt").stat().st_size
        read = run_reading(root, args.read_tokens)

        report(n_tokens, ours, orig, bare, bare2, fused, store_bytes, orig_bytes, read)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
