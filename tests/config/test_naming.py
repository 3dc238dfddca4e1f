"""Cell names and the weight-file convention shared with the study and the Hub."""

import pytest

from sae_core.config import load_config
from sae_core.naming import Cell, format_l1, grid_cells


def test_lambda_prints_as_python_str():
    assert [format_l1(x) for x in (1e-2, 1e-4, 1e-5, 0.5)] == ["0.01", "0.0001", "1e-05", "0.5"]


def test_weights_follow_the_study_convention():
    cell = Cell(8, 1e-4, "sampling")
    assert cell.weights_filename == "model_weights_8x_0.0001_sampling.pth"
    assert Cell(4, 0.01, "nosampling").weights_filename == "model_weights_4x_0.01_nosampling.pth"
    assert cell.task_name == "8x-0.0001-sampling"
    assert cell.wandb_name == "sae_8x_0.0001_sampling"


def test_parse_round_trips_every_seed_cell():
    cells = grid_cells(load_config("seed").grid)
    assert len(set(cells)) == 16
    assert all(Cell.parse(c.name) == c for c in cells)


@pytest.mark.parametrize("bad", ["8x_0.1", "eightx_0.1_sampling", "8x_0.1_resample"])
def test_parse_rejects_other_names(bad):
    with pytest.raises(ValueError, match="cell"):
        Cell.parse(bad)
