"""Analysis: a trained SAE over held-out tokens — exact feature statistics, selectivity, examples,
correlation and neighbours, reconstruction metrics and CE loss recovered — written to the run dir."""

from sae_core.analysis.driver import analyze_run, load_sae
from sae_core.analysis.preflight import PreflightResult, check_run, preflight_export

__all__ = ["PreflightResult", "analyze_run", "check_run", "load_sae", "preflight_export"]
