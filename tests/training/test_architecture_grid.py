"""Architectures as a grid axis: `grid.architectures` (default relu: the seed preset's 16 cells and names
unchanged), per-architecture sparsity axes, the names of every cell, config errors, and train_cell for
each architecture (run dir, SAELens export, resume) through the Trainer."""

from __future__ import annotations

from itertools import product

import pytest
import torch

from sae_core.architectures import SPECS
from sae_core.config import load_config
from sae_core.errors import TrainingError
from sae_core.io import read_json
from sae_core.naming import Cell, grid_cells
from sae_core.saes.registry import ARCHITECTURES, STRATEGIES_BY_ARCHITECTURE
from sae_core.training import TrainCallback, train_cell
from sae_core.training.checkpoint import CHECKPOINT_NAME
from tests.fixtures_sae import small_config

# The architectures that take a k, as the messages list them; derived so that a new TopK-family entry in
# the registry does not break the messages' tests.
K_TAKERS = [name for name, spec in SPECS.items() if spec.sparsity.field == "k"]
K_TAKERS_TEXT = f"{', '.join(K_TAKERS[:-1])} and {K_TAKERS[-1]}"
AUXK_TAKERS = [name for name, spec in SPECS.items() if "auxk" in spec.strategies]
AUXK_TAKERS_RE = r"\[" + ", ".join(repr(a) for a in AUXK_TAKERS) + r"\]"

pytestmark = pytest.mark.usefixtures("single_thread")


def test_the_seed_presets_cells_and_names_do_not_change():
    grid = load_config("seed").grid
    assert grid.architectures == ["relu"]
    old = [
        f"{e}x_{float(l1)}_{s}"
        for e, l1, s in product(grid.expansion_factors, grid.l1_coefficients, grid.strategies)
    ]
    cells = grid_cells(grid)
    assert len(cells) == 16 and [c.name for c in cells] == old
    assert all(c.to_dict() == {"expansion": c.expansion, "l1": c.l1, "strategy": c.strategy} for c in cells)
    assert cells[0].weights_filename == "model_weights_4x_0.01_nosampling.pth"


@pytest.mark.parametrize(
    ("cell", "name", "task"),
    [
        (Cell(8, 1e-4, "sampling"), "8x_0.0001_sampling", "8x-0.0001-sampling"),
        (Cell(8, 0.0, "auxk", "topk", k=32), "8x_topk32_auxk", "8x-topk32-auxk"),
        (
            Cell(16, 0.0, "sampling", "batchtopk", k=64),
            "16x_batchtopk64_sampling",
            "16x-batchtopk64-sampling",
        ),
        (
            Cell(4, 0.0, "nosampling", "jumprelu", l0=1e-3),
            "4x_jumprelu0.001_nosampling",
            "4x-jumprelu0.001-nosampling",
        ),
    ],
)
def test_every_architectures_cell_names(cell, name, task):
    assert cell.name == name and cell.task_name == task
    assert cell.weights_filename == f"model_weights_{name}.pth" and cell.wandb_name == f"sae_{name}"
    assert Cell.parse(name) == cell


def test_a_grid_of_every_architecture_gives_each_the_strategies_it_takes():
    grid = load_config(
        "demo",
        overrides={
            "grid.architectures": ["relu", "topk", "batchtopk", "jumprelu"],
            "grid.strategies": ["nosampling", "sampling", "auxk"],
            "grid.expansion_factors": [2, 4],
            "grid.l1_coefficients": [0.01],
            "grid.k_values": [4, 8],
            "grid.l0_coefficients": [0.1],
        },
    ).grid
    cells = grid_cells(grid)
    by_arch = {a: [c for c in cells if c.architecture == a] for a in ARCHITECTURES}
    assert [c.name for c in by_arch["relu"]] == [
        "2x_0.01_nosampling", "2x_0.01_sampling", "4x_0.01_nosampling", "4x_0.01_sampling",
    ]  # fmt: skip
    assert len(by_arch["topk"]) == len(by_arch["batchtopk"]) == 2 * 2 * 3
    assert len(by_arch["jumprelu"]) == 2 * 2
    assert all(c.architecture == "relu" for c in cells[:4])  # the study's cells first
    assert len({c.name for c in cells}) == len(cells)
    for c in cells:
        assert c.strategy in STRATEGIES_BY_ARCHITECTURE[c.architecture]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"grid.strategies": ["auxk"]},
            rf"'auxk' is only for {AUXK_TAKERS_RE}, and grid.architectures is \['relu'\]",
        ),
        ({"grid.architectures": ["gated"]}, r"grid.architectures"),
        ({"grid.k_values": [0]}, r"every k must be > 0 \(got 0\)"),
        ({"grid.l0_coefficients": [-0.1]}, r"every L0 coefficient must be finite and >= 0 \(got -0.1\)"),
        ({"saes.jumprelu.bandwidth": 0}, r"saes.jumprelu.bandwidth"),
    ],
)
def test_bad_grid_settings_name_the_field_and_the_value(overrides, message):
    with pytest.raises(Exception, match=message):
        load_config("demo", overrides=overrides)


