"""Config validation: every rejected input names the field and the value; presets; overrides."""

from __future__ import annotations

import types
import typing

import pytest
from pydantic import BaseModel

from sae_core.config import (
    ConfigError,
    SweepConfig,
    apply_overrides,
    field_descriptions,
    load_config,
    parse_set,
    preset_names,
)
from sae_core.naming import grid_cells


def test_presets_are_shipped():
    assert {"seed", "demo"} <= set(preset_names())


def test_seed_preset_is_the_study():
    cfg = load_config("seed")
    assert cfg.model.name == "gpt2" and cfg.model.layer == 6
    assert cfg.data.dataset == "Skylion007/openwebtext" and cfg.data.num_documents == 10_000
    assert cfg.data.streaming is True
    assert cfg.grid.expansion_factors == [4, 8, 16, 32]
    assert cfg.grid.l1_coefficients == [0.01, 0.0001]
    assert cfg.grid.strategies == ["nosampling", "sampling"]
    assert (cfg.training.lr, cfg.training.batch_size, cfg.training.epochs) == (1e-4, 32, 20)
    assert cfg.training.resample_every == 25_000 and cfg.training.l1_scaling == "seed"
    assert cfg.analysis.dead_threshold == 0.07
    assert (cfg.analysis.min_activations, cfg.analysis.top_k_features) == (10, 25)
    assert len(grid_cells(cfg.grid)) == 16


def test_demo_preset_is_small_and_offline():
    cfg = load_config("demo")
    assert cfg.model.name.startswith("builtin:") and cfg.data.dataset.startswith("builtin:")
    assert len(grid_cells(cfg.grid)) == 8
    assert cfg.tracking.mode in {"disabled", "offline"}


def test_every_field_has_a_description():
    descriptions = field_descriptions()
    missing = [key for key, text in descriptions.items() if not text]
    assert not missing, f"fields without a description: {missing}"
    fixed = [
        "data_root", "model.name", "model.layer", "model.device", "data.dataset", "data.data_files",
        "data.split", "data.text_column", "data.num_documents", "data.context_length",
        "grid.expansion_factors", "grid.l1_coefficients", "grid.strategies", "grid.placement",
        "training.lr", "training.batch_size", "training.epochs", "training.max_tokens", "training.seed",
        "training.resample_every", "training.l1_scaling", "analysis.dead_threshold",
        "analysis.min_activations", "analysis.top_k_features", "labeling.base_url", "labeling.model",
        "labeling.api_key_env", "upload.repo_id", "tracking.mode",
    ]  # fmt: skip
    assert not [k for k in fixed if k not in descriptions]
    assert SweepConfig().labeling.api_key_env == "OPENAI_API_KEY"


def test_set_values_parse_as_yaml():
    assert parse_set(["grid.expansion_factors=[4,8]", "training.lr=0.001", "name=x"]) == {
        "grid.expansion_factors": [4, 8],
        "training.lr": 0.001,
        "name": "x",
    }
    cfg = load_config("seed", overrides=parse_set(["grid.expansion_factors=[4,8]", "training.lr=1e-3"]))
    assert cfg.grid.expansion_factors == [4, 8]
    assert cfg.training.lr == pytest.approx(1e-3)  # YAML reads 1e-3 as a string; pydantic coerces it


def test_config_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("grid:\n  expansion_factors: [2]\ntraining:\n  batch_size: 64\n")
    cfg = load_config("demo", path, {"training.batch_size": 128})
    assert cfg.grid.expansion_factors == [2]
    assert cfg.training.batch_size == 128
    assert cfg.grid.l1_coefficients == load_config("demo").grid.l1_coefficients  # merged, not replaced


