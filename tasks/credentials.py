"""Credentials: before any work, the ones a config names are ones this worker's operator allows; in a
task, their values (`resolve_secret`).

The checks read this process's environment (`sae_core.config.credentials`), so they run where the keys
are read: the CLI before it starts a server, a local sweep, and each `train-cell` run on a pool worker.
"""

from __future__ import annotations

import logging
import os

from sae_core.config import HUB_TOKENS, LABELING_KEYS, KeyPolicy, SweepConfig, check_key_source

log = logging.getLogger(__name__)


def check_label_key(cfg: SweepConfig) -> None:
    """The labelling key's variable or block is allowed here for the configured endpoint."""
    from sae_core.labels import endpoint_url

    lab = cfg.labeling
    if lab.enabled:
        check_key_source(LABELING_KEYS, lab.api_key_env, lab.api_key_secret_block, endpoint_url(lab.base_url))


def check_credentials(cfg: SweepConfig) -> None:
    """The key names of the stages that will run (labelling, upload) are allowed here."""
    check_label_key(cfg)
    if cfg.upload.repo_id:
        check_key_source(HUB_TOKENS, cfg.upload.token_env, cfg.upload.token_secret_block)


# Secrets: from the environment, else a Prefect Secret block; never parameters, logs or artifacts.


def resolve_secret(
    env_name: str | None, block_name: str | None, policy: KeyPolicy, url: str | None = None
) -> str | None:
    """The secret's value, or None when neither the variable nor the block is set. The names must be on
    the worker's allow-list for `policy` (`sae_core.config.credentials`; with `url`, bound to its host
    or to none). Called inside tasks only: the value is never a parameter that Prefect records."""
    check_key_source(policy, env_name, block_name, url)
    if env_name and os.environ.get(env_name):
        return os.environ[env_name]
    if block_name:
        from prefect.blocks.system import Secret

        try:
            value = Secret.load(block_name).get()
        except ValueError:
            log.warning("Prefect Secret block %r not found", block_name)
            return None
        return str(value) if value else None
    return None
