"""Which credentials a run's config may name: an allow-list the worker's operator sets, per purpose.

A config (and so a deployment's `overrides`, or `--set`) names the environment variable or the Prefect
Secret block that holds a key; without a bound, `labeling.api_key_env=HF_TOKEN` plus a `base_url` of
one's own sends the worker's Hub token anywhere. So each purpose has an allow-list in the worker's
environment that a run can choose from but never widen: variable names (defaults below) and Secret
block names (none by default). An entry `NAME@host1|host2` also binds a labelling key to the hosts
it may be sent to; a bare `NAME` may go to whatever host `labeling.base_url` names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from sae_core.config.base import ConfigError

LLM_KEY_ENVS = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "OPENROUTER_API_KEY",
    "TOGETHER_API_KEY",
    "GROQ_API_KEY",
    "MISTRAL_API_KEY",
    "DEEPSEEK_API_KEY",
    "FIREWORKS_API_KEY",
    "GEMINI_API_KEY",
    "LLM_API_KEY",
)
"""Default labelling key variables: the conventional names of LLM providers' keys (and a generic one
for a self-hosted endpoint). None of them holds a Hub, WandB, Prefect or cloud credential."""

HF_TOKEN_ENVS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


@dataclass(frozen=True)
class KeyPolicy:
    """The allow-list of one purpose: which config fields name its key and which operator variables
    widen or narrow it."""

    purpose: str
    env_field: str
    block_field: str
    envs_var: str
    blocks_var: str
    default_envs: tuple[str, ...]


LABELING_KEYS = KeyPolicy(
    "the labelling key",
    "labeling.api_key_env",
    "labeling.api_key_secret_block",
    "SAE_SWEEP_ALLOWED_KEY_ENVS",
    "SAE_SWEEP_ALLOWED_KEY_BLOCKS",
    LLM_KEY_ENVS,
)
HUB_TOKENS = KeyPolicy(
    "the Hub token",
    "upload.token_env",
    "upload.token_secret_block",
    "SAE_SWEEP_ALLOWED_HF_TOKEN_ENVS",
    "SAE_SWEEP_ALLOWED_HF_TOKEN_BLOCKS",
    HF_TOKEN_ENVS,
)


def _entries(raw: str | None, default: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """`NAME` or `NAME@host|host`, comma-separated → name → bound hosts (empty: any host)."""
    if raw is None:
        return {name: () for name in default}
    out: dict[str, tuple[str, ...]] = {}
    for item in raw.split(","):
        name, _, hosts = item.strip().partition("@")
        if name:
            out[name] = tuple(h.strip().lower() for h in hosts.split("|") if h.strip())
    return out


def allowed_envs(policy: KeyPolicy) -> dict[str, tuple[str, ...]]:
    return _entries(os.environ.get(policy.envs_var), policy.default_envs)


def allowed_blocks(policy: KeyPolicy) -> dict[str, tuple[str, ...]]:
    return _entries(os.environ.get(policy.blocks_var), ())


def url_host(url: str) -> str:
    """The host a URL sends to (lowercase, no port, no credentials)."""
    return (urlsplit(url).hostname or "").lower()


def check_key_source(
    policy: KeyPolicy, env_name: str | None, block_name: str | None, url: str | None = None
) -> None:
    """Fail with one line when the config names a variable or block the operator has not allowed for
    this purpose, or (with `url`) one bound to other hosts than `url`'s."""
    checks = (
        (env_name, policy.env_field, policy.envs_var, allowed_envs(policy)),
        (block_name, policy.block_field, policy.blocks_var, allowed_blocks(policy)),
    )
    for name, field, var, allowed in checks:
        if not name:
            continue
        if name not in allowed:
            shown = ", ".join(sorted(allowed)) or "none"
            raise ConfigError(
                f"{field}: {name!r} is not allowed for {policy.purpose} on this worker (allowed: {shown}); "
                f"the worker's operator allows it by adding it to ${var} (comma-separated) in the "
                "worker's environment"
            )
        hosts = allowed[name]
        if url is not None and hosts and url_host(url) not in hosts:
            raise ConfigError(
                f"{field}: {name!r} may only be sent to {', '.join(hosts)} on this worker, not to "
                f"{url_host(url) or url!r}; the worker's operator binds it to other hosts in ${var} "
                f"({name}@host|host)"
            )
