"""sae_core.labels.client without Prefect: prompt, parsing, one attempt against a real local HTTP server
through the real `openai` client, the rate, inputs and outputs."""

from __future__ import annotations

import json
import math

import pandas as pd
import pyarrow.parquet as pq
import pytest

from sae_core.errors import LabelingError
from sae_core.labels.client import (
    POLYSEMANTIC,
    PROMPT_VERSION,
    LabelExample,
    RejectedLabelError,
    TransientLabelError,
    build_messages,
    label_feature,
    make_client,
    parse_label,
)
from sae_core.labels.files import (
    examples_hash,
    labels_frame,
    load_label_inputs,
    monosemanticity,
    write_labels,
)
from sae_core.labels.prompt import LABEL_SCHEMA, MalformedAnswer
from sae_core.labels.scoring_prompt import parse_matches
from sae_core.rundir import RunFileError
from tests.fixtures_llm import Reply, answer, error, hang, write_analysis

KEY = "sk-unit-test-4f7c1e9a2b6d8f0a3c5e"
EXAMPLES = [LabelExample(f"went to **Paris** on day {i}", 9.0 - i) for i in range(5)]


# ---------------------------------------------------------------------------------------------
# Parsing


@pytest.mark.parametrize(
    ("text", "label", "poly"),
    [
        ("All tokens are Paris.\nLabel: the word Paris", "the word Paris", False),
        ("Reasoning: same word\n**Label:** *the word Paris*.", "the word Paris", False),
        ("thinking\nLabel: draft\nmore thought\nLabel: capital cities", "capital cities", False),
        ('{"reasoning": "same word", "label": "the word Paris"}', "the word Paris", False),
        ('```json\n{"reasoning": "r", "label": "POLYSEMANTIC"}\n```', POLYSEMANTIC, True),
        ("No theme.\nLabel: Polysemantic.", POLYSEMANTIC, True),
        ("No theme.\nlabel : **POLYSEMANTIC**", POLYSEMANTIC, True),
    ],
)
def test_parse_label_accepts_text_and_json(text: str, label: str, poly: bool) -> None:
    parsed = parse_label(text)
    assert (parsed.label, parsed.polysemantic) == (label, poly)


def test_parse_label_keeps_reasoning() -> None:
    parsed = parse_label("Reasoning: every token is Paris.\nLabel: the word Paris")
    assert parsed.reasoning == "every token is Paris."
    assert parse_label('{"reasoning": "why", "label": "x y"}').reasoning == "why"


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "   \n",
        "The tokens are all Paris, clearly.",
        '{"label": "the word',
        "Label:   ",
        "Label: " + "w " * 20,
    ],
)
def test_parse_label_rejects_unusable_answers(text: str | None) -> None:
    with pytest.raises(MalformedAnswer):
        parse_label(text)


@pytest.mark.parametrize(
    "said",
    [
        "POLYSEMANTIC (no shared theme)",
        "Polysemantic – unrelated tokens",
        "Polysemantic feature",
        "polysemantic: the marked tokens share nothing",
        "**Polysemantic** (mixed)",
        "Polysemantic-looking mix of names and numbers",  # a hedge on the verdict is the verdict
        "POLYSEMANTIC because the marked tokens share no word, form, meaning, grammatical role or topic",
    ],
)
def test_a_label_opening_with_the_word_polysemantic_is_polysemantic(said: str) -> None:
    parsed = parse_label(f"No shared theme.\nLabel: {said}")
    assert (parsed.label, parsed.polysemantic) == (POLYSEMANTIC, True)
    assert said.replace("**", "") in parsed.reasoning.replace("**", "")  # the explanation is kept
    assert parse_label(json.dumps({"reasoning": "r", "label": said})).polysemantic  # JSON without the flag


@pytest.mark.parametrize(
    "said", ["polysemanticity of words like bank", "words that are polysemantic", "Not polysemantic"]
)
def test_polysemantic_counts_only_as_the_opening_word(said: str) -> None:
    parsed = parse_label(f"Label: {said}")
    assert (parsed.label, parsed.polysemantic) == (said, False)


