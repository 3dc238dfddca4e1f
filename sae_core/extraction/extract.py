"""Model → activation store: any transformers model's `hidden_states[layer]`, fast and resumable.

- Early stop: a forward pre-hook on block `layer` captures its input (which *is* `hidden_states[layer]`)
  and aborts the forward, so later blocks and any head never run. `layer == num_layers` (the last
  hidden state, after the final norm where the model has one) runs the whole base model instead.
- No padding waste: documents are tokenised in bulk by the fast tokenizer, then batched by similar
  length within `extraction.batch_tokens`, right-padded with an attention mask (padding never reaches a
  real position: causal models never look right, encoders mask it).
- Shards cover consecutive documents (planned from token counts alone, so a re-run plans the same ones)
  and are written atomically; the manifest comes last. A killed run, re-run, skips the shards already on
  disk and produces the same store as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sae_core.config import ConfigError, SweepConfig
from sae_core.device import cpu_threads, resolve_device, resolve_dtype
from sae_core.errors import StoreError
from sae_core.extraction.hf_load import Documents, load_model, load_model_config, load_tokenizer
from sae_core.extraction.sinks import left_out_rules, plan_bos
from sae_core.io import make_dirs
from sae_core.progress import Progress, no_progress
from sae_core.store import remove_store, verify_store
from sae_core.store.format import (
    DEFAULT_ROW_GROUP_TOKENS,
    FORMAT_VERSION,
    MANIFEST,
    RowChunk,
    ShardWriter,
    check_values,
    shard_entry,
    shard_name,
    split_codes,
)
from sae_core.store.left_out import measure_left_out

log = logging.getLogger(__name__)

SPLIT_SEED = 0
"""Seed of the doc_id hash that assigns splits (fixed: the same documents are held out in every store)."""
_TOKENIZE_CHUNK = 256


def store_key(cfg: SweepConfig) -> str:
    """`<model>-L<layer>-<16 hex>`: a hash of the model, data and extraction sections, leaving out what
    cannot change the stored values (device, batch size, CPU threads)."""
    payload = {
        "format_version": FORMAT_VERSION,
        "model": cfg.model.model_dump(mode="json", exclude={"device"}),
        "data": cfg.data.model_dump(mode="json"),
        "extraction": cfg.extraction.model_dump(mode="json", exclude={"batch_tokens", "num_threads"}),
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", cfg.model.name.split(":")[-1].rstrip("/").split("/")[-1])
    return f"{slug or 'model'}-L{cfg.model.layer}-{digest}"


def store_path(cfg: SweepConfig) -> Path:
    return Path(cfg.data_root) / "activations" / store_key(cfg)


def layer_meaning(layer: int, num_layers: int) -> str:
    if layer == 0:
        return "hidden_states[0]: the embeddings, the residual stream entering block 0"
    if layer == num_layers:
        return (
            f"hidden_states[{layer}]: the output of the last block (block {layer - 1}), after the "
            "model's final norm where it has one"
        )
    return (
        f"hidden_states[{layer}]: the residual stream entering block {layer} "
        f"(the output of block {layer - 1}); 0 is the embeddings"
    )


def extract_activations(cfg: SweepConfig, progress: Progress | None = None, force: bool = False) -> Path:
    """Extract `cfg.model.layer`'s activations over `cfg.data` into `data_root/activations/<key>/`.
    Returns at once when that store is already complete (its shards' checksums verified: a truncated
    shard is refused with its name); resumes an interrupted one. `force` rebuilds it from scratch."""
    out = store_path(cfg)
    if (out / MANIFEST).is_file() and not force:
        verify_store(out)
        log.info("store already complete (checksums verified): %s", out)
        return out
    make_dirs(out)
    with _exclusive(out / ".lock"):
        if force:
            log.warning("--force: removing the store at %s to extract it again", out)
            remove_store(out)
        elif (out / MANIFEST).is_file():  # another process finished it while we waited
            return out
        _Extraction(cfg, out, progress or no_progress).run()
    return out


class _StopForward(Exception):
    """Raised by the capture hook: the layer's input is all we need."""

    def __init__(self, hidden: torch.Tensor) -> None:
        super().__init__()
        self.hidden = hidden


