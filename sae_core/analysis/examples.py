"""Examples of what a feature responds to: its top-activating tokens and a few drawn across its range,
each with a context window inside its own document, decoded, the activating token marked.

`ExampleCollector` keeps, per selected feature, a streaming top-k (ties go to the earlier token) and a
uniform reservoir sample of firing tokens (the ones with the smallest random keys), so memory is
O(features × k) whatever the token count. Quantile examples are picked from the reservoir at evenly
spaced quantiles of its activations, leaving out tokens already among the top-k.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from sae_core.encoding import prompt_marked
from sae_core.errors import AnalysisError

log = logging.getLogger(__name__)

RESERVOIR_PER_QUANTILE = 16
"""Reservoir size per quantile example: the quantiles are those of a uniform sample of this many × q."""

EXAMPLE_SCHEMA = pa.schema(
    [
        ("feature_id", pa.int32()),
        ("group", pa.string()),
        ("kind", pa.string()),
        ("rank", pa.int32()),
        ("activation", pa.float32()),
        ("doc_id", pa.int32()),
        ("pos", pa.int32()),
        ("token_id", pa.int32()),
        ("token", pa.string()),
        ("context_token_ids", pa.list_(pa.int32())),
        ("context_tokens", pa.list_(pa.string())),
        ("marked_index", pa.int32()),
        ("context_text", pa.string()),
    ]
)


@dataclass
class _Buffer:
    """Per-feature slots [slots, features]: a sort key, the activation and the token's provenance."""

    key: torch.Tensor
    act: torch.Tensor
    doc: torch.Tensor
    pos: torch.Tensor
    tok: torch.Tensor

    @classmethod
    def empty(cls, slots: int, width: int, fill: float, device: torch.device) -> _Buffer:
        def ints() -> torch.Tensor:
            return torch.full((slots, width), -1, dtype=torch.int32, device=device)

        return cls(
            torch.full((slots, width), fill, device=device),
            torch.zeros(slots, width, device=device),
            ints(),
            ints(),
            ints(),
        )

    def merge(
        self,
        key: torch.Tensor,
        act: torch.Tensor,
        doc: torch.Tensor,
        pos: torch.Tensor,
        tok: torch.Tensor,
        descending: bool,
    ) -> None:
        """Keep the best `slots` of (buffer ∪ batch) by key. The batch's best are found with `topk` and
        put in token order after the buffer (earlier tokens), so that the stable sort gives ties to the
        earlier token; only a tie at the batch's own cut-off is broken by `topk`, deterministically."""
        slots = self.key.shape[0]
        take = min(slots, key.shape[0])
        _, index = torch.topk(key, take, dim=0, largest=descending)
        index = index.sort(dim=0).values
        all_key = torch.cat([self.key, key.gather(0, index)])
        order = torch.sort(all_key, dim=0, descending=descending, stable=True).indices[:slots]
        self.key = all_key.gather(0, order)
        self.act = torch.cat([self.act, act.gather(0, index)]).gather(0, order)
        self.doc = torch.cat([self.doc, doc[index]]).gather(0, order)
        self.pos = torch.cat([self.pos, pos[index]]).gather(0, order)
        self.tok = torch.cat([self.tok, tok[index]]).gather(0, order)