def test_the_structured_answer_boolean_decides_whatever_the_wording() -> None:
    def parse(poly: bool, label: str):
        return parse_label(json.dumps({"reasoning": "why", "polysemantic": poly, "label": label}))

    assert (parse(True, "names, numbers and brackets").polysemantic, parse(True, "x").label) == (
        True,
        POLYSEMANTIC,
    )
    assert parse(True, " ".join(["word"] * 20)).polysemantic  # no word limit on a verdict
    assert parse(False, "the word Paris").label == "the word Paris"
    with pytest.raises(MalformedAnswer) as info:
        parse(False, "POLYSEMANTIC (mixed)")  # contradicts itself: asked again, never guessed
    assert '"polysemantic" to false' in info.value.problem
    schema = LABEL_SCHEMA["schema"]
    assert schema["properties"]["polysemantic"] == {"type": "boolean"}
    assert "polysemantic" in schema["required"]
    worked = [json.loads(m["content"]) for m in build_messages(EXAMPLES, use_json_schema=True)[2:-1:2]]
    assert [w["polysemantic"] for w in worked] == [w["label"].startswith(POLYSEMANTIC) for w in worked]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "Label: " + " ".join(["word"] * 15),
            "Your label had 15 words; give 2–8 words, or exactly POLYSEMANTIC",
        ),
        ("", "Your answer was empty"),
        ("The tokens are all Paris.", "no final line of the form `Label: <your label>`"),
        ('{"label": "the wo', 'not valid JSON with the keys "reasoning", "polysemantic" and "label"'),
        ("Label: **", "Your label was empty"),
    ],
)
def test_a_malformed_answer_says_what_was_wrong(text: str, problem: str) -> None:
    with pytest.raises(MalformedAnswer) as info:
        parse_label(text)
    assert problem in info.value.problem


def test_parse_matches() -> None:
    assert parse_matches("I think\nMatches: 1, 3, 9", 4) == {1, 3}
    assert parse_matches('{"matches": [2]}', 4) == {2}
    assert parse_matches("Matches: none", 4) == set()
    with pytest.raises(MalformedAnswer):
        parse_matches("1 and 3", 4)


# ---------------------------------------------------------------------------------------------
# Prompt


def test_messages_mark_tokens_rank_evidence_and_carry_worked_examples() -> None:
    messages = build_messages(EXAMPLES)
    system = messages[0]["content"]
    order = [
        system.index(w)
        for w in ("lexical", "morphology", "semantic role", "syntax", "immediate context", "topic")
    ]
    assert order == sorted(order)
    assert "POLYSEMANTIC" in system and "Label:" in system
    assert sum(m["role"] == "assistant" for m in messages) >= 3  # worked examples
    assert any("POLYSEMANTIC" in m["content"] for m in messages if m["role"] == "assistant")
    last = messages[-1]["content"]
    assert "**Paris**" in last and "1. (activation 9.00)" in last and "5. (activation 5.00)" in last
    json_messages = build_messages(EXAMPLES, use_json_schema=True)
    assert '"label"' in json_messages[0]["content"]
    json.loads(json_messages[2]["content"])  # worked answers in the JSON format too


def test_examples_hash_follows_what_the_prompt_shows() -> None:
    assert examples_hash(EXAMPLES) == examples_hash(list(EXAMPLES))
    assert examples_hash(EXAMPLES) != examples_hash(EXAMPLES[:-1])
    nudged = [LabelExample(EXAMPLES[0].context_text, EXAMPLES[0].activation + 0.1), *EXAMPLES[1:]]
    assert examples_hash(nudged) != examples_hash(EXAMPLES)


# ---------------------------------------------------------------------------------------------
# One attempt through the real openai client


def _client(fake_llm, timeout: float = 5.0):
    return make_client(KEY, fake_llm.url, timeout)


def test_label_feature_text_and_structured(fake_llm) -> None:
    result = label_feature(_client(fake_llm), "test-model", EXAMPLES, use_json_schema=False)
    assert (result.label, result.polysemantic, result.structured) == ("the token Paris", False, False)
    result = label_feature(_client(fake_llm), "test-model", EXAMPLES, use_json_schema=True)
    assert (result.label, result.structured) == ("the token Paris", True)
    sent = fake_llm.requests[-1]
    assert sent.body["response_format"]["type"] == "json_schema"
    assert sent.body["temperature"] == 0.0 and sent.body["model"] == "test-model"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert len(fake_llm.requests) == 2  # the client's own retries are off


def test_label_feature_falls_back_to_text_when_schema_is_refused(fake_llm) -> None:
    fake_llm.script("Paris", error(400, "response_format json_schema is not supported by this model"))
    result = label_feature(_client(fake_llm), "m", EXAMPLES, use_json_schema=True)
    assert (result.label, result.structured) == ("the token Paris", False)
    assert [bool(r.body.get("response_format")) for r in fake_llm.requests] == [True, False]


