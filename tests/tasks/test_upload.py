"""The Hub upload against a fake HfApi that behaves like the Hub's tree (no network): one commit per
cell, none for identical files, retries on transient errors only, the token never recorded, and the
preflight before the upload and again on what the Hub gives back (a real trained and analysed cell)."""

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

    def hf_hub_download(self, *, repo_id: str, filename: str, revision=None, local_dir=None) -> str:
        """As HfApi's: the file written under `local_dir` at its repo path; its path."""
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.repos[repo_id][filename])
        return str(target)

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
    assert cols[1:8] == ["relu", "2x", "λ = 0.01", "sampling", "3.5", "0.8000", "skipped"]
    assert cols[9] == "25.0" and cols[10] == "skipped" and cols[11] == "n/a"  # dead %; no labels, no scores
    assert "Labels skipped (no key) for 2x_0.01_sampling." in card  # the reason, once, under the table
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


@pytest.fixture
def trained_cfg(tmp_path, sae_store):
    """A config whose CELL is trained and analysed for real on the synthetic store (no CE loss)."""
    from sae_core.analysis import analyze_run
    from sae_core.training import train_cell
    from tests.fixtures_sae import small_config

    cfg = small_config(epochs=1)
    cfg = cfg.model_copy(
        update={
            "data_root": str(tmp_path / "data"),
            "upload": cfg.upload.model_copy(update={"repo_id": "me/saes"}),
            "analysis": cfg.analysis.model_copy(update={"ce_loss_documents": 0}),
        }
    )
    train_cell(sae_store, CELL, cfg, run_dir(cfg, CELL))
    analyze_run(sae_store, run_dir(cfg, CELL), cfg)
    return cfg


def _scaled_decoder(path: Path) -> bytes:
    from safetensors.torch import load, save

    state = load(path.read_bytes())
    state["W_dec"] = state["W_dec"] * 1.5
    return save(state)


def test_a_broken_export_never_leaves_the_machine(trained_cfg, prefect_client, monkeypatch):
    from prefect import flow

    from sae_core.errors import UploadError

    weights = run_dir(trained_cfg, CELL) / "saelens" / "sae_weights.safetensors"
    weights.write_bytes(_scaled_decoder(weights))
    hubs: list[FakeHub] = []
    monkeypatch.setattr(upload, "make_hf_api", lambda token: hubs.append(FakeHub(token)) or hubs[-1])
    monkeypatch.setenv("HF_TOKEN", "hf_test")

    @flow(name="upload-broken")
    def run(config):
        return upload.upload_cell(CELL.name, config, base_delay=0.001)

    with pytest.raises(
        UploadError, match=r"the export of 2x_0.01_sampling fails the preflight \(decoder rows"
    ):
        run(trained_cfg)
    assert not hubs or not hubs[-1].commits  # nothing was pushed


def test_the_hubs_copy_is_downloaded_and_checked_after_the_upload(trained_cfg):
    from sae_core.errors import UploadError

    out = run_dir(trained_cfg, CELL)
    hub = FakeHub()
    pushed = upload.push_cell(hub, "me/saes", out, CELL, "card")
    lines = upload.verify_upload(hub, "me/saes", out, CELL, pushed["commit"])
    assert lines[0].startswith("ok: ") and "SAELens" in lines[0] and "/saelens/2x_0.01_sampling" in lines[0]
    # A copy the Hub serves corrupted (a scaled decoder; a truncated .pth) fails after the upload.
    remote = hub.repos["me/saes"]
    good = remote["saelens/2x_0.01_sampling/sae_weights.safetensors"]
    remote["saelens/2x_0.01_sampling/sae_weights.safetensors"] = _scaled_decoder(
        out / "saelens" / "sae_weights.safetensors"
    )
    with pytest.raises(UploadError, match=r"the Hub's copy of 2x_0.01_sampling fails the preflight"):
        upload.verify_upload(hub, "me/saes", out, CELL, pushed["commit"])
    remote["saelens/2x_0.01_sampling/sae_weights.safetensors"] = good
    remote[CELL.weights_filename] = remote[CELL.weights_filename][:-10]
    with pytest.raises(UploadError, match=r"the Hub's model_weights_2x_0.01_sampling.pth in me/saes differs"):
        upload.verify_upload(hub, "me/saes", out, CELL, pushed["commit"])


def test_task_skips_without_repo_or_token_and_never_records_the_token(
    trained_cfg, prefect_client, monkeypatch
):
    from prefect import flow

    cfg = trained_cfg
    out = run_dir(cfg, CELL)
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
    assert state.result()["status"] == "committed" and state.result()["verified"]
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
