"""The prompts of detection and fuzzing scoring (delphi's two classifier scorers), and their parsing.

- Detection: numbered plain-text windows (no token marked); which of them would the explained feature
  activate on anywhere?
- Fuzzing: numbered windows with some tokens wrapped in `**…**`; in which is the highlighting exactly
  the tokens the feature activates on?

Both answer with a final `Matches: 2, 5` line (or JSON `{"matches": [...]}` under a schema). An
unusable answer raises `MalformedAnswer` whose `problem` becomes a repair turn. The texts are part of
`PROMPT_VERSION` (sae_core.labels.prompt): change it when they change.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Literal

from sae_core.labels.prompt import _FENCE, MalformedAnswer, _clip

Scorer = Literal["detection", "fuzzing"]

DETECTION_SYSTEM = """\
A feature of a language model has been explained by the text below. You see numbered text excerpts \
of about 32 tokens each. Some contain tokens on which the feature activates and some do not. Decide \
for each excerpt whether the feature, as explained, activates on any of its tokens."""

FUZZING_SYSTEM = """\
A feature of a language model has been explained by the text below. You see numbered text excerpts \
in which some tokens are wrapped in double asterisks, like **this** (asterisks and backslashes of the \
text itself are escaped with a backslash). In some excerpts the wrapped tokens are exactly the ones \
the feature activates on; in others they were chosen at random. Decide for each excerpt whether its \
highlighting is correct for the feature as explained."""

TEXT_FORMAT = """\
Answer with a final line listing the numbers of the excerpts that {what}, e.g.
Matches: 2, 5, 7
(or `Matches: none`)."""

JSON_FORMAT = 'Answer in JSON: {{"matches": [numbers of the excerpts that {what}]}}.'

WHAT = {"detection": "the feature activates on", "fuzzing": "are highlighted correctly"}

SCHEMA = {
    "name": "feature_scoring",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {"matches": {"type": "array", "items": {"type": "integer"}}},
        "required": ["matches"],
        "additionalProperties": False,
    },
}


def build_scoring_messages(
    scorer: Scorer,
    explanation: str,
    texts: Sequence[str],
    *,
    use_json_schema: bool = False,
    repair: tuple[str | None, str] | None = None,
) -> list[dict[str, str]]:
    """System prompt and one user message (the explanation and the numbered excerpts, each already
    encoded for a prompt). `repair` = (the model's unusable answer, what was wrong) adds that answer
    and a user turn saying what was wrong and asking again."""
    system = DETECTION_SYSTEM if scorer == "detection" else FUZZING_SYSTEM
    fmt = (JSON_FORMAT if use_json_schema else TEXT_FORMAT).format(what=WHAT[scorer])
    numbered = "\n".join(f"{i}. {' '.join(t.split())}" for i, t in enumerate(texts, 1))
    messages = [
        {"role": "system", "content": f"{system}\n{fmt}"},
        {"role": "user", "content": f"Explanation: {explanation}\n\nExcerpts:\n{numbered}"},
    ]
    if repair is not None:
        answer, problem = repair
        note = f"{problem}\n{fmt}"
        if answer is None or not answer.strip():
            messages[-1]["content"] += f"\n\n{note}"
        else:
            messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": note}]
    return messages


_MATCHES_LINE = re.compile(r"^[\s*_#>`-]*matches[\s*_`]*[:：](?P<rest>.*)$", re.IGNORECASE)


def parse_matches(text: str | None, n_texts: int) -> set[int]:
    """The 1-based excerpt numbers the model picked (numbers out of range ignored); `MalformedAnswer`
    (with a problem addressed to the model) when there is no answer to read."""
    if text is None or not text.strip():
        raise MalformedAnswer("empty answer", "Your answer was empty.")
    stripped = _FENCE.sub("", text.strip()).strip()
    numbers: list[int] | None = None
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
            if isinstance(data, dict) and isinstance(data.get("matches"), list):
                numbers = [int(x) for x in data["matches"]]
        except (json.JSONDecodeError, TypeError, ValueError):
            numbers = None
    if numbers is None:
        for line in reversed(text.strip().splitlines()):
            match = _MATCHES_LINE.match(line)
            if match:
                numbers = [int(x) for x in re.findall(r"\d+", match.group("rest"))]
                break
    if numbers is None:
        raise MalformedAnswer(
            f"no 'Matches:' line in the answer: {_clip(text)}",
            "Your answer had no final line of the form `Matches: <numbers>` (or `Matches: none`).",
        )
    return {n for n in numbers if 1 <= n <= n_texts}
