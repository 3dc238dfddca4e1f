"""The sweep report: tables equal the cells' files, absent values read missing/skipped (never 0), the
published numbers stand beside ours for the seed preset, the HTML is self-contained, CLI and errors."""

from __future__ import annotations

import json
import re

import pytest

from flows.cli import main
from sae_core.config import load_config
from sae_core.errors import ReportError
from sae_core.naming import Cell, grid_cells
from sae_core.report.build import build_report
from sae_core.report.cells import load_published
from tests.report.test_report_data import fabricate_cell, fabricate_sweep


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    sweep = fabricate_sweep(tmp_path_factory.mktemp("sweep"))
    # the fabricated grid: expansions 2 and 4, λ 0.01 and 0.0001, both strategies
    cfg = load_config(
        "demo", overrides={"grid.expansion_factors": [2, 4], "grid.l1_coefficients": [0.01, 0.0001]}
    )
    out = build_report(sweep, cfg)
    return sweep, out, json.loads((out / "tables.json").read_text())


def test_grid_tables_equal_the_cells_analysis_values(demo_report):
    sweep, _, doc = demo_report
    tables = doc["grid_tables"]
    assert set(tables) == {
        "dead_pct_nosampling", "dead_pct_sampling", "dead_pct_delta",
        "monosemanticity_pct_nosampling", "monosemanticity_pct_sampling",
        "monosemanticity_conservative_pct_nosampling", "monosemanticity_conservative_pct_sampling",
    }  # fmt: skip
    for key in ("dead_pct_nosampling", "dead_pct_sampling"):
        table = tables[key]
        assert table["rows"] == [0.01, 0.0001]  # λ rows, largest first as in the study
        assert table["columns"] == [2, 4]
        for i, l1 in enumerate(table["rows"]):
            for j, exp in enumerate(table["columns"]):
                path = sweep / Cell(exp, l1, key.removeprefix("dead_pct_")).name / "analysis.json"
                if path.is_file():
                    expected = json.loads(path.read_text())["dead_fraction"] * 100
                    assert table["values"][i][j] == pytest.approx(expected)
                    assert table["notes"][i][j] is None
    delta = tables["dead_pct_delta"]
    without, with_ = tables["dead_pct_nosampling"], tables["dead_pct_sampling"]
    assert delta["values"][0][1] == pytest.approx(without["values"][0][1] - with_["values"][0][1])
    assert delta["published"] is None  # the demo preset is not compared with the study


def test_per_cell_rows_equal_the_cells_files(demo_report):
    sweep, _, doc = demo_report
    rows = {r["cell"]: r for r in doc["cells"]}
    assert len(rows) == 8
    for name, row in rows.items():
        analysis_path = sweep / name / "analysis.json"
        if not analysis_path.is_file():
            continue
        analysis = json.loads(analysis_path.read_text())
        metrics = json.loads((sweep / name / "metrics.json").read_text())
        assert row["l0"] == pytest.approx(analysis["l0"])
        assert row["explained_variance"] == pytest.approx(analysis["explained_variance"])
        assert row["ce_recovered"] == pytest.approx(analysis["ce_loss"]["recovered"])
        assert row["dead_pct"] == pytest.approx(100 * analysis["dead_fraction"])
        assert row["training_dead_pct"] == pytest.approx(100 * metrics["training_dead_fraction"])
        assert row["tokens_trained"] == metrics["tokens_trained"]
        assert row["wall_time_s"] == pytest.approx(metrics["wall_time_s"])
        assert row["resample_events"] == len(metrics["resample_events"])
        assert row["neurons_resampled"] == sum(e["neurons"] for e in metrics["resample_events"])
    labels = json.loads((sweep / "2x_0.01_sampling" / "labels.json").read_text())
    assert rows["2x_0.01_sampling"]["monosemanticity_pct"] == pytest.approx(
        100 * labels["monosemanticity_rate"]
    )


