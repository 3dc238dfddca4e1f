"""Training: the known answer on superposition data, run-dir outputs, completed-run reuse, resume equal to
an uninterrupted run, NaN handling, refusing another config's checkpoint, bad inputs, tracking."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sae_core.config import TrainingConfig
from sae_core.errors import TrainingError
from sae_core.io import read_json
from sae_core.naming import Cell
from sae_core.saes.relu import SparseAutoencoder
from sae_core.training import TrainCallback, Trainer, train_cell, train_sae
from sae_core.training.checkpoint import CHECKPOINT_NAME, save_checkpoint
from sae_core.training.data import InMemoryData, epoch_seed
from tests.fixtures_sae import make_store, small_config

pytestmark = pytest.mark.usefixtures("single_thread")

CELL = Cell(4, 0.02, "sampling")


def test_known_answer_recovers_ground_truth_directions(superposition_data):
    x_train, x_val, directions = superposition_data
    cfg = TrainingConfig(
        lr=1e-2, batch_size=1024, epochs=None, max_tokens=1024 * 600, l1_scaling="sum", seed=0,
        resample_every=250, resample_pool_tokens=4096, log_every=100, val_every=300, device="cpu",
        normalize_activations="none",  # λ and lr tuned in raw units; the rows then stay unit norm
    )  # fmt: skip
    sae, metrics = train_sae(InMemoryData(x_train, x_val), 64, cfg, l1=0.02, strategy="sampling")
    best_cos = (directions @ sae.W_dec.detach().T).max(dim=1).values
    assert (best_cos > 0.9).float().mean() >= 0.9, best_cos
    assert metrics["val"]["explained_variance"] > 0.8
    assert metrics["final"]["l0"] < 8  # sparse: ~1.9 true features per token
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(64))


def test_train_cell_writes_the_run_dir_and_reuses_a_completed_run(sae_store, tmp_path):
    cfg = small_config()
    out = tmp_path / CELL.name
    metrics = train_cell(sae_store, CELL, cfg, out)
    assert (out / "model_weights_4x_0.02_sampling.pth").is_file()
    assert (out / "saelens" / "cfg.json").is_file() and (
        out / "saelens" / "sae_weights.safetensors"
    ).is_file()
    assert not (out / CHECKPOINT_NAME).exists()
    on_disk = read_json(out / "metrics.json")
    for key in (
        "cell",
        "d_in",
        "d_hidden",
        "store",
        "steps",
        "tokens_trained",
        "wall_time_s",
        "tokens_per_s",
        "final",
        "val",
        "training_dead_fraction",
        "resample_events",
        "training",
        "code_version",
        "completed",
    ):
        assert key in on_disk, key
    assert on_disk["completed"] is True and on_disk["d_hidden"] == 64
    assert "dead_fraction_train" not in on_disk and "dead_fraction" not in on_disk["final"]
    assert set(on_disk["final"]) == {"loss", "mse", "l1", "l0", "explained_variance", "never_fired_fraction"}
    assert set(on_disk["val"]) == set(on_disk["final"])
    assert [e["step"] for e in on_disk["resample_events"]] == [20, 40, 60]
    log = pd.read_parquet(out / "train_log.parquet")
    assert list(log.columns) == [
        "step",
        "tokens",
        "kind",
        "loss",
        "mse",
        "l1",
        "l0",
        "explained_variance",
        "window_dead_fraction",
        "never_fired_fraction",
        "lr",
        "neurons_resampled",
    ]
    assert set(log["kind"]) == {"train", "val", "resample"}
    assert log[log.kind == "train"]["loss"].notna().all()
    # each row kind carries its own dead figure, and only that one
    train_rows, val_rows = log[log.kind == "train"], log[log.kind == "val"]
    assert train_rows["window_dead_fraction"].notna().all()
    assert train_rows["never_fired_fraction"].isna().all()
    assert val_rows["never_fired_fraction"].notna().all() and val_rows["window_dead_fraction"].isna().all()

    class Counter(TrainCallback):
        starts = 0

        def on_start(self, total_steps, info):
            Counter.starts += 1

    again = train_cell(sae_store, CELL, cfg, out, callbacks=[Counter()])
    assert again == metrics and Counter.starts == 0


class _Kill(TrainCallback):
    """Simulates a killed process right after the checkpoint at `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_checkpoint(self, step, path):
        if step == self.step:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    "training",
    [{}, {"resample_criterion": "threshold", "resample_replacement": True}],
    ids=["never_fired", "threshold_with_replacement"],
)
def test_resume_equals_uninterrupted(sae_store, tmp_path, training):
    cfg = small_config(**training)
    whole = train_cell(sae_store, CELL, cfg, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train_cell(sae_store, CELL, cfg, tmp_path / "killed", callbacks=[_Kill(50)])
    ckpt = tmp_path / "killed" / CHECKPOINT_NAME
    assert ckpt.exists()
    assert not (tmp_path / "killed" / "metrics.json").exists()
    # Rewritten the way the code before weights_only loading wrote it (a bare torch.save): such a
    # checkpoint must still resume, bit-identically.
    torch.save(torch.load(ckpt, weights_only=True), ckpt)
    resumed = train_cell(sae_store, CELL, cfg, tmp_path / "killed")
    a = torch.load(tmp_path / "whole" / CELL.weights_filename)
    b = torch.load(tmp_path / "killed" / CELL.weights_filename)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed["final"] == whole["final"] and resumed["resample_events"] == whole["resample_events"]
    log_a = pd.read_parquet(tmp_path / "whole" / "train_log.parquet").drop(columns=[])
    log_b = pd.read_parquet(tmp_path / "killed" / "train_log.parquet")
    pd.testing.assert_frame_equal(log_a, log_b)


def test_refuses_a_checkpoint_of_another_config(sae_store, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train_cell(sae_store, CELL, small_config(), tmp_path / "run", callbacks=[_Kill(25)])
    with pytest.raises(
        TrainingError, match=r"another config.*training\.lr: 0\.003 in the checkpoint, 0\.001 now"
    ):
        train_cell(sae_store, CELL, small_config(lr=1e-3), tmp_path / "run")


class _WritesAFile:
    """Unpickling this runs `Path.touch` on `target`: what a crafted checkpoint would do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_a_checkpoint_crafted_to_run_code_is_refused_without_running_it(sae_store, tmp_path):
    out, marker = tmp_path / "run", tmp_path / "code-ran"
    out.mkdir()
    torch.save({"format_version": 1, "step": _WritesAFile(marker)}, out / CHECKPOINT_NAME)
    with pytest.raises(TrainingError) as err:
        train_cell(sae_store, CELL, small_config(), out)
    assert not marker.exists()
    message = str(err.value)
    assert "\n" not in message and str(out / CHECKPOINT_NAME) in message, message
    assert "delete it and run again" in message


def test_a_truncated_checkpoint_is_one_line_that_says_how_to_restart(sae_store, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_cell(sae_store, CELL, small_config(), out, callbacks=[_Kill(25)])
    ckpt = out / CHECKPOINT_NAME
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(TrainingError, match=r"cannot read .*checkpoint\.pt.*delete it and run again") as err:
        train_cell(sae_store, CELL, small_config(), out)
    assert "\n" not in str(err.value)
    ckpt.unlink()  # what the message says to do: the cell trains over
    assert train_cell(sae_store, CELL, small_config(), out)["completed"]


def test_a_checkpoint_refuses_values_weights_only_loading_would_not_read(tmp_path):
    with pytest.raises(TypeError, match=r"checkpoint\.log_rows\[0\]\.loss is a float64"):
        save_checkpoint(tmp_path / CHECKPOINT_NAME, {"log_rows": [{"loss": np.float64(1.0)}]})
    assert not (tmp_path / CHECKPOINT_NAME).exists()


def test_nan_loss_stops_with_error_and_keeps_last_good_checkpoint(superposition_data, tmp_path):
    x_train = superposition_data[0][:4096].clone()
    cfg = TrainingConfig(
        lr=1e-3, batch_size=64, epochs=1, l1_scaling="sum", seed=0, log_every=5, checkpoint_every=10,
        resample_every=10**6, device="cpu",
    )  # fmt: skip
    order = torch.randperm(4096, generator=torch.Generator().manual_seed(epoch_seed(0, 0)))
    poison_step = 35  # the batch trained at step 35 (1-based) holds a NaN row
    x_train[order[(poison_step - 1) * 64]] = float("nan")
    ckpt = tmp_path / CHECKPOINT_NAME
    trainer = Trainer(
        SparseAutoencoder(16, 32, seed=0), InMemoryData(x_train), cfg, l1=0.01, strategy="nosampling",
        device=torch.device("cpu"), checkpoint_path=ckpt, identity={"test": 1},
    )  # fmt: skip
    with pytest.raises(TrainingError, match=r"non-finite \(nan\) at step 35.*last good checkpoint"):
        trainer.run()
    saved = torch.load(ckpt, weights_only=True)
    assert saved["step"] == 30
    assert all(torch.isfinite(v).all() for v in saved["model"].values())


def test_bad_inputs_are_clear_errors(superposition_data, tmp_path):
    data = InMemoryData(superposition_data[0][:2048])
    cfg = TrainingConfig(batch_size=256, epochs=1, resample_every=4, device="cpu")
    cpu = torch.device("cpu")
    with pytest.raises(TrainingError, match=r"d_model is 16 but the SAE's d_in is 8"):
        Trainer(SparseAutoencoder(8, 32), data, cfg, l1=0.01, strategy="sampling", device=cpu)
    with pytest.raises(TrainingError, match=r"λ must be finite and >= 0 \(got -0.1\)"):
        Trainer(SparseAutoencoder(16, 32), data, cfg, l1=-0.1, strategy="sampling", device=cpu)
    with pytest.raises(TrainingError, match=r"training.resample_every: 25000 steps .* \(8 steps\)"):
        Trainer(
            SparseAutoencoder(16, 32),
            data,
            TrainingConfig(batch_size=256, epochs=1),
            l1=0.01,
            strategy="sampling",
            device=cpu,
        )
    empty = tmp_path / "no-train"
    n = 400
    make_store(empty, n=n, splits=np.array(["val"] * (n // 2) + ["test"] * (n - n // 2)))
    with pytest.raises(TrainingError, match=r"empty train split \(got 0 tokens\)"):
        train_cell(empty, CELL, small_config(), tmp_path / "run")


def test_wandb_offline_writes_a_local_run_and_disabled_never_imports_it(sae_store, tmp_path):
    cfg = small_config().model_copy(
        update={"tracking": small_config().tracking.model_copy(update={"mode": "offline"})}
    )
    train_cell(sae_store, Cell(2, 0.02, "nosampling"), cfg, tmp_path / "tracked")
    runs = list((tmp_path / "tracked" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
    code = (
        "import sys; from tests.fixtures_sae import small_config; from sae_core.naming import Cell; "
        "from sae_core.training import train_cell; "
        f"train_cell({str(sae_store)!r}, Cell(2, 0.02, 'nosampling'), small_config(), "
        f"{str(tmp_path / 'off')!r}); "
        "assert 'wandb' not in sys.modules, 'wandb imported in disabled mode'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("flags", [{"autocast_bf16": True}, {"compile": True}, {}])
def test_cuda_paths_train_to_finite_weights(superposition_data, flags):
    x_train, x_val, _ = superposition_data
    cfg = TrainingConfig(
        lr=1e-2, batch_size=1024, epochs=None, max_tokens=1024 * 300, l1_scaling="sum", seed=0,
        resample_every=100, resample_pool_tokens=4096, log_every=50, val_every=100, device="cuda", **flags,
    )  # fmt: skip
    sae, metrics = train_sae(
        InMemoryData(x_train.cuda(), x_val.cuda()), 64, cfg, l1=0.02, strategy="sampling", device="cuda"
    )
    assert all(torch.isfinite(p).all() for p in sae.parameters())
    assert metrics["val"]["explained_variance"] > 0.5
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(64, device="cuda"))


def test_streaming_from_the_store_when_the_split_exceeds_the_memory_budget(sae_store, tmp_path):
    cfg = small_config(max_memory_gb=0)  # forces the streamed path
    whole = train_cell(sae_store, CELL, cfg, tmp_path / "whole")
    assert whole["steps"] == 74 and whole["val"] is not None
    assert [e["step"] for e in whole["resample_events"]] == [20, 40, 60]
    with pytest.raises(KeyboardInterrupt):
        train_cell(sae_store, CELL, cfg, tmp_path / "killed", callbacks=[_Kill(50)])
    train_cell(sae_store, CELL, cfg, tmp_path / "killed")
    a = torch.load(tmp_path / "whole" / CELL.weights_filename)
    b = torch.load(tmp_path / "killed" / CELL.weights_filename)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unshuffled_batches_read_the_split_in_store_order_and_resume():
    data = InMemoryData(torch.arange(40 * 3, dtype=torch.float32).reshape(40, 3))
    stream = data.batches(8, seed=0, start_step=0, shuffle=False)
    first = [next(stream) for _ in range(7)]  # 5 per epoch: the second epoch starts over in order
    assert torch.equal(first[0][:, 0], torch.arange(0, 24, 3, dtype=torch.float32))
    assert torch.equal(first[4], data.train[32:40]) and torch.equal(first[5], data.train[0:8])
    resumed = data.batches(8, seed=0, start_step=3, shuffle=False)
    assert torch.equal(next(resumed), first[3])
    shuffled = next(data.batches(8, seed=0, start_step=0))
    assert not torch.equal(shuffled, first[0])
