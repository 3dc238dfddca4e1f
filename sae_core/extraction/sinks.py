"""Attention sinks and special tokens at extraction: whether to prepend the tokenizer's BOS, and which
rows the store's readers will leave out (`sae_core.store.left_out` measures and records them).

A decoder LM puts an attention sink on its first position: a row with a norm tens to hundreds of times
the median (GPT-2 small's position 0; SmolLM2-135M's, and in 11 of 1,200 documents its position 1, at
5k–24k against a median of 154). Such rows dominate the residual variance (8 training tokens carried 70 %
of it), so explained variance and "most selective" features end up measuring them. A prepended BOS
gives the sink a row of its own (on SmolLM2 it removed every later sink in 31 documents checked); that
row, the other special tokens and any remaining sink are left out of every read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sae_core.config import ConfigError
from sae_core.config.extraction import ExtractionConfig
from sae_core.store.left_out import LeftOutRules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BosPlan:
    """What extraction does about the tokenizer's BOS (recorded in the manifest's `bos`)."""

    setting: str
    prepend: bool
    token_id: int | None
    token: str | None
    reason: str

    def manifest(self) -> dict[str, Any]:
        return {
            "setting": self.setting,
            "prepended": self.prepend,
            "token_id": self.token_id,
            "token": self.token,
            "reason": self.reason,
        }


def plan_bos(tokenizer: Any, setting: str | bool) -> BosPlan:
    """Resolve `extraction.prepend_bos` against the tokenizer. `auto` prepends when the tokenizer
    declares a `bos_token` and its own encoding does not start with it; `true` requires a declared one."""
    name = "auto" if setting == "auto" else str(bool(setting)).lower()
    token = getattr(tokenizer, "bos_token", None)
    token_id = getattr(tokenizer, "bos_token_id", None)
    if setting is False:
        return BosPlan(name, False, token_id, token, "extraction.prepend_bos is false")
    if token is None or token_id is None:
        if setting is True:
            raise ConfigError(
                "extraction.prepend_bos: the tokenizer declares no bos_token; set auto or false (got true)"
            )
        return BosPlan(name, False, None, None, "the tokenizer declares no bos_token")
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    if probe and probe[0] == token_id:
        return BosPlan(name, False, int(token_id), token, "the tokenizer adds its bos_token itself")
    return BosPlan(name, True, int(token_id), token, "the tokenizer declares a bos_token and adds none")


def left_out_rules(tokenizer: Any, bos: BosPlan, ext: ExtractionConfig) -> LeftOutRules:
    """The rules the store's readers apply, from the extraction's settings and its tokenizer."""
    special: tuple[int, ...] = ()
    if ext.exclude_special_tokens:
        special = tuple(int(i) for i in getattr(tokenizer, "all_special_ids", []) or [])
    return LeftOutRules(
        bos_prepended=bos.prepend,
        special_token_ids=special,
        sink_norm_multiple=ext.sink_norm_multiple,
        sink_max_position=ext.sink_max_position,
    )
