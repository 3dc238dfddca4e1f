"""A sweep's plan before any GPU is paid for (`sae-sweep plan`, and the sweep's first UI artifact): the
data source, tokens per split, the store's size on disk, the cells and their packs (the planner that
`train_pack` runs: `training.pack_memory`), memory per pack, optimizer steps per cell, and a projected
training wall time.

Every figure says where it comes from. Token counts come from the store's manifest when the store
exists, else from the config and a recorded mean of tokens per document (`CORPORA`). The wall time comes
from a throughput measured on the present device (`measure`: a few seconds of real training steps of
the packs' cell shapes on random rows), else from the figures recorded in docs/results.md
(`RECORDED`), scaled by d × m (a relu step costs ~10·B·d·m FLOPs), and labelled a projection with its
source; where docs/results.md records none for the device, the plan says so instead of guessing.
Nothing here reaches the network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sae_core.config import SweepConfig
from sae_core.errors import SaeSweepError
from sae_core.naming import Cell, grid_cells
from sae_core.throughput import CORPORA, KNOWN_D_MODEL, RECORDED, measure_step_s

GB = 2**30


@dataclass
class PackPlan:
    """Cells trained together on one device, their estimated bytes, and the pack's wall (None: unknown)."""

    cells: list[Cell]
    bytes: int
    wall_s: float | None = None


