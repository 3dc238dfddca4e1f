"""Training one SAE: shuffled batches, the fused step, the decoder constraint, resampling, metrics,
validation, checkpoints and callbacks; `run_cell.train_cell` puts one grid cell in its run dir.

Callers attach a progress bar, Prefect progress or tracking through `TrainCallback`s; `sae_core` knows
none of them. Nothing here syncs the device every step: the loss is checked for NaN/Inf through a
device-side flag read at log steps, before every checkpoint and at the end.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from sae_core.config import TrainingConfig
from sae_core.device import cpu_threads
from sae_core.errors import TrainingError
from sae_core.saes.relu import (
    SparseAutoencoder,
    StepBuffers,
    StepStats,
    autograd_step_grads,
    evaluate,
    fused_step_grads,
    project_decoder_grad,
)
from sae_core.training import architectures
from sae_core.training.architectures import build_sae
from sae_core.training.callbacks import TrainCallback
from sae_core.training.capture import CapturedUpdate, capture_reason_not, check_capture
from sae_core.training.checkpoint import config_hash, rng_state, save_checkpoint, set_rng_state
from sae_core.training.data import TrainingData, geometric_median
from sae_core.training.resample import resample_dead
from sae_core.training.state import TrainState, total_steps_for

log = logging.getLogger(__name__)

# train_log.parquet's two dead figures: the window rule on `kind=train` rows, "fired on none of the
# evaluated tokens" on `kind=val` rows (NaN on the other kind).
DEAD_COLUMNS = ("window_dead_fraction", "never_fired_fraction")


class Trainer:
    """Trains `sae` on `data` with the settings of `training`, λ = `l1` and `strategy`."""

    def __init__(
        self,
        sae: SparseAutoencoder,
        data: TrainingData,
        training: TrainingConfig,
        *,
        l1: float,
        strategy: str,
        device: torch.device,
        checkpoint_path: Path | None = None,
        identity: dict[str, Any] | None = None,
        callbacks: Sequence[TrainCallback] = (),
        dead_threshold: float = 0.07,
    ) -> None:
        if not math.isfinite(l1) or l1 < 0:
            raise TrainingError(f"l1: λ must be finite and >= 0 (got {l1})")
        architectures.check_cell_strategy(sae.architecture, strategy)  # auxk: the TopK family only
        if data.d_model != sae.d_in:
            raise TrainingError(
                f"activations: the store's d_model is {data.d_model} but the SAE's d_in is {sae.d_in}"
            )
        if data.train_tokens <= 0:
            raise TrainingError(f"activations: the train split is empty (got {data.train_tokens} tokens)")
        self.sae = sae.to(device)
        self.data = data
        self.cfg = training
        self.l1 = float(l1)
        self.strategy = strategy
        self.device = device
        self.checkpoint_path = checkpoint_path
        self.identity = identity
        self.callbacks = list(callbacks)
        self.batch_size = min(training.batch_size, data.train_tokens)
        self.total_steps = total_steps_for(training, data.train_tokens)
        if strategy == "sampling" and training.resample_every >= self.total_steps:
            raise TrainingError(
                f"training.resample_every: {training.resample_every} steps is not before the end of training "
                f"({self.total_steps} steps), so the `sampling` strategy would never resample"
            )
        self.auxk_window = architectures.auxk_window(sae, strategy, self.batch_size, self.total_steps)
        check_capture(training.capture, device)
        not_captured = capture_reason_not(self) if training.capture else "off"
        if training.capture and not_captured:
            log.info("training.capture: %s is trained eagerly (%s)", strategy, not_captured)
        self.optimizer = torch.optim.Adam(
            architectures.optimizer_params(self.sae, training.lr),  # jumprelu: θ at its own lr
            lr=training.lr,
            betas=(training.adam_beta1, training.adam_beta2),
            fused=device.type in ("cpu", "cuda") and not_captured is not None,
            capturable=not_captured is None,  # the step count on the device, for the graph
        )
        # resample_criterion=threshold: a neuron "fires" for resampling only above analysis.dead_threshold
        by_threshold = training.resample_criterion == "threshold" and strategy == "sampling"
        self.fire_threshold = float(dead_threshold) if by_threshold else None
        self.state = self._fresh_state(sae.d_hidden)
        self._step_fn = self._make_step_fn()
        self._captured = CapturedUpdate(self, self._eager_update) if not_captured is None else None
        self._update = self._captured or self._eager_update
        self._val_x: torch.Tensor | None = None
        # Set by the final evaluation: each feature's firing frequency on its `final_tokens` tokens.
        self.final_frequency = torch.zeros(sae.d_hidden, dtype=torch.float32)
        self.final_tokens = 0

    # ---- setup ------------------------------------------------------------------------------------

    def _fresh_state(self, m: int) -> TrainState:
        never = torch.zeros(m, dtype=torch.int64, device=self.device)
        by_threshold = self.fire_threshold is not None
        return TrainState(last_fired=never, last_exceeded=never.clone() if by_threshold else None)

    def _make_step_fn(self) -> Callable[[torch.Tensor, bool, float], StepStats]:
        cfg, sae, scaling, above = self.cfg, self.sae, self.cfg.l1_scaling, self.fire_threshold
        if sae.architecture != "relu":  # topk, batchtopk, jumprelu: autograd (`training.architectures`)
            return architectures.autograd_step_fn(self)
        if self.device.type == "cuda" and (cfg.autocast_bf16 or cfg.compile):
            forward = torch.compile(sae.forward) if cfg.compile else sae.forward

            def autograd_step(x: torch.Tensor, full: bool, l1: float) -> StepStats:
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.autocast_bf16):
                    return autograd_step_grads(
                        sae, x, l1, scaling, full_stats=full, forward=forward, exceed_threshold=above
                    )

            return autograd_step
        buffers = StepBuffers()
        return lambda x, full, l1: fused_step_grads(
            sae, x, l1, scaling, full_stats=full, buffers=buffers, exceed_threshold=above
        )

    def l1_at(self, step: int) -> float:
        """λ for the step after `step` completed steps: it rises linearly from λ/N to λ over the first
        N = `training.l1_warmup_fraction` × total steps (N = 0: constant, the study). A function of the
        step alone, so a resumed run follows it exactly."""
        warm = round(self.cfg.l1_warmup_fraction * self.total_steps)
        return self.l1 if step >= warm else self.l1 * (step + 1) / warm

    @torch.no_grad()
    def init_b_dec(self) -> None:
        """`training.b_dec_init`: zeros (the study), or the mean / geometric median of a training sample."""
        if self.cfg.b_dec_init == "zeros":
            return
        sample = self.data.sample(min(self.cfg.resample_pool_tokens, 65_536), self.cfg.seed + 17).float()
        value = sample.mean(dim=0) if self.cfg.b_dec_init == "mean" else geometric_median(sample[:8192])
        self.sae.b_dec.copy_(value.to(self.sae.b_dec.device))

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue from a loaded checkpoint dict (see `checkpoint_state`)."""
        self.sae.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        fresh = self._fresh_state(self.sae.d_hidden)
        # (A checkpoint written before this version counted resets in `last_fired`; resuming it keeps that.)
        last_exceeded = saved.get("last_exceeded")
        self.state = TrainState(
            step=int(saved["step"]),
            last_fired=saved["last_fired"].to(self.device),
            last_exceeded=last_exceeded.to(self.device) if last_exceeded is not None else fresh.last_exceeded,
            resample_events=list(saved["resample_events"]),
            log_rows=list(saved["log_rows"]),
            wall_time_s=float(saved["wall_time_s"]),
        )
        set_rng_state(saved["rng"])

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "config_hash": config_hash(self.identity or {}),
            "identity": self.identity or {},
            "step": self.state.step,
            "tokens": self.state.step * self.batch_size,
            "data_position": {"step": self.state.step, "batch_size": self.batch_size},
            "model": {k: v.detach().clone() for k, v in self.sae.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "last_fired": self.state.last_fired,
            "last_exceeded": self.state.last_exceeded,
            "resample_events": self.state.resample_events,
            "log_rows": self.state.log_rows,
            "wall_time_s": self.state.wall_time_s,
            "rng": rng_state(),
        }

    # ---- the loop ---------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train to the end (from the restored step, if any) and return the final metrics dict."""
        with cpu_threads(self.cfg.num_threads, self.device):
            self.start()
            cfg = self.cfg
            batches = self.data.batches(self.batch_size, cfg.seed, self.state.step, shuffle=cfg.shuffle)
            while not self.done:
                self.train_step(next(batches))
            return self.finish()

    # A pack (`grid.pack`, `training.pack.train_pack`) steps several Trainers with one shared batch.

    @property
    def done(self) -> bool:
        return self.state.step >= self.total_steps

    def start(self) -> None:
        """Before the first `train_step`: b_dec init (a fresh run), the validation set, the callbacks."""
        cfg, st = self.cfg, self.state
        if st.step == 0:
            self.init_b_dec()
            architectures.init_from_data(self.sae, self.data, cfg)  # jumprelu: θ capped by the data
        self._val_x = self.data.validation(cfg.val_tokens, cfg.seed + 1)
        start_info = {
            "batch_size": self.batch_size,
            "tokens": st.step * self.batch_size,
            "resumed_from": st.step,
        }
        for cb in self.callbacks:
            cb.on_start(self.total_steps, start_info)
        self._first_bad = torch.full((), -1, dtype=torch.int64, device=self.device)
        self._loss_seen = torch.zeros((), device=self.device)
        self._t0, self._tokens0, self._wall0 = time.perf_counter(), st.step * self.batch_size, st.wall_time_s
        self._stop_after = (cfg.stop_resampling_after or math.inf) * self.total_steps

    def train_step(self, x: torch.Tensor) -> None:
        """One optimizer step on batch `x` (the batch of step `state.step`), then what falls due after it:
        logging, resampling, validation, a checkpoint."""
        cfg, st = self.cfg, self.state
        is_log = (st.step + 1) % cfg.log_every == 0 or st.step + 1 == self.total_steps
        stats = self._update(x, is_log, self.l1_at(st.step))
        st.step += 1
        bad = ~torch.isfinite(stats.loss)
        self._first_bad = torch.where(bad & (self._first_bad < 0), st.step, self._first_bad)
        self._loss_seen = stats.loss.detach().clone() if self._captured else stats.loss.detach()
        st.last_fired = torch.where(stats.fired, st.step, st.last_fired)
        if st.last_exceeded is not None and stats.exceeded is not None:
            st.last_exceeded = torch.where(stats.exceeded, st.step, st.last_exceeded)
        st.wall_time_s = self._wall0 + time.perf_counter() - self._t0
        s = st.step
        if is_log:
            self._check_finite()
            elapsed = max(st.wall_time_s - self._wall0, 1e-9)
            self._log_train(stats, tokens_per_s=(s * self.batch_size - self._tokens0) / elapsed)
        resample_due = self.strategy == "sampling" and s % cfg.resample_every == 0
        if resample_due and s < self.total_steps and s <= self._stop_after:
            self._check_finite()
            self._resample()
        if s % cfg.val_every == 0 and s < self.total_steps:
            self._validate()
        if s % cfg.checkpoint_every == 0 and s < self.total_steps:
            self._check_finite(params=True)
            self._save_checkpoint()

    def finish(self) -> dict[str, Any]:
        """After the last step: the final checks and metrics."""
        self._check_finite(params=True)
        return self._final_metrics()

    def _eager_update(self, x: torch.Tensor, full: bool, l1: float) -> StepStats:
        """Gradients, the decoder projection, Adam and the constraints (`capture.CapturedUpdate` replays
        the same as one CUDA graph)."""
        stats = self._step_fn(x, full, l1)
        project_decoder_grad(self.sae)
        self.optimizer.step()
        architectures.normalize_after_step(self.sae)  # unit-norm rows; jumprelu: thresholds >= 0
        return stats

    def _check_finite(self, params: bool = False) -> None:
        bad_step, loss = int(self._first_bad), self._loss_seen
        if bad_step < 0 and params and not all(bool(torch.isfinite(p).all()) for p in self.sae.parameters()):
            bad_step = self.state.step
        if bad_step >= 0:
            kept = self.checkpoint_path if self.checkpoint_path and self.checkpoint_path.exists() else None
            where = (
                f"the last good checkpoint {kept} is kept" if kept else "no checkpoint had been written yet"
            )
            raise TrainingError(
                f"training: the loss became non-finite ({float(loss)}) at step {bad_step} "
                f"(training.lr={self.cfg.lr}, l1={self.l1}); {where}"
            )

    def _window_dead_fraction(self) -> float:
        """Features that fired in no step of the last `resample_every` steps (all steps so far, early on).
        Reads actual firings only: a neuron reset by resampling in the window is dead unless it fired
        after the reset (under `never_fired` it cannot have fired before it in the window)."""
        window = min(self.cfg.resample_every, self.state.step)
        return float((self.state.last_fired <= self.state.step - window).float().mean())

    def _resample_candidates(self) -> torch.Tensor:
        """Neurons `resample_criterion` calls dead: no firing (`never_fired`) or none above the threshold
        (`threshold`) in the last `resample_every` steps."""
        st = self.state
        signal = st.last_exceeded if st.last_exceeded is not None else st.last_fired
        return signal <= st.step - self.cfg.resample_every

    def _row(self, kind: str, metrics: dict[str, float], neurons: int | None = None) -> dict[str, Any]:
        row = {
            "step": self.state.step,
            "tokens": self.state.step * self.batch_size,
            "kind": kind,
            **{
                k: metrics.get(k, math.nan)
                for k in ("loss", "mse", "l1", "l0", "explained_variance", *DEAD_COLUMNS)
            },
            "lr": self.optimizer.param_groups[0]["lr"],
            "neurons_resampled": neurons,
        }
        self.state.log_rows.append(row)
        return row

    def _log_train(self, stats: StepStats, tokens_per_s: float) -> None:
        metrics = {
            "loss": float(stats.loss),
            "mse": float(stats.mse),
            "l1": float(stats.l1),
            "l0": float(stats.l0) if stats.l0 is not None else math.nan,
            "explained_variance": float(stats.explained_variance)
            if stats.explained_variance is not None
            else math.nan,
            "window_dead_fraction": self._window_dead_fraction(),
        }
        row = self._row("train", metrics)
        for cb in self.callbacks:
            cb.on_log(self.state.step, {**row, "tokens_per_s": tokens_per_s})

    def _validate(self) -> dict[str, float] | None:
        if self._val_x is None:
            return None
        metrics = evaluate(self.sae, self._val_x, self.l1, self.cfg.l1_scaling)
        row = self._row("val", metrics)
        for cb in self.callbacks:
            cb.on_validation(self.state.step, row)
        return metrics

    def _resample(self) -> None:
        s = self.state.step
        dead = self._resample_candidates()
        n_dead = int(dead.sum())
        if n_dead:
            pool = self.data.sample(self.cfg.resample_pool_tokens, self.cfg.seed + 1000 + s)
            gen = torch.Generator().manual_seed(self.cfg.seed * 7_777 + s)
            resample_dead(
                self.sae, self.optimizer, dead, pool,
                enc_scale=self.cfg.resample_enc_scale, bias_low=self.cfg.resample_bias, generator=gen,
                replacement=self.cfg.resample_replacement,
                match_entry=getattr(self.sae, "resample_encoder", "scaled") == "entry",
            )  # fmt: skip
        self.state.resample_events.append({"step": s, "neurons": n_dead})
        self._row("resample", {}, neurons=n_dead)
        for cb in self.callbacks:
            cb.on_resample(s, n_dead)

    def _save_checkpoint(self) -> None:
        if self.checkpoint_path is None:
            return
        save_checkpoint(self.checkpoint_path, self.checkpoint_state())
        for cb in self.callbacks:
            cb.on_checkpoint(self.state.step, self.checkpoint_path)

    def _final_metrics(self) -> dict[str, Any]:
        sample = self.data.sample(self.cfg.val_tokens, self.cfg.seed + 2)
        # Each feature's firing frequency on those tokens, from the same encode (the SAELens export's
        # sparsity file and L0 use it: no second draw of the sample, no second encode).
        self.final_tokens = int(sample.shape[0])
        final = evaluate(self.sae, sample, self.l1, self.cfg.l1_scaling, frequency_out=self.final_frequency)
        val = self._validate()
        st = self.state
        return {
            "steps": st.step,
            "tokens_trained": st.step * self.batch_size,
            "wall_time_s": round(st.wall_time_s, 3),
            "tokens_per_s": st.step * self.batch_size / max(st.wall_time_s, 1e-9),
            "final": final,
            "val": val,
            "training_dead_fraction": self._window_dead_fraction(),
            "resample_events": list(st.resample_events),
        }


def train_sae(
    data: TrainingData,
    d_hidden: int,
    training: TrainingConfig,
    *,
    l1: float,
    strategy: str,
    device: str | torch.device = "cpu",
    callbacks: Sequence[TrainCallback] = (),
    dead_threshold: float = 0.07,
) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Train an SAE on in-memory data without a run directory (notebooks, benchmarks, tests);
    `dead_threshold` is used only by `training.resample_criterion=threshold`. With
    `training.normalize_activations=expected_norm` it trains on x·s and returns the SAE with s folded in
    (it takes raw activations, as a run's `.pth`); the metrics, measured in training, are of x·s and
    say s under `normalization`."""
    from sae_core.saes.export import fold_input_scale
    from sae_core.training.normalize import input_scale, normalization_record, normalized

    data = normalized(data, None, training.normalize_activations)
    sae = build_sae(data.d_model, d_hidden, training)
    trainer = Trainer(
        sae, data, training, l1=l1, strategy=strategy, device=torch.device(device), callbacks=callbacks,
        dead_threshold=dead_threshold,
    )  # fmt: skip
    metrics = trainer.run()
    if (norm := normalization_record(data)) is not None:
        metrics["normalization"] = norm
    return fold_input_scale(trainer.sae, input_scale(data)), metrics
