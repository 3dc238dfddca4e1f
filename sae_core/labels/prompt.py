"""The labelling prompt, its worked examples, and the parsing of the model's answers.

Written fresh in the spirit of the study's prompt: each context marks the activating token with
`**…**` (the corpus's own asterisks and backslashes arrive escaped with a backslash, written so by
the analysis with `sae_core.encoding.prompt_marked`: a corpus cannot forge the marker), evidence is
ranked lexical identity > morphology > semantic role > syntax > context > topic, and the answer is a
2–8 word label or exactly `POLYSEMANTIC`, after a short reasoning, on a final `Label:` line.
Endpoints that support structured output get the same instructions with a JSON schema, whose explicit
`polysemantic` boolean decides the verdict whatever the label's wording.

A text answer is polysemantic when its label STARTS with the word POLYSEMANTIC, in any case, whatever
follows ("POLYSEMANTIC (no shared theme)", "Polysemantic – unrelated tokens", "polysemantic-looking
mix"): a label that opens with the verdict is the verdict, and reading it as a monosemantic label would
bias the rate upwards. A longer word ("polysemanticity …") or the word later in the label does not count.

An unusable answer raises `MalformedAnswer` with `problem`, a sentence addressed to the model saying
what was wrong; the next attempt sends it as a repair turn (`build_messages(..., repairs=...)`) after the
model's own answer, rather than the same prompt again (which at temperature 0 fails the same way).

`PROMPT_VERSION` is stored with every label and is part of the label cache key: change it whenever the
text below changes, so that cached labels from another prompt are not reused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

PROMPT_VERSION = "label-v4"
"""v2: the JSON schema's `polysemantic` boolean; v3: the text's own asterisks escaped with a
backslash, and the prompts say so; v4: a polysemantic answer carries its closest explanation
(`POLYSEMANTIC: …`, scored like a label), and detection/fuzzing prompts by delphi's conventions
(plain 32-token windows; highlighted windows). Labels and scores of an earlier version (cached or
stored) are not reused."""
POLYSEMANTIC = "POLYSEMANTIC"
MAX_LABEL_WORDS = 12
"""Longer answers are not labels (the prompt asks for 2–8 words; a little slack avoids pointless retries)."""


@dataclass(frozen=True)
class LabelExample:
    """One context shown to the model: the text with the activating token wrapped in `**…**`, every
    other asterisk and backslash escaped (`sae_core.encoding.prompt_marked`)."""

    context_text: str
    activation: float


@dataclass(frozen=True)
class ParsedLabel:
    label: str
    reasoning: str
    polysemantic: bool
    explanation: str | None = None
    """What detection and fuzzing score: the label, or a polysemantic answer's closest explanation
    (None when it gave none)."""


class MalformedAnswer(ValueError):
    """The model's answer has no usable label (empty, no `Label:` line, broken JSON, not a label).

    `problem` says what was wrong, addressed to the model (it becomes the repair turn's message)."""

    def __init__(self, message: str, problem: str | None = None) -> None:
        super().__init__(message, problem)
        self.problem = problem or f"Your answer could not be used: {message}."

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class RepairTurn:
    """One unusable answer and what the next request tells the model about it."""

    answer: str | None
    """The model's answer as received (None or blank: it answered nothing)."""
    problem: str


SYSTEM_PROMPT = """\
You label features of a sparse autoencoder trained on a language model's residual stream.
You see numbered text contexts in which one feature activates strongly. In each context the token \
where the feature fires is wrapped in double asterisks, like **this**, and its activation is given. \
Asterisks and backslashes that belong to the text itself are escaped with a backslash (\\* and \\\\): \
only unescaped double asterisks mark the token.

Find what the marked tokens have in common. Weigh the evidence in this order, strongest first:
1. lexical identity: the same token or word each time;
2. morphology: a shared prefix, suffix, inflection or spelling pattern;
3. semantic role: the same kind of meaning (a place, a year, a negation, a unit);
4. syntax: the same grammatical position or function;
5. the immediate context: what comes just before or after the marked token;
6. the topic of the surrounding text.
Prefer the strongest kind of evidence that explains most contexts (about four in five or more). \
Higher activations matter more than lower ones.

The label is 2 to 8 words and specific ("the word Washington", not "names"). If no single \
explanation covers most contexts, the label is POLYSEMANTIC, then a colon and the closest explanation \
you can give in 2 to 8 words ("POLYSEMANTIC: capitalised nouns").
"""

TEXT_FORMAT = """\
Answer with a short reasoning (at most three sentences), then a final line of the form
Label: <your label>"""

JSON_FORMAT = """\
Answer in JSON with three keys: "reasoning" (at most three sentences), "polysemantic" (true when no \
single explanation covers most contexts, else false) and "label" (the 2 to 8 word label or, when \
"polysemantic" is true, POLYSEMANTIC: followed by the closest explanation in 2 to 8 words)."""

LABEL_SCHEMA = {
    "name": "feature_label",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string"},
            "polysemantic": {"type": "boolean"},
            "label": {"type": "string"},
        },
        "required": ["reasoning", "polysemantic", "label"],
        "additionalProperties": False,
    },
}