@dataclass
class Plan:
    """A sweep's plan (see the module docstring); `markdown()` is how it is shown."""

    name: str
    source: dict[str, Any]
    tokens: dict[str, int]
    tokens_from: str
    store_bytes: int
    store_from: str
    d_model: int
    d_model_from: str
    steps: int
    batch: int
    packing: bool
    budget: int
    budget_from: str
    data_bytes: int
    packs: list[PackPlan]
    wall_from: str
    notes: list[str] = field(default_factory=list)

    @property
    def wall_s(self) -> float | None:
        walls = [p.wall_s for p in self.packs]
        return None if any(w is None for w in walls) else sum(w or 0.0 for w in walls)

    def markdown(self) -> str:
        """The plan as markdown: what `sae-sweep plan` prints and the sweep's `plan-<sweep>` artifact."""
        src = ", ".join(f"{k} {v}" for k, v in self.source.items())
        t = self.tokens
        lines = [
            f"# Plan of sweep `{self.name}`",
            "",
            f"- **data**: {src}",
            f"- **tokens**: train {t['train']:,}, val {t['val']:,}, test {t['test']:,} ({self.tokens_from})",
            f"- **store on disk**: {_size(self.store_bytes)} ({self.store_from})",
            f"- **d_model**: {self.d_model} ({self.d_model_from})",
            f"- **optimizer steps per cell**: {self.steps:,} (batch {self.batch}, "
            f"{self.steps * self.batch / max(1, t['train']):.3g} passes over the train split)",
            f"- **held on the training device**: {_size(self.data_bytes)} (train split in the store's "
            "dtype, val split in float32; 0 when streamed: `training.max_memory_gb`)",
            f"- **pack budget**: {_size(self.budget)} ({self.budget_from})",
            "",
            "| pack | cells | memory | projected training wall |",
            "| --- | --- | --- | --- |",
        ]
        for i, pack in enumerate(self.packs, 1):
            names = ", ".join(c.name for c in pack.cells)
            lines.append(f"| {i} | {names} | {_size(pack.bytes)} | {_duration(pack.wall_s)} |")
        total = self.wall_s
        lines += [
            "",
            f"**{sum(len(p.cells) for p in self.packs)} cells in {len(self.packs)} "
            + ("pack" if len(self.packs) == 1 else "packs")
            + (" (cells one at a time: packing is off)" if not self.packing else "")
            + f"; projected training wall on one device: {_duration(total)}** ({self.wall_from}). "
            "Extraction, analysis and labels are not included.",
        ]
        lines += [f"\n{note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def _size(n: int) -> str:
    return f"{n / GB:.2f} GB" if n >= GB // 10 else f"{n / 2**20:.1f} MB"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "not projected"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def build_plan(
    cfg: SweepConfig,
    *,
    gpu_memory_gb: float | None = None,
    measure: bool = False,
    train_device: str | None = None,
) -> Plan:
    """The plan of `cfg` (see the module docstring). `gpu_memory_gb`: plan the packs for a GPU of that
    much memory (the train split held on it comes off first, as on CUDA); `measure`: time real training
    steps of each pack on the present device instead of projecting from recorded figures;
    `train_device`: where the cells train when that is not this machine (`cuda` for a sweep whose
    cells run on the gpu pool), else `training.device` resolved here."""
    from sae_core.extraction import store_key
    from sae_core.training.pack_memory import (
        HEADROOM,
        available_bytes,
        cell_bytes,
        evaluation_bytes,
        split_pack,
    )
    from sae_core.training.state import total_steps_for

    store = Path(cfg.data_root).expanduser() / "activations" / store_key(cfg)
    manifest = _manifest(store)
    tokens, tokens_from = _tokens(cfg, manifest)
    d_model, d_from = _d_model(cfg, manifest)
    store_bytes, store_from = _store_bytes(cfg, store, manifest, tokens, d_model)
    training = cfg.training
    batch = min(training.batch_size, max(1, tokens["train"]))
    steps = total_steps_for(training, max(1, tokens["train"]))
    row = 2 if cfg.extraction.store_dtype == "float16" else 4
    data_bytes = tokens["train"] * d_model * row + tokens["val"] * d_model * 4
    if data_bytes > training.max_memory_gb * GB:
        data_bytes = 0  # streamed in windows from host memory (training.max_memory_gb)

    cells = grid_cells(cfg.grid)
    on_gpu = gpu_memory_gb is not None or train_device == "cuda"
    device = torch.device("cuda") if on_gpu else _device(cfg)
    packing = cfg.grid.pack == "device" or (cfg.grid.pack == "auto" and device.type == "cuda")
    sizes = [
        cell_bytes(d_model, d_model * c.expansion, batch, c.architecture, training.val_tokens) for c in cells
    ]
    widest = max(d_model * c.expansion for c in cells)
    if gpu_memory_gb is not None:
        budget = int((gpu_memory_gb * GB - data_bytes) * HEADROOM)
        budget_from = f"--gpu-memory-gb {gpu_memory_gb}: {HEADROOM:.0%} of what the train split leaves"
    elif device.type == "cuda" and cfg.grid.pack_memory_gb is None and not torch.cuda.is_available():
        budget, budget_from = 2**62, "no GPU here and no grid.pack_memory_gb: not split"
    else:
        budget, budget_from = available_bytes(device, cfg.grid.pack_memory_gb)
    budget -= evaluation_bytes(widest, training.val_tokens)
    budget_from += ", less one evaluation encode"
    by_name = {c.name: (c, s) for c, s in zip(cells, sizes, strict=True)}
    groups = split_pack([c.name for c in cells], sizes, budget) if packing else [[c.name] for c in cells]
    packs = [PackPlan([by_name[n][0] for n in g], sum(by_name[n][1] for n in g)) for g in groups]
    plan = Plan(
        cfg.name, _source(cfg), tokens, tokens_from, store_bytes, store_from, d_model, d_from, steps,
        batch, packing, budget, budget_from, data_bytes, packs, "",
    )  # fmt: skip
    if measure:
        here = _device(cfg)
        for pack in packs:
            pack.wall_s = steps * measure_step_s(pack.cells, d_model, batch, cfg, here)
        plan.wall_from = f"measured: real training steps of each pack on this machine's {here}"
        if on_gpu and here.type != "cuda":
            plan.notes.append(f"Measured on {here}, not on a GPU: run `--measure` on the GPU to plan it.")
    else:
        plan.wall_from = _project(plan, device.type)
    if any(c.architecture != "relu" for c in cells) and not measure:
        plan.notes.append("TopK/JumpReLU cells are projected at relu's cost: measure them (`--measure`).")
    return plan


def _device(cfg: SweepConfig) -> torch.device:
    from sae_core.device import resolve_device

    return resolve_device(cfg.training.device)


def _manifest(store: Path) -> dict[str, Any] | None:
    from sae_core.io import read_json

    path = store / "manifest.json"
    return read_json(path) if path.is_file() else None


def _source(cfg: SweepConfig) -> dict[str, Any]:
    data = cfg.data.model_dump(mode="json")
    keys = ("dataset", "revision", "config_name", "data_files", "split", "num_documents", "context_length")
    return {k: data[k] for k in keys if data.get(k) is not None}


