"""Report: the study's tables and plots from a sweep's cells (report.md, a self-contained report.html,
tables.json) and the static feature browser of each cell."""

from sae_core.report.browser import BROWSER_INPUTS, write_browser, write_browsers
from sae_core.report.build import build_report
from sae_core.report.card import card_legend, card_notes, card_rows, loading_snippet
from sae_core.report.cells import CELL_METRICS, REPORT_DIRNAME, collect_cells
from sae_core.report.compare import sparsity_text
from sae_core.report.render import ui_markdown

__all__ = [
    "BROWSER_INPUTS",
    "CELL_METRICS",
    "REPORT_DIRNAME",
    "build_report",
    "card_legend",
    "card_notes",
    "card_rows",
    "collect_cells",
    "loading_snippet",
    "sparsity_text",
    "ui_markdown",
    "write_browser",
    "write_browsers",
]
