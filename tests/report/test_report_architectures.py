"""The report's architecture comparison (issue 13 item 7): a sweep with TopK/BatchTopK/JumpReLU cells gets
the frontier plots, dead % and monosemanticity by architecture × strategy × width, and a per-cell table
naming each cell's architecture and sparsity; a relu-only sweep's report has none of it."""

from __future__ import annotations

import json

import pytest

from sae_core.config import load_config
from sae_core.naming import Cell
from sae_core.report.build import build_report
from sae_core.report.frontier import FRONTIER_PLOTS
from sae_core.report.render import ARCHITECTURES_TITLE, ui_markdown
from tests.report.test_report_data import fabricate_cell, fabricate_sweep

GRID = {
    "grid.expansion_factors": [2, 4],
    "grid.architectures": ["relu", "topk", "batchtopk", "jumprelu"],
    "grid.l1_coefficients": [0.01, 0.001],
    "grid.k_values": [8, 16],
    "grid.l0_coefficients": [0.01, 0.001],
    "grid.strategies": ["nosampling", "sampling", "auxk"],
}
UNLABELLED = "2x_batchtopk16_auxk"


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    from sae_core.naming import grid_cells

    cfg = load_config("demo", overrides=GRID)
    sweep = tmp_path_factory.mktemp("mixed") / "runs" / "demo"
    cells = grid_cells(cfg.grid)
    for i, cell in enumerate(cells):
        fabricate_cell(sweep, cell, seed=i, labels="none" if cell.name == UNLABELLED else "ok")
    out = build_report(sweep, cfg)
    return sweep, cells, out, json.loads((out / "tables.json").read_text())


def _analysis(sweep, name):
    return json.loads((sweep / name / "analysis.json").read_text())


def test_grid_of_four_architectures_has_every_cell(mixed):
    _, cells, _, doc = mixed
    # relu 2 λ × 2 strategies, topk and batchtopk 2 k × 3, jumprelu 2 coefficients × 2; two widths
    assert len(cells) == 2 * (4 + 6 + 6 + 4) == len(doc["cells"])


def test_dead_table_by_architecture_strategy_and_width(mixed):
    sweep, _, _, doc = mixed
    table = doc["architectures"]["tables"]["dead_pct_by_architecture"]
    assert "dead % (>0.07, test tokens)" in table["title"]
    assert [(r["architecture"], r["sparsity"]) for r in table["rows"]] == [
        ("relu", "λ=0.01"), ("relu", "λ=0.001"), ("topk", "k=8"), ("topk", "k=16"),
        ("batchtopk", "k=8"), ("batchtopk", "k=16"), ("jumprelu", "L0 coeff=0.01"),
        ("jumprelu", "L0 coeff=0.001"),
    ]  # fmt: skip
    assert [(c["expansion"], c["strategy"]) for c in table["columns"]] == [
        (w, s) for w in (2, 4) for s in ("nosampling", "sampling", "auxk")
    ]
    names = {
        ("relu", "λ=0.01"): "0.01", ("relu", "λ=0.001"): "0.001", ("topk", "k=8"): "topk8",
        ("topk", "k=16"): "topk16", ("batchtopk", "k=8"): "batchtopk8", ("batchtopk", "k=16"): "batchtopk16",
        ("jumprelu", "L0 coeff=0.01"): "jumprelu0.01", ("jumprelu", "L0 coeff=0.001"): "jumprelu0.001",
    }  # fmt: skip
    for i, row in enumerate(table["rows"]):
        for j, col in enumerate(table["columns"]):
            name = f"{col['expansion']}x_{names[(row['architecture'], row['sparsity'])]}_{col['strategy']}"
            if col["strategy"] == "auxk" and row["architecture"] in ("relu", "jumprelu"):
                assert table["values"][i][j] is None and table["notes"][i][j] == "n/a"
            else:
                expected = _analysis(sweep, name)["dead_fraction"] * 100
                assert table["values"][i][j] == pytest.approx(expected), name