class ExampleCollector:
    """Streaming top-k and reservoir per selected feature; feed it the selected features' activations."""

    def __init__(
        self,
        width: int,
        top_k: int,
        quantiles: int,
        threshold: float,
        seed: int,
        device: torch.device,
    ) -> None:
        self.width, self.top_k, self.quantiles, self.threshold = width, top_k, quantiles, threshold
        self.top = _Buffer.empty(top_k, width, -float("inf"), device)
        slots = RESERVOIR_PER_QUANTILE * quantiles
        self.reservoir = _Buffer.empty(slots, width, float("inf"), device) if slots else None
        self._gen = torch.Generator().manual_seed(seed)

    def update(self, acts: torch.Tensor, doc_id: np.ndarray, pos: np.ndarray, token_id: np.ndarray) -> None:
        """`acts` [B, width] float32; provenance arrays [B] (int32). Only firing tokens (activation strictly
        above the threshold) can become examples."""
        dev = acts.device
        doc, p, tok = (
            torch.from_numpy(np.ascontiguousarray(a, dtype=np.int32)).to(dev) for a in (doc_id, pos, token_id)
        )
        firing = acts > self.threshold
        self.top.merge(torch.where(firing, acts, -float("inf")), acts, doc, p, tok, descending=True)
        if self.reservoir is not None:
            keys = torch.rand(acts.shape, generator=self._gen).to(dev)
            self.reservoir.merge(torch.where(firing, keys, float("inf")), acts, doc, p, tok, descending=False)

    def examples(self, feature_ids: Sequence[int], groups: Sequence[str]) -> list[dict[str, Any]]:
        """Rows (without contexts) for every selected feature: its top examples (rank 0 = strongest),
        then quantile examples (rank 0 = lowest quantile)."""
        rows: list[dict[str, Any]] = []
        top = {name: getattr(self.top, name).cpu().numpy() for name in ("key", "act", "doc", "pos", "tok")}
        res = (
            {
                name: getattr(self.reservoir, name).cpu().numpy()
                for name in ("key", "act", "doc", "pos", "tok")
            }
            if self.reservoir is not None
            else None
        )
        for j, (feature, group) in enumerate(zip(feature_ids, groups, strict=True)):
            kept = np.isfinite(top["key"][:, j])
            seen = set()
            for rank, slot in enumerate(np.flatnonzero(kept)):
                rows.append(_row(feature, group, "top", rank, top, int(slot), j))
                seen.add((int(top["doc"][slot, j]), int(top["pos"][slot, j])))
            if res is None:
                continue
            slots = [
                s
                for s in np.flatnonzero(np.isfinite(res["key"][:, j]))
                if (int(res["doc"][s, j]), int(res["pos"][s, j])) not in seen
            ]
            slots.sort(key=lambda s: (res["act"][s, j], res["doc"][s, j], res["pos"][s, j]))
            for rank, slot in enumerate(_quantile_picks(slots, self.quantiles)):
                rows.append(_row(feature, group, "quantile", rank, res, slot, j))
        return rows


def _quantile_picks(ordered: list[Any], q: int) -> list[Any]:
    """Elements at the midpoints of q equal-count bands of an ascending list (all of it when shorter)."""
    n = len(ordered)
    if n <= q:
        return list(ordered)
    return [ordered[int((i + 0.5) * n / q)] for i in range(q)]


def _row(
    feature: int, group: str, kind: str, rank: int, cols: dict[str, np.ndarray], slot: int, j: int
) -> dict[str, Any]:
    return {
        "feature_id": int(feature),
        "group": group,
        "kind": kind,
        "rank": rank,
        "activation": float(cols["act"][slot, j]),
        "doc_id": int(cols["doc"][slot, j]),
        "pos": int(cols["pos"][slot, j]),
        "token_id": int(cols["tok"][slot, j]),
    }


# ---------------------------------------------------------------------------------------------
# Contexts and decoding


class TokenDecoder:
    """Token ids → text with the store's tokenizer; without one (a synthetic store) tokens print as
    `<id>` so the examples stay usable."""

    def __init__(self, tokenizer_path: str | None) -> None:
        self.tokenizer = None
        self.note = ""
        if tokenizer_path:
            try:
                from transformers import AutoTokenizer

                # Local directory or the Hub cache only: extraction fetched it; analysis never downloads.
                self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, local_files_only=True)
            except (OSError, ValueError) as exc:
                self.note = f"no tokenizer at {tokenizer_path!r} ({str(exc).splitlines()[0]})"
        else:
            self.note = "the store's manifest names no model/tokenizer"
        if self.note:
            log.warning("examples show token ids as <id>: %s", self.note)
        self._cache: dict[int, str] = {}

    def tokens(self, ids: Sequence[int]) -> list[str]:
        missing = sorted({int(i) for i in ids} - self._cache.keys())
        if missing:
            if self.tokenizer is None:
                texts = [f"<{i}>" for i in missing]
            else:
                texts = self.tokenizer.batch_decode([[i] for i in missing])
            self._cache.update(zip(missing, texts, strict=True))
        return [self._cache[int(i)] for i in ids]

    def text(self, ids: Sequence[int]) -> str:
        if not len(ids):
            return ""
        if self.tokenizer is None:
            return "".join(self.tokens(ids))
        return str(self.tokenizer.decode(list(ids)))