def test_a_cell_of_a_strategy_its_architecture_lacks_names_both():
    with pytest.raises(ValueError, match=r"strategy: 'auxk' is not available for architecture 'relu'"):
        Cell(8, 1e-4, "auxk")
    with pytest.raises(ValueError, match=r"strategy: 'auxk' is not available for architecture 'jumprelu'"):
        Cell(8, 0.0, "auxk", "jumprelu", l0=0.1)
    with pytest.raises(ValueError, match=r"architecture: unknown architecture 'gated'"):
        Cell(8, 0.0, "sampling", "gated")
    with pytest.raises(ValueError, match=rf"k: set for {K_TAKERS_TEXT} cells only"):
        Cell(8, 0.0, "sampling", "topk")


ARCH_CELLS = [
    Cell(2, 0.0, "auxk", "topk", k=4),
    Cell(2, 0.0, "sampling", "batchtopk", k=4),
    Cell(2, 0.0, "nosampling", "jumprelu", l0=0.01),
]


@pytest.mark.parametrize("cell", ARCH_CELLS, ids=lambda c: c.name)
def test_train_cell_trains_and_exports_every_architecture(cell, sae_store, tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    cfg = small_config(epochs=1)
    out = tmp_path / cell.name
    metrics = train_cell(sae_store, cell, cfg, out)
    state = torch.load(out / cell.weights_filename, weights_only=True)
    if cell.k is not None:
        assert int(state["k"]) == 4
    assert metrics["final"]["explained_variance"] > 0.3
    if cell.architecture == "topk":
        assert metrics["final"]["l0"] <= 4
    cfg_json = read_json(out / "saelens" / "cfg.json")
    assert cfg_json["metadata"]["trained_architecture"] == cell.architecture
    theirs = sae_lens.SAE.load_from_disk(str(out / "saelens"), device="cpu")
    from sae_core.saes.export import load_run

    ours, _ = load_run(out)
    assert ours.architecture == cell.architecture
    x = torch.randn(32, 16)
    with torch.no_grad():
        assert torch.allclose(ours.encode(x), theirs.encode(x), atol=1e-5)


def test_k_not_below_the_width_names_the_grid_field(sae_store, tmp_path):
    with pytest.raises(
        TrainingError, match=r"grid.k_values: k must be below the SAE's width, 32 latents .*\(got 32\)"
    ):
        train_cell(sae_store, Cell(2, 0.0, "nosampling", "topk", k=32), small_config(), tmp_path / "r")


class _Kill(TrainCallback):
    def on_checkpoint(self, step, path):
        if step == 25:
            raise KeyboardInterrupt


def test_an_auxk_topk_cell_resumes_bit_identical(sae_store, tmp_path):
    cell, cfg = ARCH_CELLS[0], small_config(epochs=1)
    train_cell(sae_store, cell, cfg, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train_cell(sae_store, cell, cfg, tmp_path / "killed", callbacks=[_Kill()])
    assert (tmp_path / "killed" / CHECKPOINT_NAME).exists()
    train_cell(sae_store, cell, cfg, tmp_path / "killed")
    a = torch.load(tmp_path / "whole" / cell.weights_filename)
    b = torch.load(tmp_path / "killed" / cell.weights_filename)
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_cli_train_takes_an_architecture_and_its_sparsity(sae_store, tmp_path, capsys):
    from flows.cli import main
    from sae_core.saes.export import load_run

    out = tmp_path / "cli-topk"
    args = ["train", "--activations", str(sae_store), "--expansion", "2", "--architecture", "topk",
            "--k", "4", "--strategy", "auxk", "--out", str(out), "--set", "training.batch_size=256",
            "--set", "training.epochs=1", "--set", "training.resample_every=10",
            "--set", "training.device=cpu", "--set", "tracking.mode=disabled"]  # fmt: skip
    assert main(args) == 0
    sae, _ = load_run(out)
    assert sae.architecture == "topk" and int(sae.k) == 4
    assert "model_weights_2x_topk4_auxk.pth" in capsys.readouterr().out
    bad = ["train", "--activations", str(sae_store), "--architecture", "relu", "--strategy", "auxk",
           "--out", str(tmp_path / "x")]  # fmt: skip
    assert main(bad) == 2
    assert "strategy: 'auxk' is not available for architecture 'relu'" in capsys.readouterr().err
    no_k = [
        "train",
        "--activations",
        str(sae_store),
        "--architecture",
        "batchtopk",
        "--out",
        str(tmp_path / "y"),
    ]
    assert main(no_k) == 2
    assert f"k: set for {K_TAKERS_TEXT} cells only (got None for batchtopk)" in capsys.readouterr().err
