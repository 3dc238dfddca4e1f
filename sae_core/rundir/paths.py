"""Where a run directory's files are (`runs/<sweep>/<cell>/`; docs/architecture.md, "Files on disk")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

METRICS = "metrics.json"
ANALYSIS = "analysis.json"
LABELS = "labels.json"
LABELS_PARQUET = "labels.parquet"
TRAIN_LOG = "train_log.parquet"
CHECKPOINT = "checkpoint.pt"
SAELENS_DIR = "saelens"
FEATURES_DIR = "features"
BROWSER = "browser.html"
WEIGHTS_GLOB = "model_weights_*.pth"

# The analysis's outputs a later stage reads; analysis.json is written last, the others before it.
ANALYSIS_OUTPUTS = (
    ANALYSIS,
    f"{FEATURES_DIR}/feature_stats.parquet",
    f"{FEATURES_DIR}/selected.json",
    f"{FEATURES_DIR}/examples.parquet",
    f"{FEATURES_DIR}/top_examples.parquet",
)


@dataclass(frozen=True)
class RunDir:
    """One cell's run directory and the paths of its files (nothing is read or created here)."""

    path: Path

    @classmethod
    def of(cls, path: str | Path) -> RunDir:
        return cls(Path(path))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def analysis(self) -> Path:
        return self.path / ANALYSIS

    @property
    def labels(self) -> Path:
        return self.path / LABELS

    @property
    def labels_parquet(self) -> Path:
        return self.path / LABELS_PARQUET

    @property
    def train_log(self) -> Path:
        return self.path / TRAIN_LOG

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def saelens(self) -> Path:
        return self.path / SAELENS_DIR

    @property
    def features(self) -> Path:
        return self.path / FEATURES_DIR

    @property
    def feature_stats(self) -> Path:
        return self.features / "feature_stats.parquet"

    @property
    def selected(self) -> Path:
        return self.features / "selected.json"

    @property
    def examples(self) -> Path:
        return self.features / "examples.parquet"

    @property
    def top_examples(self) -> Path:
        return self.features / "top_examples.parquet"

    @property
    def scoring_examples(self) -> Path:
        return self.features / "scoring_examples.parquet"

    @property
    def neighbors(self) -> Path:
        return self.features / "neighbors.parquet"

    @property
    def correlation(self) -> Path:
        return self.features / "correlation.json"

    @property
    def browser(self) -> Path:
        return self.path / BROWSER

    def weights(self, weights_filename: str) -> Path:
        """The cell's `.pth` (`Cell.weights_filename`, e.g. `model_weights_8x_0.0001_sampling.pth`)."""
        return self.path / weights_filename

    def weight_files(self) -> list[Path]:
        """Every `model_weights_*.pth` in the directory, sorted."""
        return sorted(self.path.glob(WEIGHTS_GLOB))
