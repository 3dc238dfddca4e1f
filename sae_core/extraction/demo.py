"""The offline demo: a corpus every Python has, a tokenizer trained on it, and a small GPT-2 trained briefly.

Nothing here touches the network. The model is a real `GPT2LMHeadModel` saved with `save_pretrained` and
the corpus a JSON-lines file, so the demo goes through exactly the loading code (`from_pretrained`,
`load_dataset("json", ...)`) that the `seed` preset uses for GPT-2 small and OpenWebText.

Config names `builtin:demo-gpt2` (model) and `builtin:stdlib-docstrings` (data set) resolve here, built on
first use under `data_root/builtin/` and reused afterwards; so do the real-model builtins,
`builtin:smollm2-135m` (sae_core.extraction.smollm2) and `builtin:package-readmes`
(sae_core.extraction.package_docs).
"""

from __future__ import annotations

import ast
import json
import logging
import math
import os
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sae_core.extraction.model_dir import save_model_dir
from sae_core.io import atomic_write_text
from sae_core.progress import Progress, no_progress

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
DEMO_MODEL = "builtin:demo-gpt2"
DEMO_CORPUS = "builtin:stdlib-docstrings"


@dataclass(frozen=True)
class DemoModelSpec:
    """Shape and training budget of a locally built GPT-2."""

    n_layer: int = 4
    """Transformer blocks."""
    n_embd: int = 128
    """Residual stream width (d_model)."""
    n_head: int = 4
    """Attention heads."""
    n_positions: int = 256
    """Maximum context."""
    vocab_size: int = 4096
    """BPE vocabulary trained on the corpus."""
    train_steps: int = 300
    """Language-model training steps on the corpus (0: random weights, for tests)."""
    train_batch: int = 16
    """Sequences per training step."""
    train_context: int = 128
    """Tokens per training sequence."""
    lr: float = 2e-3
    """AdamW learning rate (cosine-decayed)."""
    seed: int = 0
    """Seed for initialisation and batch order."""


def is_builtin(name: str) -> bool:
    return name.startswith(BUILTIN_PREFIX)


# ---------------------------------------------------------------------------------------------
# Corpus


def stdlib_docstrings(min_chars: int = 200, max_docs: int | None = None) -> list[dict[str, str]]:
    """Docstrings of the standard library's modules, classes and functions, read with `ast`
    (never imported), in a stable order. Each is a document: {"text", "source"}."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs: list[dict[str, str]] = []
    skip = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "turtledemo"}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in skip for part in rel.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        module = ".".join(rel.with_suffix("").parts)
        for node in [tree, *ast.walk(tree)]:
            if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            text = ast.get_docstring(node, clean=True)
            if text and len(text) >= min_chars:
                name = getattr(node, "name", "")
                docs.append({"text": text, "source": f"{module}:{name}" if name else module})
        if max_docs is not None and len(docs) >= max_docs:
            return docs[:max_docs]
    return docs


def write_corpus(path: str | Path, docs: list[dict[str, str]]) -> Path:
    """Write documents as JSON lines, atomically."""
    lines = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
    atomic_write_text(path, lines)
    return Path(path)


def ensure_demo_corpus(data_root: str | Path) -> Path:
    """The demo corpus as `data_root/builtin/stdlib-docstrings.jsonl`, built once."""
    path = Path(data_root) / "builtin" / "stdlib-docstrings.jsonl"
    if not path.exists():
        docs = stdlib_docstrings()
        if not docs:
            raise RuntimeError(f"data.dataset: no docstrings found in the stdlib at {sys.prefix}")
        write_corpus(path, docs)
        log.info("built the demo corpus: %d documents → %s", len(docs), path)
    return path


# ---------------------------------------------------------------------------------------------
# Tokenizer and model


def train_tokenizer(texts: list[str], vocab_size: int):  # -> PreTrainedTokenizerFast
    """A byte-level BPE tokenizer (GPT-2's scheme) trained locally, wrapped as a fast HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=1024,
    )