def test_label_feature_drops_a_refused_temperature(fake_llm) -> None:
    fake_llm.script(
        "Paris", error(400, "Unsupported value: 'temperature' does not support 0 with this model.")
    )
    assert label_feature(_client(fake_llm), "m", EXAMPLES, use_json_schema=False).label == "the token Paris"
    assert ["temperature" in r.body for r in fake_llm.requests] == [True, False]


LONG = "place names in travel sentences, mostly the French capital but also other big cities sometimes"


def _temperature_zero(good: str, bad: str = f"Travel.\nLabel: {LONG}"):
    """Like a model at temperature 0: the same prompt always gets the same (bad) answer; only a
    conversation whose last turn says what was wrong gets `good`."""

    def respond(body: dict, n: int) -> Reply:
        last = body["messages"][-1]
        fixed = last["role"] == "user" and "15 words; give 2–8 words" in last["content"]
        return answer(good if fixed else bad)

    return respond


@pytest.mark.parametrize("structured", [False, True])
def test_a_malformed_answer_is_repaired_in_the_conversation(fake_llm, structured: bool) -> None:
    bad = json.dumps({"reasoning": "r", "polysemantic": False, "label": LONG}) if structured else None
    good = json.dumps({"reasoning": "r", "polysemantic": False, "label": "the word Paris"})
    fake_llm.respond(
        "Paris", _temperature_zero(good if structured else "Label: the word Paris", *[bad] * bool(bad))
    )
    client = _client(fake_llm)
    with pytest.raises(TransientLabelError) as info:
        label_feature(client, "m", EXAMPLES, use_json_schema=structured)
    err = info.value
    assert err.kind == "malformed" and err.retryable and "15 words" in str(err)
    assert err.repair is not None and err.repair.structured is structured
    result = label_feature(client, "m", EXAMPLES, use_json_schema=structured, repair=err.repair)
    assert (result.label, result.polysemantic, result.structured) == ("the word Paris", False, structured)
    first, second = (r.body for r in fake_llm.requests)
    assert (
        second["messages"][: len(first["messages"])] == first["messages"]
    )  # the same conversation, continued
    bad_turn, fix_turn = second["messages"][len(first["messages"]) :]
    assert bad_turn["role"] == "assistant" and LONG in bad_turn["content"]
    assert fix_turn["role"] == "user"
    assert fix_turn["content"].startswith("Your label had 15 words; give 2–8 words, or exactly POLYSEMANTIC")
    assert ('"polysemantic"' in fix_turn["content"]) is structured  # the format is asked for again
    assert second["temperature"] == first["temperature"] == 0.0
    assert bool(second.get("response_format")) is structured


def test_repairs_accumulate_and_an_empty_answer_adds_no_empty_turn(fake_llm) -> None:
    fake_llm.script("Paris", answer(""), answer(f"Label: {LONG}"))
    client = _client(fake_llm)
    repair = None
    for _ in range(2):
        with pytest.raises(TransientLabelError) as info:
            label_feature(client, "m", EXAMPLES, use_json_schema=False, repair=repair)
        repair = info.value.repair
    assert repair is not None and [t.answer for t in repair.turns] == ["", f"Label: {LONG}"]
    assert (
        label_feature(client, "m", EXAMPLES, use_json_schema=False, repair=repair).label == "the token Paris"
    )
    third = fake_llm.requests[-1].body["messages"]
    assert all(m["content"] for m in third)  # no assistant turn with empty content
    feature_turn = next(m for m in reversed(third) if "**Paris**" in m["content"])
    assert "Your answer was empty." in feature_turn["content"]
    assert [m["role"] for m in third[-3:]] == ["user", "assistant", "user"]
    assert "15 words" in third[-1]["content"]


def test_a_repair_after_the_schema_was_refused_stays_in_text(fake_llm) -> None:
    fake_llm.script(
        "Paris", error(400, "response_format json_schema is not supported"), answer(f"Label: {LONG}")
    )
    client = _client(fake_llm)
    with pytest.raises(TransientLabelError) as info:
        label_feature(client, "m", EXAMPLES, use_json_schema=True)
    repair = info.value.repair
    assert repair is not None and repair.structured is False
    assert (
        label_feature(client, "m", EXAMPLES, use_json_schema=True, repair=repair).label == "the token Paris"
    )
    assert [bool(r.body.get("response_format")) for r in fake_llm.requests] == [True, False, False]


