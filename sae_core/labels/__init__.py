"""Labels: one LLM request per selected feature with its examples (any OpenAI-compatible endpoint), the
answer parsed into a 2–8 word label or POLYSEMANTIC, the monosemanticity rate, labeller health, and
optional detection and fuzzing scores (delphi's conventions, class-balanced, failures counted)."""

from sae_core.labels.client import (
    PROMPT_VERSION,
    LabelAttemptError,
    LabelExample,
    LabelResult,
    Repair,
    SchemaSupport,
    endpoint_url,
    label_feature,
    make_client,
    scrub,
)
from sae_core.labels.files import (
    SCORE_FIELDS,
    FeatureInputs,
    LabelInputs,
    conservative_rate,
    examples_hash,
    labels_frame,
    load_label_inputs,
    load_scoring_windows,
    monosemanticity,
    write_labels,
)
from sae_core.labels.health import health_flags, health_summary
from sae_core.labels.scoring import ScoreCounts, ScoringItem, ScoringWindow, score_explanation, scoring_items

__all__ = [
    "PROMPT_VERSION",
    "SCORE_FIELDS",
    "FeatureInputs",
    "LabelAttemptError",
    "LabelExample",
    "LabelInputs",
    "LabelResult",
    "Repair",
    "SchemaSupport",
    "ScoreCounts",
    "ScoringItem",
    "ScoringWindow",
    "conservative_rate",
    "endpoint_url",
    "examples_hash",
    "health_flags",
    "health_summary",
    "label_feature",
    "labels_frame",
    "load_label_inputs",
    "load_scoring_windows",
    "make_client",
    "monosemanticity",
    "score_explanation",
    "scoring_items",
    "scrub",
    "write_labels",
]
