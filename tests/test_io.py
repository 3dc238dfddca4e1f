"""Atomic writes: the target is either absent, the old file, or the whole new file."""

import pytest

from sae_core.io import atomic_path, atomic_write_json, read_json, sha256_file


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "m.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert read_json(path) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert read_json(path) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_sha256(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"abc")
    assert sha256_file(path).startswith("ba7816bf")