def test_architecture_tables_lead_with_the_threshold_free_never_fired_pct(mixed):
    """An absolute threshold judges L1-shrunk relu and unshrunk topk activations alike: the first dead
    table compares never-fired % (no activation > 0 on the same tokens) and says so."""
    sweep, _, _, doc = mixed
    tables = doc["architectures"]["tables"]
    assert list(tables)[:2] == ["never_fired_pct_by_architecture", "dead_pct_by_architecture"]
    table = tables["never_fired_pct_by_architecture"]
    assert "never fired % (no activation > 0" in table["title"] and "L1 shrinkage" in table["title"]
    assert "confounded" in tables["dead_pct_by_architecture"]["title"]
    col = table["columns"].index({"expansion": 2, "strategy": "sampling"})
    row = table["rows"].index({"architecture": "topk", "sparsity": "k=8"})
    expected = _analysis(sweep, "2x_topk8_sampling")["never_fired_fraction"] * 100
    assert table["values"][row][col] == pytest.approx(expected)


def test_monosemanticity_by_architecture_where_labelled(mixed):
    sweep, _, _, doc = mixed
    table = doc["architectures"]["tables"]["monosemanticity_pct_by_architecture"]
    row = [(r["architecture"], r["sparsity"]) for r in table["rows"]].index(("batchtopk", "k=16"))
    col = [(c["expansion"], c["strategy"]) for c in table["columns"]].index((2, "auxk"))
    assert table["values"][row][col] is None
    assert table["notes"][row][col] == "missing (no labels.json)"
    col = [(c["expansion"], c["strategy"]) for c in table["columns"]].index((4, "auxk"))
    rate = json.loads((sweep / "4x_batchtopk16_auxk" / "labels.json").read_text())["monosemanticity_rate"]
    assert table["values"][row][col] == pytest.approx(100 * rate)


def test_per_cell_rows_name_architecture_and_sparsity(mixed):
    sweep, _, out, doc = mixed
    rows = {r["cell"]: r for r in doc["cells"]}
    assert rows["4x_topk16_auxk"]["architecture"] == "topk"
    assert rows["4x_topk16_auxk"]["sparsity"] == "k=16"
    assert rows["2x_jumprelu0.001_sampling"]["sparsity"] == "L0 coeff=0.001"
    assert rows["2x_0.01_sampling"]["architecture"] == "relu"
    assert rows["2x_0.01_sampling"]["sparsity"] == "λ=0.01"
    analysis = _analysis(sweep, "4x_batchtopk8_nosampling")
    row = rows["4x_batchtopk8_nosampling"]
    assert row["l0"] == pytest.approx(analysis["l0"])
    assert row["explained_variance"] == pytest.approx(analysis["explained_variance"])
    assert row["ce_recovered"] == pytest.approx(analysis["ce_loss"]["recovered"])
    assert row["dead_pct"] == pytest.approx(100 * analysis["dead_fraction"])
    md = (out / "report.md").read_text()
    head = next(line for line in md.splitlines() if line.startswith("| cell |"))
    assert head.startswith("| cell | architecture | sparsity | dead % (>0.07, test tokens) |")
    line = next(line for line in md.splitlines() if line.startswith("| 4x_batchtopk8_nosampling |"))
    assert line.startswith(f"| 4x_batchtopk8_nosampling | batchtopk | k=8 | {row['dead_pct']:.1f}% |")


def test_what_each_number_was_computed_on(mixed):
    _, _, out, doc = mixed
    said = doc["architectures"]["computed_on"]
    # the fabricated analysis: test split, 100,000 tokens; CE on 32 documents, 4,000 tokens
    assert "test split (100,000 tokens per cell)" in said
    assert "32 test documents (4,000 tokens)" in said
    assert "dead % (>0.07, test tokens)" in said
    assert said in (out / "report.md").read_text()


