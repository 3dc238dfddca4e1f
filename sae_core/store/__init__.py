"""The activation store: one row per token in Parquet shards plus a manifest, written by extraction or
`write_store`, read by training and analysis (`ActivationStore`, every read through `kept_rows`, the one
row filter: first tokens and the rows the store leaves out); `store_fingerprint` is its one identity."""

from sae_core.store.format import SPLITS, split_codes, split_of
from sae_core.store.identity import store_fingerprint, store_identity
from sae_core.store.import_pt import import_pt_chunks
from sae_core.store.left_out import LeftOutRules, kept_rows
from sae_core.store.reader import ActivationStore, RowBatch
from sae_core.store.shards import remove_store, verify_store
from sae_core.store.writer import write_store

__all__ = [
    "SPLITS",
    "ActivationStore",
    "LeftOutRules",
    "RowBatch",
    "import_pt_chunks",
    "kept_rows",
    "remove_store",
    "split_codes",
    "split_of",
    "store_fingerprint",
    "store_identity",
    "verify_store",
    "write_store",
]
