"""The run directory's one reader (`sae_core.rundir`): each model round-trips the file its real writer
produces (every key typed, none lost), old files read as format 1, a newer format or a bad file is one
line naming the file and what to do, and the completion checks say what trained / analysed mean."""

from __future__ import annotations

import json

import pytest

from sae_core.analysis import analyze_run
from sae_core.config import load_config
from sae_core.errors import AnalysisError, SaeSweepError
from sae_core.labels.files import labels_frame, monosemanticity, write_labels
from sae_core.labels.health import health_summary
from sae_core.naming import Cell
from sae_core.rundir import (
    ANALYSIS_FORMAT,
    LABELS_FORMAT,
    METRICS_FORMAT,
    Analysis,
    Labels,
    Metrics,
    RunDir,
    RunFileError,
    is_analysed,
    is_labelled,
    is_trained,
    read_analysis,
    read_labels,
    read_metrics,
    trained_metrics,
    training_dead_fraction,
)
from sae_core.training import train_cell
from tests.fixtures_sae import small_config

pytestmark = pytest.mark.usefixtures("single_thread")

CELL = Cell(4, 0.02, "sampling")


@pytest.fixture(scope="module")
def run(tmp_path_factory, sae_store) -> RunDir:
    """One cell trained, analysed and labelled by the real writers."""
    cfg = small_config()
    cfg = load_config(
        "demo",
        overrides={
            **{f"training.{k}": v for k, v in cfg.training.model_dump().items()},
            "tracking.mode": "disabled",
            "analysis.batch_size": 256,
            "analysis.top_k_features": 3,
            "analysis.min_activations": 5,
            "analysis.ce_loss_documents": 0,
        },
    )
    out = tmp_path_factory.mktemp("runs") / CELL.name
    train_cell(sae_store, CELL, cfg, out)
    analyze_run(sae_store, out, cfg)
    from tasks.label import _empty_summary, _scoring_doc  # the label task's own summary pieces

    rows = [
        {"feature_id": 1, "group": "top", "label": "the token x", "polysemantic": False, "status": "ok"},
        {"feature_id": 2, "group": "bottom", "label": "POLYSEMANTIC", "polysemantic": True, "status": "ok"},
        {"feature_id": 3, "group": "bottom", "label": None, "status": "failed", "error": "timeout"},
    ]
    for r in rows:
        r |= {"model": cfg.labeling.model, "prompt_version": "v", "attempts": 1, "examples_hash": "h"}
    summary = {**_empty_summary(cfg.labeling, None), **monosemanticity(labels_frame(rows))}
    summary["cached"] = 0
    summary["health"] = health_summary(rows, cfg.labeling.max_label_chars)
    summary["scoring"] = _scoring_doc(cfg.labeling, "no scorer configured")
    write_labels(out, rows, summary)
    return RunDir(out)


@pytest.mark.parametrize(
    ("reader", "model", "name", "fmt"),
    [
        (read_metrics, Metrics, "metrics.json", METRICS_FORMAT),
        (read_analysis, Analysis, "analysis.json", ANALYSIS_FORMAT),
        (read_labels, Labels, "labels.json", LABELS_FORMAT),
    ],
)
def test_each_model_round_trips_the_file_its_writer_wrote(run, reader, model, name, fmt):
    on_disk = json.loads((run.path / name).read_text())
    read = reader(run)
    assert isinstance(read, model) and read.format == fmt == on_disk["format"]
    assert read.to_json() == on_disk  # nothing lost or changed
    # every key the writer wrote is a typed field, not an unknown extra
    assert not read.model_extra, f"{name} keys without a field: {sorted(read.model_extra or {})}"
    nested = [v for v in read.__dict__.values() if hasattr(v, "model_extra")]
    assert all(not v.model_extra for v in nested), [v.model_extra for v in nested]


def test_the_readers_figures_are_the_writers(run):
    metrics, analysis, labels = read_metrics(run), read_analysis(run), read_labels(run)
    assert metrics is not None and analysis is not None and labels is not None
    assert metrics.cell == analysis.cell == CELL.name and metrics.completed is True
    assert metrics.final is not None and metrics.final.l0 is not None
    assert training_dead_fraction(metrics) == (metrics.training_dead_fraction, None)
    assert analysis.dead_token_set == analysis.dead_split and analysis.d_hidden == metrics.d_hidden
    assert labels.labelled == 2 and labels.polysemantic == 1 and labels.failed == 1
    assert labels.monosemanticity_rate == pytest.approx(0.5)


