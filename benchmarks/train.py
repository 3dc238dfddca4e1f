"""Training throughput: our SAE training vs SAELens' `standard` SAE (and our TopK vs SAELens' `topk`),
and our relu step vs the dense roofline.

Both train on the same in-memory activations (d=768, 8× → m=6144, batch 4096, fp32, CPU, the same number
of steps, Adam lr 1e-4, no resampling): ours through `sae_core.training.Trainer`, SAELens through its own
`SAETrainer.fit()` with a `StandardTrainingSAE`, as its users run it. Rounds alternate ours/theirs so
background load hits both alike; the best round of each side is compared.

Roofline: a training step needs five [B·d·m] matmuls (encoder and decoder forward, the decoder weight
gradient, the gradient into h, the encoder weight gradient). We time those five as bare `torch.mm` calls
of the same shapes and layouts and divide by our steady-state step time in the training loop (the
whole step: matmuls, elementwise work, decoder projection, Adam, renormalisation, firing counters):
FLOP/s achieved ÷ FLOP/s of plain dense matmuls.

TopK row (`--rows topk`): our `TopKSAE` (k=32, its hand-written sparse step, `sae_core.saes.sparse_step`)
through the same Trainer vs SAELens' `TopKTrainingSAE` (its defaults, k=32) through its `SAETrainer.fit()`,
on the same data, alternating rounds, best of each. Prints ratios; `--help` lists the knobs.
"""

from __future__ import annotations

import argparse
import time

import torch

from sae_core.config import TrainingConfig
from sae_core.saes.relu import SparseAutoencoder
from sae_core.saes.topk import TopKSAE
from sae_core.training import TrainCallback, Trainer
from sae_core.training.data import InMemoryData


def make_data(tokens: int, d: int, seed: int = 0) -> torch.Tensor:
    """Residual-stream-like activations: sparse non-negative codes over 4·d random directions plus noise."""
    gen = torch.Generator().manual_seed(seed)
    directions = torch.randn(4 * d, d, generator=gen)
    directions /= directions.norm(dim=1, keepdim=True)
    out = torch.empty(tokens, d)
    for start in range(0, tokens, 8192):
        n = min(8192, tokens - start)
        codes = torch.rand(n, 4 * d, generator=gen).sub_(0.98).clamp_(min=0).mul_(50)
        out[start : start + n] = codes @ directions + 0.1 * torch.randn(n, d, generator=gen)
    return out


class _LoopSpeed(TrainCallback):
    """Steady-state seconds per step: time between the first and the last step's log call (so the first
    step's one-off allocations are left out; every step logs, which adds a little work to each)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_log(self, step: int, metrics: dict) -> None:
        self.times.append(time.perf_counter())

    def step_time(self) -> float:
        return (self.times[-1] - self.times[0]) / (len(self.times) - 1)


def run_ours(
    data: torch.Tensor, d_hidden: int, batch: int, steps: int, l1: float, k: int | None = None
) -> tuple[float, float]:
    """(wall seconds including setup and final evaluation, seconds per step of the loop alone);
    `k`: a TopK SAE with that k instead of relu."""
    cfg = TrainingConfig(
        lr=1e-4, batch_size=batch, epochs=None, max_tokens=batch * steps, l1_scaling="seed", seed=0,
        log_every=1, val_every=10**9, val_tokens=1024, checkpoint_every=10**9, device="cpu",
    )  # fmt: skip
    d = data.shape[1]
    sae = (
        SparseAutoencoder(d, d_hidden, seed=0)
        if k is None
        else TopKSAE(d, d_hidden, k=k, seed=0, init="tied")
    )
    speed = _LoopSpeed()
    trainer = Trainer(
        sae,
        InMemoryData(data),
        cfg,
        l1=l1,
        strategy="nosampling",
        device=torch.device("cpu"),
        callbacks=[speed],
    )
    start = time.perf_counter()
    trainer.run()
    return time.perf_counter() - start, speed.step_time()


def run_saelens(
    data: torch.Tensor, d_hidden: int, batch: int, steps: int, l1: float, k: int | None = None
) -> float:
    """Wall seconds of `SAETrainer.fit()`; `k`: its `TopKTrainingSAE` (its defaults) instead of standard."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    d = data.shape[1]
    sae = (
        StandardTrainingSAE(
            StandardTrainingSAEConfig(d_in=d, d_sae=d_hidden, l1_coefficient=l1, device="cpu")
        )
        if k is None
        else TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=d_hidden, k=k, device="cpu"))
    )
    cfg = SAETrainerConfig(
        total_training_samples=batch * steps, train_batch_size_samples=batch, lr=1e-4, lr_end=1e-4,
        device="cpu", logger=LoggingConfig(log_to_wandb=False),
    )  # fmt: skip

    def provider():
        gen = torch.Generator().manual_seed(0)
        while True:
            order = torch.randperm(data.shape[0], generator=gen)
            for i in range(data.shape[0] // batch):
                yield data[order[i * batch : (i + 1) * batch]]

    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=provider())
    start = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - start


