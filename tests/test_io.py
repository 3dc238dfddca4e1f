"""Atomic writes: the target is either absent, the old file, or the whole new file."""

import os

import pytest
import torch
from safetensors.torch import save_file

from sae_core.io import (
    atomic_path,
    atomic_write_json,
    atomic_write_with,
    current_umask,
    read_json,
    sha256_file,
)


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


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_written_files_and_dirs_follow_the_umask(tmp_path, umask):
    """mkstemp/mkdtemp made every output 0600 / 0700 whatever the umask: unreadable on a shared data_root."""
    assert current_umask() == umask
    atomic_write_json(tmp_path / "a" / "m.json", {"a": 1})
    atomic_write_with(tmp_path / "w.bin", lambda tmp: tmp.write_bytes(b"x"))
    # safetensors writes through a 0600 temporary of its own and renames it onto the path it is given
    atomic_write_with(tmp_path / "s.safetensors", lambda tmp: save_file({"w": torch.zeros(2)}, str(tmp)))
    assert {mode(tmp_path / n) for n in ("a/m.json", "w.bin", "s.safetensors")} == {0o666 & ~umask}
    assert mode(tmp_path / "a") == 0o777 & ~umask


def test_demo_model_directory_follows_the_umask(tmp_path, tiny_texts, umask):
    from sae_core.extraction.demo import DemoModelSpec, build_demo_model

    spec = DemoModelSpec(n_layer=1, n_embd=16, n_head=2, n_positions=32, vocab_size=280, train_steps=0)
    out = build_demo_model(tmp_path / "m", tiny_texts, spec)
    assert mode(out) == 0o777 & ~umask
    assert {mode(p) for p in out.iterdir()} == {0o666 & ~umask}


def mode(path) -> int:
    return os.stat(path).st_mode & 0o777
