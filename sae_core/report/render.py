"""report.md and report.html from the report's data (`tables.json`'s dict): the same content twice,
the HTML self-contained (PNGs embedded as data URIs, inline CSS, no scripts). Every string goes into the
HTML through `sae_core.encoding`'s `html_text` / `html_attr`; the markdown holds only text the report
composes (numbers, cell names, its own notes), its table cells with pipes and newlines escaped."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from sae_core.encoding import html_attr, html_text
from sae_core.naming import format_l1
from sae_core.report import label_scores
from sae_core.report.cells import CELL_METRICS, CellData, Entry, format_entry
from sae_core.report.token_checks import JUMP, NEIGHBOURS
from sae_core.rundir import TRAINING_CAPTION, RunFileError, read_selected

ARCHITECTURES_TITLE = "Architectures compared"


def _footnoted(text: str, notes: list[str]) -> str:
    """`skipped (a long reason)` → `skipped [1]`, the reason listed once under the table: the same
    reason in every cell of a grid made the tables unreadable."""
    word, sep, _ = text.partition(" (")
    if not sep or word not in {"missing", "skipped", "failed"}:
        return text
    if text not in notes:
        notes.append(text)
    return f"{word} [{notes.index(text) + 1}]"


def _table_cell_text(value: float | None, note: str | None, pub: float | None, unit: str) -> str:
    ours = f"{value:.1f}{unit}" if value is not None else (note or "missing")  # percentages: one decimal
    return ours if pub is None else f"{ours} (study {pub:g}{unit})"


def _with_footnotes(body: list[list[str]]) -> tuple[list[list[str]], list[str]]:
    notes: list[str] = []
    return [[_footnoted(text, notes) for text in row] for row in body], notes


def _grid_matrix(table: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["λ \\ expansion"] + [f"{c}x" for c in table["columns"]]
    unit = " pp" if "delta" in table["title"] else "%"
    body = []
    for i, l1 in enumerate(table["rows"]):
        pub = table["published"][i] if table["published"] else [None] * len(table["columns"])
        cells = [
            _table_cell_text(v, n, p, unit)
            for v, n, p in zip(table["values"][i], table["notes"][i], pub, strict=True)
        ]
        body.append([format_l1(l1), *cells])
    return head, body


def _cell_matrix(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    titles = {"dead_pct": doc["dead_caption"]} if doc.get("dead_caption") else {}
    # a sweep of several architectures names each row's architecture and sparsity parameter
    coords = ["architecture", "sparsity"] if doc.get("architectures") else []
    head = ["cell", *coords] + [titles.get(key, title) for key, (title, _, _) in CELL_METRICS.items()]
    body = []
    for row in doc["cells"]:
        texts = [
            format_entry(Entry(row[key], row["notes"].get(key)), fmt)
            for key, (_, _, fmt) in CELL_METRICS.items()
        ]
        body.append([row["cell"], *(row[c] for c in coords), *texts])
    return head, body


def _comparison_matrix(table: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """An architecture table: rows architecture · sparsity, columns width · strategy."""
    head = ["architecture", "sparsity"] + [f"{c['expansion']}x {c['strategy']}" for c in table["columns"]]
    body = []
    for row, values, notes in zip(table["rows"], table["values"], table["notes"], strict=True):
        texts = [_table_cell_text(v, n, None, "%") for v, n in zip(values, notes, strict=True)]
        body.append([row["architecture"], row["sparsity"], *texts])
    return head, body


def _md_table(head: list[str], body: list[list[str]]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    body, notes = _with_footnotes(body)
    lines = ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in body]
    lines += ([""] if notes else []) + [f"[{i}] {esc(note)}  " for i, note in enumerate(notes, 1)]
    return "\n".join(lines)


def _intro(doc: dict[str, Any], cells: list[CellData]) -> list[str]:
    """The report's opening paragraphs (shared by the markdown and the HTML)."""
    present = sum(c.exists for c in cells)
    paragraphs = [
        f"Sweep `{doc['sweep']}`: {present} of {len(cells)} cells present. Generated "
        f"{doc['generated_at']} by sae-sweep {doc['code_version']}.",
        f"{doc.get('dead_caption') or 'dead %'}: features whose activation never exceeds the analysis "
        "threshold on that token set (`analysis.dead_split`: `test` = the analysed held-out split, `all` "
        f"= every token of the store). {TRAINING_CAPTION}: features that fired in no training step of "
        "the last `training.resample_every` steps (a resampling reset is not a firing). A value that "
        "could not be measured reads `missing` or `skipped (reason)`, never 0.",
        *doc.get("unit_notes", []),
    ]
    paragraphs += [provenance_text(p) for p in doc.get("provenance") or []]
    if doc["published_source"]:
        paragraphs.append(
            f'Published values ("study …") are from {doc["published_source"]} The study measured '
            "dead % over all tokens, training ones included, with its own code's choices (see README)."
        )
    paragraphs.append(
        "Monosemantic % is 1 − polysemantic / labelled; features whose label failed after every retry "
        "are left out of it. The conservative figure counts them as polysemantic, 1 − (polysemantic + "
        "failed) / (labelled + failed); the true rate lies between the two."
    )
    return paragraphs