def roofline_step_time(batch: int, d: int, m: int, repeats: int) -> float:
    """Best time of the five dense matmuls of a step, as bare `torch.mm` calls of the same layouts."""
    x, g_out = torch.randn(batch, d), torch.randn(batch, d)
    h, g_pre = torch.randn(batch, m), torch.randn(batch, m)
    w_enc, w_dec = torch.randn(d, m), torch.randn(m, d)
    calls = [
        lambda: torch.mm(x, w_enc),  # encoder forward
        lambda: torch.mm(h, w_dec),  # decoder forward
        lambda: torch.mm(h.t(), g_out),  # dW_dec
        lambda: torch.mm(g_out, w_dec.t()),  # dh
        lambda: torch.mm(x.t(), g_pre),  # dW_enc
    ]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for call in calls:
            call()
        best = min(best, time.perf_counter() - start)
    return best


def relu_row(args: argparse.Namespace, data: torch.Tensor, m: int) -> None:
    run_ours(data, m, args.batch, 2, args.l1)  # warm-up (allocator, kernels) for both sides
    run_saelens(data, m, args.batch, 1, args.l1)
    ours, steps, theirs, roofs = [], [], [], []
    for r in range(args.rounds):  # interleaved, so that background load hits all three alike
        wall, step = run_ours(data, m, args.batch, args.steps, args.l1)
        ours.append(wall)
        steps.append(step)
        theirs.append(run_saelens(data, m, args.batch, args.steps, args.l1))
        roofs.append(roofline_step_time(args.batch, args.d, m, repeats=2))
        print(f"round {r}: ours {wall:.2f} s ({step:.3f} s/step in the loop), SAELens {theirs[-1]:.2f} s, "
              f"five bare matmuls {roofs[-1]:.3f} s")  # fmt: skip
    tokens = args.batch * args.steps
    ours_tps, theirs_tps = tokens / min(ours), tokens / min(theirs)
    print(f"ours    {ours_tps:10.0f} tokens/s (wall, setup and final evaluation included)")
    print(f"SAELens {theirs_tps:10.0f} tokens/s (SAETrainer.fit wall)")
    print(f"RATIO ours/SAELens tokens/s: {ours_tps / theirs_tps:.2f}  (target >= 1.3)")

    step, roof = min(steps), min(roofs)
    flops = 5 * 2 * args.batch * args.d * m
    print(f"our step {step:.3f} s = {flops / step / 1e9:.0f} GFLOP/s; five bare matmuls {roof:.3f} s "
          f"= {flops / roof / 1e9:.0f} GFLOP/s")  # fmt: skip
    print(f"RATIO our step FLOP/s / dense matmul FLOP/s: {roof / step:.2f}  (target >= 0.8)")


def topk_row(args: argparse.Namespace, data: torch.Tensor, m: int) -> None:
    """Our TopK through the Trainer vs SAELens' TopK through its trainer, alternating rounds."""
    k = args.k
    run_ours(data, m, args.batch, 2, args.l1, k=k)  # warm-up for both sides
    run_saelens(data, m, args.batch, 1, args.l1, k=k)
    ours, steps, theirs = [], [], []
    for r in range(args.rounds):
        wall, step = run_ours(data, m, args.batch, args.steps, args.l1, k=k)
        ours.append(wall)
        steps.append(step)
        theirs.append(run_saelens(data, m, args.batch, args.steps, args.l1, k=k))
        print(
            f"topk round {r}: ours {wall:.2f} s ({step:.3f} s/step in the loop), SAELens {theirs[-1]:.2f} s"
        )
    tokens = args.batch * args.steps
    ours_tps, theirs_tps = tokens / min(ours), tokens / min(theirs)
    print(f"ours topk    {ours_tps:10.0f} tokens/s (Trainer wall, setup and final evaluation included)")
    print(f"SAELens topk {theirs_tps:10.0f} tokens/s (SAETrainer.fit wall)")
    print(f"our topk step in the loop: {min(steps):.3f} s")
    print(f"RATIO ours/SAELens topk tokens/s: {ours_tps / theirs_tps:.2f}  (target >= 2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=4, help="training steps per timed run (>= 2)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating ours/SAELens rounds")
    parser.add_argument("--tokens", type=int, default=24_576, help="in-memory activations")
    parser.add_argument("--l1", type=float, default=1e-4)
    parser.add_argument("--k", type=int, default=32, help="the TopK row's k")
    parser.add_argument("--rows", nargs="+", default=["relu", "topk"], choices=["relu", "topk"])
    args = parser.parse_args()
    m = args.d * args.expansion
    data = make_data(args.tokens, args.d)
    print(
        f"d={args.d} m={m} batch={args.batch} steps={args.steps} fp32 CPU threads={torch.get_num_threads()}"
    )

    if "relu" in args.rows:
        relu_row(args, data, m)
    if "topk" in args.rows:
        topk_row(args, data, m)


if __name__ == "__main__":
    main()
