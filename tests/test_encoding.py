"""Output encoding (`sae_core.encoding`): corpus and LLM text is inert in Markdown, HTML and prompts.

The Markdown checks render with markdown-it (CommonMark plus GFM tables, as the Prefect UI's renderer
and the Hub read it) and look for any live element; the payloads are the ones an adversarial corpus
planted in the probe of issue 20.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import pytest
from markdown_it import MarkdownIt

from sae_core.encoding import (
    PROMPT_MARK,
    html_attr,
    html_text,
    markdown_text,
    prompt_marked,
    prompt_text,
    script_json,
)

PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "![x](http://127.0.0.1:9/x.png)",
    "[click](javascript:alert(1))",
    "<http://127.0.0.1:9/auto>",
    "[ref]: http://127.0.0.1:9/ref\n[ref]",
    "`code` and ``two``",
    "a | b | c",
    "**bold** and __strong__ and *em*",
    "# heading\n\n- item\n> quote\n\n    indented code\n```\nfence\n```",
    "&lt;img src=x onerror=alert(1)&gt; &amp;",
    "back\\slash \\* \\[x](http://127.0.0.1:9/)",
    "line one\nline two\r\n\tthree",
    "<!-- comment --> <a href='http://127.0.0.1:9/'>a</a>",
]

LIVE = {"img", "a", "script", "strong", "em", "code", "pre", "h1", "h2", "ul", "ol", "li", "blockquote", "hr"}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _render(markdown: str) -> _Tags:
    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    parsed = _Tags()
    parsed.feed(md.render(markdown))
    return parsed


def planted_elements(markdown: str) -> tuple[list[str], str]:
    """What a payload could have made live in rendered `markdown` (a script, an element with an event
    handler, an image not embedded as a data URI, a link to the payloads' host or a javascript: URL),
    and the rendered text."""
    rendered = _render(markdown)
    live = []
    for tag, attrs in rendered.attrs:
        urls = [v or "" for k, v in attrs.items() if k in ("src", "href")]
        if (
            tag in ("script", "iframe")
            or any(k.startswith("on") for k in attrs)
            or (tag == "img" and not all(u.startswith("data:image/png;base64,") for u in urls))
            or any(u.startswith("javascript:") or "127.0.0.1:9/" in u for u in urls)
        ):
            live.append(f"<{tag} {attrs}>")
    return live, "".join(rendered.text)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_markdown_text_renders_as_exactly_its_characters(payload):
    rendered = _render(markdown_text(payload))
    assert set(rendered.tags) <= {"p"}, (payload, rendered.tags)
    assert "".join(rendered.text).strip() == " ".join(payload.split())


def test_markdown_text_in_a_table_cell_keeps_the_table_shape_and_blocks_bare_autolinks():
    rows = [f"| {i} | {markdown_text(p)} |" for i, p in enumerate(PAYLOADS)]
    rendered = _render("\n".join(["| n | label |", "|---|---|", *rows]))
    assert rendered.tags.count("tr") == len(PAYLOADS) + 1 and rendered.tags.count("td") == 2 * len(PAYLOADS)
    assert not set(rendered.tags) & LIVE, rendered.tags
    # GFM's extended autolinks (`http://…`, `www.…`, `a@b.c`) need the raw characters: all escaped.
    escaped = markdown_text("see http://127.0.0.1:9/x www.example.com me@example.com")
    assert not re.search(r"https?://|www\.|\w@\w", escaped), escaped
    assert markdown_text(None) == "" and markdown_text(3) == "3"


@pytest.mark.parametrize("payload", PAYLOADS)
def test_html_text_and_attr_leave_no_markup(payload):
    parsed = _Tags()
    parsed.feed(f"<p title='{html_attr(payload)}' data-x=\"{html_attr(payload)}\">{html_text(payload)}</p>")
    assert parsed.tags == ["p"] and "".join(parsed.text) == payload


def test_script_json_cannot_end_its_script_element():
    text = script_json({"label": "</script><script>alert(1)</script><!--", "s": "\u2028"})
    assert "</" not in text and "<!--" not in text and "\u2028" not in text


def test_the_prompt_marker_cannot_be_forged_by_the_corpus():
    """The corpus's own `**` (and a backslash before it) never reads as the marker: in the marked
    context, the only unescaped `**` are the two that wrap the token."""
    before, token, after = "a **fake** mark \\**and** a\\", "tok*en", "**after\\"
    marked = prompt_marked(before, token, after)
    unescaped = [m.start() for m in re.finditer(r"(?<!\\)(?:\\\\)*\*\*", marked)]
    starts = [marked.index(PROMPT_MARK, i) for i in unescaped]
    assert len(starts) == 2, marked
    assert marked[starts[0] + 2 : starts[1]] == prompt_text(token) == "tok\\*en"

    # Unescaping (a backslash drops, the character after it stays) gives back the corpus text.
    def unescape(s: str) -> str:
        return re.sub(r"\\(.)", r"\1", s)

    assert unescape(marked[: starts[0]]) == before and unescape(marked[starts[1] + 2 :]) == after
    assert html.unescape(html_text(before)) == before


PIECES = {1: "a **fake** mark ", 2: "\\**", 3: "tok*", 4: " and **more**"}


class _PayloadDecoder:
    """Token ids → `PIECES` (the analysis's `TokenDecoder` over a corpus holding them)."""

    def tokens(self, ids):
        return [PIECES[int(i)] for i in ids]

    def text(self, ids):
        return "".join(self.tokens(ids))


def test_a_corpus_with_asterisks_cannot_forge_the_marker_in_the_labelling_prompt():
    """From the analysis's examples (`attach_contexts`) to the messages sent to the model: the only
    unescaped `**` in the feature's context are the two around the activating token."""
    import numpy as np

    from sae_core.analysis.examples import attach_contexts
    from sae_core.labels.prompt import LabelExample, build_messages

    row = {
        "feature_id": 0,
        "group": "top",
        "kind": "top",
        "rank": 0,
        "activation": 5.0,
        "doc_id": 0,
        "pos": 2,
    }
    row["token_id"] = 3
    table = attach_contexts([row], {0: np.array([1, 2, 3, 4])}, 5, _PayloadDecoder())
    context = table.column("context_text")[0].as_py()
    user = build_messages([LabelExample(context, 5.0)])[-1]["content"]
    line = user.splitlines()[1]
    marks = [m.end() - 2 for m in re.finditer(r"(?<!\\)(?:\\\\)*\*\*", line)]
    assert len(marks) == 2 and line[marks[0] + 2 : marks[1]] == "tok\\*", line
    assert "fake" in line and "\\*\\*fake\\*\\*" in line
