"""TopK training step: ours (the hand-written sparse step, `sae_core.saes.sparse_step`) vs the same SAE
through autograd (decoded from the k active latents, `topk.sparse_decode`: the step before; or decoded
densely) vs SAELens' `TopKTrainingSAE`, on the same in-memory batch.

One step = loss, backward and Adam (ours also projects and renormalises the decoder rows, as training
does; SAELens runs its own `training_forward_pass` with its defaults, `rescale_acts_by_decoder_norm`
included). d=768, 8× (m=6144), k=32 by default; rounds alternate the three so background load hits all
alike, and the best round of each is compared. This times the step alone; the whole training loop on
both sides is `benchmarks/train.py --rows topk`. `--help` lists the knobs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from sae_core.saes.base import AutogradSae
from sae_core.saes.relu import normalize_decoder, project_decoder_grad
from sae_core.saes.topk import TopKSAE


def ours(x: torch.Tensor, m: int, k: int, how: str) -> Callable[[], None]:
    sae = TopKSAE(x.shape[1], m, k=k, seed=0, init="tied")
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4, fused=True)

    def step() -> None:
        if how == "hand":
            sae.step_grads(x)
        else:  # autograd: TopK's own loss (embedding_bag decode) or the base class's (h @ W_dec)
            sae.zero_grad(set_to_none=False)
            loss = sae.training_loss if how == "sparse" else lambda x: AutogradSae.training_loss(sae, x)
            loss(x).loss.backward()
        project_decoder_grad(sae)
        opt.step()
        normalize_decoder(sae)

    return step


def saelens(x: torch.Tensor, m: int, k: int) -> Callable[[], None]:
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=x.shape[1], d_sae=m, k=k, device="cpu", dtype="float32"))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4, fused=True)
    step_input = TrainStepInput(
        sae_in=x, coefficients={}, dead_neuron_mask=None, n_training_steps=0, is_logging_step=False
    )

    def step() -> None:
        opt.zero_grad()
        sae.training_forward_pass(step_input).loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, args.d, generator=torch.Generator().manual_seed(0))
    m = args.d * args.expansion
    steps = {
        "ours (hand-written sparse)": ours(x, m, args.k, "hand"),
        "ours (autograd, sparse decode)": ours(x, m, args.k, "sparse"),
        "ours (autograd, dense decode)": ours(x, m, args.k, "dense"),
        "SAELens topk": saelens(x, m, args.k),
    }
    best = dict.fromkeys(steps, 0.0)
    for step in steps.values():
        step()  # warm-up
    for _ in range(args.rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            best[name] = max(best[name], args.batch * args.steps / (time.perf_counter() - t0))
    for name, rate in best.items():
        print(f"{name:32s} {rate:9.0f} tok/s")
    hand = best["ours (hand-written sparse)"]
    print(f"ours ÷ SAELens topk: {hand / best['SAELens topk']:.2f}×; hand-written ÷ autograd sparse decode: "
          f"{hand / best['ours (autograd, sparse decode)']:.2f}×")  # fmt: skip


if __name__ == "__main__":
    main()
