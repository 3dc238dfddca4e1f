"""Atomic file writes and checksums: a reader never sees half a file.

Everything the pipeline writes goes through these helpers: write to a temporary name in the same
directory, flush and fsync, then `os.replace` into place (atomic on POSIX file systems).

Files are created with the process's umask applied (0644 under the usual umask 022), as `open()` would:
`tempfile.mkstemp` creates them 0600 whatever the umask, which made every result on a shared
`data_root` unreadable to other users and containers.

A write the storage cannot take (no space left, a quota, a read-only or unwritable file system) raises
`StorageWriteError` naming the file, after the temporary is removed: a full or read-only `data_root`
leaves the previous file or none, never a half-written one, and a re-run after space is freed resumes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from sae_core.errors import StorageWriteError

# errno → (what happened, what to do): the causes of a failed write that are the storage's, not a bug.
_FULL = "free space there (or set data_root elsewhere) and re-run: finished files are kept"
_READ_ONLY = "mount it read-write (or set data_root to a writable directory) and re-run"
_STORAGE_ERRNOS = {
    errno.ENOSPC: ("no space left on device", _FULL),
    errno.EDQUOT: ("disk quota exceeded", _FULL),
    errno.EFBIG: ("file too large for its file system", _FULL),
    errno.EROFS: ("read-only file system", _READ_ONLY),
    errno.EACCES: ("permission denied", "make it writable for this user (or set data_root elsewhere)"),
}
# Writers in C++ or Rust report the errno only in their message (safetensors: "(os error 28)").
_MESSAGES = {
    "no space left on device": errno.ENOSPC,
    "os error 28": errno.ENOSPC,
    "disk quota exceeded": errno.EDQUOT,
    "read-only file system": errno.EROFS,
    "os error 30": errno.EROFS,
}
_LOW_SPACE_BYTES = 1 << 20


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, else removed."""
    target = Path(path)
    with storage_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_temporary(target)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # A writer may have replaced the file with one of its own temporaries (safetensors does: 0600).
        tmp.chmod(0o666 & ~current_umask())
        os.replace(tmp, target)
    except BaseException as exc:
        # Classified before the temporary goes: the free-space check must see the disk the write saw.
        error = storage_error(exc, target)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if error is not None:
            raise error from exc
        raise


@contextlib.contextmanager
def storage_errors(path: str | Path) -> Iterator[None]:
    """Turn a storage failure inside the block (see `storage_error`) into `StorageWriteError` on `path`."""
    try:
        yield
    except Exception as exc:
        error = storage_error(exc, Path(path))
        if error is None:
            raise
        raise error from exc


def make_dirs(path: str | Path) -> Path:
    """`mkdir -p`, failing with `StorageWriteError` on a full or read-only file system."""
    with storage_errors(path):
        Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


def check_writable(directory: str | Path) -> Path:
    """`directory`, created if missing, once a file could be created and removed in it; else
    `StorageWriteError` naming it. Called before a stage's work: a read-only `data_root` or `--out` was
    found only at the first write, after minutes of extraction or most of a training run."""
    target = Path(directory)
    make_dirs(target)
    with storage_errors(target):
        probe = _create_temporary(target / ".write-check")
        probe.unlink()
    return target


def storage_error(exc: BaseException, path: Path) -> StorageWriteError | None:
    """The `StorageWriteError` for `exc` when a full, read-only or unwritable file system caused it, else
    None. Looks through the exception's causes (pyarrow and torch wrap the OSError) and their messages;
    `torch.save` to a path keeps neither, so an unexplained failure on a file system with no space left
    (or mounted read-only) counts as that."""
    if isinstance(exc, StorageWriteError) or not isinstance(exc, Exception):
        return None
    code = _errno_in(exc)
    if code is None:
        code = _errno_of_file_system(path.parent)
    if code is None:
        return None
    reason, advice = _STORAGE_ERRNOS[code]
    return StorageWriteError(f"{path}: cannot write ({reason}); {advice}", str(path), code)


def _errno_in(exc: BaseException) -> int | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _STORAGE_ERRNOS:
            return current.errno
        text = str(current).lower()
        for needle, code in _MESSAGES.items():
            if needle in text:
                return code
        current = current.__cause__ or current.__context__
    return None


def _errno_of_file_system(directory: Path) -> int | None:
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    try:
        stats = os.statvfs(directory)
    except OSError:
        return None
    if stats.f_flag & os.ST_RDONLY:
        return errno.EROFS
    if stats.f_bavail * stats.f_frsize < _LOW_SPACE_BYTES:
        return errno.ENOSPC
    return None


def _create_temporary(target: Path) -> Path:
    """An empty, new file `.<name>.<random>.tmp` beside `target`, mode 0666 less the umask."""
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name beside {target}")


def apply_umask_modes(root: str | Path) -> None:
    """Give `root` and everything under it the modes `open`/`mkdir` would (0666 / 0777 less the umask):
    for a directory a third-party writer filled (`save_pretrained` writes its weights 0600)."""
    umask = current_umask()
    for path in [Path(root), *Path(root).rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def current_umask() -> int:
    """The process's umask, read without changing it (`os.umask` can only be read by setting it, which
    would race with other threads creating files)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    probe = tempfile.mkdtemp()
    try:  # creating a directory with mode 0777 applies the umask: read it off the result
        os.rmdir(probe)
        os.mkdir(probe, 0o777)
        return 0o777 & ~os.stat(probe).st_mode & 0o777
    finally:
        os.rmdir(probe)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Call `writer(tmp_path)` (e.g. `torch.save`, `pq.write_table`), then rename into place."""
    with atomic_path(path) as tmp:
        writer(tmp)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        _feed(digest, handle, chunk)
    return digest.hexdigest()


def _feed(digest: Any, handle: BinaryIO, chunk: int) -> None:
    while block := handle.read(chunk):
        digest.update(block)
