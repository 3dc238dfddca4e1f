"""The `sae-sweep` command line: help on every command, one-line errors, config show."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flows.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    commands = ["run", "config", "extract", "import-activations", "train", "analyze", "label", "report"]
    commands += ["browse", "runpod"]
    for command in commands:
        assert f"│ {command} " in result.stdout, command


def test_every_command_has_help(capsys):
    from flows.cli import _register
    from flows.cli.app import app

    _register()
    import typer.main

    group = typer.main.get_command(app)
    names = list(group.commands)
    assert names, "no commands registered"
    for name in names:
        sub = group.commands[name]
        subnames = list(getattr(sub, "commands", {}) or [])
        for path in [[name]] + [[name, s] for s in subnames]:
            assert main([*path, "--help"]) == 0, path
            out = capsys.readouterr().out
            assert "Usage" in out, path


def test_config_show_seed_prints_the_16_cells():
    result = run_cli("config", "show", "--preset", "seed")
    assert result.returncode == 0, result.stderr
    assert "# grid: 16 cells" in result.stdout
    assert "model_weights_32x_0.0001_sampling.pth" in result.stdout
    assert "model_weights_4x_0.01_nosampling.pth" in result.stdout


def test_config_show_applies_set(capsys):
    assert main(["config", "show", "--preset", "seed", "--set", "grid.expansion_factors=[4,8]"]) == 0
    assert "# grid: 8 cells" in capsys.readouterr().out


def test_config_explain_lists_descriptions(capsys):
    assert main(["config", "show", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "training.l1_scaling = 'sum'" in out and "averaged over the m features" in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["config", "show", "--set", "grid.expansion_factors=[0]"], "grid.expansion_factors"),
        (["config", "show", "--set", "training.nope=1"], "training.nope: unknown key"),
        (["config", "show", "--preset", "nope"], "preset: unknown preset 'nope'"),
        (["config", "show", "--set", "grid.l1_coefficients=[-1]"], "grid.l1_coefficients"),
        (["config", "show", "--config", "/nonexistent.yaml"], "no such file"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(args, expected):
    result = run_cli(*args)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in result.stderr


def test_usage_errors_exit_2_without_traceback():
    for args in (["analyze"], ["config", "show", "--bogus"], ["no-such-command"]):
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr and "Error" in result.stderr, args


def test_config_show_says_where_the_config_came_from(capsys):
    assert main(["config", "show", "--preset", "seed"]) == 0
    assert capsys.readouterr().out.startswith("# preset 'seed' (given)\n")
    assert main(["config", "show"]) == 0
    assert capsys.readouterr().out.startswith("# preset 'demo' (defaulted: no --preset or --config given)")
    assert main(["config", "show", "--no-preset"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# no preset: the config's documented defaults")


def test_bare_train_uses_the_documented_training_defaults_and_says_so(sae_store, tmp_path, caplog):
    """Not the demo preset (l1_scaling sum, resample_every 200): TrainingConfig's own defaults."""
    import json

    from sae_core.config import TrainingConfig

    out = tmp_path / "run"
    argv = ["train", "-a", str(sae_store), "-o", str(out), "--expansion", "2", "--strategy", "nosampling"]
    with caplog.at_level("INFO", logger="flows.cli.app"):
        assert main(argv) == 0
    said = [r.getMessage() for r in caplog.records if r.name == "flows.cli.app"]
    assert said and said[0].startswith("sae-sweep train: no preset: the config's documented defaults")
    trained = json.loads((out / "metrics.json").read_text())["training"]
    defaults = TrainingConfig().model_dump(mode="json")
    for key in ("l1_scaling", "resample_every", "lr", "batch_size", "seed", "init"):
        assert trained[key] == defaults[key], key
