"""Loading the model, tokenizer and documents a config names, with errors a user can act on.

`builtin:` names resolve through `sae_core.extraction.demo`; everything else goes to `from_pretrained` /
`load_dataset` exactly as a user would call them. A failure becomes one `ConfigError` naming the field
and the value, and says so when the Hub was needed while the network is switched off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from sae_core.config import ConfigError, SweepConfig
from sae_core.extraction.demo import resolve_dataset, resolve_model_name

log = logging.getLogger(__name__)

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def offline() -> bool:
    """True when the Hugging Face libraries are told not to use the network."""
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"} for v in _OFFLINE_VARS)


def _why(field: str, value: str, exc: BaseException, local_hint: bool) -> ConfigError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    reason = f"{type(exc).__name__}: {first[:300]}"
    text = f"{field}: cannot load {value!r} ({reason})"
    if local_hint and not Path(value).exists():
        text += "; it is not a local directory either"
    if offline() or isinstance(exc, ConnectionError):
        text += "; it is not available locally and the network is off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"
    return ConfigError(text)


def resolve_model(cfg: SweepConfig) -> str:
    try:
        return resolve_model_name(cfg.model.name, cfg.data_root)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _revision(cfg: SweepConfig) -> dict[str, Any]:
    return {"revision": cfg.model.revision} if cfg.model.revision else {}


def load_tokenizer(cfg: SweepConfig) -> tuple[Any, str]:
    """The model's fast tokenizer and the resolved name/directory it came from."""
    from transformers import AutoTokenizer

    resolved = resolve_model(cfg)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved, use_fast=True, **_revision(cfg))
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors, …
        raise _why("model.name", cfg.model.name, exc, local_hint=True) from None
    if not getattr(tokenizer, "is_fast", False):
        log.warning("model.name: %s has no fast tokenizer; tokenisation will be slow", cfg.model.name)
    return tokenizer, resolved


