"""Hooks into a training run: the base `TrainCallback` and the progress-bar one. Tracking (WandB) and the
Prefect tasks subclass it; the trainer only calls it, so none of them is imported by the trainer."""

from __future__ import annotations

from pathlib import Path

from sae_core.progress import Progress


class TrainCallback:
    """Hooks into a training run; every method is a no-op here, override the ones you need."""

    def on_start(self, total_steps: int, info: dict) -> None: ...
    def on_log(self, step: int, metrics: dict) -> None: ...
    def on_validation(self, step: int, metrics: dict) -> None: ...
    def on_resample(self, step: int, neurons: int) -> None: ...
    def on_checkpoint(self, step: int, path: Path) -> None: ...
    def on_end(self, metrics: dict) -> None: ...


class ProgressCallback(TrainCallback):
    """Feeds a `Progress` (tqdm in the CLI, a Prefect artifact in tasks): tokens, tok/s, loss, L0, dead %."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.total_tokens: int | None = None

    def on_start(self, total_steps: int, info: dict) -> None:
        self.total_tokens = total_steps * int(info["batch_size"])
        self.progress(int(info.get("tokens", 0)), self.total_tokens, {})

    def on_log(self, step: int, metrics: dict) -> None:
        figures = {"tok/s": round(metrics.get("tokens_per_s", 0.0)), **progress_figures(metrics)}
        self.progress(int(metrics["tokens"]), self.total_tokens, figures)


WINDOW_DEAD_LABEL = "dead % (training window)"
"""How the report, the UI and the logs name a training log row's dead fraction (the window rule)."""


def progress_figures(metrics: dict) -> dict[str, float]:
    """Loss, L0 and the window's dead % (`round(100 * x, 1)`) of a training log row, labelled for display."""
    return {
        "loss": float(metrics["loss"]),
        "L0": float(metrics["l0"]),
        WINDOW_DEAD_LABEL: round(100 * float(metrics["window_dead_fraction"]), 1),
    }
