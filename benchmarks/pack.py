"""Packed training (`grid.pack: device`) vs the same cells one at a time, on this machine's device.

The sweep's code on both sides: `train_pack` over N cells of one width (λ apart) against `train_cell` for
each in turn, from one store, every output written; wall time of the whole call. On a CPU the pack saves
only the batch reads (each cell's matmuls are the same work), so expect ~1×; the point of packing is a
GPU, where one small cell leaves the device idle (benchmarks/gpu/check.py measures that).

Run: `python benchmarks/pack.py [--d 256] [--expansion 4] [--cells 4] [--batch 256] [--steps 200]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sae_core.config import load_config
from sae_core.naming import Cell
from sae_core.store import write_store
from sae_core.training import train_cell, train_pack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--expansion", type=int, default=4)
    parser.add_argument("--cells", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="training.num_threads")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-pack-"))
    try:
        tokens = int(args.batch * args.steps / 0.75) + 4096
        x = torch.randn(tokens, args.d, generator=torch.Generator().manual_seed(0))
        store = write_store(
            root / "store", x.numpy(), np.arange(tokens) // 128, store_dtype="float32",
            model={"name": "random", "layer": 0, "num_layers": 1, "d_model": args.d},
            data={"dataset": "random", "context_length": 128},
        )  # fmt: skip
        cells = [Cell(args.expansion, 10.0 ** -(2 + i / 4), "nosampling") for i in range(args.cells)]
        cfg = load_config("demo", overrides={
            "data_root": str(root), "tracking.mode": "disabled", "training.device": "cpu",
            "training.batch_size": args.batch, "training.epochs": None,
            "training.max_tokens": args.batch * args.steps, "training.log_every": 50,
            "training.val_every": 10**9, "training.checkpoint_every": 10**9, "training.val_tokens": 4096,
            "training.num_threads": args.threads,
        })  # fmt: skip
        start = time.perf_counter()
        for cell in cells:
            train_cell(store.path, cell, cfg, root / "solo" / cell.name)
        solo = time.perf_counter() - start
        start = time.perf_counter()
        train_pack(store.path, cells, cfg, {c.name: root / "pack" / c.name for c in cells})
        packed = time.perf_counter() - start
        trained = args.cells * args.batch * args.steps
        print(
            f"d={args.d} m={args.d * args.expansion} {args.cells} cells, batch {args.batch}, "
            f"{args.steps} steps, {args.threads} thread(s); load average {os.getloadavg()[0]:.1f}"
        )
        print(f"one at a time: {solo:.1f} s ({trained / solo:,.0f} tok/s all cells)")
        print(f"packed:        {packed:.1f} s ({trained / packed:,.0f} tok/s all cells)")
        print(f"RATIO packed/solo speed: {solo / packed:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
