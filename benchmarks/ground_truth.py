"""Feature recovery on ground truth: each of our SAE architectures against SAELens's same architecture
on SAELens's synthetic data.

SAELens's generator (`sae_lens.synthetic`) makes `n_features` unit directions in `d` dimensions
(orthogonalised as far as superposition allows) that fire independently with probabilities drawn
uniformly from [min_p, max_p] and magnitudes ~ N(1, magnitude_std) clipped at 0. ONE fixed token set is
drawn; every SAE (m = expansion × d latents) trains on it for the same steps, batch size and Adam lr.
Recovery is the mean correlation coefficient (MCC: |cosine| of decoder rows against the true
directions, Hungarian-matched, SAELens's `mean_correlation_coefficient`, the same function for all);
L0 and explained variance are measured on held-out tokens by the same code for all. SAELens's SAEs are
measured as their inference SAE (`save_inference_model`, loaded back by `SAE.load_from_disk`), as ours
are (BatchTopK and Matryoshka: the threshold estimated in training on both sides).

relu: SAELens's `StandardTrainingSAE` against ours through `train_sae` (`--variants`), over a λ sweep
given in SAELens's units (the coefficient on Σ_j h_j‖W_dec,j‖ beside the per-token *summed* squared
error) and mapped to ours: our MSE is averaged over d, so λ_ours = λ·m/d under `l1_scaling: seed` (L1
averaged over m) and λ/d under `sum`. Adam is invariant to the loss's overall scale, so the same
learning rate means the same thing on both sides. The mapping leaves out our input scale s
(`normalize_activations: expected_norm`, below): on x·s the MSE grows by s² and the L1 by s, so at one
λ our penalty is s× weaker and our L0 higher; the default sweep runs to λ = 8 so that both sides have
a run near the true L0 (SAELens near λ = 2.5, ours near 7, a ratio ≈ s).

topk, batchtopk, jumprelu, matryoshka (`--architectures`, default all four): ours through the same
Trainer and `TrainingConfig()` defaults (`nosampling`), and SAELens's `TopKTrainingSAE`,
`BatchTopKTrainingSAE`, `JumpReLUTrainingSAE`, `MatryoshkaBatchTopKTrainingSAE` at their configs'
defaults (decoder init norm 0.1, `rescale_acts_by_decoder_norm`, AuxK coefficient 1 after 1,000 steps
of silence, …) with their own `SAETrainer`, at the same sparsity where the units coincide:
- topk, batchtopk, matryoshka: the same k near the data's true L0 (Σ of the firing probabilities,
  6.78 here → k = 7 and 10); matryoshka with our `group_fractions` default's groups on both sides
  (SAELens's `matryoshka_widths` = their cumulative sums: 16, 32, 64, 128, 256 at m = 256).
- jumprelu: the same sparsity form (`--jumprelu-loss`, default tanh: the step form's thresholds barely
  move in these few Adam steps, see docs/results.md), each side's L0 coefficient in its own units and
  swept until each side has a run near the true L0. Ours weighs the term against the MSE averaged over
  d on inputs scaled by s (`normalize_activations: expected_norm`, s = √d / E‖x‖ ≈ 2.85 here), SAELens
  against the summed squared error on raw inputs, so c_SAELens = c_ours·d/s² (`saelens_l0_coefficient`;
  the rows print the SAELens value's equivalent in ours). The thresholds' init and bandwidth are each
  side's defaults (ours 1e-3 in scaled units, SAELens 0.01 and 0.05 in raw units).
The last table is, per architecture, the run of ours and of SAELens whose held-out L0 is nearest the
true L0, with a verdict line each.

    PYTHONPATH=$PWD python benchmarks/ground_truth.py --threads 1        # 12–20 min, one shared core
    PYTHONPATH=$PWD python benchmarks/ground_truth.py --variants study defaults no-l1-warmup gmed beta0
    PYTHONPATH=$PWD python benchmarks/ground_truth.py --quick            # the test's size (~80 s)

Needs the `interop` extra (sae-lens).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sae_core.config import TrainingConfig
from sae_core.saes.export import fold_input_scale
from sae_core.training.architectures import build_architecture
from sae_core.training.data import InMemoryData
from sae_core.training.normalize import input_scale, normalized
from sae_core.training.trainer import Trainer, train_sae


@dataclass(frozen=True)
class GroundTruth:
    """The synthetic task: training and held-out tokens and the true feature directions `[n, d]`."""

    train: torch.Tensor
    test: torch.Tensor
    directions: torch.Tensor


def make_ground_truth(
    tokens: int,
    *,
    n_features: int = 256,
    d: int = 64,
    min_p: float = 0.005,
    max_p: float = 0.05,
    magnitude_std: float = 0.0,
    test_tokens: int = 16_384,
    seed: int = 0,
) -> GroundTruth:
    """Draw one fixed token set from SAELens's generator (deterministic for a given `seed`)."""
    from sae_lens.synthetic import ActivationGenerator, FeatureDictionary, random_firing_probabilities

    torch.manual_seed(seed)  # the generator's Bernoulli and magnitude draws use the global RNG
    features = FeatureDictionary(n_features, d, seed=seed)
    probs = random_firing_probabilities(n_features, max_prob=max_p, min_prob=min_p, seed=seed)
    gen = ActivationGenerator(n_features, probs, std_firing_magnitudes=magnitude_std)
    with torch.no_grad():
        x = features(gen.sample(tokens + test_tokens)).float()
    return GroundTruth(x[:tokens].contiguous(), x[tokens:].contiguous(), features.feature_vectors.detach())