class LayerReader:
    """Runs a base model only as far as `hidden_states[layer]` and returns it."""

    def __init__(self, model: torch.nn.Module, layer: int) -> None:
        self.model = model
        self.layer = layer
        config: Any = model.config  # a transformers PretrainedConfig (typed loosely by nn.Module)
        self.num_layers = int(config.num_hidden_layers)
        self._handle = None
        if layer < self.num_layers:
            block = find_blocks(model, self.num_layers)[layer]
            self._handle = block.register_forward_pre_hook(self._capture, with_kwargs=True)

    @staticmethod
    def _capture(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        raise _StopForward(args[0] if args else kwargs["hidden_states"])

    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        try:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        except _StopForward as stop:
            return stop.hidden
        return out.last_hidden_state

    def close(self) -> None:
        if self._handle is not None:
            self._handle.remove()


def fuse_gelu(model: torch.nn.Module) -> int:
    """Swap transformers' Python `NewGELUActivation` (GPT-2's `gelu_new`: five elementwise passes,
    a quarter of a CPU forward) for the same tanh-approximated GELU as one fused kernel
    (`GELUTanh`). Same formula; results agree to float rounding. Returns how many were swapped."""
    from transformers.activations import GELUTanh, NewGELUActivation

    swapped = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is NewGELUActivation:
                setattr(module, child_name, GELUTanh())
                swapped += 1
    if swapped:
        log.debug("fused %d gelu_new activations", swapped)
    return swapped


def find_blocks(model: torch.nn.Module, num_layers: int) -> torch.nn.ModuleList:
    """The model's list of transformer blocks: the ModuleList with one entry per layer."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == num_layers]
    if not lists:
        raise StoreError(
            f"model.name: cannot find the {num_layers} transformer blocks of {type(model).__name__}"
        )
    return lists[0]


def length_batches(lengths: list[int], batch_tokens: int, max_padding: float = 0.25) -> list[list[int]]:
    """Indices grouped longest first so each batch's (size × longest) ≤ batch_tokens and padding stays
    under `max_padding` of the batch (a batch closes early rather than pad a short document to a long
    one). A document longer than the budget runs alone. Within a shard's hundreds of documents sorted
    neighbours differ by a few tokens, so padding is ~1%; the bound matters for small corpora.
    `max_padding=0` batches only documents of equal length."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:
        if current:
            padded = (len(current) + 1) * lengths[current[0]]
            if padded > batch_tokens or padded - real - lengths[i] > max_padding * padded:
                batches.append(current)
                current, real = [], 0
        current.append(i)
        real += lengths[i]
    if current:
        batches.append(current)
    return batches


class _Extraction:
    def __init__(self, cfg: SweepConfig, out: Path, progress: Progress) -> None:
        self.cfg = cfg
        self.out = out
        self.progress = progress
        self.device = resolve_device(cfg.model.device)
        self.tokenizer, self.resolved = load_tokenizer(cfg)
        self.bos = plan_bos(self.tokenizer, cfg.extraction.prepend_bos)
        log.info("BOS: %s (%s)", "prepended" if self.bos.prepend else "not prepended", self.bos.reason)
        config = load_model_config(cfg, self.resolved)  # checks before any weights are loaded
        self.num_layers = int(config.num_hidden_layers)
        cfg.check_layer(self.num_layers)
        max_positions = getattr(config, "max_position_embeddings", None)
        if max_positions is not None and cfg.data.context_length > max_positions:
            raise ConfigError(
                f"data.context_length: {cfg.model.name} takes at most {max_positions} positions "
                f"(got {cfg.data.context_length})"
            )
        model = load_model(cfg, self.resolved, resolve_dtype(cfg.model.dtype)).to(self.device).eval()
        if hasattr(model.config, "use_cache"):
            model.config.use_cache = False
        fuse_gelu(model)
        self.model = model
        model_config: Any = model.config
        self.d_model = int(model_config.hidden_size)
        self.reader = LayerReader(model, cfg.model.layer)
        ext = cfg.extraction
        self.writer = ShardWriter(
            out, self.d_model, ext.store_dtype, min(DEFAULT_ROW_GROUP_TOKENS, ext.shard_tokens)
        )
        self.stats = {"read": 0, "empty": 0}
        self.documents = Documents(cfg)
        self._done = self._computed = self._docs = 0
        self._start = time.perf_counter()

    def _tick(self, rows: int, docs: int, computed: bool) -> None:
        """Progress in documents out of `data.num_documents` after every forward batch (a shard can take
        minutes on a CPU): the total is known before any token is, so the UI can show a percentage."""
        self._done += rows
        self._docs += docs
        self._computed += rows if computed else 0
        rate = self._computed / max(time.perf_counter() - self._start, 1e-9)
        self.progress(self._docs, self.cfg.data.num_documents, {"tok/s": rate, "tokens": self._done})

    def run(self) -> None:
        with cpu_threads(self.cfg.extraction.num_threads, self.device):
            self._run()

    def _run(self) -> None:
        ext = self.cfg.extraction
        self.writer.remove_temporaries()
        on_disk = set(self.writer.existing_shards())
        shards: list[dict[str, Any]] = []
        self._start = time.perf_counter()
        try:
            for index, block in enumerate(self._blocks()):
                rows = sum(len(ids) for _, ids in block)
                entry = self._reuse(index, block, rows) if index in on_disk else None
                if entry is None:
                    entry = self.writer.write_shard(index, self._compute(block))
                else:
                    self._tick(rows, len(block), computed=False)
                shards.append(entry)
        finally:
            self.reader.close()
        if not shards:
            raise ConfigError(
                f"data.dataset: {self.cfg.data.dataset!r} (split {self.cfg.data.split!r}) yielded no "
                f"tokens ({self.stats['read']} documents read, {self.stats['empty']} empty)"
            )
        # The split may hold fewer documents than asked for, and empty ones are skipped: end at 100%.
        self.progress(self._docs, self._docs, {"tokens": self._done})
        for stale in sorted(on_disk - set(range(len(shards)))):
            (self.out / shard_name(stale)).unlink()
        data = {
            **self.cfg.data.model_dump(mode="json"),
            "documents_read": self.stats["read"],
            "documents_empty": self.stats["empty"],
        }
        self.writer.write_manifest(
            shards,
            model={
                "name": self.cfg.model.name,
                "resolved_path": self.resolved,
                "revision": self.cfg.model.revision,
                "layer": self.cfg.model.layer,
                "layer_meaning": layer_meaning(self.cfg.model.layer, self.num_layers),
                "num_layers": self.num_layers,
                "dtype": self.cfg.model.dtype,
                "architecture": type(self.model).__name__,
            },
            data=data,
            drop_first_token=ext.drop_first_token,
            split_rule={
                "rule": "splitmix64(doc_id)",
                "val_fraction": ext.val_fraction,
                "test_fraction": ext.test_fraction,
                "seed": SPLIT_SEED,
            },
            extraction=ext.model_dump(mode="json"),
            source=self.documents.source(),
            left_out=measure_left_out(
                self.out, shards, self.d_model, left_out_rules(self.tokenizer, self.bos, ext)
            ),
            bos=self.bos.manifest(),
        )

    def _blocks(self) -> Iterator[list[tuple[int, np.ndarray]]]:
        """Consecutive non-empty documents, ≤ shard_tokens tokens per block (a longer one alone)."""
        limit = self.cfg.extraction.shard_tokens
        block: list[tuple[int, np.ndarray]] = []
        rows = 0
        for doc_id, ids in self._tokenized():
            if block and rows + len(ids) > limit:
                yield block
                block, rows = [], 0
            block.append((doc_id, ids))
            rows += len(ids)
        if block:
            yield block

    def _tokenized(self) -> Iterator[tuple[int, np.ndarray]]:
        texts: list[tuple[int, str]] = []
        for doc_id, text in self.documents:
            self.stats["read"] += 1
            texts.append((doc_id, text))
            if len(texts) == _TOKENIZE_CHUNK:
                yield from self._tokenize(texts)
                texts = []
        if texts:
            yield from self._tokenize(texts)

    def _tokenize(self, texts: list[tuple[int, str]]) -> Iterator[tuple[int, np.ndarray]]:
        bos = [self.bos.token_id] if self.bos.prepend else []
        encoded = self.tokenizer(
            [t for _, t in texts],
            truncation=True,
            max_length=self.cfg.data.context_length - len(bos),  # the BOS counts in the context
            return_attention_mask=False,
        )["input_ids"]
        for (doc_id, _), ids in zip(texts, encoded, strict=True):
            if not ids:
                self.stats["empty"] += 1
                continue
            yield doc_id, np.asarray(bos + list(ids), dtype=np.int32)

    def _reuse(self, index: int, block: list[tuple[int, np.ndarray]], rows: int) -> dict[str, Any] | None:
        """A shard a previous run completed, if it holds exactly this block's documents."""
        entry = shard_entry(self.out / shard_name(index))
        if entry["rows"] == rows and (entry["doc_id_min"], entry["doc_id_max"]) == (
            block[0][0],
            block[-1][0],
        ):
            log.info("resuming: %s already complete", shard_name(index))
            return entry
        log.warning("%s does not match this extraction's plan; recomputing it", shard_name(index))
        return None

    def _compute(self, block: list[tuple[int, np.ndarray]]) -> Iterator[RowChunk]:
        """Run the block's documents in length batches, then hand them out in document order."""
        ext = self.cfg.extraction
        store_np = np.float16 if ext.store_dtype == "float16" else np.float32
        lengths = [len(ids) for _, ids in block]
        results: list[np.ndarray | None] = [None] * len(block)
        # On a CPU a ~600-token document already fills the matmuls, and padded rows plus the masked
        # attention path cost more than batching saves (benchmarks/extract.py, 24 documents: 9.3 s with
        # up to 25% padding, 6.0 s with equal-length batches only). A GPU needs the wide batches.
        max_padding = 0.0 if self.device.type == "cpu" else 0.25
        for batch in length_batches(lengths, ext.batch_tokens, max_padding):
            width = lengths[batch[0]]
            input_ids = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for row, i in enumerate(batch):
                input_ids[row, : lengths[i]] = torch.from_numpy(block[i][1])
                mask[row, : lengths[i]] = 1
            hidden = self.reader(input_ids.to(self.device), mask.to(self.device)).float().cpu().numpy()
            for row, i in enumerate(batch):
                acts = hidden[row, : lengths[i]]
                doc_ids = np.full(len(acts), block[i][0], dtype=np.int32)
                check_values(acts, doc_ids, ext.store_dtype)
                results[i] = acts.astype(store_np)
            self._tick(sum(lengths[i] for i in batch), len(batch), computed=True)
        codes = split_codes(
            np.asarray([d for d, _ in block]), ext.val_fraction, ext.test_fraction, SPLIT_SEED
        )
        for i, (doc_id, ids) in enumerate(block):
            computed = results[i]
            assert computed is not None  # every document of the block was computed above
            results[i] = None  # free as the shard is written
            n = len(ids)
            yield RowChunk(
                np.full(n, doc_id, dtype=np.int32),
                np.arange(n, dtype=np.int32),
                ids,
                np.full(n, codes[i], dtype=np.int8),
                computed,
            )


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One extraction per store at a time (two sweeps asking for the same store wait for each other).
    The lock file stays: removing it would let a waiting process lock a file no one else sees."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
        yield
        return
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
