"""Which of the study's choices make neurons die? Small ablations on the demo store (docs/results.md).

From the demo preset's training section (the baseline), one factor at a time is moved to the study's
value — batch 32, lr 1e-4, unshuffled consecutive tokens (`training.shuffle: false`), `l1_scaling: seed`,
the untied init (`training.init: seed`; the demo's default is `tied`) — then all together; each setting
is trained without and with resampling (and, for the baseline and the all-study setting, with
`training.resample_criterion: threshold`). Per run it prints
the training-window dead % (`training_dead_fraction`), the analysis dead % (never above 0.07) on the
test split and on every token of the store, the fraction that never fired (> 0) on the test split, and
L0 / explained variance on the test split.

The resampling window is held constant in tokens (the demo's 200 steps × 512 = 102,400 tokens), so a
batch of 32 checks every 3,200 steps.

Run: `sae-sweep extract --preset demo --set data_root=/tmp/dead-demo` first, then
`python benchmarks/dead_ablation.py --store /tmp/dead-demo/activations/<key> [--epochs 2] [--expansion 4]
[--l1 0.01] [--only baseline,batch32]` (1 thread; minutes per setting on a shared 2-core VM).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

SETTINGS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "batch32": {"batch_size": 32},
    "lr1e-4": {"lr": 1e-4},
    "unshuffled": {"shuffle": False},
    "l1_seed": {"l1_scaling": "seed"},
    "init_seed": {"init": "seed"},
    "all_study": {"batch_size": 32, "lr": 1e-4, "shuffle": False, "l1_scaling": "seed", "init": "seed"},
    # the study's choices but the L1 summed over features: with `seed` scaling the demo's λ is m× weaker
    "study_sum_l1": {"batch_size": 32, "lr": 1e-4, "shuffle": False, "init": "seed"},
}
WINDOW_TOKENS = 200 * 512


@torch.no_grad()
def split_counts(
    sae: Any, store: Any, split: str, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per feature: activations above `threshold`, activations above 0, over one split; and its tokens."""
    above = torch.zeros(sae.d_hidden, dtype=torch.int64)
    fired = torch.zeros(sae.d_hidden, dtype=torch.int64)
    n = 0
    for x in store.batches(split, batch_size=8192, shuffle=False):
        h = sae.encode(x)
        above += (h > threshold).sum(0)
        fired += (h > 0).sum(0)
        n += x.shape[0]
    return above, fired, n


def run(store_path: str, name: str, overrides: dict[str, Any], args: argparse.Namespace) -> list[dict]:
    from sae_core.config import TrainingConfig, load_config
    from sae_core.saes.relu import evaluate
    from sae_core.training.data import open_store_data
    from sae_core.training.trainer import Trainer, build_sae

    base = load_config("demo").training.model_dump()
    settings = {**base, **overrides, "epochs": args.epochs, "num_threads": 1, "device": "cpu"}
    settings["resample_every"] = max(1, WINDOW_TOKENS // settings["batch_size"])
    settings["val_every"] = settings["checkpoint_every"] = 10**9
    settings["log_every"] = max(1, settings["resample_every"] // 4)
    data, store = open_store_data(store_path, torch.device("cpu"), 8.0)
    test = store.load_split("test")
    rows = []
    strategies = [("nosampling", "never_fired"), ("sampling", "never_fired")]
    if name in ("baseline", "all_study", "study_sum_l1"):
        strategies.append(("sampling", "threshold"))
    for strategy, criterion in strategies:
        cfg = TrainingConfig(**{**settings, "resample_criterion": criterion})
        torch.manual_seed(cfg.seed)
        sae = build_sae(data.d_model, data.d_model * args.expansion, cfg)
        trainer = Trainer(
            sae, data, cfg, l1=args.l1, strategy=strategy, device=torch.device("cpu"), dead_threshold=0.07
        )
        start = time.perf_counter()
        metrics = trainer.run()
        wall = time.perf_counter() - start
        sae = trainer.sae.eval()
        ev = evaluate(sae, test, args.l1, cfg.l1_scaling)
        above_all = torch.zeros(sae.d_hidden, dtype=torch.int64)
        tokens_all = 0
        for split in ("train", "val", "test"):
            above, fired, n = split_counts(sae, store, split, 0.07)
            above_all += above
            tokens_all += n
            if split == "test":
                dead_test, never_test = float((above == 0).float().mean()), float((fired == 0).float().mean())
        row = {
            "setting": name,
            "strategy": strategy if criterion == "never_fired" else "sampling (threshold)",
            "steps": metrics["steps"],
            "resampled": sum(e["neurons"] for e in metrics["resample_events"]),
            "training_dead_pct": round(100 * metrics["training_dead_fraction"], 1),
            "dead_test_pct": round(100 * dead_test, 1),
            "dead_all_pct": round(100 * float((above_all == 0).float().mean()), 1),
            "never_fired_test_pct": round(100 * never_test, 1),
            "l0": round(ev["l0"], 1),
            "ev": round(ev["explained_variance"], 3),
            "wall_s": round(wall, 1),
            "tokens_all": tokens_all,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--expansion", type=int, default=4)
    parser.add_argument("--l1", type=float, default=0.01)
    parser.add_argument("--only", default=",".join(SETTINGS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.only.split(","):
        run(args.store, name, SETTINGS[name], args)


if __name__ == "__main__":
    main()
