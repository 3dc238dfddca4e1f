"""Analysis: a trained SAE over held-out tokens — exact feature statistics, selectivity, examples,
correlation and neighbours, reconstruction metrics and CE loss recovered — written to the run dir."""

from sae_core.analysis.driver import analyze_run, load_sae

__all__ = ["analyze_run", "load_sae"]
