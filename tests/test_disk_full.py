"""A full or read-only `data_root`: extraction, a checkpoint and analysis stop with one
`StorageWriteError` naming the file, leave no temporary and no half-written result, and a re-run after
space is freed completes.

Two kinds of full disk: a real 4 MiB tmpfs nearly filled (where this machine lets the tests mount one:
root with CAP_SYS_ADMIN), and everywhere ENOSPC injected at `fsync` once 64 KiB were written under the
directory (how NFS reports a full disk: every write succeeds, the flush fails). Before, a full disk
surfaced as a raw `OSError` traceback from pyarrow, or as torch's `RuntimeError: … unexpected pos`.
"""

from __future__ import annotations

import errno
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from flows.cli import main
from sae_core.errors import StorageWriteError
from sae_core.extraction.extract import extract_activations, store_path
from sae_core.io import atomic_write_json, atomic_write_with, read_json
from sae_core.store import ActivationStore
from sae_core.training.checkpoint import save_checkpoint
from tests.analysis.test_analysis import config as analysis_config
from tests.analysis.test_analysis import make_sae, write_run


def _mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    return done.returncode == 0


def _umount(where: Path) -> None:
    subprocess.run(["umount", str(where)], capture_output=True, check=False)


class FullDisk:
    """A directory that refuses to take more data, and `free()` to make room again."""

    def __init__(self, root: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root, self.kind, self._monkeypatch = root, kind, monkeypatch
        self.filler = root / "filler"
        if kind == "tmpfs":  # leave 64 KiB: less than any shard, checkpoint or analysis writes
            stats = os.statvfs(root)
            self.filler.write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - (64 << 10)))
        else:
            real_fsync, written = os.fsync, [0]

            def fsync(fd: int) -> None:
                if os.readlink(f"/proc/self/fd/{fd}").startswith(str(root)):
                    written[0] += os.fstat(fd).st_size
                    if written[0] > (64 << 10):
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                real_fsync(fd)

            monkeypatch.setattr(os, "fsync", fsync)

    def free(self) -> None:
        if self.kind == "tmpfs":
            self.filler.unlink()
        else:
            self._monkeypatch.undo()

    def leftovers(self) -> list[str]:
        """Temporary files anywhere under the root (the atomic writers' `.name.random.tmp`)."""
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*.tmp"))


@pytest.fixture(params=["tmpfs", "injected"])
def full_disk(request, tmp_path, monkeypatch) -> Iterator[FullDisk]:
    root = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    if request.param == "tmpfs":
        if not _mount_tmpfs(root, "size=4m"):
            pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN); the injected case runs")
        try:
            yield FullDisk(root, "tmpfs", monkeypatch)
        finally:
            _umount(root)
    else:
        root.mkdir()
        yield FullDisk(root, "injected", monkeypatch)


def _assert_one_storage_error(exc: pytest.ExceptionInfo, under: Path) -> Path:
    path = Path(exc.value.path)
    assert path.is_relative_to(under) and str(path) in str(exc.value)
    assert "no space left on device" in str(exc.value) and "\n" not in str(exc.value)
    return path


def test_extraction_on_a_full_disk_stops_cleanly_and_resumes(full_disk, tiny_store, tiny_store_config):
    cfg = tiny_store_config.model_copy(deep=True)
    cfg.data_root = str(full_disk.root)
    with pytest.raises(StorageWriteError) as exc:
        extract_activations(cfg)
    failed = _assert_one_storage_error(exc, full_disk.root)
    out = store_path(cfg)
    assert failed.parent == out and not failed.exists()
    assert not (out / "manifest.json").exists() and full_disk.leftovers() == []
    full_disk.free()
    assert extract_activations(cfg) == out
    done, reference = ActivationStore.open(out).manifest, ActivationStore.open(tiny_store).manifest
    assert [s["sha256"] for s in done["shards"]] == [s["sha256"] for s in reference["shards"]]


def test_checkpoint_on_a_full_disk_keeps_the_previous_one(full_disk):
    path = full_disk.root / "run" / "checkpoint.pt"
    save_checkpoint(path, {"step": 1, "w": torch.zeros(4)})
    with pytest.raises(StorageWriteError) as exc:
        save_checkpoint(path, {"step": 2, "w": torch.rand(256, 1024)})  # 1 MiB
    assert _assert_one_storage_error(exc, full_disk.root) == path
    assert torch.load(path, weights_only=False)["step"] == 1 and full_disk.leftovers() == []
    full_disk.free()
    save_checkpoint(path, {"step": 2, "w": torch.rand(256, 1024)})
    assert torch.load(path, weights_only=False)["step"] == 2


def test_analysis_on_a_full_disk_writes_no_analysis_json(full_disk, tmp_path):
    from sae_core.analysis.driver import analyze_run
    from tests.fixtures_sae import make_store

    store = make_store(tmp_path / "store", n=2000, d=8)
    run = write_run(full_disk.root / "runs", make_sae(), {"training_dead_fraction": 0.25})
    cfg = analysis_config(ce_loss_documents=0)
    with pytest.raises(StorageWriteError) as exc:
        analyze_run(store, run, cfg)
    _assert_one_storage_error(exc, run)
    assert not (run / "analysis.json").exists() and full_disk.leftovers() == []
    full_disk.free()
    assert analyze_run(store, run, cfg)["tokens_analyzed"] > 0 and (run / "analysis.json").exists()


