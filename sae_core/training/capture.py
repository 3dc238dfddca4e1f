"""`training.capture`: the whole update of a training step — gradients, the decoder-gradient projection,
Adam and the decoder/threshold constraints — recorded once as a CUDA graph and replayed every step.

At the study's batch of 32 a step is ~30 kernels on matrices too small to fill a GPU: the launches, not the
arithmetic, set the speed. A replay launches them all at once. What stays outside the graph (eager, as
without capture): the batch itself (copied into the graph's static input; the split is already held on
the device and indexed there, `training.data.InMemoryData`), the firing counters, logging, validation,
resampling and checkpoints. Resampling and `Trainer.restore` write the parameters and Adam moments in
place, so the graph, which reads those same tensors, sees them.

How: Adam is built `capturable=True` (its step count lives on the device); a few warm-up updates run on
a side stream (autograd and the allocator need them before a capture), then the parameters and Adam state
are put back exactly as they were, so the warm-up leaves no trace in the run; then one update is captured.
The step is autograd for every architecture (relu's hand-written step takes λ as a Python number; the
captured one reads λ from a device scalar, refilled each step for the warm-up schedule) and always
computes the logged statistics (L0, explained variance): a graph cannot branch on "is this a log step".

The TopK family is captured too: its step keeps `k` a Python int (`TopKSAE.k_value`) and BatchTopK's
k·B kept entries of the batch have static shapes (their per-token counts come from an `index_add`, not
a `bincount` sized on the host). Not captured (eager, logged once): the `auxk` strategy, whose
dead-latent count sets a tensor's size, and any step whose capture fails (a host sync inside it), with
the reason in a warning; `CapturedUpdate.failed` keeps it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from sae_core.errors import TrainingError
from sae_core.saes.relu import StepStats, autograd_step_grads, project_decoder_grad
from sae_core.training import architectures

log = logging.getLogger(__name__)

WARMUP_UPDATES = 3
"""Updates run (and undone) on a side stream before the capture, as torch's CUDA-graph notes ask."""


def check_capture(capture: bool, device: torch.device) -> None:
    """`training.capture` needs CUDA: on another device it is a config error naming the field."""
    if capture and device.type != "cuda":
        raise TrainingError(
            f"training.capture: CUDA graphs need a CUDA device (got capture=true with training.device "
            f"resolving to {device.type}); set training.capture=false"
        )


def capture_reason_not(trainer: Any) -> str | None:
    """Why this trainer's step is not captured (None: it is)."""
    if trainer.strategy == "auxk":
        return "the auxk strategy's dead-latent count sizes a tensor each step"
    return None


class CapturedUpdate:
    """`update(x, full, l1) -> StepStats`, replaying one captured graph; the stats are the graph's
    static outputs (overwritten by the next replay: read them before it, as the Trainer does)."""

    def __init__(self, trainer: Any, eager: Callable[[torch.Tensor, bool, float], StepStats]) -> None:
        self.trainer = trainer
        self.eager = eager
        self.failed: str | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_x: torch.Tensor | None = None
        self.static_l1 = torch.zeros((), device=trainer.device)
        self.stats: StepStats | None = None

    def __call__(self, x: torch.Tensor, full: bool, l1: float) -> StepStats:
        if self.failed:
            return self.eager(x, full, l1)
        if self.graph is None or self.static_x is None or self.static_x.shape != x.shape:
            try:
                self._capture(x)
            except RuntimeError as exc:  # e.g. a host sync inside the step: trained eagerly, said once
                self.failed, self.graph = f"{type(exc).__name__}: {exc}", None
                torch.cuda.synchronize()
                log.warning("training.capture: the step could not be captured, trained eagerly (%s)", exc)
                return self.eager(x, full, l1)
        assert self.graph is not None and self.static_x is not None and self.stats is not None
        self.static_x.copy_(x)
        self.static_l1.fill_(l1)
        self.graph.replay()
        return self.stats

    def _update(self) -> StepStats:
        """One whole update from the static inputs (what the graph records)."""
        t = self.trainer
        sae, cfg = t.sae, t.cfg
        assert self.static_x is not None
        if sae.architecture == "relu":
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.autocast_bf16):
                stats = autograd_step_grads(
                    sae, self.static_x, self.static_l1, cfg.l1_scaling, full_stats=True,
                    exceed_threshold=t.fire_threshold,
                )  # fmt: skip
        else:
            stats = sae.step_grads(self.static_x, full_stats=True, exceed_threshold=t.fire_threshold)
        project_decoder_grad(sae)
        t.optimizer.step()
        architectures.normalize_after_step(sae)
        return stats

    def _capture(self, x: torch.Tensor) -> None:
        t = self.trainer
        self.static_x = x.detach().clone()
        self.static_l1.fill_(t.l1_at(t.state.step))
        params = [p.detach().clone() for p in t.sae.parameters()]
        buffers = [b.detach().clone() for b in t.sae.buffers()]
        had_state = {p: {k: v.clone() for k, v in s.items()} for p, s in t.optimizer.state.items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(side):
                for _ in range(WARMUP_UPDATES):
                    self._update()
        finally:
            torch.cuda.current_stream().wait_stream(side)
            self._undo_warmup(params, buffers, had_state)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.stats = self._update()
        log.info("training.capture: the update of %s captured as a CUDA graph", type(t.sae).__name__)

    @torch.no_grad()
    def _undo_warmup(self, params: list, buffers: list, had_state: dict) -> None:
        """Parameters, buffers and Adam state back to before the warm-up, written in place (the graph
        keeps their addresses). Adam state the warm-up created (a fresh run) becomes a fresh state:
        zero moments and step count."""
        t = self.trainer
        for p, saved in zip(t.sae.parameters(), params, strict=True):
            p.copy_(saved)
        for b, saved in zip(t.sae.buffers(), buffers, strict=True):
            b.copy_(saved)
        for p, state in t.optimizer.state.items():
            before = had_state.get(p, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    value.copy_(before[key]) if key in before else value.zero_()
        for p in t.sae.parameters():
            if p.grad is not None:
                p.grad.zero_()
