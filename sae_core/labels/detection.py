"""Detection scoring (optional): can a feature's label tell its activating contexts from others?

The LLM is shown the label and a shuffled mix of held-out activating contexts (examples not shown when
labelling) and as many contexts of other selected features, assumed non-activating (features are
sparse; contexts with the same text as one of this feature's are excluded). The score is the balanced
accuracy of its picks. ONE attempt per call, failures classified as in `sae_core.labels.client`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from sae_core.labels.client import (
    RejectedLabelError,
    TransientLabelError,
    chat_completion,
    refuses_schema,
)
from sae_core.labels.files import LabelInputs
from sae_core.labels.prompt import (
    DETECTION_SCHEMA,
    MalformedAnswer,
    build_detection_messages,
    parse_detection,
)


@dataclass(frozen=True)
class DetectionSet:
    contexts: tuple[str, ...]
    truth: tuple[bool, ...]
    """Whether each context is one where the feature fired."""


def detection_set(inputs: LabelInputs, feature_id: int, n: int, seed: int = 0) -> DetectionSet | None:
    """Up to n held-out activating contexts of the feature mixed with as many contexts taken from other
    selected features' examples (assumed non-activating: features are sparse, and contexts with the
    same text as one of this feature's are excluded). None when either side is empty."""
    rng = random.Random(f"{seed}-{feature_id}")
    target = next((f for f in inputs.features if f.feature_id == feature_id), None)
    if target is None or not target.heldout:
        return None
    positives = [e.context_text for e in target.heldout]
    rng.shuffle(positives)
    positives = positives[:n]
    own = {e.context_text for e in (*target.examples, *target.heldout)}
    pool = sorted(
        {e.context_text for f in inputs.features if f.feature_id != feature_id for e in f.examples} - own
    )
    if not pool:
        return None
    negatives = rng.sample(pool, min(len(positives), len(pool)))
    mixed = [(c, True) for c in positives] + [(c, False) for c in negatives]
    rng.shuffle(mixed)
    return DetectionSet(tuple(c for c, _ in mixed), tuple(t for _, t in mixed))


def detect_feature(
    client: Any,
    model: str,
    label: str,
    dset: DetectionSet,
    *,
    temperature: float = 0.0,
    timeout: float = 60.0,
    use_json_schema: bool = True,
) -> float:
    """ONE attempt: the model picks the contexts that fit the label; returns the balanced accuracy
    (mean of the hit rate on activating and the correct-rejection rate on non-activating contexts)."""
    schema = DETECTION_SCHEMA if use_json_schema else None
    messages = build_detection_messages(label, dset.contexts, use_json_schema=use_json_schema)
    try:
        text = chat_completion(
            client, model, messages, temperature=temperature, timeout=timeout, schema=schema
        )
    except RejectedLabelError as err:
        if not (use_json_schema and refuses_schema(err)):
            raise
        messages = build_detection_messages(label, dset.contexts)
        text = chat_completion(client, model, messages, temperature=temperature, timeout=timeout, schema=None)
    try:
        picked = parse_detection(text, len(dset.contexts))
    except MalformedAnswer as exc:
        raise TransientLabelError(f"malformed detection answer: {exc}", "malformed") from None
    pos = [i + 1 in picked for i, t in enumerate(dset.truth) if t]
    neg = [i + 1 not in picked for i, t in enumerate(dset.truth) if not t]
    return (sum(pos) / len(pos) + sum(neg) / len(neg)) / 2
