"""The offline English corpus `builtin:package-readmes`: README prose kept, code and markup left out,
duplicates dropped, loaded through the real `load_dataset("json")` path."""

from __future__ import annotations

import json

from sae_core.extraction.demo import resolve_dataset
from sae_core.extraction.package_docs import ensure_package_corpus, is_english_prose, paragraphs

README = """# mypkg

[![badge](https://img.shields.io/x.svg)](https://ci.example.org)

This package reads the files that your application writes and turns them into tables, so that you can
query them with the tools you already use. It is small, and it has no dependencies beyond the standard
library of the language.

```python
import mypkg
mypkg.read("data.csv")
```

| option | default |
|--------|---------|
| sep    | ,       |

Usage::

    mypkg.read(path, sep=";")

This package reads the files that your application writes and turns them into tables, so that you can
query them with the tools you already use. It is small, and it has no dependencies beyond the standard
library of the language.
"""


def test_paragraphs_keep_prose_and_leave_out_code_tables_and_badges():
    kept = [p for p in paragraphs(README) if is_english_prose(p)]
    assert len(kept) == 2 and kept[0] == kept[1]  # the repeated paragraph; deduplication is per corpus
    assert kept[0].startswith("This package reads") and "import" not in kept[0]
    assert not is_english_prose("mypkg.read(path, sep=';') returns DataFrame[str, int] | None " * 4)
    assert not is_english_prose("Dieses Paket liest die Dateien, die Ihre Anwendung schreibt, und macht " * 3)


def test_the_corpus_is_built_once_deduplicated_and_loads_through_load_dataset(tmp_path):
    import datasets

    path = ensure_package_corpus(tmp_path)
    docs = [json.loads(line) for line in path.read_text().splitlines()]
    assert docs and all(d["text"] and "==" in d["source"] for d in docs)
    paras = [p for d in docs for p in d["text"].split("\n\n")]
    assert len(paras) == len(set(paras))
    stamp = path.stat().st_mtime_ns
    assert ensure_package_corpus(tmp_path).stat().st_mtime_ns == stamp  # reused, not rebuilt
    name, files = resolve_dataset("builtin:package-readmes", None, tmp_path)
    loaded = datasets.load_dataset(name, data_files=files, split="train")
    assert loaded.num_rows == len(docs) and loaded[0]["text"] == docs[0]["text"]
