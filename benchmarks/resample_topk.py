"""Dead-latent resampling in the TopK family: does a revived latent ever enter the top k?

Trains TopK/BatchTopK cells at the `frontier` preset's settings (4×, lr 1e-3, batch 512, a check every
200 steps, a pool of 16,384 tokens, seed 42, one thread) on an activation store, and for each resampling
event records how many latents were reset and the share of them that fired in a step before the next
event (or the end). At the end: dead % (training window) from the Trainer, and on the store's whole test
split explained variance (1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²), L0 and dead % (>0.07, test tokens), computed here
(the analysis stage's figures use its own token selection, so they differ slightly).

    PYTHONPATH=$PWD python benchmarks/resample_topk.py STORE topk:16:nosampling topk:16:sampling:scaled \\
        topk:16:sampling:entry batchtopk:16:sampling:entry --epochs 1.5

Each spec is `architecture:k:strategy[:resample_encoder]` (`saes.<arch>.resample_encoder`; without it the
architecture's default: topk `entry`, batchtopk `scaled`), or `key=value,...` of `saes.<arch>` (e.g.
`topk:16:auxk:auxk_weighting=mse,auxk_dead_tokens=102400`).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from sae_core.config import TrainingConfig
from sae_core.store import ActivationStore
from sae_core.training.architectures import build_sae
from sae_core.training.data import InMemoryData
from sae_core.training.trainer import TrainCallback, Trainer


class ResetWatch(TrainCallback):
    """After each resampling event: which latents were reset; at the next one, how many of them fired."""

    def __init__(self) -> None:
        self.trainer: Trainer | None = None
        self.events: list[dict] = []
        self.pending: tuple[int, torch.Tensor] | None = None

    def close(self) -> None:
        if self.pending is not None and self.trainer is not None:
            step, idx = self.pending
            fired = self.trainer.state.last_fired[idx] > step
            self.events[-1]["fired_before_next"] = round(float(fired.float().mean()), 3) if len(idx) else None
            self.pending = None

    def on_resample(self, step: int, neurons: int) -> None:
        assert self.trainer is not None
        self.close()
        # `never_fired`: last_fired is not touched by a reset, so the candidates are still readable here
        reset = torch.nonzero(
            self.trainer.state.last_fired <= step - self.trainer.cfg.resample_every
        ).flatten()
        self.events.append({"step": step, "reset": int(reset.numel())})
        self.pending = (step, reset)


def run(splits: dict[str, torch.Tensor], spec: str, epochs: float, enc_scale: float = 0.05) -> dict:
    architecture, k, strategy, *encoder = spec.split(":")
    cfg = TrainingConfig(
        lr=1e-3, batch_size=512, epochs=epochs, seed=42, l1_scaling="sum", resample_every=200,
        resample_pool_tokens=16_384, resample_enc_scale=enc_scale, log_every=20, val_every=200,
        checkpoint_every=10**6, device="cpu", num_threads=1,
    )  # fmt: skip
    d = splits["train"].shape[1]
    options: dict = {"resample_encoder": encoder[0]} if encoder and "=" not in encoder[0] else {}
    for item in encoder[0].split(",") if encoder and "=" in encoder[0] else []:  # saes.<arch> keys
        key, value = item.split("=", 1)
        options[key] = int(value) if value.isdigit() else value
    sae = build_sae(d, 4 * d, cfg, architecture, k=int(k), **options)
    watch = ResetWatch()
    trainer = Trainer(
        sae, InMemoryData(splits["train"], splits.get("val")), cfg, l1=0.0, strategy=strategy,
        device=torch.device("cpu"), callbacks=[watch],
    )  # fmt: skip
    watch.trainer = trainer
    t0 = time.perf_counter()
    metrics = trainer.run()
    watch.close()
    x = splits["test"]
    with torch.no_grad():
        x_hat, h = sae(x)
    return {
        "cell": spec,
        "dead_pct_training_window": round(100 * metrics["training_dead_fraction"], 1),
        "dead_pct_gt_0.07_test": round(100 * float(((h > 0.07).sum(0) == 0).float().mean()), 1),
        "ev": round(1 - float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()), 4),
        "l0": round(float((h > 0).sum(1).float().mean()), 1),
        "events": watch.events,
        "train_s": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("store")
    parser.add_argument("specs", nargs="+")
    parser.add_argument("--epochs", type=float, default=1.5)
    parser.add_argument("--enc-scale", type=float, default=0.05, help="training.resample_enc_scale")
    args = parser.parse_args()
    torch.set_num_threads(1)
    store = ActivationStore.open(args.store)
    splits = {
        name: store.load_split(name, device=torch.device("cpu"), dtype=torch.float32)
        for name in ("train", "val", "test")
    }
    for spec in args.specs:
        print(json.dumps(run(splits, spec, args.epochs, args.enc_scale)), flush=True)


if __name__ == "__main__":
    main()