def test_missing_cells_and_stages_show_as_missing_not_zero(demo_report):
    _, out, doc = demo_report
    rows = {r["cell"]: r for r in doc["cells"]}
    gone = rows["4x_0.0001_sampling"]  # in the grid, no directory
    assert gone["dead_pct"] is None and gone["notes"]["dead_pct"] == "missing (cell not run)"
    assert gone["tokens_trained"] is None
    unanalysed = rows["2x_0.0001_nosampling"]  # trained, never analysed
    assert unanalysed["tokens_trained"] is not None
    assert unanalysed["dead_pct"] is None and "missing" in unanalysed["notes"]["dead_pct"]
    skipped = rows["4x_0.01_nosampling"]
    assert skipped["monosemanticity_pct"] is None
    assert skipped["notes"]["monosemanticity_pct"] == "skipped (no API key in OPENAI_API_KEY)"

    table = doc["grid_tables"]["dead_pct_sampling"]
    assert table["values"][1][1] is None and table["notes"][1][1] == "missing (cell not run)"
    assert doc["grid_tables"]["dead_pct_delta"]["values"][1][1] is None

    md = (out / "report.md").read_text()
    section = md.split("## Dead neurons % with resampling")[1].split("##")[0]
    row = next(line for line in section.splitlines() if line.startswith("| 0.0001"))
    marker = row.split("|")[3].strip()  # the reason once under the table, a marker in the cell
    assert marker.startswith("missing [")
    assert f"{marker.removeprefix('missing ')} missing (cell not run)" in section
    assert "0.00%" not in row
    assert "skipped (no API key in OPENAI_API_KEY)" in md


def test_report_files_plots_and_self_contained_html(demo_report):
    _, out, doc = demo_report
    files = {f["file"] for f in doc["figures"]}
    assert {"dead_vs_expansion.png", "frontier.png", "loss_curves.png", "density.png"} <= files
    assert any(f.startswith("correlation_") for f in files)
    for name in files:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") == len(files)
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", page)  # nothing fetched from a network
    assert "missing (cell not run)" in page
    md = (out / "report.md").read_text()
    assert all(f"]({name})" in md for name in files)


def test_report_marks_near_duplicate_features(demo_report):
    """Was: nothing in the report said two selected features were one direction."""
    sweep, out, _ = demo_report
    selected = json.loads((sweep / "2x_0.01_sampling" / "features" / "selected.json").read_text())
    twin, first = next(iter(selected["duplicate_of"].items()))
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "## Near-duplicate features" in md and f"2x_0.01_sampling: #{twin} ≈ #{first}" in md
    assert "decoder cosine &gt; 0.95" in page and f"#{twin} ≈ #{first}" in page


def test_seed_report_puts_the_published_numbers_beside_ours(tmp_path):
    sweep = tmp_path / "runs" / "seed"
    for i, cell in enumerate(
        [Cell(4, 0.01, "nosampling"), Cell(4, 0.01, "sampling"), Cell(8, 0.0001, "sampling")]
    ):
        fabricate_cell(sweep, cell, labels="none", seed=i)
    cfg = load_config("seed")
    out = build_report(sweep, cfg)
    doc = json.loads((out / "tables.json").read_text())
    published = load_published()
    assert "Sparse Autoencoders for Monosemanticity" in doc["published_source"]
    table = doc["grid_tables"]["dead_pct_nosampling"]
    assert table["columns"] == [4, 8, 16, 32] and table["rows"] == [0.01, 0.0001]  # the seed grid
    assert table["published"] == published["tables"]["dead_pct_nosampling"]
    assert table["published"][0][0] == 13.1
    assert doc["grid_tables"]["dead_pct_delta"]["published"][1][3] == 12.17
    assert doc["grid_tables"]["monosemanticity_pct_sampling"]["published"][0][2] == 88
    assert table["notes"][1][3] == "missing (cell not run)"
    md = (out / "report.md").read_text()
    assert "(study 13.1%)" in md and "(study 8.3 pp)" in md
    assert "missing (no labels.json) (study 82%)" in md


def test_published_tables_are_consistent():
    pub = load_published()["tables"]
    for i in range(2):
        for j in range(4):  # the blog's no-sampling table = with sampling + delta
            assert pub["dead_pct_nosampling"][i][j] == pytest.approx(
                pub["dead_pct_sampling"][i][j] + pub["dead_pct_delta"][i][j]
            )


