"""Output encoding: text from a corpus or an LLM, made inert for the context it is written into.

Corpus text reaches an LLM, whose labels come back; both reach Prefect artifacts (Markdown), report.md,
HTML pages and prompts. Any of them may carry `![x](http://…)`, `[x](javascript:…)`, `<img onerror=…>`,
`<script>`, backticks, pipes or `**`, planted in the corpus or echoed by the model. One helper per
context, used wherever such a string is written:

- `markdown_text`: inline Markdown (a table cell, a list item, a paragraph). Every ASCII punctuation
  character is backslash-escaped (CommonMark and GFM render an escaped character as itself, so no link,
  image, raw HTML, autolink, emphasis, code span or table pipe can start) and whitespace, newlines
  included, becomes single spaces (a newline would end a table row or start a block).
- `html_text` / `html_attr`: an element's text and a quoted attribute's value.
- `script_json`: data for a page's `<script type="application/json">` (the feature browser, whose
  script escapes every string again as it builds the page).
- `prompt_text` / `prompt_marked`: a context in a labelling prompt, where `**` marks the activating
  token; the text's own backslashes and asterisks are backslash-escaped, so an unescaped `**` is only
  ever the marker.

Strings we compose ourselves (numbers, cell names, config values validated at load time) need none of
this; these are for text whose content we do not control.
"""

from __future__ import annotations

import html
import json
import re
import string
from typing import Any

_MARKDOWN_SPECIAL = re.compile("([" + re.escape(string.punctuation) + "])")
_WHITESPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def markdown_text(text: object) -> str:
    """`text` as inline Markdown that renders as exactly its characters: nothing in it is markup.

    Control characters are dropped and whitespace runs (newlines too) become one space, so the result
    is safe inside a table cell; `None` becomes an empty string."""
    if text is None:
        return ""
    flat = _WHITESPACE.sub(" ", _CONTROL.sub("", str(text))).strip()
    return _MARKDOWN_SPECIAL.sub(r"\\\1", flat)


def html_text(text: object) -> str:
    """`text` as the content of an HTML element (`<`, `>`, `&` and both quotes as entities)."""
    return html.escape("" if text is None else str(text), quote=True)


def html_attr(text: object) -> str:
    """`text` as the value of an HTML attribute; write it inside quotes (`title="…"`), never bare."""
    return html.escape("" if text is None else str(text), quote=True)


def script_json(payload: Any) -> str:
    """JSON safe inside a `<script type="application/json">`: no `</script>` or `<!--` can end it."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


PROMPT_MARK = "**"
"""What wraps the activating token in a labelling prompt's context."""


def prompt_text(text: str) -> str:
    """Corpus text for a prompt context: each backslash and asterisk escaped with a backslash, so that
    the text can never produce an unescaped `PROMPT_MARK`."""
    return text.replace("\\", "\\\\").replace("*", "\\*")


def prompt_marked(before: str, token: str, after: str) -> str:
    """A prompt context: the activating `token` wrapped in `PROMPT_MARK`, every piece escaped."""
    return f"{prompt_text(before)}{PROMPT_MARK}{prompt_text(token)}{PROMPT_MARK}{prompt_text(after)}"


def prompt_highlighted(pieces: list[tuple[str, bool]]) -> str:
    """A prompt context made of (text, highlighted) pieces: each highlighted piece wrapped in
    `PROMPT_MARK`, every piece escaped (several marks in one context, as fuzzing shows them)."""
    return "".join(
        f"{PROMPT_MARK}{prompt_text(t)}{PROMPT_MARK}" if hit else prompt_text(t) for t, hit in pieces
    )
