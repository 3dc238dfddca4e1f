"""Dead-latent remedies on ground truth: AuxK's weighting and window, JumpReLU `step`'s response to its
coefficient (docs/results.md, "Dead-latent remedies").

Each run is `architecture:strategy:key=value,...`, the keys the architecture's constructor keywords
(`saes.<architecture>`) or, prefixed `training.`, `TrainingConfig` fields. Every run trains on the same
SAELens synthetic tokens (`ground_truth.make_ground_truth`: 256 features in d = 64, true L0 6.78)
through the Trainer from `TrainingConfig()` defaults except the batch, the steps and the lr given here,
and reports MCC, held-out L0 and EV, and the dead % (latents that fired on none of the 16k held-out
tokens). `--force-dead` starts a share of the latents with b_enc = −1, out of every top k: at 4× (as many
latents as true features) nothing dies by itself here, so that is what gives a remedy work to do.

    PYTHONPATH=$PWD python benchmarks/dead_remedies.py --runs topk:nosampling:k=7 topk:auxk:k=7
    PYTHONPATH=$PWD python benchmarks/dead_remedies.py --runs jumprelu:nosampling:l0_coefficient=0.01

Needs the `interop` extra (sae-lens), for the generator and the MCC.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from benchmarks.ground_truth import make_ground_truth, recovery
from sae_core.config import TrainingConfig
from sae_core.training.architectures import build_architecture
from sae_core.training.data import InMemoryData
from sae_core.training.trainer import Trainer


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def parse_run(spec: str) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    architecture, strategy, *rest = spec.split(":")
    options: dict[str, Any] = {}
    training: dict[str, Any] = {}
    for item in ",".join(rest).split(","):
        if not item:
            continue
        key, value = item.split("=", 1)
        if key.startswith("training."):
            training[key.removeprefix("training.")] = _value(value)
        else:
            options[key] = _value(value)
    return architecture, strategy, options, training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True)
    parser.add_argument("--tokens", type=int, default=65_536)
    parser.add_argument("--steps", type=int, default=1_500)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--force-dead", type=float, default=0.0, help="share of latents started with b_enc = -1 (kept dead)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    truth = make_ground_truth(args.tokens)
    d = truth.train.shape[1]
    print(f"{'run':<78} {'MCC':>6} {'L0':>6} {'EV':>6} {'dead%':>6} {'s':>5}")
    for spec in args.runs:
        architecture, strategy, options, training = parse_run(spec)
        cfg = TrainingConfig(
            **{
                "lr": args.lr, "batch_size": args.batch, "epochs": None,
                "max_tokens": args.batch * args.steps, "seed": 0, "device": "cpu",
                "log_every": args.steps, "val_every": 10**9,
                "val_tokens": 1024, "checkpoint_every": 10**9, **training,
            }
        )  # fmt: skip
        sae = build_architecture(architecture, d, args.expansion * d, cfg, options)
        with torch.no_grad():  # outside every top k at the start: what only a remedy brings back
            sae.b_enc[: round(args.force_dead * sae.d_hidden)] = -1.0
        start = time.perf_counter()
        data = InMemoryData(truth.train)
        Trainer(sae, data, cfg, l1=0.0, strategy=strategy, device=torch.device("cpu")).run()
        seconds = time.perf_counter() - start
        mcc, l0, ev = recovery(sae.W_dec, truth, sae)
        with torch.no_grad():
            dead = float((sae.encode(truth.test) > 0).sum(dim=0).eq(0).float().mean())
        print(f"{spec:<78} {mcc:>6.3f} {l0:>6.2f} {ev:>6.3f} {100 * dead:>6.1f} {seconds:>5.1f}", flush=True)


if __name__ == "__main__":
    main()