def test_bad_inputs_name_the_path(tmp_path):
    with pytest.raises(ReportError, match="no such directory"):
        build_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "not-a-cell").mkdir()
    with pytest.raises(ReportError, match=r"no cell directories.*empty"):
        build_report(tmp_path / "empty")
    run = fabricate_cell(tmp_path / "sweep", Cell(2, 0.01, "sampling"), labels="none")
    (run / "analysis.json").write_text("{ not json")
    doc = json.loads((build_report(tmp_path / "sweep") / "tables.json").read_text())
    assert doc["cells"][0]["dead_pct"] is None
    assert doc["cells"][0]["notes"]["dead_pct"] == "missing (unreadable analysis.json)"


def test_cli_report_and_browse(tmp_path, capsys):
    sweep = tmp_path / "runs" / "mine"
    fabricate_cell(sweep, Cell(2, 0.01, "sampling"))
    assert main(["report", "--sweep", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert str(sweep / "report" / "report.html") in out
    assert (sweep / "2x_0.01_sampling" / "browser.html").is_file()  # written alongside by default
    assert main(["browse", "--run", str(sweep / "2x_0.01_sampling")]) == 0
    assert capsys.readouterr().out.strip() == str(sweep / "2x_0.01_sampling" / "browser.html")
    assert main(["report", "--sweep", str(tmp_path / "absent")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["browse", "--run", str(sweep)]) == 2  # the sweep dir is not a cell: no features
    assert "feature_stats.parquet" in capsys.readouterr().err


def test_a_config_report_leaves_out_cells_of_another_grid(tmp_path):
    """A sweep dir may hold cells of an earlier grid (λ changed since): the config's report is about
    the config's cells only, and lists the ones it lacks as missing."""
    sweep = fabricate_sweep(tmp_path, skip=())
    cfg = load_config("demo", overrides={"grid.expansion_factors": [2], "grid.l1_coefficients": [0.01, 0.5]})
    doc = json.loads((build_report(sweep, cfg) / "tables.json").read_text())
    names = [row["cell"] for row in doc["cells"]]
    assert sorted(names) == sorted(c.name for c in grid_cells(cfg.grid))
    missing = [row for row in doc["cells"] if row["cell"].startswith("2x_0.5_")]
    assert all(row["dead_pct"] is None and row["notes"]["dead_pct"].startswith("missing") for row in missing)


def test_captions_name_the_dead_token_set_and_old_runs_are_read_only_where_right(tmp_path):
    from sae_core.report.build import cell_rows, collect_cells, dead_pct_caption, grid_tables

    for cell in (Cell(2, 0.01, "sampling"), Cell(2, 0.01, "nosampling")):
        run = fabricate_cell(tmp_path, cell)
        analysis = json.loads((run / "analysis.json").read_text())
        analysis["dead_split"] = "all"
        (run / "analysis.json").write_text(json.dumps(analysis))
        # a run written before the rename: only `dead_fraction_train`, whose resets counted as alive
        metrics = json.loads((run / "metrics.json").read_text())
        metrics["dead_fraction_train"] = metrics.pop("training_dead_fraction")
        metrics["training"]["resample_every"] = 250  # window (350, 600]: the reset at step 400 is in it
        (run / "metrics.json").write_text(json.dumps(metrics))
    cells = collect_cells(tmp_path)
    assert dead_pct_caption(cells) == "dead % (>0.07, all tokens)"
    tables = grid_tables(cells, None)
    rows = {r["cell"]: r for r in cell_rows(cells)}
    # no reset in the final window (nosampling): the old figure means the same, and is shown
    plain = json.loads((tmp_path / "2x_0.01_nosampling" / "metrics.json").read_text())
    assert rows["2x_0.01_nosampling"]["training_dead_pct"] == pytest.approx(
        100 * plain["dead_fraction_train"]
    )
    # a reset in the final window: refused with the reason, never passed off as the corrected figure
    assert rows["2x_0.01_sampling"]["training_dead_pct"] is None
    assert (
        "counted neurons reset at step 400 as alive" in rows["2x_0.01_sampling"]["notes"]["training_dead_pct"]
    )
    out = build_report(tmp_path)
    md = (out / "report.md").read_text()
    assert "dead % (>0.07, all tokens)" in md and "dead % (training window)" in md
    assert "Dead neurons % with resampling — dead % (>0.07, all tokens)" in md
    assert tables["dead_pct_sampling"]["values"][0][0] is not None