def ours_lambda(l1_saelens: float, scaling: str, d: int, m: int) -> float:
    """SAELens's λ expressed in our loss's units (see the module docstring)."""
    return l1_saelens * (m / d if scaling == "seed" else 1.0 / d)


@dataclass
class Result:
    setting: str
    l1: float
    mcc: float
    l0: float
    explained_variance: float
    seconds: float


def recovery(w_dec: torch.Tensor, truth: GroundTruth, encode_decode: Any) -> tuple[float, float, float]:
    """(MCC, L0, explained variance on the held-out tokens) for decoder rows `w_dec` `[m, d]`."""
    from sae_lens.synthetic import mean_correlation_coefficient

    with torch.no_grad():
        x_hat, h = encode_decode(truth.test)
        err = (x_hat - truth.test).pow(2).sum()
        total = (truth.test - truth.test.mean(dim=0)).pow(2).sum()
        l0 = float((h > 0).float().sum(dim=1).mean())
    mcc = mean_correlation_coefficient(truth.directions, w_dec.detach().float())
    return mcc, l0, float(1 - err / total)


def run_ours(
    truth: GroundTruth, expansion: int, steps: int, batch: int, l1: float, lr: float, **training: Any
) -> Result:
    """Our SAE through the public `train_sae` (defaults of `TrainingConfig` unless `training` says)."""
    d = truth.train.shape[1]
    m = expansion * d
    cfg = TrainingConfig(
        lr=lr, batch_size=batch, epochs=None, max_tokens=batch * steps, seed=0, device="cpu",
        log_every=max(steps, 1), val_every=10**9, val_tokens=1024, checkpoint_every=10**9, **training,
    )  # fmt: skip
    start = time.perf_counter()
    sae, _ = train_sae(
        InMemoryData(truth.train), m, cfg, l1=ours_lambda(l1, cfg.l1_scaling, d, m), strategy="nosampling"
    )
    seconds = time.perf_counter() - start
    mcc, l0, ev = recovery(sae.W_dec, truth, sae)
    label = ", ".join(f"{k}={v}" for k, v in training.items()) or "defaults"
    return Result(f"ours ({label})", l1, mcc, l0, ev, seconds)


def run_architecture(
    truth: GroundTruth,
    architecture: str,
    expansion: int,
    steps: int,
    batch: int,
    lr: float,
    *,
    strategy: str = "nosampling",
    options: dict[str, Any],
    **training: Any,
) -> Result:
    """One of our other architectures (topk, batchtopk, jumprelu, matryoshka) through the same Trainer,
    started from the same `TrainingConfig()` init as relu; `options` its constructor keywords (k, the L0
    coefficient, the matryoshka groups, …). The `l1` column of the result holds its sparsity parameter."""
    d = truth.train.shape[1]
    cfg = TrainingConfig(
        lr=lr, batch_size=batch, epochs=None, max_tokens=batch * steps, seed=0, device="cpu",
        log_every=max(steps, 1), val_every=10**9, val_tokens=1024, checkpoint_every=10**9, **training,
    )  # fmt: skip
    sae = build_architecture(architecture, d, expansion * d, cfg, options)
    start = time.perf_counter()
    data = normalized(InMemoryData(truth.train), None, cfg.normalize_activations)  # as train_cell does
    Trainer(sae, data, cfg, l1=0.0, strategy=strategy, device=torch.device("cpu")).run()
    sae = fold_input_scale(sae, input_scale(data))  # raw-input weights, measured on raw test tokens
    seconds = time.perf_counter() - start
    mcc, l0, ev = recovery(sae.W_dec, truth, sae)
    sparsity = float(options.get("k", options.get("l0_coefficient", 0.0)))
    extra = "".join(
        f", {k}={v}" for k, v in {**options, **training}.items() if k not in ("k", "l0_coefficient")
    )
    return Result(f"{architecture} ({strategy}{extra})", sparsity, mcc, l0, ev, seconds)