# Worked examples (invented, one per kind of evidence, and one polysemantic feature).
FEW_SHOT: list[tuple[list[LabelExample], str, str]] = [
    (
        [
            LabelExample("the senator flew back to **Washington** on Monday to vote", 9.1),
            LabelExample("George **Washington** crossed the Delaware in", 8.4),
            LabelExample("protests in **Washington** and Oregon drew thousands", 8.0),
            LabelExample("The **Washington** Post reported that the", 7.2),
        ],
        "Every marked token is the word Washington, whether it names the city, the state, the "
        "president or a newspaper, so lexical identity explains all contexts.",
        "the word Washington",
    ),
    (
        [
            LabelExample("she kept runn**ing** until the", 5.3),
            LabelExample("we were think**ing** about moving", 5.0),
            LabelExample("the build**ing** collapsed after", 4.6),
            LabelExample("stop complain**ing** and start", 4.1),
        ],
        "The marked tokens are all the suffix 'ing' attached to a preceding stem, mostly verbs and "
        "one noun; morphology is the shared pattern.",
        "the suffix -ing after a stem",
    ),
    (
        [
            LabelExample("The war ended in **1945** and the", 6.2),
            LabelExample("born on 3 May **1962**, she", 5.9),
            LabelExample("sales fell in **2008** as the", 5.5),
            LabelExample("a law passed in **1871** allowed", 5.1),
        ],
        "Different tokens, but every one is a four-digit year in running text; the semantic role is shared.",
        "four-digit years in prose",
    ),
    (
        [
            LabelExample("Human rights groups said **Human** beings", 3.0),
            LabelExample("orbiting the **Earth** at", 2.8),
            LabelExample("a trip to **Disney** World", 2.7),
            LabelExample("x = **(** y + 2", 2.5),
            LabelExample("the **committee** voted", 2.4),
        ],
        "The marked tokens share no word, form, meaning, grammatical role or topic; the closest "
        "common trait is that most are capitalised nouns.",
        f"{POLYSEMANTIC}: capitalised nouns and a bracket",
    ),
]


def format_examples(examples: Sequence[LabelExample]) -> str:
    """The user message: numbered contexts, activation first, the token marked."""
    lines = ["Contexts where the feature activates (highest first):"]
    for i, ex in enumerate(examples, 1):
        text = " ".join(ex.context_text.split())  # one context per line, whatever its newlines
        lines.append(f"{i}. (activation {ex.activation:.2f}) {text}")
    return "\n".join(lines)


def _answer_text(reasoning: str, label: str, use_json_schema: bool) -> str:
    if use_json_schema:
        verdict = label.startswith(POLYSEMANTIC)
        return json.dumps({"reasoning": reasoning, "polysemantic": verdict, "label": label})
    return f"{reasoning}\nLabel: {label}"


def repair_message(problem: str, *, use_json_schema: bool = False) -> str:
    """The user turn after an unusable answer: what was wrong, then the expected form again."""
    if use_json_schema:
        form = 'Answer again in JSON with the keys "reasoning", "polysemantic" and "label".'
    else:
        form = "Answer again: a short reasoning, then a final line of the form\nLabel: <your label>"
    return f"{problem}\n{form}"


def build_messages(
    examples: Sequence[LabelExample],
    *,
    use_json_schema: bool = False,
    repairs: Sequence[RepairTurn] = (),
) -> list[dict[str, str]]:
    """System prompt, the worked examples as earlier turns, then this feature's contexts; after an
    unusable answer, each `repairs` turn adds the model's answer and a user message saying what was
    wrong (an empty answer adds no assistant turn: the note goes into the next user message)."""
    fmt = JSON_FORMAT if use_json_schema else TEXT_FORMAT
    messages = [{"role": "system", "content": f"{SYSTEM_PROMPT}\n{fmt}"}]
    for shot_examples, reasoning, label in FEW_SHOT:
        messages.append({"role": "user", "content": format_examples(shot_examples)})
        messages.append({"role": "assistant", "content": _answer_text(reasoning, label, use_json_schema)})
    messages.append({"role": "user", "content": format_examples(examples)})
    for turn in repairs:
        note = repair_message(turn.problem, use_json_schema=use_json_schema)
        if turn.answer is None or not turn.answer.strip():
            messages[-1] = {"role": "user", "content": f"{messages[-1]['content']}\n\n{note}"}
        else:
            messages.append({"role": "assistant", "content": turn.answer})
            messages.append({"role": "user", "content": note})
    return messages


