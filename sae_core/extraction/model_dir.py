"""A model folder written whole: what the builtin models (the demo GPT-2, the converted SmolLM2) share."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sae_core.io import apply_umask_modes, atomic_write_text


def save_model_dir(out: Path, model: Any, tokenizer: Any, note_name: str, note: dict[str, Any]) -> Path:
    """`save_pretrained` of `model` and `tokenizer` plus a JSON note of where they came from, built in a
    temporary sibling and renamed over `out`: a reader finds the whole folder or none."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_text(tmp / note_name, json.dumps(note, indent=2))
        apply_umask_modes(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