def attach_contexts(
    rows: list[dict[str, Any]],
    documents: dict[int, np.ndarray],
    window: int,
    decoder: TokenDecoder,
) -> pa.Table:
    """Add each row's context (±`window` tokens, clipped to its document) and build the table.
    A row whose token does not match its document is a corrupted store: AnalysisError."""
    for row in rows:
        doc = documents.get(row["doc_id"])
        pos = row["pos"]
        if doc is None or not 0 <= pos < len(doc) or int(doc[pos]) != row["token_id"]:
            raise AnalysisError(
                f"store: token {row['token_id']} at doc_id {row['doc_id']} pos {pos} is not in the "
                "store's documents (doc_id/pos/token_id columns disagree)"
            )
        start, end = max(0, pos - window), min(len(doc), pos + window + 1)
        ids = [int(t) for t in doc[start:end]]
        marked = pos - start
        row["token"] = decoder.tokens([row["token_id"]])[0]
        row["context_token_ids"] = ids
        row["context_tokens"] = decoder.tokens(ids)
        row["marked_index"] = marked
        # The labelling prompt's form: the token wrapped in `**`, the corpus's own `*` and `\` escaped,
        # so that a corpus cannot forge (or blur) the marker.
        before, token, after = ids[:marked], ids[marked : marked + 1], ids[marked + 1 :]
        row["context_text"] = prompt_marked(decoder.text(before), decoder.text(token), decoder.text(after))
    columns = {field.name: [row[field.name] for row in rows] for field in EXAMPLE_SCHEMA}
    return pa.table(columns, schema=EXAMPLE_SCHEMA)


# ---------------------------------------------------------------------------------------------
# Top examples of every feature, from the sparse entries pass 1 already gathers

TOP_EXAMPLES_SCHEMA = pa.schema(
    [
        ("feature_id", pa.int32()),
        ("rank", pa.int32()),
        ("activation", pa.float32()),
        ("doc_id", pa.int32()),
        ("pos", pa.int32()),
        ("token_id", pa.int32()),
    ]
)

COMPACT_MIN_ENTRIES = 1 << 18
"""Candidates held before they are cut back to each feature's best k (at least m × k): often enough
that the floors rise early (until a feature holds k examples, every firing entry of it passes)."""


