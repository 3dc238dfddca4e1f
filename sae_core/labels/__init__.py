"""Labels: one LLM request per selected feature with its examples (any OpenAI-compatible endpoint), the
answer parsed into a 2–8 word label or POLYSEMANTIC, the monosemanticity rate, optional detection scoring."""

from sae_core.labels.client import (
    PROMPT_VERSION,
    LabelAttemptError,
    LabelExample,
    LabelResult,
    Repair,
    endpoint_url,
    label_feature,
    make_client,
    scrub,
)
from sae_core.labels.detection import DetectionSet, detect_feature, detection_set
from sae_core.labels.files import (
    FeatureInputs,
    LabelInputs,
    conservative_rate,
    examples_hash,
    labels_frame,
    load_label_inputs,
    monosemanticity,
    write_labels,
)

__all__ = [
    "PROMPT_VERSION",
    "DetectionSet",
    "FeatureInputs",
    "LabelAttemptError",
    "LabelExample",
    "LabelInputs",
    "LabelResult",
    "Repair",
    "conservative_rate",
    "detect_feature",
    "detection_set",
    "endpoint_url",
    "examples_hash",
    "label_feature",
    "labels_frame",
    "load_label_inputs",
    "make_client",
    "monosemanticity",
    "scrub",
    "write_labels",
]
