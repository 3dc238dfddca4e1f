"""Push one cell to the Hugging Face Hub: one commit per cell, none when nothing changed.

Layout in the repo: the study's `model_weights_<exp>x_<λ>_<strategy>.pth` at the root, the SAELens export
under `saelens/<cell>/` (load it with SAELens from that folder), feature statistics under
`features/<cell>/`, labels under `labels/<cell>/`, metrics under `metrics/<cell>/`, and a model card
(`README.md`) with the grid's table. Files are compared with the remote tree first (sha256 for LFS files,
the git blob id for the others), so a re-upload of identical files makes no commit at all.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import task
from prefect.runtime import task_run

from sae_core.config import HUB_TOKENS, SweepConfig
from sae_core.errors import UploadError
from sae_core.io import sha256_file
from sae_core.naming import Cell
from tasks.credentials import resolve_secret
from tasks.paths import run_dir, sweep_dir
from tasks.progress import run_logger
from tasks.summary import grid_legend, grid_rows, markdown_table

TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


HUB_CONNECT_TIMEOUT_S = 30.0
HUB_STALL_TIMEOUT_S = 300.0
"""huggingface_hub's shared client has no timeout at all (`timeout=None`): a Hub (or proxy) that stops
answering held an upload for ever. Each connect and each read or write is bounded here; a whole
request is not, since an LFS upload of a large checkpoint legitimately takes as long as its size."""


def _hub_client() -> Any:
    import httpx2
    from huggingface_hub.utils._http import default_client_factory

    client = default_client_factory()  # keeps the Hub's own hooks (offline mode) and its redirects
    client.timeout = httpx2.Timeout(HUB_STALL_TIMEOUT_S, connect=HUB_CONNECT_TIMEOUT_S)
    return client


def make_hf_api(token: str) -> Any:
    """The Hub client, over a session with bounded timeouts; tests replace this function with one
    returning a fake (no network)."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import get_session, set_client_factory

    if get_session().timeout.read is None:
        set_client_factory(_hub_client)
    return HfApi(token=token)


def planned_files(out: Path, cell: Cell) -> dict[str, Path]:
    """path in repo → local file, for the files of one cell that exist."""
    files: dict[str, Path] = {cell.weights_filename: out / cell.weights_filename}
    saelens = out / "saelens"
    if saelens.is_dir():
        for path in sorted(p for p in saelens.rglob("*") if p.is_file()):
            files[f"saelens/{cell.name}/{path.relative_to(saelens).as_posix()}"] = path
    for name in ("feature_stats.parquet", "selected.json"):
        files[f"features/{cell.name}/{name}"] = out / "features" / name
    for name in ("labels.parquet", "labels.json"):
        files[f"labels/{cell.name}/{name}"] = out / name
    for name in ("metrics.json", "analysis.json"):
        files[f"metrics/{cell.name}/{name}"] = out / name
    files[f"browser/{cell.name}/browser.html"] = out / "browser.html"
    return {repo_path: local for repo_path, local in files.items() if local.is_file()}