def true_l0(truth_seed: int = 0, n_features: int = 256, min_p: float = 0.005, max_p: float = 0.05) -> float:
    """The synthetic data's expected L0: the sum of the features' firing probabilities."""
    from sae_lens.synthetic import random_firing_probabilities

    probs = random_firing_probabilities(n_features, max_prob=max_p, min_prob=min_p, seed=truth_seed)
    return float(probs.sum())


def _fixed_batches(x: torch.Tensor, batch: int, seed: int) -> Iterator[torch.Tensor]:
    """Shuffled passes over the fixed token set (a fresh permutation per epoch, as ours)."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(x.shape[0] // batch):
            yield x[order[i * batch : (i + 1) * batch]]


SAELENS_CLASSES: dict[str, tuple[str, str]] = {
    "relu": ("StandardTrainingSAE", "StandardTrainingSAEConfig"),
    "topk": ("TopKTrainingSAE", "TopKTrainingSAEConfig"),
    "batchtopk": ("BatchTopKTrainingSAE", "BatchTopKTrainingSAEConfig"),
    "jumprelu": ("JumpReLUTrainingSAE", "JumpReLUTrainingSAEConfig"),
    "matryoshka": ("MatryoshkaBatchTopKTrainingSAE", "MatryoshkaBatchTopKTrainingSAEConfig"),
}
"""SAELens's training class and config (in `sae_lens.saes`) for each of our architectures."""

SAELENS_NAMES = {"relu": "standard", "matryoshka": "matryoshka_batchtopk"}
"""SAELens's name of our architecture, where it differs."""


def train_saelens(
    truth: GroundTruth,
    architecture: str,
    expansion: int,
    steps: int,
    batch: int,
    lr: float,
    options: dict[str, Any],
    **trainer: Any,
) -> tuple[Any, float]:
    """SAELens's own training SAE for `architecture` (its config's defaults but `options`) trained by
    its own `SAETrainer` on the same tokens; returns its inference SAE (what `save_inference_model`
    writes, loaded back by `SAE.load_from_disk`: BatchTopK and Matryoshka become JumpReLU with the
    estimated threshold, TopK's decoder norms folded) and the training seconds."""
    import tempfile

    import sae_lens.saes
    from sae_lens import SAE
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    sae_class, config_class = (getattr(sae_lens.saes, name) for name in SAELENS_CLASSES[architecture])
    d = truth.train.shape[1]
    torch.manual_seed(0)
    sae = sae_class(config_class(d_in=d, d_sae=expansion * d, device="cpu", **options))
    cfg = SAETrainerConfig(
        total_training_samples=batch * steps, train_batch_size_samples=batch, lr=lr, lr_end=lr,
        device="cpu", logger=LoggingConfig(log_to_wandb=False, eval_every_n_wandb_logs=2**31 - 1), **trainer,
    )  # fmt: skip
    start = time.perf_counter()
    SAETrainer(cfg=cfg, sae=sae, data_provider=_fixed_batches(truth.train, batch, 0)).fit()
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as path:
        sae.save_inference_model(path)
        inference = SAE.load_from_disk(path, device="cpu")
    return inference.eval(), seconds


def saelens_recovery(sae: Any, truth: GroundTruth) -> tuple[float, float, float]:
    def encode_decode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = sae.encode(x)
        return sae.decode(h), h

    return recovery(sae.W_dec, truth, encode_decode)


