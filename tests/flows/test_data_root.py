"""Where a run writes: `SAE_SWEEP_DATA_ROOT` as the default, and never a deployed run's temporary cwd."""

from __future__ import annotations

from pathlib import Path

from flows.data_root import lasting_root
from sae_core.config import load_config


def test_env_var_is_the_default_data_root(monkeypatch, tmp_path):
    monkeypatch.delenv("SAE_SWEEP_DATA_ROOT", raising=False)
    assert load_config("demo").data_root == "./sae_data"
    monkeypatch.setenv("SAE_SWEEP_DATA_ROOT", str(tmp_path / "shared"))
    assert load_config("demo").data_root == str(tmp_path / "shared")
    assert load_config("demo", None, {"data_root": "/x"}).data_root == "/x"  # a set value wins


def test_deployed_run_takes_a_relative_root_under_the_user_data_dir(monkeypatch, tmp_path):
    """The process worker's cwd is a temporary directory it deletes: ./sae_data there is lost."""
    monkeypatch.delenv("SAE_SWEEP_DATA_ROOT", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    cfg = load_config("demo")
    assert lasting_root(cfg, deployed=False).data_root == str(tmp_path / "sae_data")
    assert lasting_root(cfg, deployed=True).data_root == str(tmp_path / "xdg" / "sae-sweep" / "sae_data")
    absolute = load_config("demo", None, {"data_root": str(tmp_path / "mine")})
    assert lasting_root(absolute, deployed=True).data_root == str(tmp_path / "mine")
    home = load_config("demo", None, {"data_root": "~/d"})
    assert lasting_root(home, deployed=True).data_root == str(Path("~/d").expanduser())
