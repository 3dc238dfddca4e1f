"""`sae_core.import_pt`, the import path earlier versions documented, kept as a thin re-export.

Its code (the study's `.pt` chunks → a store) lives in `sae_core.store.import_pt`; new code imports
from there."""

from sae_core.store.import_pt import chunk_files, import_pt_chunks

__all__ = [
    "chunk_files",
    "import_pt_chunks",
]