def run_saelens(
    truth: GroundTruth, expansion: int, steps: int, batch: int, l1: float, lr: float, **trainer: Any
) -> Result:
    """SAELens's `StandardTrainingSAE` with its own `SAETrainer` (its defaults: tied init with decoder
    norm 0.1, b_dec zeros, gradient clipping at 1, Adam (0.9, 0.999), constant lr) on the same tokens."""
    l1_warm_up = trainer.pop("l1_warm_up_steps", 0)
    options = {"l1_coefficient": l1, "l1_warm_up_steps": l1_warm_up}
    sae, seconds = train_saelens(truth, "relu", expansion, steps, batch, lr, options, **trainer)
    mcc, l0, ev = saelens_recovery(sae, truth)
    extra = ", ".join(f"{k}={v}" for k, v in {"l1_warm_up_steps": l1_warm_up, **trainer}.items() if v)
    return Result(f"SAELens standard{f' ({extra})' if extra else ''}", l1, mcc, l0, ev, seconds)


def run_saelens_architecture(
    truth: GroundTruth,
    architecture: str,
    expansion: int,
    steps: int,
    batch: int,
    lr: float,
    *,
    options: dict[str, Any],
    label: str = "",
) -> Result:
    """SAELens's same architecture as our `architecture` (topk, batchtopk, jumprelu, matryoshka), its
    config's defaults but `options` (k, the L0 coefficient in SAELens's units, the matryoshka widths, …).
    The `l1` column holds its sparsity parameter (k, or its L0 coefficient)."""
    sae, seconds = train_saelens(truth, architecture, expansion, steps, batch, lr, options)
    mcc, l0, ev = saelens_recovery(sae, truth)
    sparsity = float(options.get("k", options.get("l0_coefficient", 0.0)))
    name = SAELENS_NAMES.get(architecture, architecture)
    return Result(f"SAELens {name}{f' ({label})' if label else ''}", sparsity, mcc, l0, ev, seconds)


def best(results: Sequence[Result]) -> Result:
    return max(results, key=lambda r: r.mcc)


def nearest_l0(results: Sequence[Result], target: float) -> Result:
    """The run whose held-out L0 is closest to `target` (the matched-L0 comparison)."""
    return min(results, key=lambda r: abs(r.l0 - target))


def print_table(rows: Sequence[Result], header: bool = True) -> None:
    if header:
        print(f"{'setting':<58} {'λ / k / L0 coef':>17} {'MCC':>6} {'L0':>6} {'EV':>6} {'s':>6}")
    for r in rows:
        print(
            f"{r.setting:<58} {r.l1:>17g} {r.mcc:>6.3f} {r.l0:>6.1f} {r.explained_variance:>6.3f} "
            f"{r.seconds:>6.1f}"
        )


OUR_VARIANTS: dict[str, dict[str, Any]] = {
    "study": {"init": "seed", "l1_warmup_fraction": 0.0},
    "defaults": {},
    "raw": {"normalize_activations": "none"},
    "no-l1-warmup": {"l1_warmup_fraction": 0.0},
    "l1-warmup-20%": {"l1_warmup_fraction": 0.2},
    "enc1": {"init_encoder_norm": 1.0},
    "enc0.01": {"init_encoder_norm": 0.01},
    "gmed": {"b_dec_init": "geometric_median"},
    "beta0": {"adam_beta1": 0.0},
}
"""Our settings compared (`--variants`): `TrainingConfig()` defaults, or these keys changed."""


def our_input_scale(truth: GroundTruth) -> float:
    """s: our Trainer trains on x·s (`TrainingConfig().normalize_activations`, √d / E‖x‖ by default)."""
    return input_scale(normalized(InMemoryData(truth.train), None, TrainingConfig().normalize_activations))


def saelens_l0_coefficient(ours: float, d: int, scale: float) -> float:
    """Our JumpReLU L0 coefficient in SAELens's units. Ours weighs the L0 term against the MSE averaged
    over d on inputs scaled by s; SAELens's against the squared error summed over d on raw inputs. In raw
    units our loss is (s²/d)·(Σ_d err² + c·d/s² · L0-term), so c_SAELens = c·d/s² (exact for the `step`
    form's count; for `tanh` up to the tanh's argument, which is s× larger on our side at the same scale
    factor 4)."""
    return ours * d / scale**2