def test_frontier_curves_per_architecture_and_strategy(mixed):
    from sae_core.report.cells import collect_cells
    from sae_core.report.frontier import frontier_points

    sweep, _, out, doc = mixed
    points = frontier_points(collect_cells(sweep, load_config("demo", overrides=GRID)), "explained variance")
    assert sorted(points) == [2, 4]
    assert sorted(points[4]) == sorted(
        [(a, s) for a in ("relu", "jumprelu") for s in ("nosampling", "sampling")]
        + [(a, s) for a in ("topk", "batchtopk") for s in ("nosampling", "sampling", "auxk")]
    )
    curve = points[4][("topk", "auxk")]
    expected = sorted(
        (_analysis(sweep, n)["l0"], _analysis(sweep, n)["explained_variance"])
        for n in ("4x_topk8_auxk", "4x_topk16_auxk")
    )
    assert len(curve) == len(expected)
    # Flattened: pytest.approx compares flat sequences only (some versions refuse a list of pairs).
    assert [v for point in curve for v in point] == pytest.approx([v for point in expected for v in point])
    assert [f["file"] for f in doc["architectures"]["figures"]] == [f for f, _, _ in FRONTIER_PLOTS]
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert f"## {ARCHITECTURES_TITLE}" in md and f"<h2>{ARCHITECTURES_TITLE}</h2>" in html
    for file, _, title in FRONTIER_PLOTS:
        assert (out / file).read_bytes().startswith(b"\x89PNG")
        assert f"![{title}]({file})" in md
        assert f"<h3>{title}</h3><img" in html
    # the UI's markdown artifact embeds them (they come before the other plots, within the budget)
    ui = ui_markdown(md, out, sweep.parent.parent, "http://h:1/")
    for _, _, title in FRONTIER_PLOTS:
        assert f"![{title}](data:image/png;base64," in ui


def test_study_tables_and_plots_stay_relu_only(mixed):
    doc = mixed[3]
    assert doc["grid_tables"]["dead_pct_nosampling"]["rows"] == [0.01, 0.001]
    assert {f["file"] for f in doc["figures"]} >= {"dead_vs_expansion.png", "frontier.png"}


def test_relu_only_sweep_has_no_architecture_sections(tmp_path):
    sweep = fabricate_sweep(tmp_path)
    cfg = load_config(
        "demo", overrides={"grid.expansion_factors": [2, 4], "grid.l1_coefficients": [0.01, 0.0001]}
    )
    out = build_report(sweep, cfg)
    doc = json.loads((out / "tables.json").read_text())
    assert "architectures" not in doc
    assert all("architecture" not in row and "sparsity" not in row for row in doc["cells"])
    md = (out / "report.md").read_text()
    assert ARCHITECTURES_TITLE not in md
    assert next(line for line in md.splitlines() if line.startswith("| cell |")).startswith(
        "| cell | dead % (>0.07, test tokens) |"
    )
    assert not any((out / f).exists() for f, _, _ in FRONTIER_PLOTS)


def test_monosemanticity_table_absent_when_nothing_is_labelled(tmp_path):
    sweep = tmp_path / "runs" / "x"
    cells = [Cell(4, 0.01, "sampling"), Cell(4, 0.0, "auxk", "topk", k=8)]
    for i, cell in enumerate(cells):
        fabricate_cell(sweep, cell, seed=i, labels="skipped")
    doc = json.loads((build_report(sweep) / "tables.json").read_text())
    assert set(doc["architectures"]["tables"]) == {
        "never_fired_pct_by_architecture",
        "dead_pct_by_architecture",
    }


def test_frontier_curve_per_architecture_and_strategy_on_a_log_l0_axis():
    from sae_core.report.frontier import frontier_curves

    points = {
        4: {("topk", "auxk"): [(8.0, 0.9), (32.0, 0.97)], ("relu", "sampling"): [(20.0, 0.8), (60.0, 0.95)]},
        8: {("jumprelu", "nosampling"): [(10.0, 0.85), (40.0, 0.96)]},
    }
    fig = frontier_curves(points, "explained variance")
    panels = fig.get_axes()
    assert [ax.get_title() for ax in panels] == ["4x", "8x"]
    assert all(ax.get_xscale() == "log" for ax in panels)
    lines = {line.get_label(): line for line in panels[0].get_lines()}
    assert set(lines) == {"relu sampling", "topk auxk"}
    assert list(lines["topk auxk"].get_xdata()) == [8.0, 32.0]
    assert lines["topk auxk"].get_color() != lines["relu sampling"].get_color()