def test_a_long_polysemantic_verdict_is_not_a_failure(fake_llm) -> None:
    verdict = "POLYSEMANTIC – the marked tokens share no word, no form, no meaning and no grammatical role"
    fake_llm.script("Paris", answer(f"Nothing shared.\nLabel: {verdict}"))
    result = label_feature(_client(fake_llm), "m", EXAMPLES, use_json_schema=False)
    assert (result.label, result.polysemantic) == (POLYSEMANTIC, True)


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (error(500, "boom"), "server_error"),
        (error(503, "overloaded"), "server_error"),
        (answer(None), "malformed"),
        (answer("The tokens are Paris."), "malformed"),
        (answer('{"label": "Par'), "malformed"),
    ],
)
def test_transient_failures_are_classified(fake_llm, reply, kind: str) -> None:
    fake_llm.script("Paris", reply)
    with pytest.raises(TransientLabelError) as info:
        label_feature(_client(fake_llm), "m", EXAMPLES, use_json_schema=False)
    assert info.value.kind == kind and info.value.retryable
    assert len(fake_llm.requests) == 1


def test_rate_limit_carries_retry_after(fake_llm) -> None:
    fake_llm.script("Paris", error(429, "slow down", {"Retry-After": "7"}))
    with pytest.raises(TransientLabelError) as info:
        label_feature(_client(fake_llm), "m", EXAMPLES)
    assert (info.value.kind, info.value.retry_after) == ("rate_limited", 7.0)


def test_timeout_is_transient(fake_llm) -> None:
    # The server answers after 3 s: only a working 0.3 s client timeout turns that into an error.
    fake_llm.script("Paris", hang(3.0))
    with pytest.raises(TransientLabelError) as info:
        label_feature(_client(fake_llm), "m", EXAMPLES, timeout=0.3)
    assert info.value.kind == "timeout" and info.value.retryable


@pytest.mark.parametrize(
    ("status", "kind"), [(400, "bad_request"), (401, "unauthorized"), (403, "forbidden")]
)
def test_rejections_are_not_retryable_and_never_show_the_key(fake_llm, status: int, kind: str) -> None:
    fake_llm.script("Paris", error(status, "no"))
    with pytest.raises(RejectedLabelError) as info:
        label_feature(_client(fake_llm), "m", EXAMPLES, use_json_schema=False)
    assert info.value.kind == kind and not info.value.retryable
    assert KEY not in str(info.value) and KEY[:12] not in repr(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


# ---------------------------------------------------------------------------------------------
# Inputs, the rate, outputs


def test_load_label_inputs(tmp_path) -> None:
    run = write_analysis(tmp_path / "run", {5: ("top", "Paris"), 9: ("bottom", "Rome")}, n_top=6)
    inputs = load_label_inputs(run, examples_per_prompt=4)
    assert [(f.feature_id, f.groups) for f in inputs.features] == [(5, ("top",)), (9, ("bottom",))]
    first = inputs.features[0]
    assert len(first.examples) == 4 and len(first.heldout) == 2 + 2
    assert [e.activation for e in first.examples] == sorted(
        (e.activation for e in first.examples), reverse=True
    )
    assert all("**Paris**" in e.context_text for e in first.examples)


def test_nothing_selected_means_nothing_to_label(tmp_path) -> None:
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "selected.json").write_text('{"top": [], "bottom": []}')
    assert load_label_inputs(tmp_path).features == ()  # no examples.parquet needed
    write_labels(tmp_path, [], {"monosemanticity_rate": None, "skipped_reason": None})
    assert len(pd.read_parquet(tmp_path / "labels.parquet")) == 0


def test_bad_inputs_name_the_path(tmp_path) -> None:
    with pytest.raises(LabelingError, match=r"selected\.json: missing"):
        load_label_inputs(tmp_path)
    run = write_analysis(tmp_path / "run", {5: ("top", "Paris")})
    (run / "features" / "selected.json").write_text('{"top": "5", "bottom": []}')
    with pytest.raises(RunFileError, match=r"selected\.json: not a valid features/selected\.json \(top: "):
        load_label_inputs(run)
    (run / "features" / "selected.json").write_text('{"bottom": []}')
    with pytest.raises(LabelingError, match=r"selected\.json: 'top' is missing"):
        load_label_inputs(run)
    (run / "features" / "selected.json").write_text('{"top": [5], "bottom": []}')
    table = pq.read_table(run / "features" / "examples.parquet").drop_columns(["context_text"])
    pq.write_table(table, run / "features" / "examples.parquet")
    with pytest.raises(LabelingError, match=r"examples.parquet: missing columns \['context_text'\]"):
        load_label_inputs(run)