def load_model_config(cfg: SweepConfig, resolved: str) -> Any:
    """The model's config alone (no weights), to validate the layer and context before loading."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(resolved, **_revision(cfg))
    except Exception as exc:
        raise _why("model.name", cfg.model.name, exc, local_hint=True) from None


def load_model(cfg: SweepConfig, resolved: str, dtype: torch.dtype) -> torch.nn.Module:
    """The base model (`AutoModel`: no LM head, which extraction never needs)."""
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(resolved, dtype=dtype, **_revision(cfg))
    except Exception as exc:
        raise _why("model.name", cfg.model.name, exc, local_hint=True) from None


_SCRIPT_REFUSED = "Dataset scripts are no longer supported"
_NO_SUCH_CONFIG = re.compile(r"BuilderConfig '(?P<name>[^']*)' not found\. Available: \['default'\]")


def _script_refused(dataset: str, exc: BaseException) -> ConfigError:
    """datasets ≥ 4 runs no loading script: say so, and how to read the same data without one."""
    import datasets

    found = str(exc).rsplit("found", 1)[-1].strip() or "a .py script"
    return ConfigError(
        f"data.dataset: {dataset!r} ships a loading script ({found}), which datasets "
        f"{datasets.__version__} no longer runs (scripts stopped in 4.0); read parquet instead: "
        "--set data.revision=refs/convert/parquet (the Hub's parquet conversion; with its config as "
        "data.config_name), data.data_files=<parquet or json files of the repository or on disk>, or a "
        "parquet mirror as data.dataset"
    )


def _load(name: str, files: object, cfg: SweepConfig) -> Any:
    """`load_dataset` as the config says. A config name the repository does not declare is retried as
    its directory: the Hub's parquet conversion lays each configuration out as `<config>/<split>/*.parquet`
    without a card declaring them, which datasets then reads as one `default` configuration."""
    import datasets

    data = cfg.data
    kwargs: dict[str, Any] = {"data_files": files, "split": data.split, "streaming": data.streaming}
    if data.revision is not None:
        kwargs["revision"] = data.revision
    if data.config_name is None:
        return datasets.load_dataset(name, **kwargs)
    try:
        return datasets.load_dataset(name, data.config_name, **kwargs)
    except ValueError as exc:
        match = _NO_SUCH_CONFIG.search(str(exc))
        if match is None or match["name"] != data.config_name:
            raise
    log.info(
        "data.config_name: %s declares no configurations; reading its directory %s/", name, data.config_name
    )
    try:
        return datasets.load_dataset(name, data_dir=data.config_name, **kwargs)
    except FileNotFoundError:
        raise ConfigError(
            f"data.config_name: {data.dataset!r} declares no configurations and has no directory "
            f"{data.config_name!r} of data files (null reads the whole repository)"
        ) from None


def iter_documents(cfg: SweepConfig) -> Iterator[tuple[int, str]]:
    """(index in the data set as loaded, text) for the first `data.num_documents` documents."""
    import datasets

    data = cfg.data
    name, files = resolve_dataset(data.dataset, data.data_files, cfg.data_root)
    try:
        ds = _load(name, files, cfg)
    except ConfigError:
        raise
    except ValueError as exc:
        if "split" in str(exc).lower():
            raise ConfigError(f"data.split: {data.dataset!r} has no split {data.split!r} ({exc})") from None
        if "BuilderConfig" in str(exc):
            known = str(exc).partition("Available:")[2].strip() or "none declared"
            raise ConfigError(
                f"data.config_name: {data.dataset!r} has no configuration {data.config_name!r} "
                f"(configurations: {known})"
            ) from None
        raise _data_error(cfg, files, exc) from None
    except FileNotFoundError as exc:
        field = "data.data_files" if files else "data.dataset"
        field = "data.revision" if data.revision and "Revision" in str(exc) else field
        raise _why(field, str(files or data.dataset), exc, local_hint=False) from None
    except RuntimeError as exc:
        if _SCRIPT_REFUSED in str(exc):
            raise _script_refused(data.dataset, exc) from None
        raise _why("data.dataset", data.dataset, exc, local_hint=False) from None
    except Exception as exc:
        raise _data_error(cfg, files, exc) from None
    if data.num_documents is not None:
        ds = (
            ds.take(data.num_documents)
            if data.streaming
            else ds.select(range(min(data.num_documents, len(ds))))
        )
    columns = ds.column_names
    if columns is not None and data.text_column not in columns:
        raise _missing_column(cfg, columns)
    try:
        for index, row in enumerate(ds):
            if data.text_column not in row:
                raise _missing_column(cfg, list(row))
            text = row[data.text_column]
            yield index, text if isinstance(text, str) else ("" if text is None else str(text))
    except ConfigError:
        raise
    except (datasets.exceptions.DatasetsError, ValueError) as exc:
        # ValueError: a streamed file's parse error (pyarrow's ArrowInvalid) surfaces while iterating.
        raise _data_error(cfg, files, exc) from None


def _data_error(cfg: SweepConfig, files: object, exc: BaseException) -> ConfigError:
    """A data file that cannot be parsed is named as malformed, with the parser's words (pyarrow says
    `JSON parse error: … in row N`); blaming the network, as `_why` does offline, sent users hunting
    for a download problem."""
    problem = _parse_problem(exc)
    if problem is None:
        return _why("data.dataset", cfg.data.dataset, exc, local_hint=False)
    field, value = ("data.data_files", files) if files else ("data.dataset", cfg.data.dataset)
    return ConfigError(
        f"{field}: {value!r} is malformed ({problem}); fix the file or point {field} elsewhere"
    )


# What the parsers behind `load_dataset("json" | "csv" | "parquet" | "text")` raise on a bad file.
_PARSE_ERRORS = {"ArrowInvalid", "JSONDecodeError", "ParserError", "UnicodeDecodeError"}


def _parse_problem(exc: BaseException) -> str | None:
    """The parser's one-line complaint, found along the chain of causes (`datasets` wraps it in a
    `DatasetGenerationError` without the text), or None when the failure is not a parse error."""
    seen: BaseException | None = exc
    for _ in range(10):  # a cycle in __context__ must not hang the error path
        if seen is None:
            return None
        if type(seen).__name__ in _PARSE_ERRORS:
            text = " ".join(str(seen).split())
            return f"{type(seen).__name__}: {text[:300]}"
        seen = seen.__cause__ or seen.__context__
    return None


def _missing_column(cfg: SweepConfig, columns: list[str]) -> ConfigError:
    return ConfigError(
        f"data.text_column: {cfg.data.dataset!r} has no column {cfg.data.text_column!r} "
        f"(columns: {', '.join(columns)})"
    )


def hub_repository(name: str) -> bool:
    """Whether `load_dataset` would look `name` up on the Hub (not a loader name, builtin or local path)."""
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    if name.startswith("hf://datasets/"):
        return True
    if ":" in name or name in _PACKAGED_DATASETS_MODULES or Path(name).exists():
        return False
    return bool(re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name))


def dataset_commit(cfg: SweepConfig) -> str | None:
    """The commit `data.revision` of a Hub data set resolves to, or None when there is no Hub repository
    or the Hub cannot say (offline, unreachable): provenance is never worth failing an extraction."""
    name = cfg.data.dataset
    if offline() or not hub_repository(name):
        return None
    try:
        from huggingface_hub import HfApi

        repo = name.removeprefix("hf://datasets/").split("@", 1)[0]
        return HfApi().dataset_info(repo, revision=cfg.data.revision, timeout=10.0).sha
    except Exception as exc:  # any network or Hub error: the commit stays unknown
        log.info("data.revision: could not resolve the commit of %s (%s)", name, type(exc).__name__)
        return None


class Documents:
    """`iter_documents` that counts what it read and hashes the first document's text, so a store's
    manifest can say which corpus it holds, in which order (`source()`)."""

    def __init__(self, cfg: SweepConfig) -> None:
        self.cfg = cfg
        self.count = 0
        self.first_sha256: str | None = None

    def __iter__(self) -> Iterator[tuple[int, str]]:
        self.count, self.first_sha256 = 0, None
        for index, text in iter_documents(self.cfg):
            if self.count == 0:
                self.first_sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
            self.count += 1
            yield index, text

    def source(self) -> dict[str, Any]:
        """The manifest's `source`: the data set as configured, the commit it resolved to (None when
        the Hub does not say), and what was read from it."""
        data = self.cfg.data
        _, files = resolve_dataset(data.dataset, data.data_files, self.cfg.data_root)
        return {
            "repository": data.dataset,
            "revision": data.revision,
            "commit": dataset_commit(self.cfg),
            "config_name": data.config_name,
            "data_files": files,
            "split": data.split,
            "documents": self.count,
            "first_document_sha256": self.first_sha256,
        }
