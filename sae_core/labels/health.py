"""Labeller health: labels that are not evidence of anything, flagged per feature and summed per cell.

A weak labeller (SmolLM2-135M behind an OpenAI-compatible server) answered 15 of 16 features with the
prompt's first worked example word for word and the 16th with a 290-character hyphenated string that
passes a word limit as one word: no parse failure, monosemanticity rate 1.000. Three flags catch it:

- `copy`: the label (or a polysemantic answer's closest explanation) equals one of the prompt's
  worked-example answers (case, spacing and end punctuation ignored). A real feature may deserve it
  ("four-digit years in prose"); the flag cannot tell, so it counts the label as failed and says so.
- `shared`: the same label on MANY features the analysis does not call near-duplicates, where many is
  at least `max(SHARED_MIN, ceil(SHARED_FRACTION × labelled features))` — 3 of 16, 5 of 50. Near-
  duplicates (selected.json's `duplicate_of`) share their representative's label by design and are not
  counted. POLYSEMANTIC is a verdict, not a label, and is never `shared`.
- `too_long`: more characters than `labeling.max_label_chars`.

A flagged label is not counted as labelled in the monosemanticity rate and counts as FAILED in the
conservative rate (`sae_core.labels.files.monosemanticity`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sae_core.labels.prompt import FEW_SHOT, POLYSEMANTIC

SHARED_MIN = 3
SHARED_FRACTION = 0.10
RULES = {
    "copy": "the label equals an answer of the prompt's worked examples (case and spacing ignored)",
    "shared": (
        f"the same label on at least max({SHARED_MIN}, ⌈{SHARED_FRACTION:g} × labelled features⌉) features "
        "that are not near-duplicates of each other (POLYSEMANTIC excluded)"
    ),
    "too_long": "the label has more characters than labeling.max_label_chars",
}


def normalise(label: str) -> str:
    return re.sub(r"\s+", " ", label).strip().strip(".;:!\"'`*_").casefold()


def example_answers() -> set[str]:
    """The worked examples' answers as the prompt shows them, and a polysemantic one's explanation."""
    answers = set()
    for _, _, label in FEW_SHOT:
        answers.add(normalise(label))
        if label.startswith(POLYSEMANTIC):
            answers.add(normalise(label.removeprefix(POLYSEMANTIC).lstrip(":")))
    answers.discard(normalise(POLYSEMANTIC))
    return answers


def shared_threshold(labelled: int) -> int:
    return max(SHARED_MIN, math.ceil(SHARED_FRACTION * labelled))


def health_flags(outcomes: dict[int, dict[str, Any]], max_chars: int) -> dict[int, list[str]]:
    """Flags per feature over the labelled (`status == ok`) outcomes; features without a flag absent."""
    ok = {fid: o for fid, o in outcomes.items() if o.get("status") == "ok"}
    copies = example_answers()
    said = {fid: normalise(str(o.get("label") or "")) for fid, o in ok.items() if not o.get("polysemantic")}
    uses = Counter(said.values())
    many = shared_threshold(len(ok))
    flags: dict[int, list[str]] = {}
    for fid, out in ok.items():
        found = []
        explanation = normalise(str(out.get("explanation") or out.get("label") or ""))
        if explanation in copies:
            found.append("copy")
        if fid in said and uses[said[fid]] >= many:
            found.append("shared")
        if len(str(out.get("label") or "")) > max_chars or len(str(out.get("explanation") or "")) > max_chars:
            found.append("too_long")
        if found:
            flags[fid] = found
    return flags


def health_summary(rows: Sequence[dict[str, Any]], max_chars: int) -> dict[str, Any]:
    """The labeller's health over one cell's rows (one per feature and group; counted per feature)."""
    per_feature = {r["feature_id"]: r for r in rows}
    ok = [r for r in per_feature.values() if r.get("status") == "ok"]
    flagged = [r for r in ok if r.get("health")]
    mono = [normalise(str(r.get("label") or "")) for r in ok if not r.get("polysemantic")]

    def count(flag: str) -> int:
        return sum(flag in str(r.get("health") or "").split(",") for r in ok)

    shared = Counter(normalise(str(r.get("label"))) for r in ok if "shared" in str(r.get("health") or ""))
    return {
        "features": len(per_feature),
        "answered": len(ok),
        "failed": sum(r.get("status") == "failed" for r in per_feature.values()),
        "distinct_labels": len(set(mono)),
        "monosemantic_labels": len(mono),
        "flagged": len(flagged),
        "copies": count("copy"),
        "shared": count("shared"),
        "too_long": count("too_long"),
        "shared_labels": dict(shared),
        "shared_threshold": shared_threshold(len(ok)),
        "max_label_chars": max_chars,
        "rules": RULES,
    }
