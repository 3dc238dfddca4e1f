"""The code version that goes into manifests and cache keys.

Prefect's task-source cache policy sees only the task function's own source, not the helpers it calls,
so cached results would survive a change in `sae_core`. We hash every source file of the package instead.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import metadata
from pathlib import Path

PACKAGE_VERSION = "0.1.0"


@lru_cache(maxsize=1)
def code_version() -> str:
    """`<package version>+<12 hex of the sha256 over sae_core's .py files and presets>`."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted([*root.rglob("*.py"), *root.rglob("*.yaml")]):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return f"{PACKAGE_VERSION}+{digest.hexdigest()[:12]}"


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries that shape a store's values (None: not installed), and ours."""
    versions: dict[str, str | None] = {}
    for name in ("torch", "transformers", "datasets"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["sae-sweep"] = code_version()
    return versions
