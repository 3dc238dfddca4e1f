"""Detection and fuzzing scores of an explanation, by delphi's conventions, counted without dropping.

Inputs are the held-out windows the analysis saved per selected feature (`features/scoring_examples
.parquet`: activating windows sampled over activation quantiles, and random windows where the feature
never fires; none of them shown to the labeller):

- Detection: every window as plain text; the model says which ones the feature activates on.
- Fuzzing: activating windows with exactly their firing tokens highlighted (correct), non-activating
  windows highlighted at the positions of a random activating window's firing tokens (incorrect, as
  delphi's default fuzzer does); the model says which highlightings are correct.

Windows are shuffled (seeded by the feature) and sent `batch` per request. The score is CLASS-BALANCED
accuracy ½(TP / activating + TN / non-activating), where a window without a usable prediction (its
request's answer unusable after one repair turn) counts as wrong: Neuronpedia drops failed predictions,
which lets a labeller that cannot answer look accurate. The counts travel with the score.

HTTP failures raise as in `sae_core.labels.client` (the caller retries); an unusable answer gets ONE
repair turn saying what was wrong, then its windows count as failed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sae_core.encoding import prompt_highlighted, prompt_text
from sae_core.labels.client import SchemaSupport, chat_completion, schema_request
from sae_core.labels.prompt import MalformedAnswer
from sae_core.labels.scoring_prompt import SCHEMA, Scorer, build_scoring_messages, parse_matches


@dataclass(frozen=True)
class ScoringWindow:
    """One held-out window of a feature: its tokens as text and which of them fire (> the analysis's
    threshold, in the SAE input's units)."""

    tokens: tuple[str, ...]
    firing: tuple[bool, ...]
    activating: bool
    """True: sampled among the feature's firing tokens; False: a random window where none fires."""


@dataclass(frozen=True)
class ScoringItem:
    text: str
    """The window as the prompt shows it (escaped; fuzzing: highlighted)."""
    truth: bool
    """Detection: the feature fires in it; fuzzing: its highlighting is correct."""


@dataclass
class ScoreCounts:
    """Confusion counts over the windows that got a prediction, and those that did not."""

    tp: int = 0
    tn: int = 0
    fp: int = 0
    fn: int = 0
    failed_positive: int = 0
    failed_negative: int = 0
    requests: int = 0
    repairs: int = 0

    @property
    def failed(self) -> int:
        return self.failed_positive + self.failed_negative

    @property
    def balanced_accuracy(self) -> float | None:
        """½(TP/(TP+FN+failed positives) + TN/(TN+FP+failed negatives)); None without both classes."""
        pos = self.tp + self.fn + self.failed_positive
        neg = self.tn + self.fp + self.failed_negative
        if pos == 0 or neg == 0:
            return None
        return (self.tp / pos + self.tn / neg) / 2

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed": self.failed, "balanced_accuracy": self.balanced_accuracy}


def detection_items(windows: Sequence[ScoringWindow]) -> list[ScoringItem]:
    return [ScoringItem(prompt_text("".join(w.tokens)), w.activating) for w in windows]


def fuzzing_items(windows: Sequence[ScoringWindow], rng: random.Random) -> list[ScoringItem]:
    """Activating windows with their firing tokens highlighted; each non-activating window highlighted
    at the firing positions of a random activating window (clipped to its length). Empty when no
    activating window has a firing token."""
    active = [w for w in windows if w.activating and any(w.firing)]
    if not active:
        return []
    items = [ScoringItem(_highlight(w.tokens, set(_hits(w.firing))), True) for w in active]
    for w in windows:
        if w.activating:
            continue
        borrowed = {i for i in _hits(rng.choice(active).firing) if i < len(w.tokens)}
        items.append(ScoringItem(_highlight(w.tokens, borrowed), False))
    return items


def _hits(firing: Sequence[bool]) -> list[int]:
    return [i for i, f in enumerate(firing) if f]


def _highlight(tokens: Sequence[str], marked: set[int]) -> str:
    """Runs of highlighted tokens wrapped as one piece (`**New York**`), the rest plain."""
    pieces: list[tuple[str, bool]] = []
    for i, token in enumerate(tokens):
        hit = i in marked
        if pieces and pieces[-1][1] == hit:
            pieces[-1] = (pieces[-1][0] + token, hit)
        else:
            pieces.append((token, hit))
    return prompt_highlighted(pieces)


def scoring_items(scorer: Scorer, windows: Sequence[ScoringWindow], seed: str) -> list[ScoringItem]:
    """The scorer's items, shuffled by `seed` (the same feature always gets the same order)."""
    rng = random.Random(f"{scorer}-{seed}")
    items = detection_items(windows) if scorer == "detection" else fuzzing_items(windows, rng)
    rng.shuffle(items)
    return items


def score_explanation(
    client: Any,
    model: str,
    scorer: Scorer,
    explanation: str,
    items: Sequence[ScoringItem],
    *,
    batch: int,
    temperature: float = 0.0,
    timeout: float = 60.0,
    use_json_schema: bool = True,
    schema_support: SchemaSupport | None = None,
) -> ScoreCounts:
    """Ask about `items` in batches of `batch` and count the predictions. HTTP failures raise
    (`TransientLabelError` / `RejectedLabelError`); an answer without a readable `Matches:` list gets
    one repair turn, then the batch's windows count as failed."""
    counts = ScoreCounts()
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        texts = [it.text for it in chunk]

        def ask(
            structured: bool, repair: tuple[str | None, str] | None = None, texts: list[str] = texts
        ) -> str | None:
            counts.requests += 1
            return chat_completion(
                client,
                model,
                build_scoring_messages(scorer, explanation, texts, use_json_schema=structured, repair=repair),
                temperature=temperature,
                timeout=timeout,
                schema=SCHEMA if structured else None,
            )

        text, structured = schema_request(schema_support, use_json_schema, ask, lambda: ask(False))
        try:
            picked: set[int] | None = parse_matches(text, len(chunk))
        except MalformedAnswer as exc:
            counts.repairs += 1
            try:
                picked = parse_matches(ask(structured, (text, exc.problem)), len(chunk))
            except MalformedAnswer:
                picked = None
        for i, it in enumerate(chunk, 1):
            if picked is None:
                if it.truth:
                    counts.failed_positive += 1
                else:
                    counts.failed_negative += 1
            elif i in picked:
                counts.tp, counts.fp = counts.tp + it.truth, counts.fp + (not it.truth)
            else:
                counts.fn, counts.tn = counts.fn + it.truth, counts.tn + (not it.truth)
    return counts