class SparseTopK:
    """A streaming top-k per feature over every feature, fed the positive entries (row, feature, value)
    of each encoded chunk. An entry is a candidate only if it fires and beats its feature's current
    k-th best (a gather and a compare per entry); candidates are cut back to each feature's best k now
    and then. After the first few thousand tokens almost nothing passes, so the cost is the compare
    over the ~L0 entries per token, next to an encode of m. Ties go to the earlier token, as in `_Buffer`."""

    def __init__(self, m: int, k: int, threshold: float, device: torch.device) -> None:
        self.m, self.k = m, k
        # An entry passes when strictly above its feature's floor: the firing threshold until the
        # feature holds k examples, then its k-th best activation.
        self.floor = torch.full((m,), float(threshold), device=device)
        self._parts: list[tuple[np.ndarray, ...]] = []
        self._held = 0
        self._limit = max(m * k, COMPACT_MIN_ENTRIES)
        self._kept: tuple[np.ndarray, ...] = tuple(np.zeros(0, dtype=t) for t in _KEPT_DTYPES)

    def update(
        self,
        rows: torch.Tensor,
        cols: torch.Tensor,
        vals: torch.Tensor,
        seq: int,
        doc_id: np.ndarray,
        pos: np.ndarray,
        token_id: np.ndarray,
    ) -> None:
        """Positive entries of one chunk; `rows` index the provenance arrays; `seq` is the global index
        of row 0 (ties are broken by it)."""
        passing = vals > self.floor[cols]
        if not bool(passing.any()):
            return
        r = rows[passing].cpu().numpy()
        part = (
            cols[passing].cpu().numpy().astype(np.int32),
            vals[passing].float().cpu().numpy(),
            (r + seq).astype(np.int64),
            np.asarray(doc_id)[r].astype(np.int32),
            np.asarray(pos)[r].astype(np.int32),
            np.asarray(token_id)[r].astype(np.int32),
        )
        self._parts.append(part)
        self._held += len(r)
        if self._held >= self._limit:
            self._compact()

    def _compact(self) -> None:
        cols, vals, seq, doc, pos, tok = (
            np.concatenate([kept, *(p[i] for p in self._parts)]) for i, kept in enumerate(self._kept)
        )
        self._parts, self._held = [], 0
        # One stable sort on (feature, −activation): activations are positive, so their float32 bits
        # order like the values; equal keys keep their order, which is token order (the kept entries
        # come first and are older). A 3-key lexsort took ~5x as long.
        bits = vals.astype(np.float32).view(np.uint32).astype(np.int64)
        order = np.argsort((cols.astype(np.int64) << 32) | (0xFFFFFFFF - bits), kind="stable")
        cols, vals, seq, doc, pos, tok = (a[order] for a in (cols, vals, seq, doc, pos, tok))
        rank = np.arange(len(cols)) - np.searchsorted(cols, cols, side="left")
        keep = rank < self.k
        self._kept = tuple(a[keep] for a in (cols, vals, seq, doc, pos, tok))
        last = rank[keep] == self.k - 1  # features holding k examples: a new one must beat the k-th
        floor = self.floor.cpu().numpy().copy()
        floor[self._kept[0][last]] = self._kept[1][last]
        self.floor = torch.from_numpy(floor).to(self.floor.device)

    def table(self) -> pa.Table:
        """Every feature's top examples, by feature then rank (0 = strongest)."""
        self._compact()
        cols, vals, _, doc, pos, tok = self._kept
        rank = np.arange(len(cols)) - np.searchsorted(cols, cols, side="left")
        arrays = [cols, rank.astype(np.int32), vals.astype(np.float32), doc, pos, tok]
        return pa.Table.from_arrays([pa.array(a) for a in arrays], schema=TOP_EXAMPLES_SCHEMA)


_KEPT_DTYPES = (np.int32, np.float32, np.int64, np.int32, np.int32, np.int32)


DOCUMENT_SCHEMA = pa.schema([("doc_id", pa.int32()), ("token_ids", pa.list_(pa.int32()))])
VOCAB_SCHEMA = pa.schema([("token_id", pa.int32()), ("token", pa.string())])


def example_documents(
    top: pa.Table, documents: dict[int, np.ndarray], decoder: TokenDecoder
) -> tuple[pa.Table, pa.Table]:
    """The documents the examples of `top` come from, and each of their tokens decoded once: every
    example's context is a slice of its document, so the browser stores (doc, pos) per example, not
    2 × context_window tokens. A document that is missing is a corrupted store: AnalysisError."""
    ids = sorted({int(d) for d in top.column("doc_id").to_numpy()})
    if missing := [d for d in ids if d not in documents]:
        raise AnalysisError(f"store: examples cite doc_id {missing[:5]} absent from the store's documents")
    tokens = [np.asarray(documents[d], dtype=np.int32) for d in ids]
    vocab = np.unique(np.concatenate(tokens)) if tokens else np.zeros(0, dtype=np.int32)
    docs = pa.table(
        {"doc_id": pa.array(ids, pa.int32()), "token_ids": pa.array(tokens, pa.list_(pa.int32()))},
        schema=DOCUMENT_SCHEMA,
    )
    text = pa.table(
        {"token_id": pa.array(vocab, pa.int32()), "token": decoder.tokens(vocab.tolist())},
        schema=VOCAB_SCHEMA,
    )
    return docs, text
