"""Extraction: a language model's residual stream at one layer, run only up to that layer, written to an
activation store; the model/tokenizer/documents loaders and the offline demo model and corpus."""

from sae_core.extraction.demo import DEMO_MODEL, ensure_demo_corpus, ensure_demo_model
from sae_core.extraction.extract import extract_activations, length_batches, store_key, store_path
from sae_core.extraction.hf_load import iter_documents, load_model, load_tokenizer

__all__ = [
    "DEMO_MODEL",
    "ensure_demo_corpus",
    "ensure_demo_model",
    "extract_activations",
    "iter_documents",
    "length_batches",
    "load_model",
    "load_tokenizer",
    "store_key",
    "store_path",
]