def build_demo_model(
    out_dir: str | Path,
    texts: list[str],
    spec: DemoModelSpec | None = None,
    progress: Progress = no_progress,
) -> Path:
    """Train a tokenizer, build a GPT-2 from `spec`, train it briefly on `texts`, `save_pretrained`.
    `progress` hears the training steps (out of `spec.train_steps`) with the current loss.

    Written to a temporary directory and renamed, so a half-built model is never picked up.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    spec = spec or DemoModelSpec()
    out = Path(out_dir)
    torch.manual_seed(spec.seed)
    tokenizer = train_tokenizer(texts, spec.vocab_size)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=spec.n_positions,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    # transformers picks a model's loss by matching its class name against its loss table; no entry
    # matches `GPT2LMHeadModel`, so every forward with labels warned "`loss_type=None` ... unrecognized"
    # and then used the causal-LM loss. Name that loss.
    model.loss_type = "ForCausalLM"
    if spec.train_steps > 0:
        threads = torch.get_num_threads()
        try:
            _train_lm(model, tokenizer, texts, spec, progress)
        finally:
            torch.set_num_threads(threads)
    model.eval()
    return save_model_dir(out, model, tokenizer, "demo_spec.json", asdict(spec))


def _train_lm(model, tokenizer, texts: list[str], spec: DemoModelSpec, progress: Progress) -> None:
    """A few hundred AdamW steps on packed sequences, so the model's features mean something."""
    import torch
    from tqdm.auto import tqdm

    # Half the cores at most: OpenMP threads that spin against the Prefect server (or anything else)
    # on a small machine made a step 100x slower than one quiet thread.
    torch.set_num_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) // 2)))
    ids: list[int] = []
    for enc in tokenizer(texts, verbose=False)["input_ids"]:
        ids.extend([*enc, tokenizer.eos_token_id])
    data = torch.tensor(ids, dtype=torch.long)
    n_seq = len(data) // spec.train_context
    if n_seq < spec.train_batch:
        raise ValueError(f"data.dataset: corpus too small to train the demo model ({len(data)} tokens)")
    seqs = data[: n_seq * spec.train_context].view(n_seq, spec.train_context)
    gen = torch.Generator().manual_seed(spec.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01)
    model.train()
    start = time.perf_counter()
    bar = tqdm(range(spec.train_steps), desc="training demo GPT-2", unit="step", leave=False)
    for step in bar:
        lr = spec.lr * 0.5 * (1 + math.cos(math.pi * step / spec.train_steps))
        for group in opt.param_groups:
            group["lr"] = lr
        batch = seqs[torch.randint(n_seq, (spec.train_batch,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 20 == 0 or step + 1 == spec.train_steps:
            bar.set_postfix(loss=f"{loss.item():.3f}")
            progress(step + 1, spec.train_steps, {"loss": loss.item()})
    log.info(
        "demo GPT-2 trained %d steps in %.0f s, final loss %.3f",
        spec.train_steps,
        time.perf_counter() - start,
        loss.item(),
    )


def ensure_demo_model(
    data_root: str | Path, spec: DemoModelSpec | None = None, progress: Progress = no_progress
) -> Path:
    """The demo model under `data_root/builtin/demo-gpt2`, built (and trained) once; `progress` hears
    that training's steps (nothing when the model exists)."""
    out = Path(data_root) / "builtin" / "demo-gpt2"
    if not (out / "config.json").exists():
        corpus = ensure_demo_corpus(data_root)
        texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
        log.info("building the demo GPT-2 under %s (once; about a minute on a laptop CPU)", out)
        build_demo_model(out, texts, spec, progress)
    return out


def resolve_model_name(name: str, data_root: str | Path) -> str:
    """`builtin:demo-gpt2` / `builtin:smollm2-135m` → the local directory (built or converted if needed);
    other names pass through."""
    from sae_core.extraction.smollm2 import SMOLLM2_MODEL, ensure_smollm2_model

    if not is_builtin(name):
        return name
    if name == DEMO_MODEL:
        return str(ensure_demo_model(data_root))
    if name == SMOLLM2_MODEL:
        return str(ensure_smollm2_model(data_root))
    raise ValueError(f"model.name: unknown builtin model {name!r} (known: {DEMO_MODEL}, {SMOLLM2_MODEL})")


def resolve_dataset(dataset: str, data_files, data_root: str | Path) -> tuple[str, object]:
    """`builtin:stdlib-docstrings` / `builtin:package-readmes` → ("json", <jsonl path>); other names pass
    through unchanged."""
    from sae_core.extraction.package_docs import PACKAGE_CORPUS, ensure_package_corpus

    if not is_builtin(dataset):
        return dataset, data_files
    if dataset == DEMO_CORPUS:
        return "json", str(ensure_demo_corpus(data_root))
    if dataset == PACKAGE_CORPUS:
        return "json", str(ensure_package_corpus(data_root))
    raise ValueError(
        f"data.dataset: unknown builtin data set {dataset!r} (known: {DEMO_CORPUS}, {PACKAGE_CORPUS})"
    )
