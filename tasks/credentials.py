"""Before any work: the credentials a config names are ones this worker's operator allows.

The checks read this process's environment (`sae_core.config.credentials`), so they run where the keys
are read: the CLI before it starts a server, a local sweep, and each `train-cell` run on a pool worker.
"""

from __future__ import annotations

from sae_core.config import HUB_TOKENS, LABELING_KEYS, SweepConfig, check_key_source


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
