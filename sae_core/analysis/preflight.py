"""Preflight: a run's SAELens export, loaded as a user would load it, computes what the run trained and
measured — checked before it leaves the machine (`sae-sweep check RUN_DIR`) and again on what the Hub
gives back after the upload.

On the first `tokens` held-out rows of the store's `test` split (the rows every reader keeps: BOS,
special and sink tokens left out), the export loaded with SAELens (`SAE.load_from_disk`; sae-sweep's own
reader when sae-lens is not installed, said so) is compared with the run's `.pth`:

- **the same function**: on the same tokens, the share of (token, latent) pairs whose firing differs
  ≤ 0.1 %, and the reconstructions' cosine ≥ 0.9999, EV within 0.001 and L0 within 0.5 % of the `.pth`'s.
  Both are float32 computations of one formula, so anything beyond float error is a broken export: a
  wrong architecture name, a missing or zeroed threshold, a scaled decoder.
- **the run's own figures**: EV within 0.05 and L0 within 15 % of analysis.json's (computed on the
  whole test split: on the demo and SmolLM2 stores 1,024–16,384-token subsets sat within 0.002 EV and
  0.5 % L0 of it, docs/results.md "The preflight"), so a `.pth` and an export that agree with each
  other but not with the run (weights swapped after the analysis) fail too.
- **reconstruction quality** (SAELens' `run_sae_preflight`): mean cosine of x and x̂ below 0.8 fails,
  below 0.9 warns.
- **decoder rows unit-norm**, or 1/s when the activation normalisation s is folded into the weights
  (`metadata.activation_normalization.scale`): anything else fails (SAEBench warns on it).
- **cfg.json**: the architecture SAELens reads is the one the run's architecture exports as.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from sae_core.architectures import SPECS
from sae_core.errors import AnalysisError
from sae_core.io import read_json
from sae_core.rundir import RunDir, read_analysis, read_metrics

Level = Literal["fail", "warn", "info"]

SAME_FIRING_MAX_DIFF = 1e-3
SAME_RECON_COSINE = 0.9999
SAME_EV_ABS = 1e-3
SAME_L0_REL = 5e-3
RUN_EV_ABS = 0.05
RUN_L0_REL = 0.15
COSINE_FAIL, COSINE_WARN = 0.8, 0.9
NORM_TOLERANCE = 1e-3
DEFAULT_TOKENS = 4096


@dataclass
class Finding:
    level: Level
    message: str


@dataclass
class Figures:
    """Reconstruction figures on the preflight's tokens."""

    cosine: float
    """Mean over tokens of cos(x, x̂)."""
    explained_variance: float
    """1 − Σ‖x − x̂‖² / Σ‖x − x̄‖² over the tokens."""
    l0: float
    """Mean number of latents > 0 per token."""


@dataclass
class PreflightResult:
    export: str
    loader: str
    tokens: int
    export_figures: Figures | None = None
    pth_figures: Figures | None = None
    run_figures: dict[str, float | None] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.level == "fail" for f in self.findings)

    def fail(self, message: str) -> None:
        self.findings.append(Finding("fail", message))

    def warn(self, message: str) -> None:
        self.findings.append(Finding("warn", message))

    def lines(self) -> list[str]:
        """The result in a few lines: the verdict, the figures, then each finding."""
        head = f"{'ok' if self.ok else 'FAILED'}: {self.export} ({self.loader}, {self.tokens:,} test tokens)"
        out = [head]
        if self.export_figures is not None:
            f = self.export_figures
            out.append(f"  export: cosine {f.cosine:.4f}, EV {f.explained_variance:.4f}, L0 {f.l0:.2f}")
        if self.pth_figures is not None:
            f = self.pth_figures
            out.append(f"  .pth:   cosine {f.cosine:.4f}, EV {f.explained_variance:.4f}, L0 {f.l0:.2f}")
        if self.run_figures:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in self.run_figures.items() if v is not None)
            out.append(f"  analysis.json (whole test split): {shown or 'no figures'}")
        out += [f"  {f.level}: {f.message}" for f in self.findings]
        return out


