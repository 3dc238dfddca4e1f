"""`sae_core.export`, the import path earlier versions documented, kept as a thin re-export.

Its code (the SAE's files) lives in `sae_core.saes`; new code imports from there."""

from sae_core.saes.export import (
    SAELENS_DIR,
    export_saelens,
    hook_name_for_layer,
    load_run,
    load_saelens_export,
    saelens_cfg,
    save_pth,
    weights_path,
)

__all__ = [
    "SAELENS_DIR",
    "export_saelens",
    "hook_name_for_layer",
    "load_run",
    "load_saelens_export",
    "saelens_cfg",
    "save_pth",
    "weights_path",
]