def test_completion_checks(run, tmp_path):
    assert is_trained(run, CELL.weights_filename) and is_analysed(run) and is_labelled(run)
    metrics = read_metrics(run)
    assert metrics is not None
    assert trained_metrics(run, CELL.weights_filename, metrics.config_hash) is not None
    assert trained_metrics(run, CELL.weights_filename, "another config") is None
    empty = RunDir(tmp_path / CELL.name)
    empty.path.mkdir()
    assert not is_trained(empty, CELL.weights_filename) and not is_analysed(empty) and not is_labelled(empty)
    assert read_metrics(empty) is None and read_analysis(empty) is None and read_labels(empty) is None
    empty.weights(CELL.weights_filename).write_bytes(b"w")
    empty.metrics.write_text("{ half a file")
    assert not is_trained(empty, CELL.weights_filename)  # unreadable: not trained (training rewrites it)
    with pytest.raises(RunFileError):
        trained_metrics(empty, CELL.weights_filename)


def test_an_old_file_reads_as_format_1_with_its_legacy_keys(tmp_path):
    run = RunDir(tmp_path)
    old = {
        "cell": CELL.name,
        "steps": 100,
        "dead_fraction_train": 0.25,  # before training_dead_fraction
        "training": {"resample_every": 20},
        "resample_events": [{"step": 40, "neurons": 3}],
        "completed": True,
    }
    run.metrics.write_text(json.dumps(old))
    metrics = read_metrics(run)
    assert metrics is not None and metrics.format == 1 and metrics.to_json() == old
    assert training_dead_fraction(metrics) == (0.25, None)  # no reset in the final window: still right
    run.analysis.write_text(json.dumps({"split": "test", "dead_fraction": 0.5}))  # before dead_split
    analysis = read_analysis(run)
    assert analysis is not None and analysis.format == 1 and analysis.dead_token_set == "test"
    run.labels.write_text(json.dumps({"monosemanticity_rate": 0.5, "labelled": 4, "failed": 0}))
    labels = read_labels(run)
    assert labels is not None and labels.format == 1 and labels.monosemanticity_rate_conservative is None


def test_keys_of_a_later_version_are_kept_and_ignored(tmp_path):
    run = RunDir(tmp_path)
    doc = {"format": METRICS_FORMAT, "cell": "x", "a_future_key": {"any": 1}, "final": {"l0": 2, "new": 3}}
    run.metrics.write_text(json.dumps(doc))
    metrics = read_metrics(run)
    assert metrics is not None and metrics.to_json() == doc and metrics.final is not None
    assert metrics.final.l0 == 2


@pytest.mark.parametrize(
    ("reader", "name", "content", "said"),
    [
        (read_metrics, "metrics.json", "{ not json", "unreadable metrics.json"),
        (read_metrics, "metrics.json", "[1, 2]", "not a JSON object"),
        (read_metrics, "metrics.json", '{"steps": "many"}', "not a valid metrics.json (steps:"),
        (
            read_analysis,
            "analysis.json",
            '{"dead_fraction": "half"}',
            "not a valid analysis.json (dead_fraction:",
        ),
        (read_labels, "labels.json", b"\xff\xfe", "unreadable labels.json"),
        (read_labels, "labels.json", '{"format": 99}', "format 99 was written by a newer sae-sweep"),
    ],
)
def test_a_bad_file_is_one_line_naming_it_and_what_to_do(tmp_path, reader, name, content, said):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(RunFileError) as err:
        reader(tmp_path)
    message = str(err.value)
    assert isinstance(err.value, SaeSweepError) and "\n" not in message
    assert message.startswith(str(path)) and said in message, message
    assert "sae-sweep" in message  # what to do: the command that writes it again, or upgrade


def test_the_report_and_the_analysis_say_which_file_is_bad(tmp_path, run):
    import shutil

    from sae_core.analysis import load_sae
    from sae_core.report.cells import collect_cells, dead_pct, training_dead_pct

    sweep = tmp_path / "sweep"
    cell = RunDir(sweep / CELL.name)
    cell.path.mkdir(parents=True)
    cell.metrics.write_text('{"steps": "many"}')
    cell.analysis.write_text('{"dead_fraction": 0.5}')
    (data,) = collect_cells(sweep)
    assert training_dead_pct(data).note == "missing (unreadable metrics.json)"
    assert dead_pct(data).value == 50.0
    shutil.copy(run.weights(CELL.weights_filename), cell.weights(CELL.weights_filename))
    with pytest.raises(
        AnalysisError, match=r"metrics\.json: not a valid metrics\.json \(steps:.*sae-sweep train"
    ):
        load_sae(cell.path)