def _tokens(cfg: SweepConfig, manifest: dict[str, Any] | None) -> tuple[dict[str, int], str]:
    """Rows each split yields a reader (less the documents' first tokens with `drop_first_token` and
    the rows the store leaves out)."""
    if manifest is not None:
        from sae_core.store.left_out import left_out_counts

        drop = bool(manifest.get("drop_first_token"))
        counts = {
            s: int(v["tokens"]) - left_out_counts(manifest, s, drop)["total_left_out"]
            for s, v in manifest["splits"].items()
        }
        return counts, "from the store's manifest"
    data, ext = cfg.data, cfg.extraction
    if data.num_documents is None:
        raise SaeSweepError(
            "data.num_documents: the plan projects tokens from a document count; set one, or extract the "
            "store first (`sae-sweep extract`) and the plan reads its manifest"
        )
    corpus = next(
        (c for c in CORPORA if c.match in data.dataset.lower() and c.context_length >= data.context_length),
        None,
    )
    if corpus is not None:
        per_doc = min(corpus.tokens_per_document, float(data.context_length))
        how = f"recorded: {corpus.source}"
    else:
        per_doc = float(data.context_length)
        how = (
            f"no figure recorded for {data.dataset}: every document assumed {data.context_length} tokens long"
        )
    shares = {
        "train": 1 - ext.val_fraction - ext.test_fraction,
        "val": ext.val_fraction,
        "test": ext.test_fraction,
    }
    counts = {}
    for split, share in shares.items():
        docs = data.num_documents * share
        counts[split] = round(docs * (per_doc - (1 if ext.drop_first_token else 0)))
    return counts, f"projected: {data.num_documents:,} documents × {per_doc:.0f} tokens/document, {how}"


def _d_model(cfg: SweepConfig, manifest: dict[str, Any] | None) -> tuple[int, str]:
    from sae_core.extraction import DEMO_MODEL
    from sae_core.io import read_json

    if manifest is not None:
        return int(manifest["d_model"]), "the store's manifest"
    name = cfg.model.name
    local = Path(cfg.data_root).expanduser() / "builtin" / "demo-gpt2" if name == DEMO_MODEL else Path(name)
    if (local / "config.json").is_file():  # a local model directory (the demo's, once built)
        config = read_json(local / "config.json")
        width = config.get("hidden_size") or config.get("n_embd") or config.get("d_model")
        if width:
            return int(width), f"{local / 'config.json'}"
    if name in KNOWN_D_MODEL:
        return KNOWN_D_MODEL[name], f"{name}'s known width"
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(name, revision=cfg.model.revision, local_files_only=True)
        return int(config.hidden_size), f"{name}'s config in the local cache"
    except (OSError, ValueError, AttributeError):
        raise SaeSweepError(
            f"model.name: the width of {name!r} is unknown without the Hub (no store yet, not in the local "
            "cache); extract the store first (`sae-sweep extract`) or download the model"
        ) from None


def _store_bytes(
    cfg: SweepConfig, store: Path, manifest: dict[str, Any] | None, tokens: dict[str, int], d_model: int
) -> tuple[int, str]:
    if manifest is not None:
        size = sum(
            (store / s["file"]).stat().st_size for s in manifest["shards"] if (store / s["file"]).is_file()
        )
        return size, f"the shards of {store}"
    rows = sum(tokens.values())
    if cfg.extraction.drop_first_token:  # the store keeps every document's first token
        rows += cfg.data.num_documents or 0
    row = d_model * (2 if cfg.extraction.store_dtype == "float16" else 4) + 12  # + doc_id, pos, token_id
    return rows * row, f"projected: {rows:,} rows × {row} bytes ({cfg.extraction.store_dtype} activations)"


def _project(plan: Plan, device: str) -> str:
    """Each pack's wall from the recorded figure of the nearest shape on `device` (cost ∝ d × m)."""
    figures = [f for f in RECORDED if f.device == device]
    if not figures:
        plan.notes.append(
            f"No {device} training throughput is recorded in docs/results.md yet: "
            "`sae-sweep plan --measure` on the GPU measures one in a few seconds."
        )
        return f"no recorded {device} figure"
    used: set[str] = set()
    for pack in plan.packs:
        wall = 0.0
        for cell in pack.cells:
            m = plan.d_model * cell.expansion
            best = min(figures, key=lambda f: abs(math.log(f.d * f.m / (plan.d_model * m))))
            used.add(best.source)
            wall += plan.steps * plan.batch * plan.d_model * m / (best.tokens_per_s * best.d * best.m)
        pack.wall_s = wall  # on a CPU a pack's cells cost what they cost alone (docs/results.md, Packed)
    return "projected from " + "; ".join(sorted(used)) + ", scaled by d × m"