def git_blob_id(data: bytes) -> str:
    """The git object id of a blob: what the Hub reports for files not stored in LFS."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _same_as_remote(local: Path | bytes, remote: Any) -> bool:
    data_sha = hashlib.sha256(local).hexdigest() if isinstance(local, bytes) else sha256_file(local)
    lfs = getattr(remote, "lfs", None)
    if lfs is not None:
        return getattr(lfs, "sha256", None) == data_sha
    data = local if isinstance(local, bytes) else local.read_bytes()
    return getattr(remote, "blob_id", None) == git_blob_id(data)


OTHER_ARCHITECTURES_NAMING = (
    "The other architectures put their name and sparsity where λ stands: "
    "`model_weights_8x_topk32_auxk.pth` (k = 32), `model_weights_8x_batchtopk32_sampling.pth`, "
    "`model_weights_8x_jumprelu0.001_nosampling.pth` (L0 coefficient 0.001); their `.pth` holds the "
    "architecture's own keys (`k`, `threshold`, …) and SAELens loads every `saelens/<cell>/` folder "
    "(topk as `topk`, batchtopk and jumprelu as `jumprelu` with thresholds).\n"
)


def model_card(cfg: SweepConfig) -> str:
    """The repo's README: a row per SAE trained so far and how to load one, then the study's names and
    grid (rebuilt at every cell's upload, so it lists what the repo holds)."""
    from sae_core.report import card_legend, card_notes, card_rows, collect_cells, loading_snippet

    cells = collect_cells(sweep_dir(cfg), cfg) if sweep_dir(cfg).is_dir() else []  # none trained yet
    rows = card_rows(cells)
    first = next((c.cell.name for c in cells if c.metrics is not None), "<cell>")
    table = grid_legend(cfg) + "\n\n" + markdown_table(grid_rows(cfg))
    return (
        "---\nlibrary_name: saelens\ntags:\n- sparse-autoencoder\n- interpretability\n---\n\n"
        f"# Sparse autoencoders: {cfg.model.name}, layer {cfg.model.layer}\n\n"
        f"Sweep `{cfg.name}` trained with sae-sweep on `{cfg.data.dataset}`. Each `saelens/<cell>/` folder "
        "holds a SAELens SAE (`cfg.json`, `sae_weights.safetensors`, `sparsity.safetensors`) and "
        "`training_config.json`: the tokens trained, the optimisation, the data source and the residual "
        "stream it reads.\n\n## The SAEs\n\n"
        + card_legend(cells)
        + "\n\n"
        + markdown_table(rows, card_notes(cells))
        + "\n## Loading\n\n"
        + loading_snippet(cfg.upload.repo_id, first)
        + "\n## The study's files\n\n"
        "Weights also follow the study's naming, `model_weights_<expansion>x_<λ>_<strategy>.pth` (state dict "
        "`W_enc [d, m]`, `b_enc`, `W_dec [m, d]`, `b_dec`), beside the SAELens folders.\n"
        + (OTHER_ARCHITECTURES_NAMING if cfg.grid.architectures != ["relu"] else "")
        + "\n## The grid\n\n"
        + table
    )


def is_transient(exc: BaseException) -> bool:
    """429/5xx answers and network failures are worth retrying; 401/403/404 are not."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status is not None:
        return status in TRANSIENT_STATUS
    return isinstance(exc, ConnectionError | TimeoutError) or type(exc).__name__ in {
        "ConnectError",
        "ReadTimeout",
        "ConnectTimeout",
        "RemoteProtocolError",
        "ReadError",
    }


def with_retries(
    fn: Callable[[], Any],
    *,
    attempts: int = 4,
    base_delay: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Exponential backoff with jitter on transient errors; anything else is raised at once."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            sleep(base_delay * 2 ** (attempt - 1) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def push_cell(
    api: Any,
    repo_id: str,
    out: Path,
    cell: Cell,
    card: str,
    *,
    private: bool = False,
    attempts: int = 4,
    base_delay: float = 2.0,
) -> dict[str, Any]:
    """Create the repo if needed, then commit the cell's changed files in one commit (or none)."""
    from huggingface_hub import CommitOperationAdd

    files = planned_files(out, cell)
    if cell.weights_filename not in files:
        raise UploadError(f"upload: no weights to upload in {out} (expected {cell.weights_filename})")

    def attempt() -> dict[str, Any]:
        api.create_repo(repo_id, private=private, exist_ok=True)
        remote = {f.path: f for f in api.list_repo_tree(repo_id, recursive=True) if hasattr(f, "blob_id")}
        wanted: dict[str, Path | bytes] = {**files, "README.md": card.encode()}
        changed = {
            p: src for p, src in wanted.items() if p not in remote or not _same_as_remote(src, remote[p])
        }
        if not changed:
            return {"status": "unchanged", "commit": None, "files": sorted(wanted)}
        operations = [
            CommitOperationAdd(path_in_repo=p, path_or_fileobj=src if isinstance(src, bytes) else str(src))
            for p, src in sorted(changed.items())
        ]
        info = api.create_commit(repo_id, operations, commit_message=f"Upload SAE {cell.name}")
        return {
            "status": "committed",
            "commit": getattr(info, "oid", None),
            "commit_url": getattr(info, "commit_url", None),
            "files": sorted(changed),
        }

    # The whole compare-then-commit is retried, so a commit whose answer was lost is not repeated.
    return with_retries(attempt, attempts=attempts, base_delay=base_delay)


def preflight(out: Path, cell: Cell, export: Path | None = None) -> list[str]:
    """`sae_core.analysis.check_run` on the cell's SAELens export (or the folder `export`, the Hub's copy):
    the result's lines; an UploadError naming every failure when a check fails."""
    from sae_core.analysis import check_run

    result = check_run(out, export=export)
    if not result.ok:
        failures = "; ".join(f.message for f in result.findings if f.level == "fail")
        where = "the Hub's copy of" if export is not None else "the export of"
        raise UploadError(
            f"upload: {where} {cell.name} fails the preflight ({failures}); "
            f"`sae-sweep check {out}` shows the figures"
        )
    return result.lines()


def verify_upload(api: Any, repo_id: str, out: Path, cell: Cell, revision: str | None) -> list[str]:
    """Download what the repo now holds for the cell, through the client that uploaded it: the `.pth` must
    be the local file byte for byte, and the SAELens folder must pass the preflight as the local one did
    (loaded with SAELens, on the store's test tokens, against the run's `.pth` and analysis.json)."""
    import tempfile

    files = planned_files(out, cell)
    prefix = f"saelens/{cell.name}/"
    wanted = [p for p in files if p.startswith(prefix)] + [cell.weights_filename]
    with tempfile.TemporaryDirectory(prefix="sae-sweep-verify-") as tmp:
        for path in wanted:
            got = api.hf_hub_download(repo_id=repo_id, filename=path, revision=revision, local_dir=tmp)
            if path == cell.weights_filename and sha256_file(got) != sha256_file(files[path]):
                raise UploadError(
                    f"upload: the Hub's {path} in {repo_id} differs from {files[path]}; upload again"
                )
        return preflight(out, cell, export=Path(tmp) / "saelens" / cell.name)


def _run_name() -> str:
    return f"upload-{Cell.parse(task_run.parameters['cell']).task_name}"


@task(name="upload_cell", task_run_name=_run_name)
def upload_cell(cell: str, cfg: SweepConfig, base_delay: float = 2.0) -> dict[str, Any]:
    """Upload one cell, or skip with one log line when no repo or no token is configured.

    Not cached: it is a cheap comparison with the remote tree, and a repo changed behind our back
    should be repaired by a re-run.
    """
    logger = run_logger()
    the_cell = Cell.parse(cell)
    if not cfg.upload.repo_id:
        logger.info("upload of %s skipped: upload.repo_id is not set", cell)
        return {"status": "skipped", "reason": "upload.repo_id is not set"}
    token = resolve_secret(cfg.upload.token_env, cfg.upload.token_secret_block, HUB_TOKENS)
    if not token:
        reason = f"no Hub token (set ${cfg.upload.token_env} or upload.token_secret_block)"
        logger.info("upload of %s skipped: %s", cell, reason)
        return {"status": "skipped", "reason": reason}
    start = time.perf_counter()
    out = run_dir(cfg, the_cell)
    for line in preflight(out, the_cell):  # a broken export never leaves the machine
        logger.info("preflight %s", line)
    api = make_hf_api(token)
    result = push_cell(
        api,
        cfg.upload.repo_id,
        out,
        the_cell,
        model_card(cfg),
        private=cfg.upload.private,
        base_delay=base_delay,
    )
    revision = result.get("commit")
    for line in verify_upload(api, cfg.upload.repo_id, out, the_cell, revision):
        logger.info("after upload, preflight %s", line)
    result["verified"] = True
    result["work_s"] = time.perf_counter() - start
    if result["status"] == "unchanged":
        logger.info("upload of %s: the Hub already has identical files, no commit", cell)
    else:
        logger.info(
            "uploaded %s to %s: %d files, commit %s",
            cell,
            cfg.upload.repo_id,
            len(result["files"]),
            result["commit"],
        )
    return result