def test_read_only_data_root_names_the_path_and_the_cli_prints_one_line(tmp_path, capsys, tiny_store_config):
    root = tmp_path / "ro"
    if not _mount_tmpfs(root, "size=1m,ro"):
        pytest.skip("cannot mount a tmpfs here; test_read_only_injected covers EROFS")
    try:
        sets = {**{"data_root": str(root)}, **_store_sets(tiny_store_config)}
        argv = ["extract", "--preset", "demo"] + [x for k, v in sets.items() for x in ("--set", f"{k}={v}")]
        assert main(argv) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.strip() and not line.startswith("extracting:")]
        # data_root itself: `extract` checks it takes a file before loading the model.
        assert len(errors) == 1 and errors[0].startswith(f"error: {root}: cannot write")
        assert "read-only file system" in errors[0] and "Traceback" not in err
    finally:
        _umount(root)


def _store_sets(cfg) -> dict[str, str]:
    return {
        "model.name": cfg.model.name,
        "model.layer": str(cfg.model.layer),
        "data.dataset": cfg.data.dataset,
        "data.data_files": str(cfg.data.data_files),
        "data.num_documents": "20",
        "data.context_length": "64",
    }


def test_read_only_injected(tmp_path, monkeypatch):
    """EROFS from the temporary's creation (the first write on a read-only mount)."""
    import sae_core.io as io

    path = tmp_path / "m.json"
    atomic_write_json(path, {"a": 1})

    def read_only_open(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(args[0]))

    monkeypatch.setattr(io.os, "open", read_only_open)
    with pytest.raises(StorageWriteError, match="read-only file system") as exc:
        atomic_write_json(path, {"a": 2})
    monkeypatch.undo()
    assert exc.value.path == str(path) and exc.value.errno == errno.EROFS
    assert read_json(path) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["m.json"]


@pytest.mark.parametrize(
    "raised",
    [
        OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device"),
        RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
    ],
    ids=["pyarrow", "safetensors"],
)
def test_writer_errors_are_recognised_and_the_temporary_removed(tmp_path, raised):
    """How pyarrow and safetensors report ENOSPC (their exact messages on a full tmpfs)."""

    def writer(tmp: Path) -> None:
        tmp.write_bytes(b"half a file")
        raise raised

    with pytest.raises(StorageWriteError, match="no space left on device"):
        atomic_write_with(tmp_path / "x.parquet", writer)
    assert list(tmp_path.iterdir()) == []


def test_other_errors_pass_through(tmp_path):
    with pytest.raises(ValueError, match="a bug"):
        atomic_write_with(tmp_path / "x", lambda tmp: (_ for _ in ()).throw(ValueError("a bug")))
    assert list(tmp_path.iterdir()) == []


def test_read_only_out_and_data_root_fail_before_any_work(tmp_path, capsys, tiny_store):
    """`train --out <read-only>` trained 69 % of the run before its first checkpoint failed; `run` on a
    read-only data_root printed a raw OSError with six tracebacks (issue 20 item 7)."""
    root = tmp_path / "ro"
    if not _mount_tmpfs(root, "size=1m,ro"):
        pytest.skip("cannot mount a tmpfs here")
    try:
        # 10 000 steps: minutes if it trained at all.
        sets = ["--set", "training.max_tokens=640000", "--set", "training.checkpoint_every=5000"]
        argv = ["train", "--activations", str(tiny_store), "--out", str(root / "cell"), *sets]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.strip() == (
            f"error: {root}/cell: cannot write (read-only file system); mount it read-write "
            "(or set data_root to a writable directory) and re-run"
        )
        assert main(["run", "--preset", "demo", "--set", f"data_root={root}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {root}: cannot write (read-only file system)"), err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    finally:
        _umount(root)


def test_read_only_run_and_sweep_fail_analysis_and_report_before_any_work(tmp_path, capsys):
    """`analyze` and `report` on a read-only run or sweep directory found it only at their first write,
    after the passes over the store."""
    from sae_core.analysis.driver import analyze_run
    from tests.fixtures_sae import make_store
    from tests.report.test_report_data import fabricate_sweep

    root = tmp_path / "ro"
    if not _mount_tmpfs(root, "size=64m"):
        pytest.skip("cannot mount a tmpfs here")
    try:
        store = make_store(tmp_path / "store", n=2000, d=8)
        run = write_run(root / "runs", make_sae(), {"training_dead_fraction": 0.25})
        sweep = fabricate_sweep(root, name="rosweep")
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True, capture_output=True)
        with pytest.raises(StorageWriteError, match="read-only file system") as exc:
            analyze_run(store, run, analysis_config(ce_loss_documents=0))
        assert exc.value.path.startswith(str(run)) and not (run / "features").exists()
        assert main(["report", "--sweep", str(sweep), "--no-browsers"]) == 2
        err = capsys.readouterr().err.replace("\r", "\n")
        errors = [line for line in err.splitlines() if line.strip() and not line.startswith("report:")]
        assert errors == [f"error: {sweep}/report: cannot write (read-only file system); mount it read-write "
                          "(or set data_root to a writable directory) and re-run"], err  # fmt: skip
        assert not (sweep / "report" / "report.md").exists()
    finally:
        _umount(root)