def matryoshka_group_sizes(m: int) -> list[int]:
    """Our `saes.matryoshka.group_fractions` default resolved for width m (SAELens gets the same groups
    as its cumulative `matryoshka_widths`)."""
    from sae_core.config.architectures import MatryoshkaConfig
    from sae_core.saes.matryoshka import group_sizes_of

    return group_sizes_of(m, MatryoshkaConfig().group_fractions)


def k_values(args: argparse.Namespace, target: float) -> list[int]:
    return list(args.k or [round(target), round(1.5 * target)])


def architecture_sweep(
    truth: GroundTruth, architecture: str, args: argparse.Namespace, target: float
) -> list[Result]:
    """One architecture over its sparsity values: k near the true L0 (topk, batchtopk, matryoshka), or
    the L0 coefficients (jumprelu, in our loss's units: the MSE averaged over d)."""
    if architecture == "jumprelu":
        options = [{"l0_coefficient": c, "sparsity_loss": args.jumprelu_loss} for c in args.l0_coefficients]
    elif architecture == "matryoshka":
        sizes = matryoshka_group_sizes(args.expansion * truth.train.shape[1])
        options = [{"k": k, "group_sizes": sizes} for k in k_values(args, target)]
    else:
        options = [{"k": k} for k in k_values(args, target)]
    return [
        run_architecture(truth, architecture, args.expansion, args.steps, args.batch, args.lr, options=o)
        for o in options
    ]


def saelens_sweep(
    truth: GroundTruth, architecture: str, args: argparse.Namespace, target: float, scale: float
) -> list[Result]:
    """SAELens's same architecture over the same sparsity values: the same k (topk, batchtopk,
    matryoshka with our groups as its widths), or for jumprelu the same sparsity form over
    `--saelens-l0-coefficients` (SAELens units; empty: ours mapped by `saelens_l0_coefficient`)."""
    d = truth.train.shape[1]
    runs: list[tuple[dict[str, Any], str]] = []
    if architecture == "jumprelu":
        coefficients = args.saelens_l0_coefficients or [
            saelens_l0_coefficient(c, d, scale) for c in args.l0_coefficients
        ]
        for c in coefficients:
            option = {"l0_coefficient": c, "jumprelu_sparsity_loss_mode": args.jumprelu_loss}
            runs.append((option, f"{args.jumprelu_loss}, = ours {c * scale**2 / d:.3g}"))
    elif architecture == "matryoshka":
        sizes = matryoshka_group_sizes(args.expansion * d)
        widths = [sum(sizes[: i + 1]) for i in range(len(sizes))]
        runs = [({"k": k, "matryoshka_widths": widths}, "") for k in k_values(args, target)]
    else:
        runs = [({"k": k}, "") for k in k_values(args, target)]
    return [
        run_saelens_architecture(
            truth, architecture, args.expansion, args.steps, args.batch, args.lr, options=o, label=label
        )
        for o, label in runs
    ]


def verdict(ours: Result, theirs: Result) -> str:
    return "ours >= SAELens" if ours.mcc >= theirs.mcc else f"ours < SAELens by {theirs.mcc - ours.mcc:.3f}"