def provenance_text(p: dict[str, Any]) -> str:
    """Where a store's activations came from, as its manifest records it (older manifests say less)."""
    if not p.get("found"):
        return f"Store `{p['store']}`: not found (moved or deleted), so its model and data are unknown."
    model = p["model"]
    revision = f" at revision `{model['revision']}`" if model.get("revision") else ""
    layer = f"`hidden_states[{model['layer']}]` in {model['dtype']}"
    text = f"Store `{p['store']}`: `{model['name']}`{revision}, {layer}, over "
    source = p.get("source")
    if source is None:
        docs = f", {p['num_documents']:,} documents" if p.get("num_documents") is not None else ""
        text += (
            f"`{p['dataset']}` (split `{p['split']}`{docs}); its manifest predates source records "
            "(no revision, commit or first-document hash)."
        )
    else:
        where = [f"`{source['repository']}`"]
        if source.get("revision"):
            where.append(f"revision `{source['revision']}`")
        where.append(f"commit `{source['commit']}`" if source.get("commit") else "commit not resolved")
        if source.get("config_name"):
            where.append(f"config `{source['config_name']}`")
        if files := source.get("data_files"):
            where.append(
                "files " + ", ".join(f"`{f}`" for f in ([files] if isinstance(files, str) else files))
            )
        digest = source.get("first_document_sha256")
        first = f", the first with sha256 `{digest}`" if digest else ""
        text += f"{', '.join(where)}, split `{source['split']}`: {source['documents']:,} documents{first}."
    if versions := p.get("versions"):
        text += " Extracted with " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."
    elif p.get("code_version"):
        text += f" Extracted by sae-sweep {p['code_version']}."
    return text


def _browser_links(cells: list[CellData]) -> list[tuple[str, str]]:
    return [
        (c.cell.name, f"../{c.cell.name}/browser.html") for c in cells if (c.path / "browser.html").is_file()
    ]


def _duplicates(cells: list[CellData]) -> tuple[list[str], str | None]:
    """Per cell, the selected features that repeat an earlier one's direction (selected.json's
    `duplicate_of`, written by the analysis), as `cell: #b ≈ #a` lines, and the rule that flagged them."""
    lines, rule = [], None
    for c in cells:
        try:
            selected = read_selected(c.path)
        except RunFileError:
            continue
        pairs = selected.duplicate_of if selected is not None else None
        if selected is not None and pairs:
            rule = selected.duplicate_rule or rule
            shown = ", ".join(f"#{f} ≈ #{r}" for f, r in sorted(pairs.items(), key=lambda p: int(p[0])))
            lines.append(f"{c.cell.name}: {shown}")
    return lines, rule


def _duplicates_intro(rule: str | None) -> str:
    return (
        f"Near-duplicate selected features ({rule or 'decoder cosine > 0.95 and Pearson r > 0.9'}): "
        "each shares its representative's label; the label stage does not ask again."
    )


EV_FLAGS_INTRO = (
    f"Explained variance (analysed split, left-out rows excluded) that is negative or jumps between "
    f"neighbouring cells ({NEIGHBOURS}; {JUMP}), with the rows carrying the most squared reconstruction "
    "error: when a few rows hold most of it, the figure measures them, not the SAE."
)


