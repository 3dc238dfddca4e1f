"""`sae-sweep plan`: the seed and demo presets' plans, every number derived from the config (or the store's
manifest once it exists) and the recorded figures, with no network; the packs are the training
planner's own; `--measure` times real steps."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from flows.cli import main
from sae_core.config import load_config
from sae_core.naming import grid_cells
from sae_core.plan import build_plan
from sae_core.throughput import CORPORA, RECORDED
from sae_core.training.pack_memory import HEADROOM, cell_bytes, evaluation_bytes, split_pack

GB = 2**30


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the plan tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_seed_plan_on_one_80gb_gpu_from_the_config_alone(tmp_path, capsys):
    cfg = load_config("seed", None, {"data_root": str(tmp_path)})
    plan = build_plan(cfg, gpu_memory_gb=80)
    per_doc = next(c for c in CORPORA if c.match == "openwebtext").tokens_per_document
    train = round(10_000 * 0.8 * (per_doc - 1))  # drop_first_token: a reader skips each first token
    assert plan.tokens == {
        "train": train,
        "val": round(1000 * (per_doc - 1)),
        "test": round(1000 * (per_doc - 1)),
    }
    assert plan.tokens["train"] == 5_552_000 and "projected: 10,000 documents × 695" in plan.tokens_from
    assert plan.steps == 20 * (train // 32) == 3_470_000
    assert plan.store_bytes == 6_950_000 * (768 * 2 + 12)  # every row, first tokens too, float16
    held = train * 768 * 2 + plan.tokens["val"] * 768 * 4
    assert plan.data_bytes == held
    cells = grid_cells(cfg.grid)
    sizes = [cell_bytes(768, 768 * c.expansion, 32, "relu", cfg.training.val_tokens) for c in cells]
    assert plan.budget == int((80 * GB - held) * HEADROOM) - evaluation_bytes(
        768 * 32, cfg.training.val_tokens
    )
    assert [[c.name for c in p.cells] for p in plan.packs] == [[c.name for c in cells]]  # one pack of 16
    assert plan.packs[0].bytes == sum(sizes)
    assert plan.wall_s is None  # no GPU throughput recorded: said, not guessed
    assert not any(f.device == "cuda" for f in RECORDED)

    assert main(["plan", "--preset", "seed", "--gpu-memory-gb", "80", "--set", f"data_root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "train 5,552,000, val 694,000, test 694,000" in out and "3,470,000 (batch 32" in out
    assert "16 cells in 1 pack;" in out and "No cuda training throughput is recorded" in out

    # A smaller GPU: the same planner as `train_pack` splits the grid.
    small = build_plan(cfg, gpu_memory_gb=12)
    budget = int((12 * GB - held) * HEADROOM) - evaluation_bytes(768 * 32, cfg.training.val_tokens)
    expected = split_pack([c.name for c in cells], sizes, budget)
    assert [[c.name for c in p.cells] for p in small.packs] == expected and len(expected) > 1


def test_demo_plan_projects_from_recorded_cpu_figures_then_reads_the_store(tmp_path):
    from sae_core.extraction import store_key
    from sae_core.store import write_store

    cfg = load_config("demo", None, {"data_root": str(tmp_path), "training.device": "cpu"})
    plan = build_plan(cfg)
    assert plan.tokens == {"train": 184_800, "val": 23_100, "test": 23_100}  # 3,000 docs × (78 - 1)
    assert plan.steps == 6 * (184_800 // 512) and plan.d_model == 128
    assert not plan.packing and len(plan.packs) == 8  # grid.pack auto on a CPU: one cell at a time
    by_shape = {(f.d, f.m): f.tokens_per_s for f in RECORDED if f.device == "cpu"}
    for pack in plan.packs:
        (cell,) = pack.cells
        rate = by_shape[(128, 128 * cell.expansion)]  # the demo's own recorded shapes
        assert pack.wall_s == pytest.approx(plan.steps * 512 / rate)
    assert "projected from docs/results.md, Training (demo preset" in plan.wall_from
    assert plan.wall_s == pytest.approx(sum(p.wall_s or 0 for p in plan.packs))

    # Once the store exists, its manifest gives the tokens, the width and the size on disk.
    rng = np.random.default_rng(0)
    store = tmp_path / "activations" / store_key(cfg)
    written = write_store(
        store, rng.normal(size=(600, 8)).astype(np.float32), np.repeat(np.arange(30), 20),
        drop_first_token=True, store_dtype="float16",
    )  # fmt: skip
    plan = build_plan(cfg)
    assert plan.tokens == {s: written.num_tokens_in(s) for s in ("train", "val", "test")}
    assert plan.tokens_from == "from the store's manifest" and plan.d_model == 8
    assert plan.store_bytes == sum(p.stat().st_size for p in store.glob("part-*.parquet"))


def test_measure_times_real_steps_of_each_pack(tmp_path, capsys):
    sets = [
        f"data_root={tmp_path}", "training.device=cpu", "grid.expansion_factors=[2]",
        "grid.l1_coefficients=[0.01]", "grid.strategies=[nosampling, sampling]", "grid.pack=device",
    ]  # fmt: skip
    assert main(["plan", "--preset", "demo", "--measure", *[x for s in sets for x in ("--set", s)]]) == 0
    out = capsys.readouterr().out
    assert "2 cells in 1 pack;" in out and "measured: real training steps of each pack" in out
    assert "not projected" not in out