_LABEL_LINE = re.compile(r"^[\s*_#>`-]*label[\s*_`]*[:：][\s*_`]*(?P<label>.*?)\s*$", re.IGNORECASE)
_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
_VERDICT = re.compile(r"^\W*polysemantic(?![^\W\d_])", re.IGNORECASE)
"""The word POLYSEMANTIC opening a label, whatever follows, unless letters continue the word."""
_WANTED = "give 2–8 words, or exactly POLYSEMANTIC if no single explanation covers most contexts"


def parse_label(text: str | None) -> ParsedLabel:
    """Parse a JSON answer (`{"reasoning", "polysemantic", "label"}`, fences allowed) or text ending in
    `Label: …`. In JSON the `polysemantic` boolean decides (the wording of the label only when the key
    is absent); in text a label that starts with the word POLYSEMANTIC is polysemantic.

    Raises `MalformedAnswer` for an empty answer, invalid JSON without a `Label:` line, a missing or
    empty label, a JSON answer whose boolean contradicts its label, or a label (of a feature not
    polysemantic) longer than `MAX_LABEL_WORDS` words.
    """
    if text is None or not text.strip():
        raise MalformedAnswer("empty answer", "Your answer was empty.")
    stripped = _FENCE.sub("", text.strip()).strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("label"), str):
            flag = data.get("polysemantic")
            return _finish(
                data["label"], str(data.get("reasoning") or ""), flag if isinstance(flag, bool) else None
            )
        if not _find_label_line(text):
            raise MalformedAnswer(
                f"answer is not the expected JSON and has no 'Label:' line: {_clip(text)}",
                'Your answer was not valid JSON with the keys "reasoning", "polysemantic" and "label".',
            )
    found = _find_label_line(text)
    if found is None:
        raise MalformedAnswer(
            f"no 'Label:' line in the answer: {_clip(text)}",
            "Your answer had no final line of the form `Label: <your label>`.",
        )
    index, label = found
    reasoning_lines = text.strip().splitlines()[:index]
    reasoning = re.sub(r"^\s*\**reasoning\**\s*:\s*\**", "", "\n".join(reasoning_lines).strip(), flags=re.I)
    return _finish(label, reasoning.strip())


def _find_label_line(text: str) -> tuple[int, str] | None:
    lines = text.strip().splitlines()
    for index in range(len(lines) - 1, -1, -1):  # the last Label: line wins
        match = _LABEL_LINE.match(lines[index])
        if match:
            return index, match.group("label")
    return None


def _finish(raw_label: str, reasoning: str, flagged: bool | None = None) -> ParsedLabel:
    """The verdict and the stored label. `flagged` is the JSON answer's boolean (None: text answer, or
    JSON without it). A polysemantic feature is stored as `POLYSEMANTIC`; any explanation the model
    wrote after (or instead of) the word is kept at the end of the reasoning."""
    label = raw_label
    while label != (cleaned := label.strip().strip("*_`\"'“”‘’ ").rstrip(".")):
        label = cleaned
    says_polysemantic = bool(_VERDICT.match(label))
    polysemantic = says_polysemantic if flagged is None else flagged
    if polysemantic:
        closest = None
        if label and not re.fullmatch(r"\W*polysemantic\W*", label, flags=re.IGNORECASE):
            reasoning = f"{reasoning}\nLabel as answered: {label}".strip()
            closest = re.sub(r"^\W*polysemantic\W*", "", label, flags=re.IGNORECASE).strip() or None
        return ParsedLabel(POLYSEMANTIC, reasoning, True, closest)
    if not label:
        raise MalformedAnswer("the label is empty", f"Your label was empty; {_WANTED}.")
    if says_polysemantic:  # only reachable when the JSON boolean said false
        raise MalformedAnswer(
            f'"polysemantic" is false but the label says {_clip(label)}',
            f'You set "polysemantic" to false but your label was {label!r}; if no single explanation '
            'covers most contexts set "polysemantic" to true, otherwise give a label of 2 to 8 words.',
        )
    words = len(label.split())
    if words > MAX_LABEL_WORDS:
        raise MalformedAnswer(
            f"the label has {words} words, more than {MAX_LABEL_WORDS}: {_clip(label)}",
            f"Your label had {words} words; {_WANTED}.",
        )
    return ParsedLabel(label, reasoning, False, label)


def _clip(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[:limit] + "…")