def figures(encode_decode: Any, x: torch.Tensor) -> tuple[Figures, torch.Tensor]:
    """(the figures, the latents) of an SAE given as `encode_decode(x) -> (x̂, h)`."""
    with torch.no_grad():
        x_hat, h = encode_decode(x)
        cosine = torch.nn.functional.cosine_similarity(x, x_hat, dim=1).mean()
        err = (x - x_hat).pow(2).sum()
        total = (x - x.mean(dim=0)).pow(2).sum()
        l0 = (h > 0).float().sum(dim=1).mean()
    ev = float(1 - err / total) if float(total) > 0 else float("nan")
    return Figures(float(cosine), ev, float(l0)), h


def held_out_tokens(store_path: str | Path, tokens: int) -> torch.Tensor:
    """The first `tokens` rows of the store's test split that the readers keep, float32."""
    from sae_core.store import ActivationStore

    store = ActivationStore.open(store_path)
    rows: list[torch.Tensor] = []
    have = 0
    for batch in store.batches("test", batch_size=min(tokens, 4096), shuffle=False):
        rows.append(batch[: tokens - have])
        have += rows[-1].shape[0]
        if have >= tokens:
            break
    if not rows:
        raise AnalysisError(f"check: the store {store_path} has no test tokens to check on")
    return torch.cat(rows).float()


def _saelens_loader(export: Path) -> tuple[Any, str]:
    """(encode_decode, which loader) for the export: SAELens's own when installed."""
    try:
        import sae_lens
    except ImportError:
        sae_lens = None
    if sae_lens is not None:
        theirs = sae_lens.SAE.load_from_disk(str(export), device="cpu")
        theirs.eval()

        def run_theirs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = theirs.encode(x)
            return theirs.decode(h), h

        return run_theirs, f"SAELens {sae_lens.__version__} {type(theirs).__name__}"
    from sae_core.saes.export import load_saelens_export

    ours: Any = load_saelens_export(export)
    return (lambda x: ours(x)[:2]), "sae-sweep's reader (sae-lens not installed)"


def _check_decoder_norms(result: PreflightResult, w_dec: torch.Tensor, cfg: dict[str, Any]) -> None:
    norms = w_dec.detach().float().norm(dim=1)
    norm_info = (cfg.get("metadata") or {}).get("activation_normalization") or {}
    scale = norm_info.get("scale") if isinstance(norm_info, dict) else None
    if torch.all((norms - 1).abs() <= NORM_TOLERANCE):
        return
    if (
        isinstance(scale, int | float)
        and scale > 0
        and torch.all((norms * scale - 1).abs() <= NORM_TOLERANCE)
    ):
        return  # unit-norm rows with the normalisation s folded in: norm 1/s
    folded = f" or 1/s = {1 / scale:.6g} (s folded in)" if isinstance(scale, int | float) and scale else ""
    result.fail(
        f"decoder rows: norms span {float(norms.min()):.6g}–{float(norms.max()):.6g}, not 1{folded}: "
        "a scaled or corrupted decoder"
    )


def preflight_export(
    export: str | Path,
    x: torch.Tensor,
    *,
    architecture: str | None = None,
    pth_sae: Any = None,
    run_figures: dict[str, float | None] | None = None,
) -> PreflightResult:
    """Check the SAELens folder `export` on tokens `x` against the run's `.pth` SAE (`pth_sae`) and the
    run's analysis figures (`run_figures`: `explained_variance`, `l0`), each optional."""
    export = Path(export)
    result = PreflightResult(str(export), "not loaded", int(x.shape[0]), run_figures=dict(run_figures or {}))
    try:
        cfg = read_json(export / "cfg.json")
    except (OSError, ValueError) as exc:
        result.fail(f"cfg.json: cannot be read ({exc}); export the run again (`sae-sweep train` resumes)")
        return result
    if architecture is not None:
        expected = SPECS[architecture].saelens_architecture
        if cfg.get("architecture") != expected:
            result.fail(
                f"cfg.json: architecture {cfg.get('architecture')!r}, but a {architecture} SAE exports as "
                f"{expected!r}: SAELens would load it as the wrong SAE"
            )
    try:
        encode_decode, result.loader = _saelens_loader(export)
    except Exception as exc:
        result.fail(f"the export does not load: {type(exc).__name__}: {exc}")
        return result
    try:
        theirs, h_theirs = figures(encode_decode, x)
    except Exception as exc:
        result.fail(f"the loaded export cannot encode the store's tokens: {type(exc).__name__}: {exc}")
        return result
    result.export_figures = theirs
    if not math.isfinite(theirs.cosine) or theirs.cosine < COSINE_FAIL:
        result.fail(f"reconstruction cosine {theirs.cosine:.4f} < {COSINE_FAIL}")
    elif theirs.cosine < COSINE_WARN:
        result.warn(f"reconstruction cosine {theirs.cosine:.4f} < {COSINE_WARN}")
    from safetensors.torch import load_file

    try:
        weights = load_file(str(export / "sae_weights.safetensors"))
        _check_decoder_norms(result, weights["W_dec"], cfg)
    except Exception as exc:
        result.fail(f"sae_weights.safetensors: W_dec cannot be read ({type(exc).__name__}: {exc})")
    if pth_sae is not None:
        ours, h_ours = figures(lambda t: pth_sae(t)[:2], x)
        result.pth_figures = ours
        _compare_same(result, ours, theirs, h_ours, h_theirs)
    for key, value in result.run_figures.items():
        _compare_run(result, key, value, theirs)
    return result