def _token_sections(doc: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(title, intro, lines): the rows each store leaves out, and the cells whose EV is flagged."""
    sections = []
    if doc.get("left_out"):
        sections.append(
            (
                "Tokens left out",
                "Rows no figure, selection, example or resampling draw uses; each row is counted under the "
                "first rule that takes it; counts per split as train/val/test.",
                doc["left_out"],
            )
        )
    if doc.get("ev_flags"):
        sections.append(("Explained variance flagged", EV_FLAGS_INTRO, doc["ev_flags"]))
    return sections


def render_markdown(doc: dict[str, Any], cells: list[CellData], figures: list[Any]) -> str:
    parts = [f"# Sweep report: {doc['sweep']}", ""]
    for paragraph in _intro(doc, cells):
        parts += [paragraph, ""]
    for table in doc["grid_tables"].values():
        parts += [f"## {table['title']}", "", _md_table(*_grid_matrix(table)), ""]
    parts += ["## Per cell", "", _md_table(*_cell_matrix(doc)), ""]
    if label_rows := label_scores.label_rows(cells):
        parts += [f"## {label_scores.TITLE}", "", label_scores.INTRO, ""]
        parts += [_md_table(label_scores.HEAD, label_rows), ""]
    if arch := doc.get("architectures"):
        parts += [f"## {ARCHITECTURES_TITLE}", "", arch["computed_on"], ""]
        parts += [f"### {f['title']}\n\n![{f['title']}]({f['file']})\n" for f in arch["figures"]]
        for table in arch["tables"].values():
            parts += [f"### {table['title']}", "", _md_table(*_comparison_matrix(table)), ""]
    for title, intro, lines in _token_sections(doc):
        parts += [f"## {title}", "", intro, ""] + [f"- {line}" for line in lines] + [""]
    duplicates, rule = _duplicates(cells)
    if duplicates:
        parts += ["## Near-duplicate features", "", _duplicates_intro(rule), ""]
        parts += [f"- {line}" for line in duplicates] + [""]
    if figures:
        parts += ["## Plots", ""]
        parts += [f"### {f.title}\n\n![{f.title}]({f.file})\n" for f in figures]
    links = _browser_links(cells)
    if links:
        parts += ["## Feature browsers", ""] + [f"- [{name}]({href})" for name, href in links] + [""]
    return "\n".join(parts)


_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}td.absent{color:#a33;font-style:italic}
p.note{margin:-1em 0 1em;color:#a33;font-size:12px}
img{max-width:100%;border:1px solid #eee}code{background:#f5f5f5;padding:0 .2em}"""


def _html_table(head: list[str], body: list[list[str]]) -> str:
    def cell(text: str) -> str:
        absent = text.startswith(("missing", "skipped", "failed"))
        return f"<td{' class=absent' if absent else ''}>{html_text(text)}</td>"

    body, notes = _with_footnotes(body)
    rows = "".join("<tr>" + "".join(cell(t) for t in row) + "</tr>" for row in body)
    foot = "".join(f"<p class=note>[{i}] {html_text(n)}</p>" for i, n in enumerate(notes, 1))
    return f"<table><tr>{''.join(f'<th>{html_text(h)}</th>' for h in head)}</tr>{rows}</table>{foot}"


def _inline_code(text: str) -> str:
    """Markdown's `code` spans as <code> (the text is already HTML-escaped)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def render_html(doc: dict[str, Any], cells: list[CellData], figures: list[Any], out: Path) -> str:
    """One self-contained page: the same content as report.md, PNGs embedded as data URIs."""
    esc = html_text
    body = [f"<h1>Sweep report: {esc(doc['sweep'])}</h1>"]
    body += [f"<p>{_inline_code(esc(p))}</p>" for p in _intro(doc, cells)]
    for table in doc["grid_tables"].values():
        body += [f"<h2>{esc(table['title'])}</h2>", _html_table(*_grid_matrix(table))]
    body += ["<h2>Per cell</h2>", _html_table(*_cell_matrix(doc))]
    if label_rows := label_scores.label_rows(cells):
        body += [f"<h2>{esc(label_scores.TITLE)}</h2>", f"<p>{esc(label_scores.INTRO)}</p>"]
        body.append(_html_table(label_scores.HEAD, label_rows))
    if arch := doc.get("architectures"):
        body += [f"<h2>{ARCHITECTURES_TITLE}</h2>", f"<p>{_inline_code(esc(arch['computed_on']))}</p>"]
        for fig in arch["figures"]:
            data = base64.b64encode((out / fig["file"]).read_bytes()).decode("ascii")
            title = fig["title"]
            img = f"<img alt='{html_attr(title)}' src='data:image/png;base64,{data}'>"
            body.append(f"<h3>{esc(title)}</h3>{img}")
        for table in arch["tables"].values():
            body += [f"<h3>{esc(table['title'])}</h3>", _html_table(*_comparison_matrix(table))]
    for title, intro, lines in _token_sections(doc):
        items = "".join(f"<li>{_inline_code(esc(line))}</li>" for line in lines)
        body += [f"<h2>{esc(title)}</h2>", f"<p>{esc(intro)}</p><ul>{items}</ul>"]
    duplicates, rule = _duplicates(cells)
    if duplicates:
        items = "".join(f"<li>{esc(line)}</li>" for line in duplicates)
        body += ["<h2>Near-duplicate features</h2>", f"<p>{esc(_duplicates_intro(rule))}</p><ul>{items}</ul>"]
    if figures:
        body.append("<h2>Plots</h2>")
    for fig in figures:
        data = base64.b64encode((out / fig.file).read_bytes()).decode("ascii")
        body.append(
            f"<h3>{esc(fig.title)}</h3><img alt='{html_attr(fig.title)}' src='data:image/png;base64,{data}'>"
        )
    links = _browser_links(cells)
    if links:
        items = "".join(f"<li><a href='{html_attr(h)}'>{esc(n)}</a></li>" for n, h in links)
        body.append(f"<h2>Feature browsers</h2><ul>{items}</ul>")
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>Sweep report: {esc(doc['sweep'])}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


# ---------------------------------------------------------------------------------------------
# report.md for the Prefect UI: plots embedded, links that open from an http page

UI_IMAGE_WIDTH = 900
"""Plots are shrunk to this width (px) for the UI's markdown artifact: legible, a few tens of kB each."""

UI_IMAGE_BUDGET = 900_000
"""Characters of data URIs one markdown artifact may carry. The Prefect 3 server sets no limit on an
artifact's data, but every UI view of the artifact fetches it whole (and Prefect 1 capped it at 1 MB):
past the budget, a plot becomes a link."""


def png_data_uri(path: Path, max_width: int = UI_IMAGE_WIDTH) -> str:
    """The PNG, at most `max_width` wide and reduced to a 256-colour palette, as a data URI."""
    from io import BytesIO

    from PIL import Image

    with Image.open(path) as opened:
        image = opened.convert("RGB")
        if image.width > max_width:
            height = round(image.height * max_width / image.width)
            image = image.resize((max_width, height), Image.Resampling.LANCZOS)
        buffer = BytesIO()
        image.quantize(256).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_LINK = re.compile(r"(!?)\[([^\]]*)\]\(((?![a-z][a-z0-9+.-]*:)[^)\s]+)\)")


def ui_markdown(
    markdown: str,
    report_dir: Path,
    serve_root: Path,
    base_url: str,
    budget: int = UI_IMAGE_BUDGET,
) -> str:
    """report.md for a page served over http: each relative image becomes an embedded PNG (until
    `budget` characters are spent, then a link), each other relative link an http URL under `base_url`
    (what `sae-sweep serve` serves from `serve_root`). A `file://` link would not open from the UI."""
    spent = 0

    def url(relative: str) -> str:
        target = (report_dir / relative).resolve()
        try:
            return base_url + target.relative_to(serve_root.resolve()).as_posix()
        except ValueError:  # outside what the server serves: name the file, link nothing
            return ""

    def replace(match: re.Match[str]) -> str:
        nonlocal spent
        bang, text, href = match.groups()
        if bang and (report_dir / href).is_file():
            uri = png_data_uri(report_dir / href)
            if spent + len(uri) <= budget:
                spent += len(uri)
                return f"![{text}]({uri})"
        link = url(href)
        return f"[{text}]({link})" if link else f"{text} (`{report_dir / href}`)"

    return _LINK.sub(replace, markdown)
