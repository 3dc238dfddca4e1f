"""Errors a user can act on. The CLI prints them as one line (no traceback) and exits non-zero.

Messages name the field, path or value at fault: `model.layer: gpt2 has 12 layers … (got 13)`.
"""


class SaeSweepError(Exception):
    """Base of every error caused by the user's input or environment rather than by a bug."""


class StorageWriteError(SaeSweepError):
    """An output could not be written: no space left, a quota, a read-only or unwritable file system.
    Raised by the atomic writers (`sae_core.io`) with the path, after removing their temporary file, so
    nothing half-written is left; `path` and `errno` say which file and why."""

    def __init__(self, message: str, path: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno


class StoreError(SaeSweepError):
    """An activation store that is missing, incomplete, corrupted or does not fit the request."""


class TrainingError(SaeSweepError):
    """Training cannot start or continue (bad data, NaN loss, incompatible checkpoint, …)."""


class AnalysisError(SaeSweepError):
    """Feature analysis cannot run on the given run directory or store."""


class LabelingError(SaeSweepError):
    """Labelling is misconfigured (the endpoint's transient failures are retried, not raised)."""


class UploadError(SaeSweepError):
    """The Hub upload is misconfigured or failed for good."""


class ReportError(SaeSweepError):
    """The report or browser cannot be built from the given directory."""
