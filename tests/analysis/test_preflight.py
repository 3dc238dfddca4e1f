"""The preflight (`sae-sweep check RUN_DIR`, issue 23 item 2): every architecture's export, trained and
analysed for real, loads in SAELens and computes what its `.pth` computes on the store's test tokens; a
deliberately corrupted export (a wrong architecture name, a missing threshold, a scaled decoder) fails
with a line naming what is wrong."""

from __future__ import annotations

import json

import pytest
import torch

from flows.cli import main
from sae_core.analysis import analyze_run, check_run
from sae_core.architectures import SPECS
from sae_core.naming import Cell
from sae_core.training import train_cell
from tests.fixtures_sae import small_config

pytestmark = pytest.mark.usefixtures("single_thread")

CELLS = {
    "relu": Cell(2, 0.01, "nosampling"),
    "topk": Cell(2, 0.0, "nosampling", "topk", k=8),
    "batchtopk": Cell(2, 0.0, "nosampling", "batchtopk", k=8),
    "jumprelu": Cell(2, 0.0, "nosampling", "jumprelu", l0=0.01),
    "matryoshka": Cell(2, 0.0, "nosampling", "matryoshka", k=8),
}


def test_every_architecture_is_checked():
    assert set(CELLS) == set(SPECS)


@pytest.fixture(scope="module")
def trained(sae_store, tmp_path_factory):
    """Each architecture's run dir, trained and analysed (no CE loss: the store has no model)."""
    cfg = small_config(epochs=2)
    cfg = cfg.model_copy(update={"analysis": cfg.analysis.model_copy(update={"ce_loss_documents": 0})})
    root = tmp_path_factory.mktemp("preflight")
    runs = {}
    for name, cell in CELLS.items():
        out = root / cell.name
        train_cell(sae_store, cell, cfg, out)
        analyze_run(sae_store, out, cfg)
        runs[name] = out
    return runs


@pytest.mark.parametrize("name", list(CELLS))
def test_a_real_export_of_every_architecture_passes(name, trained):
    pytest.importorskip("sae_lens")
    result = check_run(trained[name], tokens=1000)
    assert result.ok, result.lines()
    assert result.loader.startswith("SAELens") and result.tokens == 1000
    ours, theirs = result.pth_figures, result.export_figures
    assert ours is not None and theirs is not None
    assert theirs.l0 == pytest.approx(ours.l0, rel=1e-4) and theirs.l0 > 0
    assert theirs.explained_variance == pytest.approx(ours.explained_variance, abs=1e-5)
    assert not [f for f in result.findings if f.level == "fail"]


def _copy_export(run, tmp_path):
    import shutil

    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def _rewrite_weights(run, change):
    from safetensors.torch import load_file, save_file

    path = run / "saelens" / "sae_weights.safetensors"
    state = load_file(str(path))
    change(state)
    save_file(state, str(path))


def test_a_wrong_architecture_name_fails(trained, tmp_path):
    pytest.importorskip("sae_lens")
    run = _copy_export(trained["batchtopk"], tmp_path)
    cfg_path = run / "saelens" / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "architecture": "standard"}))  # SAELens #608's bug, by hand
    result = check_run(run, tokens=1000)
    assert not result.ok
    assert any(
        "architecture 'standard', but a batchtopk SAE exports as 'jumprelu'" in f.message
        for f in result.findings
    )


def test_a_missing_threshold_fails(trained, tmp_path):
    pytest.importorskip("sae_lens")
    run = _copy_export(trained["jumprelu"], tmp_path)
    _rewrite_weights(run, lambda state: state.pop("threshold"))
    result = check_run(run, tokens=1000)
    assert not result.ok and any("does not load" in f.message for f in result.findings), result.lines()


def test_a_zeroed_threshold_fails_on_the_figures(trained, tmp_path):
    pytest.importorskip("sae_lens")
    run = _copy_export(trained["jumprelu"], tmp_path)
    _rewrite_weights(run, lambda state: state["threshold"].zero_())
    result = check_run(run, tokens=1000)
    assert not result.ok and any(f.message.startswith("latents:") for f in result.findings), result.lines()


def test_a_scaled_decoder_fails(trained, tmp_path, capsys):
    pytest.importorskip("sae_lens")
    run = _copy_export(trained["relu"], tmp_path)
    _rewrite_weights(run, lambda state: state["W_dec"].mul_(1.5))
    result = check_run(run, tokens=1000)
    messages = [f.message for f in result.findings if f.level == "fail"]
    assert any(m.startswith("decoder rows: norms span") for m in messages)
    assert any(m.startswith("EV: the export's") for m in messages)
    # the command exits 1 and prints each failure
    assert main(["check", str(run), "--tokens", "1000"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED: ") and "fail: decoder rows" in out


def test_the_command_passes_a_good_run_and_names_a_missing_store(trained, tmp_path, capsys):
    pytest.importorskip("sae_lens")
    assert main(["check", str(trained["topk"]), "--tokens", "500"]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
    run = _copy_export(trained["topk"], tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "store": str(tmp_path / "gone")}))
    assert main(["check", str(run)]) == 2
    assert "pass the store with --activations" in capsys.readouterr().err
    assert main(["check", str(run), "--activations", metrics["store"], "--tokens", "500"]) == 0


def test_released_decoder_rows_have_norm_one_over_s_when_normalised(trained):
    """The demo preset normalises (expected_norm): the released decoder rows have norm 1/s."""
    from safetensors.torch import load_file

    cfg = json.loads((trained["relu"] / "saelens" / "cfg.json").read_text())
    scale = cfg["metadata"]["activation_normalization"]["scale"]
    norms = load_file(str(trained["relu"] / "saelens" / "sae_weights.safetensors"))["W_dec"].norm(dim=1)
    assert scale != 1.0 and torch.allclose(norms, torch.full_like(norms, 1 / scale), rtol=1e-4)