@pytest.mark.parametrize(
    ("overrides", "field", "value"),
    [
        ({"grid.expansion_factors": [4, 0]}, "grid.expansion_factors", "0"),
        ({"grid.expansion_factors": [-8]}, "grid.expansion_factors", "-8"),
        ({"grid.l1_coefficients": [0.01, -1e-4]}, "grid.l1_coefficients", "-0.0001"),
        ({"grid.strategies": ["resample-all"]}, "grid.strategies", "resample-all"),
        ({"grid.expansion_factors": []}, "grid.expansion_factors", "[]"),
        ({"grid.l1_coefficients": []}, "grid.l1_coefficients", "[]"),
        ({"grid.strategies": []}, "grid.strategies", "[]"),
        ({"grid.placement": "cloud"}, "grid.placement", "cloud"),
        ({"model.layer": -1}, "model.layer", "-1"),
        ({"model.device": "tpu"}, "model.device", "tpu"),
        ({"training.lr": 0}, "training.lr", "0"),
        ({"training.batch_size": 0}, "training.batch_size", "0"),
        ({"training.l1_scaling": "mean"}, "training.l1_scaling", "mean"),
        ({"training.resample_every": 0}, "training.resample_every", "0"),
        ({"analysis.dead_threshold": -0.1}, "analysis.dead_threshold", "-0.1"),
        ({"tracking.mode": "cloud"}, "tracking.mode", "cloud"),
        ({"data.num_documents": 0}, "data.num_documents", "0"),
        ({"name": "a/b"}, "name", "a/b"),
    ],
)
def test_bad_values_name_the_field_and_the_value(overrides, field, value):
    with pytest.raises(ConfigError) as info:
        load_config("demo", overrides=overrides)
    message = str(info.value)
    assert message.startswith(field), message
    assert value in message, message


def test_unknown_set_key_is_refused_with_a_hint():
    with pytest.raises(ConfigError, match=r"^training\.learning_rate: unknown key"):
        load_config("demo", overrides={"training.learning_rate": 1})
    with pytest.raises(ConfigError, match=r"did you mean training\.lr"):
        apply_overrides({}, {"lr": 1})


def test_unknown_key_in_a_file_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  batchsize: 64\n")
    with pytest.raises(ConfigError, match=r"training\.batchsize: unknown key"):
        load_config("demo", path)


def test_unknown_preset_and_missing_file():
    with pytest.raises(ConfigError, match=r"preset: unknown preset 'nope'"):
        load_config("nope")
    with pytest.raises(ConfigError, match=r"config: no such file"):
        load_config("demo", "/nonexistent/c.yaml")


def test_malformed_set_item():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_set(["grid.expansion_factors"])


def test_layer_beyond_the_model_depth():
    cfg = load_config("seed")
    cfg.check_layer(12)
    with pytest.raises(ConfigError, match=r"model\.layer: gpt2 has 12 layers.*got 13"):
        load_config("seed", overrides={"model.layer": 13}).check_layer(12)


def test_val_and_test_fractions_must_leave_training_data():
    with pytest.raises(ConfigError, match="extraction"):
        load_config("demo", overrides={"extraction.val_fraction": 0.5, "extraction.test_fraction": 0.5})


def _float_fields(model: type[BaseModel] = SweepConfig, prefix: str = "") -> dict[str, bool]:
    """Dotted key → whether it holds a list, for every field whose type admits a float."""
    out: dict[str, bool] = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.update(_float_fields(annotation, f"{prefix}{name}."))
            continue
        union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
        options = typing.get_args(annotation) if union else (annotation,)
        for option in options:
            if option is float:
                out[f"{prefix}{name}"] = False
            elif typing.get_origin(option) is list and typing.get_args(option) == (float,):
                out[f"{prefix}{name}"] = True
    return out


def test_every_float_field_refuses_inf_and_nan():
    fields = _float_fields()
    # The walk must see the keys the probe broke, or it proves nothing.
    assert {"training.epochs", "training.lr", "training.init_encoder_norm", "grid.l1_coefficients"} <= set(
        fields
    )
    assert len(fields) >= 15
    for key, is_list in fields.items():
        for raw in (".inf", "-.inf", ".nan"):
            value = parse_set([f"{key}={'[' + raw + ']' if is_list else raw}"])
            with pytest.raises(ConfigError) as caught:
                load_config("demo", None, value)
            message = str(caught.value)
            assert message.startswith(key) and "\n" not in message, (key, raw, message)


def test_malformed_yaml_is_one_line_with_file_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  lr: [1, 2\n  epochs: 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config("demo", path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"config: {path}:3:9: expected ',' or ']'"), message


def test_data_files_beside_a_builtin_corpus_is_refused_not_ignored():
    """Was: `--set data.data_files=mine.jsonl` on the demo preset silently read the demo corpus."""
    with pytest.raises(ConfigError, match=r"data\.data_files is ignored .* set data\.dataset"):
        load_config("demo", overrides={"data.data_files": "mine.jsonl"})
    assert load_config("demo", overrides={"data.dataset": "json", "data.data_files": "mine.jsonl"})
