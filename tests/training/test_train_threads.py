"""`sae-sweep train` alone takes all cores: the demo preset's `training.num_threads: 1` (for cells beside
the Prefect server) made the bare command 0.82x SAELens as a whole process (issue 14). `--set` and a
`--config` file still decide."""

from __future__ import annotations

import pytest
import yaml

from flows.cli import main
from sae_core.io import read_json
from tests.fixtures_sae import make_store

ARGS = ["--expansion", "2", "--l1", "0.01", "--strategy", "nosampling", "--set", "training.epochs=1"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("threads") / "store", n=3000)


def _threads(run_dir) -> int:
    return read_json(run_dir / "metrics.json")["training"]["num_threads"]


def test_bare_train_uses_all_cores_not_the_demo_presets_one(store, tmp_path):
    assert main(["train", "-a", str(store), "-o", str(tmp_path / "bare"), *ARGS]) == 0
    assert _threads(tmp_path / "bare") == 0


def test_set_and_config_file_keep_their_thread_count(store, tmp_path):
    sets = [*ARGS, "--set", "training.num_threads=1"]
    assert main(["train", "-a", str(store), "-o", str(tmp_path / "set"), *sets]) == 0
    assert _threads(tmp_path / "set") == 1
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({"training": {"num_threads": 1, "device": "cpu"}}))
    assert (
        main(["train", "-a", str(store), "-o", str(tmp_path / "file"), "--config", str(config), *ARGS]) == 0
    )
    assert _threads(tmp_path / "file") == 1
