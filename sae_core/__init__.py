"""sae-sweep's science: activation stores, sparse autoencoders, training, analysis, labels, reports.

A plain library (torch, transformers, datasets, pyarrow): it never imports Prefect and works from a
notebook. The Prefect tasks in `tasks/` are thin wrappers around its functions.
"""

from sae_core.version import PACKAGE_VERSION as __version__

__all__ = ["__version__"]