def _compare_same(
    result: PreflightResult,
    ours: Figures,
    theirs: Figures,
    h_ours: torch.Tensor,
    h_theirs: torch.Tensor,
) -> None:
    if h_ours.shape != h_theirs.shape:
        result.fail(f"latents: the export has {h_theirs.shape[1]} latents, the .pth {h_ours.shape[1]}")
        return
    differ = float(((h_ours > 0) != (h_theirs > 0)).float().mean())
    if differ > SAME_FIRING_MAX_DIFF:
        result.fail(f"latents: {100 * differ:.2f} % of (token, latent) firings differ from the .pth's")
    if abs(ours.explained_variance - theirs.explained_variance) > SAME_EV_ABS:
        result.fail(
            f"EV: the export's {theirs.explained_variance:.4f} is not the .pth's "
            f"{ours.explained_variance:.4f}"
        )
    if abs(ours.l0 - theirs.l0) > SAME_L0_REL * max(ours.l0, 1e-9):
        result.fail(f"L0: the export's {theirs.l0:.3f} is not the .pth's {ours.l0:.3f}")
    if abs(ours.cosine - theirs.cosine) > 1 - SAME_RECON_COSINE:
        result.fail(f"cosine: the export's {theirs.cosine:.5f} is not the .pth's {ours.cosine:.5f}")


def _compare_run(result: PreflightResult, key: str, value: float | None, theirs: Figures) -> None:
    if value is None:
        return
    if key == "explained_variance" and abs(theirs.explained_variance - value) > RUN_EV_ABS:
        result.fail(
            f"EV {theirs.explained_variance:.4f} here, {value:.4f} in analysis.json (tolerance {RUN_EV_ABS})"
        )
    if key == "l0" and abs(theirs.l0 - value) > RUN_L0_REL * max(value, 1e-9):
        result.fail(f"L0 {theirs.l0:.3f} here, {value:.3f} in analysis.json (tolerance {RUN_L0_REL:.0%})")


def check_run(
    run_dir: str | Path,
    *,
    store: str | Path | None = None,
    export: str | Path | None = None,
    tokens: int = DEFAULT_TOKENS,
) -> PreflightResult:
    """Preflight a run dir's SAELens export (or `export`, e.g. the folder the Hub gave back) on the run's
    store (metrics.json's, or `store`) against its `.pth` and analysis.json."""
    from sae_core.saes.export import SAELENS_DIR, load_run

    run = RunDir(Path(run_dir))
    metrics = read_metrics(run)
    if metrics is None:
        raise AnalysisError(f"check: {run.metrics} is missing: {run_dir} is not a trained run dir")
    store_path = Path(store) if store is not None else Path(metrics.store or "")
    if not (store_path / "manifest.json").is_file():
        raise AnalysisError(
            f"check: the run's store {store_path} is not here; pass the store with --activations"
        )
    pth_sae, _ = load_run(run_dir)
    analysis = read_analysis(run)
    run_figures = (
        {"explained_variance": analysis.explained_variance, "l0": analysis.l0} if analysis is not None else {}
    )
    x = held_out_tokens(store_path, tokens)
    result = preflight_export(
        export if export is not None else Path(run_dir) / SAELENS_DIR,
        x,
        architecture=metrics.architecture or "relu",
        pth_sae=pth_sae,
        run_figures=run_figures,
    )
    if analysis is None:
        result.warn("analysis.json is missing: checked against the .pth only")
    return result