def _row(
    fid: int, group: str, status: str = "ok", poly: bool | None = False, det: float | None = None
) -> dict:
    return {
        "feature_id": fid,
        "group": group,
        "label": None if status == "failed" else ("POLYSEMANTIC" if poly else "x y"),
        "polysemantic": None if status == "failed" else poly,
        "status": status,
        "attempts": 1,
        "model": "m",
        "prompt_version": PROMPT_VERSION,
        "detection_accuracy": det,
    }


def test_monosemanticity_rate() -> None:
    rows = [
        _row(1, "top"),
        _row(2, "top", poly=True),
        _row(3, "top", det=0.8),
        _row(4, "top", status="failed"),
        _row(5, "bottom", poly=True),
        _row(6, "bottom", poly=True, det=0.4),
    ]
    rate = monosemanticity(labels_frame(rows))
    assert rate["labelled"] == 5 and rate["polysemantic"] == 3 and rate["failed"] == 1
    assert math.isclose(rate["monosemanticity_rate"], 1 - 3 / 5)
    assert math.isclose(rate["rate_top"], 1 - 1 / 3) and rate["rate_bottom"] == 0.0
    assert rate["groups"]["top"]["failed"] == 1 and rate["groups"]["bottom"]["labelled"] == 2
    assert math.isclose(rate["detection_accuracy"], 0.6)
    # conservative: 1 − (polysemantic + failed) / (labelled + failed), overall and per group
    assert math.isclose(rate["monosemanticity_rate_conservative"], 1 - (3 + 1) / (5 + 1))
    assert math.isclose(rate["rate_top_conservative"], 1 - (1 + 1) / (3 + 1))
    assert rate["rate_bottom_conservative"] == 0.0
    assert math.isclose(rate["groups"]["top"]["rate_conservative"], 0.5)
    nothing = monosemanticity(labels_frame([_row(1, "top", status="failed")]))
    assert nothing["monosemanticity_rate"] is None and nothing["failed"] == 1
    assert nothing["monosemanticity_rate_conservative"] == 0.0  # every feature failed: counted polysemantic
    assert monosemanticity(labels_frame([]))["monosemanticity_rate_conservative"] is None


def test_the_report_shows_the_conservative_rate_beside_the_rate(tmp_path) -> None:
    from sae_core.naming import Cell
    from sae_core.report.cells import (
        CELL_METRICS,
        CellData,
        monosemanticity_conservative_pct,
        monosemanticity_pct,
    )

    summary = monosemanticity(
        labels_frame([_row(1, "top"), _row(2, "top", poly=True), _row(3, "top", "failed")])
    )
    cell = CellData(Cell(2, 0.01, "sampling"), tmp_path, exists=True, labels=summary)
    assert monosemanticity_pct(cell).value == pytest.approx(50.0)
    assert monosemanticity_conservative_pct(cell).value == pytest.approx(100 / 3)
    assert "monosemanticity_conservative_pct" in CELL_METRICS
    before = {k: summary[k] for k in ("monosemanticity_rate", "labelled", "polysemantic", "failed")}
    old = CellData(Cell(2, 0.01, "sampling"), tmp_path, exists=True, labels=before)  # labels.json of label-v1
    assert monosemanticity_conservative_pct(old).value == pytest.approx(100 / 3)
    skipped = CellData(Cell(2, 0.01, "sampling"), tmp_path, exists=True, labels={"skipped_reason": "no key"})
    assert monosemanticity_conservative_pct(skipped).note == "skipped (no key)"


def test_write_labels_contract(tmp_path) -> None:
    rows = [_row(1, "top"), _row(2, "bottom", status="failed")]
    summary = {"monosemanticity_rate": 1.0, "skipped_reason": None}
    write_labels(tmp_path, rows, summary)
    df = pd.read_parquet(tmp_path / "labels.parquet")
    assert list(df.columns) == [
        "feature_id", "group", "label", "reasoning", "polysemantic", "model", "prompt_version",
        "attempts", "status", "error", "examples_hash", "detection_accuracy", "explanation", "health",
        *(f"{s}_{k}" for s in ("detection", "fuzzing") for k in
          ("tp", "tn", "fp", "fn", "failed", "failed_positive", "balanced_accuracy")),
    ]  # fmt: skip
    assert df["status"].tolist() == ["ok", "failed"]
    assert json.loads((tmp_path / "labels.json").read_text()) == summary
    assert not list(tmp_path.glob(".*tmp"))
