"""Bad input to the architectures: each a clear error naming the field and the value."""

from __future__ import annotations

import pytest
import torch

from sae_core.architectures import SPECS
from sae_core.saes.export import save_pth
from sae_core.saes.registry import ARCHITECTURES, build_sae, check_strategy, load_sae
from sae_core.saes.relu import SparseAutoencoder

D, M = 8, 32


@pytest.mark.parametrize("name", ["topk", "batchtopk"])
@pytest.mark.parametrize("k", [32, 40, 0, -3, 2.5])
def test_k_outside_one_to_width_is_refused(name, k):
    with pytest.raises(ValueError, match=rf"k: must be an integer with 0 < k < d_hidden = 32 \(got {k}\)"):
        build_sae(name, D, M, k=k)


def test_negative_or_nan_l0_coefficient_is_refused():
    for bad in (-1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=rf"l0_coefficient: must be finite and >= 0 \(got {bad}\)"):
            build_sae("jumprelu", D, M, l0_coefficient=bad)


@pytest.mark.parametrize(
    ("field", "value"),
    [("bandwidth", 0.0), ("threshold_init", -0.1), ("sparsity_loss", "cubic"), ("tanh_scale", -1.0)],
)
def test_bad_jumprelu_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=rf"^{field}: .*\(got '?{value}'?\)"):
        build_sae("jumprelu", D, M, **{field: value})


def test_bad_topk_family_settings_are_refused():
    with pytest.raises(ValueError, match=r"auxk_k: must be > 0 \(got 0\)"):
        build_sae("topk", D, M, k=4, auxk_k=0)
    with pytest.raises(ValueError, match=r"auxk_coefficient: must be >= 0 \(got -0.5\)"):
        build_sae("topk", D, M, k=4, auxk_coefficient=-0.5)
    with pytest.raises(ValueError, match=r"threshold_decay: must be in \[0, 1\) \(got 1.0\)"):
        build_sae("batchtopk", D, M, k=4, threshold_decay=1.0)


@pytest.mark.parametrize("name", ["relu", "jumprelu"])
def test_auxk_with_an_architecture_outside_the_topk_family_names_both(name):
    with pytest.raises(ValueError, match=rf"strategy: 'auxk' is not available for architecture '{name}'"):
        check_strategy(name, "auxk")
    for strategy in ("nosampling", "sampling"):
        check_strategy(name, strategy)
    check_strategy("topk", "auxk")
    check_strategy("batchtopk", "auxk")


def test_an_unknown_architecture_name_is_refused_with_the_known_ones():
    with pytest.raises(
        ValueError, match=r"architecture: unknown architecture 'gated' \(known: \['batchtopk'"
    ):
        build_sae("gated", D, M)
    with pytest.raises(ValueError, match="unknown architecture 'TopK'"):
        check_strategy("TopK", "auxk")


def _saved(name: str, path) -> None:
    """As the Trainer writes it (`save_pth`: with the architecture's name where its spec records one)."""
    sae = build_sae(name, D, M, seed=0, **({"k": 4} if SPECS[name].sparsity.field == "k" else {}))
    save_pth(sae, path)


@pytest.mark.parametrize("saved_as", list(ARCHITECTURES))
def test_a_pth_of_one_architecture_loaded_as_another_names_both(saved_as, tmp_path):
    path = tmp_path / f"{saved_as}.pth"
    _saved(saved_as, path)
    for other in ARCHITECTURES:
        if other == saved_as:
            continue
        with pytest.raises(ValueError, match=rf"{saved_as} SAE's, it cannot be loaded as {other}") as info:
            load_sae(path, other)
        assert str(path) in str(info.value)
        with pytest.raises(ValueError, match=rf"a {saved_as} SAE's, it cannot be loaded as {other}"):
            ARCHITECTURES[other].from_pth(path)


def test_a_topk_pth_read_by_the_studys_loader_says_it_is_topk(tmp_path):
    _saved("topk", tmp_path / "w.pth")
    with pytest.raises(
        ValueError, match=r"architecture: this state dict is a topk SAE's, it cannot be loaded as relu"
    ):
        SparseAutoencoder.from_pth(tmp_path / "w.pth")


def test_a_state_dict_of_no_architecture_lists_the_keys_expected():
    state = SparseAutoencoder(D, M, seed=0).state_dict()
    state["extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"state dict: a relu SAE holds exactly .* \(got \['W_dec'"):
        SparseAutoencoder.from_state_dict(state)
