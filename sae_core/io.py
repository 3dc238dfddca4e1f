"""Atomic file writes and checksums: a reader never sees half a file.

Everything the pipeline writes goes through these helpers: write to a temporary name in the same
directory, flush and fsync, then `os.replace` into place (atomic on POSIX file systems).

Files are created with the process's umask applied (0644 under the usual umask 022), as `open()` would:
`tempfile.mkstemp` creates them 0600 whatever the umask, which made every result on a shared
`data_root` unreadable to other users and containers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, else removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(target)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # A writer may have replaced the file with one of its own temporaries (safetensors does: 0600).
        tmp.chmod(0o666 & ~current_umask())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
