"""The Hub upload against a fake HfApi that behaves like the Hub's tree (no network): one commit per
cell, none for identical files, retries on transient errors only, and the token never recorded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.hf_api import RepoFile

from sae_core.config import load_config
from sae_core.naming import Cell
from tasks import upload
from tasks.paths import run_dir

LFS_SUFFIXES = (".pth", ".safetensors", ".parquet")  # what the Hub's default .gitattributes sends to LFS


def http_error(status: int) -> HfHubHTTPError:
    try:  # huggingface_hub 2.x speaks httpx2, earlier releases httpx
        import httpx2 as http
    except ImportError:
        import httpx as http

    request = http.Request("POST", "https://huggingface.co/api/models/u/r/commit/main")
    return HfHubHTTPError(f"{status} error", response=http.Response(status, request=request))


class FakeHub:
    """The parts of HfApi the upload uses, keeping a repo's files in memory the way the Hub reports them
    (`RepoFile` with a git blob id, LFS files with their sha256)."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: list[tuple[str, list[str]]] = []
        self.failures: list[Exception] = []
        self.calls = 0

    def create_repo(self, repo_id: str, *, private: bool = False, exist_ok: bool = False) -> str:
        self.repos.setdefault(repo_id, {})
        return f"https://huggingface.co/{repo_id}"

    def list_repo_tree(self, repo_id: str, recursive: bool = False) -> list[RepoFile]:
        out = []
        for path, data in self.repos[repo_id].items():
            lfs = None
            if path.endswith(LFS_SUFFIXES):
                lfs = {"size": len(data), "oid": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
            out.append(RepoFile(path=path, size=len(data), oid=upload.git_blob_id(data), lfs=lfs))
        return out

    def create_commit(self, repo_id: str, operations, *, commit_message: str):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        files = self.repos[repo_id]
        for op in operations:
            src = op.path_or_fileobj
            files[op.path_in_repo] = src if isinstance(src, bytes) else Path(src).read_bytes()
        self.commits.append((commit_message, sorted(op.path_in_repo for op in operations)))
        oid = f"{len(self.commits):040x}"
        return SimpleNamespace(oid=oid, commit_url=f"https://huggingface.co/{repo_id}/commit/{oid}")


@pytest.fixture
def cfg(tmp_path):
    return load_config("demo", None, {"data_root": str(tmp_path / "data"), "upload.repo_id": "me/saes"})


def write_cell(cfg, cell: Cell) -> Path:
    """A run dir with the files the training, analysis and labelling stages write (contract format)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = run_dir(cfg, cell)
    (out / "saelens").mkdir(parents=True)
    (out / "features").mkdir()
    d, m = 8, 8 * cell.expansion
    state = {
        "W_enc": torch.randn(d, m),
        "b_enc": torch.zeros(m),
        "W_dec": torch.randn(m, d),
        "b_dec": torch.zeros(d),
    }
    torch.save(state, out / cell.weights_filename)
    (out / "saelens" / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": d, "d_sae": m}))
    from safetensors.torch import save_file

    save_file(state, out / "saelens" / "sae_weights.safetensors")
    (out / "metrics.json").write_text(json.dumps({"cell": cell.name, "completed": True}))
    (out / "analysis.json").write_text(
        json.dumps({"dead_fraction": 0.25, "l0": 3.5, "explained_variance": 0.8})
    )
    (out / "labels.json").write_text(json.dumps({"monosemanticity_rate": None, "skipped_reason": "no key"}))
    pq.write_table(
        pa.table({"feature_id": pa.array(range(m), pa.int32())}), out / "features" / "feature_stats.parquet"
    )
    return out


CELL = Cell(2, 0.01, "sampling")


def test_one_commit_per_cell_with_the_conventional_layout(cfg):
    out = write_cell(cfg, CELL)
    hub = FakeHub()
    result = upload.push_cell(hub, "me/saes", out, CELL, upload.model_card(cfg))
    assert result["status"] == "committed" and len(hub.commits) == 1
    files = hub.repos["me/saes"]
    assert "model_weights_2x_0.01_sampling.pth" in files
    assert {"saelens/2x_0.01_sampling/cfg.json", "saelens/2x_0.01_sampling/sae_weights.safetensors"} <= set(
        files
    )
    assert "features/2x_0.01_sampling/feature_stats.parquet" in files
    assert "labels/2x_0.01_sampling/labels.json" in files
    card = files["README.md"].decode()
    assert "| 0.01 | 2x | missing / 25.0 | missing |" in card  # dead % without / with resampling; Δ missing
    assert "dead % (>0.07, test tokens)" in card  # the token set the figures were counted on
    # The card opens with a row per SAE, its figures the run's own, then how to load one.
    assert card.index("## The SAEs") < card.index("## Loading") < card.index("## The grid")
    row = next(line for line in card.splitlines() if line.startswith("| `saelens/2x_0.01_sampling/`"))
    cols = [c.strip() for c in row.strip("|").split("|")]
    assert cols[1:8] == ["relu", "2x", "λ = 0.01", "sampling", "3.5", "0.800", "skipped"]
    assert cols[9] == "25.0" and cols[11] == "n/a"  # dead %; no scores: labelling was skipped
    assert 'SAE.load_from_disk(f"{path}/saelens/2x_0.01_sampling"' in card


def test_identical_reupload_makes_no_commit_and_a_change_commits_only_it(cfg):
    out = write_cell(cfg, CELL)
    hub = FakeHub()
    card = upload.model_card(cfg)
    upload.push_cell(hub, "me/saes", out, CELL, card)
    again = upload.push_cell(hub, "me/saes", out, CELL, card)
    assert again["status"] == "unchanged" and len(hub.commits) == 1
    (out / "labels.json").write_text(json.dumps({"monosemanticity_rate": 0.5, "skipped_reason": None}))
    changed = upload.push_cell(hub, "me/saes", out, CELL, card)
    assert changed["status"] == "committed" and hub.commits[-1][1] == ["labels/2x_0.01_sampling/labels.json"]


def test_transient_errors_are_retried_and_auth_errors_are_not(cfg):
    out = write_cell(cfg, CELL)
    hub = FakeHub()
    hub.failures = [http_error(503), ConnectionError("reset by peer")]
    result = upload.push_cell(hub, "me/saes", out, CELL, "card", base_delay=0.001)
    assert result["status"] == "committed" and hub.calls == 3 and len(hub.commits) == 1

    other = FakeHub()
    other.failures = [http_error(401)]
    with pytest.raises(HfHubHTTPError):
        upload.push_cell(other, "me/saes", out, CELL, "card", base_delay=0.001)
    assert other.calls == 1


def test_missing_weights_is_an_upload_error(cfg):
    from sae_core.errors import UploadError

    with pytest.raises(UploadError, match=r"model_weights_2x_0\.01_sampling\.pth"):
        upload.push_cell(FakeHub(), "me/saes", run_dir(cfg, CELL), CELL, "card")


def test_task_skips_without_repo_or_token_and_never_records_the_token(cfg, prefect_client, monkeypatch):
    from prefect import flow

    out = write_cell(cfg, CELL)
    hubs: list[FakeHub] = []
    monkeypatch.setattr(upload, "make_hf_api", lambda token: hubs.append(FakeHub(token)) or hubs[-1])
    no_repo = cfg.model_copy(update={"upload": cfg.upload.model_copy(update={"repo_id": None})})
    secret = "hf_SECRETtoken0123456789"

    @flow(name="upload-test")
    def run(config):
        return upload.upload_cell(CELL.name, config, base_delay=0.001)

    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert run(no_repo)["status"] == "skipped"
    skipped = run(cfg)
    assert skipped["status"] == "skipped" and "HF_TOKEN" in skipped["reason"]
    monkeypatch.setenv("HF_TOKEN", secret)
    state = run(cfg, return_state=True)
    assert state.result()["status"] == "committed"
    assert hubs[-1].token == secret and out.exists()
    assert secret not in hubs[-1].repos["me/saes"]["README.md"].decode()

    # Nothing Prefect stored — logs, task parameters, results — holds the token.
    logs = prefect_client.read_logs()
    assert any("skipped: upload.repo_id is not set" in log.message for log in logs)
    assert all(secret not in log.message for log in logs)
    for task_run in prefect_client.read_task_runs():
        assert secret not in json.dumps(task_run.model_dump(mode="json"), default=str)
    stored = Path(cfg.data_root)
    for path in stored.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_the_hub_session_has_bounded_timeouts():
    """huggingface_hub's shared client ships with `timeout=None`: a Hub that stops answering held an
    upload for ever. After `make_hf_api`, connects and every read or write are bounded."""
    from huggingface_hub.utils import get_session, set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    try:
        api = upload.make_hf_api("hf_unused_token")
        timeout = get_session().timeout
        assert (timeout.connect, timeout.read, timeout.write) == (
            upload.HUB_CONNECT_TIMEOUT_S,
            upload.HUB_STALL_TIMEOUT_S,
            upload.HUB_STALL_TIMEOUT_S,
        )
        assert api.token == "hf_unused_token" and get_session().follow_redirects
    finally:
        set_client_factory(default_client_factory)
