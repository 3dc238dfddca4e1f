"""A corpus of human-written English prose available offline: the long descriptions (README bodies) of the
installed Python packages' metadata, read through `importlib.metadata`.

READMEs mix prose with code, tables, badges and links. Each description is split into paragraphs, markup
is removed, and a paragraph is kept only when it reads as English prose by simple measured rules
(`is_english_prose`); paragraphs are deduplicated across packages (licence texts and boilerplate repeat),
then consecutive kept paragraphs of one package are grouped into documents of about `target_chars`.

The result depends on what is installed: the corpus file records each document's package and version,
and `builtin:package-readmes` is built once per data_root and reused (delete the file to rebuild).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import re
from pathlib import Path
from typing import Any

from sae_core.io import atomic_write_text

log = logging.getLogger(__name__)

PACKAGE_CORPUS = "builtin:package-readmes"
PACKAGE_CORPUS_FILE = "package-readmes.jsonl"

# The commonest English function words: running English prose has ~40 % of its words among them, code,
# tables, change logs and German or Chinese text far fewer.
_STOPWORDS = frozenset(
    (  # noqa: SIM905 (one sentence of words reads better than 67 quoted strings)
        "the a an and or of to in on for with by from as at is are was were be been it its this that these "
        "those you your we our they their he she can will would should may not no if then than so but which "
        "who what when where how all any each more most such only also into about over use used using"
    ).split()
)
_NOT_PROSE_STARTS = ("#", "|", ">>>", "$ ", "..", "+-", "==", "--", "<!--")
"""Headings, tables, doctest and shell prompts, rst directives and rules: a paragraph break, never prose."""
_FENCE = re.compile(r"^\s*(```|~~~)")
_RST_CODE = re.compile(r"::\s*$")
_LINK_MD = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_LINK_RST = re.compile(r"`([^`<]*?)\s*<[^>]*>`_+")
_URL = re.compile(r"https?://\S+|www\.\S+")
_TAG = re.compile(r"<[^>]{1,200}>")
_ROLE = re.compile(r":[a-z:]+:`([^`]*)`")
_EMPH = re.compile(r"(\*\*|__|``|\*|`)")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*[.,;:!?)]*$")


def description_of(dist: importlib.metadata.Distribution) -> str:
    """The long description: the metadata body (Metadata-Version ≥ 2.1) or the `Description` header."""
    meta: Any = dist.metadata  # an email.message.Message underneath the PackageMetadata protocol
    body = meta.get_payload() if hasattr(meta, "get_payload") else None
    return str(body or meta.get("Description") or "")


def paragraphs(text: str) -> list[str]:
    """Paragraphs of a README with code blocks, indented (rst) blocks, headings, tables and markup
    removed; each paragraph joined onto one line."""
    out: list[str] = []
    current: list[str] = []
    in_fence = False
    in_rst_code = False

    def flush() -> None:
        if current:
            out.append(" ".join(current))
            current.clear()

    for raw in text.replace("\r\n", "\n").split("\n"):
        if _FENCE.match(raw):
            in_fence = not in_fence
            flush()
            continue
        if in_fence:
            continue
        if in_rst_code:
            if raw.strip() and not raw[:1].isspace():
                in_rst_code = False
            else:
                continue
        line = raw.strip()
        if not line:
            flush()
            continue
        if raw[:1].isspace() and not current and raw.startswith(("    ", "\t")):
            continue  # an indented block on its own: code in Markdown and reStructuredText
        if line.startswith(_NOT_PROSE_STARTS) or set(line) <= set("=-~^*#+`"):
            flush()
            continue
        line = re.sub(r"^([-*+]|\d+[.)])\s+", "", line)  # list bullets: the item's text is prose
        current.append(line)
        if _RST_CODE.search(line):
            flush()
            in_rst_code = True
    flush()
    return [clean_markup(p) for p in out]


def clean_markup(text: str) -> str:
    """Links to their text, URLs, HTML tags, rst roles and emphasis markers removed, spaces collapsed."""
    text = _LINK_MD.sub(r"\1", text)
    text = _LINK_RST.sub(r"\1", text)
    text = _ROLE.sub(r"\1", text)
    text = _URL.sub("", text)
    text = _TAG.sub("", text)
    text = _EMPH.sub("", text)
    return re.sub(r"\s+", " ", text).strip()


def is_english_prose(text: str, min_chars: int = 120, min_words: int = 20) -> bool:
    """Reads as English prose: long enough, ASCII, ≥ 85 % plain words, ≥ 25 % of words English function
    words, and ending a sentence. (Measured on this sandbox's READMEs: prose paragraphs had 35–50 %
    function words, badge rows, API listings and change logs under 15 %.)"""
    if len(text) < min_chars or not text.isascii() or text[-1] not in ".!?:)":
        return False
    words = text.split()
    if len(words) < min_words:
        return False
    plain = sum(1 for w in words if _WORD.match(w.lstrip("(\"'")))
    function = sum(1 for w in words if w.lower().strip(".,;:!?()\"'") in _STOPWORDS)
    return plain >= 0.85 * len(words) and function >= 0.25 * len(words)


def package_documents(target_chars: int = 600) -> list[dict[str, str]]:
    """English prose from every installed package's long description, deduplicated, in documents of
    about `target_chars` (consecutive paragraphs of one package), in a stable order (by package name)."""
    dists: dict[str, importlib.metadata.Distribution] = {}
    for dist in importlib.metadata.distributions():
        name = str(dist.metadata["Name"] or "").lower()
        if name and name not in dists:
            dists[name] = dist
    seen: set[str] = set()
    docs: list[dict[str, str]] = []
    for name in sorted(dists):
        dist = dists[name]
        source = f"{dist.metadata['Name']}=={dist.version}"
        group: list[str] = []
        for para in paragraphs(description_of(dist)):
            if not is_english_prose(para):
                continue
            digest = hashlib.sha1(re.sub(r"\W+", "", para.lower()).encode()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            group.append(para)
            if sum(len(p) for p in group) >= target_chars:
                docs.append({"text": "\n\n".join(group), "source": source})
                group = []
        if group:
            docs.append({"text": "\n\n".join(group), "source": source})
    return docs


def ensure_package_corpus(data_root: str | Path) -> Path:
    """The package-README corpus as `data_root/builtin/package-readmes.jsonl`, built once."""
    path = Path(data_root) / "builtin" / PACKAGE_CORPUS_FILE
    if not path.exists():
        docs = package_documents()
        if not docs:
            raise RuntimeError("data.dataset: no installed package has an English long description")
        atomic_write_text(path, "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
        chars = sum(len(d["text"]) for d in docs)
        packages = len({d["source"] for d in docs})
        log.info(
            "built the package-README corpus: %d documents, %d chars from %d packages → %s",
            len(docs),
            chars,
            packages,
            path,
        )
    return path