OTHER_ARCHITECTURES = ("topk", "batchtopk", "jumprelu", "matryoshka")
"""Ours beside relu, each also trained as SAELens's same architecture."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="the test's size: 32k tokens, 500 steps × 512, lr 1e-3"
    )
    parser.add_argument("--tokens", type=int, default=131_072)
    parser.add_argument("--steps", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam lr, the same for both")
    parser.add_argument("--expansion", type=int, default=4)
    parser.add_argument(
        "--l1",
        type=float,
        nargs="+",
        default=[0.1, 0.3, 1.0, 2.0, 2.5, 3.0, 6.0, 7.0, 8.0],
        help="λ sweep, SAELens units (the true L0 near 2.5 for SAELens, near 7 for ours: `ours_lambda` "
        "ignores our input scale s, so at one λ our L1 is ~s× weaker)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--magnitude-std", type=float, default=0.5, help="spread of firing magnitudes")
    parser.add_argument("--variants", nargs="+", default=["study", "defaults"], choices=list(OUR_VARIANTS))
    parser.add_argument("--no-saelens", action="store_true")
    parser.add_argument(
        "--architectures", nargs="*", default=list(OTHER_ARCHITECTURES), choices=OTHER_ARCHITECTURES,
        help="ours beside relu, each at its sparsities below, and SAELens's same architecture beside it",
    )  # fmt: skip
    parser.add_argument(
        "--k", type=int, nargs="+", default=None, help="topk/batchtopk k (default: ≈ true L0)"
    )
    parser.add_argument(
        "--l0-coefficients",
        type=float,
        nargs="+",
        default=[0.02, 0.035, 0.04, 0.041, 0.042],
        help="jumprelu's (our units)",
    )
    parser.add_argument(
        "--saelens-l0-coefficients", type=float, nargs="*", default=[0.2, 0.4, 0.5, 0.6, 0.7],
        help="SAELens jumprelu's, its units (ours ≙ c·d/s²); the flag alone: --l0-coefficients mapped",
    )  # fmt: skip
    parser.add_argument("--jumprelu-loss", choices=["step", "tanh"], default="tanh", help="both sides'")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")  # SAELens's trainer draws a progress bar per run
    torch.set_num_threads(args.threads)
    if args.quick:
        args.tokens, args.steps, args.batch, args.lr, args.magnitude_std = 32_768, 500, 512, 1e-3, 0.0
        args.l1 = [0.3, 1.0]
    tokens, steps = args.tokens, args.steps
    truth = make_ground_truth(tokens, magnitude_std=args.magnitude_std)
    target = true_l0()
    print(
        f"ground truth: 256 features in 64 dims, p ∈ [0.5 %, 5 %] (true L0 {target:.2f}), {tokens} tokens; "
        f"{steps} steps × batch {args.batch}, lr {args.lr}, expansion {args.expansion}"
    )
    rows: list[Result] = []
    bests: dict[str, Result] = {}
    sweeps: dict[str, list[Result]] = {}
    if not args.no_saelens:
        theirs = [run_saelens(truth, args.expansion, steps, args.batch, l1, args.lr) for l1 in args.l1]
        rows += theirs
        bests["SAELens"] = best(theirs)
        sweeps["SAELens"] = theirs
    for name in args.variants:
        overrides = OUR_VARIANTS[name]
        ours = [
            run_ours(truth, args.expansion, steps, args.batch, l1, args.lr, **overrides) for l1 in args.l1
        ]
        rows += ours
        bests[name] = best(ours)
        sweeps[name] = ours
        print_table(ours, header=False)
    matched: dict[str, Result] = {name: nearest_l0(sweep, target) for name, sweep in sweeps.items()}
    pairs: dict[str, tuple[Result, Result | None]] = {}
    relu_ours = "defaults" if "defaults" in sweeps else next(iter(args.variants), None)
    if relu_ours is not None:
        pairs["relu"] = (matched[relu_ours], matched.get("SAELens"))
    scale = our_input_scale(truth)
    for architecture in args.architectures:
        sweep = architecture_sweep(truth, architecture, args, target)
        print_table(sweep, header=False)
        rows += sweep
        matched[architecture] = nearest_l0(sweep, target)
        theirs_matched = None
        if not args.no_saelens:
            theirs = saelens_sweep(truth, architecture, args, target, scale)
            print_table(theirs, header=False)
            rows += theirs
            theirs_matched = nearest_l0(theirs, target)
        pairs[architecture] = (matched[architecture], theirs_matched)
    print()
    print_table(rows)
    print("\nbest of the λ sweep:")
    print_table(list(bests.values()))
    print(f"\nat the L0 nearest the true L0 ({target:.2f}), per architecture / setting:")
    print_table(list(matched.values()))
    if "SAELens" in bests and "defaults" in bests:
        theirs_best, ours_best = bests["SAELens"], bests["defaults"]
        ratio = ours_best.mcc / theirs_best.mcc
        print(f"\nMCC ours (defaults) / SAELens = {ratio:.3f}: {verdict(ours_best, theirs_best)}")
    if not args.no_saelens:
        print(
            f"\nat the L0 nearest the true L0 ({target:.2f}), per architecture: ours vs SAELens "
            f"(our input scale s = {scale:.3f})"
        )
        print_table([r for pair in pairs.values() for r in pair if r is not None])
        for architecture, (mine, ref) in pairs.items():
            if ref is None:
                continue
            print(
                f"{architecture:>10}: ours MCC {mine.mcc:.3f} at L0 {mine.l0:.1f}, SAELens {ref.mcc:.3f} "
                f"at L0 {ref.l0:.1f}: {verdict(mine, ref)}"
            )


if __name__ == "__main__":
    main()
