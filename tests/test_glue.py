"""Pipeline and registry glue without a database: the cursor is a MagicMock (as the Postgres
provider's own hook tests fake theirs), so each test shows which statements a step sends, in
which order, on which cursor. The same functions run against the real server in
test_registry.py, test_decisions.py and test_dag.py."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from unittest import mock

import pandas as pd
import pytest

from tasks import registry
from tasks.night import NightRecord, failed_tasks, failure_alert, judge_night
from tasks.pipeline import RunOptions, resolve_label_set
from tasks.validate import QuarantinedRow, ValidationOutcome, quarantine_entries

END = datetime(2026, 11, 20, 2, tzinfo=UTC)


def fake_cursor(*fetched, columns=()):
    """A cursor whose fetchone() answers ``fetched`` in turn; ``description`` names ``columns``."""
    cur = mock.MagicMock(name="cursor")
    cur.fetchone.side_effect = list(fetched)
    cur.description = [SimpleNamespace(name=c) for c in columns]
    return cur


def statements(cur) -> list[str]:
    return [" ".join(call.args[0].split()) for call in cur.execute.call_args_list]


# --- the label set -------------------------------------------------------------------------


def test_configured_labels_never_touch_the_database(offline_settings):
    cur = fake_cursor()
    settings = replace(offline_settings, labels=("b", "a"))
    assert resolve_label_set(settings, cur, ["x", "y"], "run-1").labels == ["b", "a"]
    cur.execute.assert_not_called()


def test_a_stored_label_set_wins_over_the_snapshot(offline_settings):
    cur = fake_cursor((["neg", "pos"],))
    assert resolve_label_set(offline_settings, cur, ["neg", "pos", "other"], "run-1").labels == ["neg", "pos"]
    assert statements(cur) == ["SELECT labels FROM textclf.label_sets ORDER BY id DESC LIMIT 1"]


def test_the_first_snapshot_stores_its_labels_only_with_two_or_more(offline_settings):
    cur = fake_cursor(None)
    learned = resolve_label_set(offline_settings, cur, ["pos", "neg", "Neg ", "pos", None, "odd"], "run-1")
    assert learned.labels == ["neg", "pos"] and learned.not_admitted == {"odd": 1}  # 2 rows needed here
    assert "'odd' is on 1 row of the first snapshot" in learned.reason_for("odd")
    insert = cur.execute.call_args_list[-1]
    assert "INSERT INTO textclf.label_sets" in insert.args[0]
    assert insert.args[1][0].adapted == ["neg", "pos"] and insert.args[1][1:] == ("first snapshot", "run-1")

    cur = fake_cursor(None)
    assert resolve_label_set(offline_settings, cur, ["pos", "pos"], "run-2").labels == ["pos"]
    assert not any("INSERT" in s for s in statements(cur))  # one label must not decide for good


# --- a promotion is one transaction on the caller's cursor -----------------------------------


def decide(cur, **overrides):
    arguments = dict(run_id="run-1", interval_end=END, expected_champion=None, winner=7,
                     summary="v7 is better", reasons={"rule": "ok"}, actor="schedule")
    return registry.apply_run_decision(cur, **(arguments | overrides))


def test_a_promotion_writes_decision_history_and_event_on_one_cursor_without_committing():
    # no decision yet, no champion, the winner's row (artifact kept), decision id, nothing closed
    cur = fake_cursor(None, None, (), (41,), None)
    outcome = decide(cur)
    assert outcome["decision"] == "promoted" and outcome["id"] == 41 and outcome["champion_after"] == 7
    sent = statements(cur)
    assert sent[:2] == ["SELECT set_config('lock_timeout', %s, true)",
                        "SELECT 1 FROM textclf.champion_lock WHERE id = 1 FOR UPDATE"]
    assert "SELECT * FROM textclf.model_versions WHERE version = %s" in sent  # re-checked under the lock
    order = [s.split(" (")[0] for s in sent if s.startswith(("INSERT", "UPDATE"))]
    assert order == ["INSERT INTO textclf.promotion_decisions",
                     "UPDATE textclf.champion_history SET valid_to = clock_timestamp() WHERE valid_to IS NULL RETURNING valid_to",
                     "INSERT INTO textclf.champion_history",
                     "INSERT INTO textclf.pipeline_events"]
    history = cur.execute.call_args_list[-2].args[1]
    assert history["version"] == 7 and history["effective_from"] == END  # decides from the interval end
    cur.connection.commit.assert_not_called()  # the caller's transaction commits it, or none of it


def test_a_retried_promotion_replays_the_decision_and_writes_nothing():
    cur = fake_cursor(("run-1", "promoted", None, 7, {"summary": "v7 is better"}),
                      columns=("run_id", "decision", "champion_before", "champion_after", "reasons"))
    outcome = decide(cur)
    assert outcome["replayed"] and outcome["champion_after"] == 7
    assert not any(s.startswith(("INSERT", "UPDATE")) for s in statements(cur))


def test_a_run_older_than_the_champion_is_recorded_as_historical_and_never_applied():
    columns = ("model_version", "effective_from")
    cur = fake_cursor(None, (3, END + timedelta(days=5)), (2,), (42,), columns=columns)
    outcome = decide(cur, expected_champion=2)
    assert outcome["decision"] == "historical" and outcome["champion_after"] == 2
    assert "historical run: not applied" in outcome["reasons"]["summary"]
    assert not any("champion_history" in s and s.startswith(("INSERT", "UPDATE")) for s in statements(cur))


def test_a_champion_changed_under_the_run_writes_nothing_and_asks_to_judge_again():
    cur = fake_cursor(None, (5, END - timedelta(days=1)), columns=("model_version", "effective_from"))
    assert decide(cur, expected_champion=2) is None
    assert not any(s.startswith(("INSERT", "UPDATE")) for s in statements(cur))


# --- quarantine shaping (validate.py) ---------------------------------------------------------


def test_every_version_of_a_quarantined_id_is_recorded_with_its_reason():
    snapshot = pd.DataFrame({
        "id": ["a", "a", "b", None], "text": ["x", "x2", "ok", "y"], "label": ["pos"] * 4,
        "row_hash": ["h1", "h2", "h3", "h4"], "weight": [float("nan")] * 4,
    })
    outcome = ValidationOutcome(
        status="passed", clean=snapshot.iloc[2:3], new_rows=4, snapshot_rows=4,
        quarantined=[QuarantinedRow("a", "expect_x", "too long", "text", "x"),
                     QuarantinedRow(None, "expect_not_null", "id is NULL", "id", None)],
        failures=[], results={},
    )
    entries, held = quarantine_entries(snapshot, outcome, "textclf.labelled_texts", "run-1", no_id="<no id>")
    assert held == 3
    assert sorted((e["source_row"], e["row_hash"]) for e in entries) == [("<no id>", "h4"), ("a", "h1"), ("a", "h2")]
    assert all(e["raw"]["weight"] is None for e in entries)  # NaN becomes JSON null
    assert {e["reason"] for e in entries if e["source_row"] == "a"} == {"too long"}


# --- run options and the night's verdict -------------------------------------------------------


def test_empty_form_fields_leave_the_configuration_alone(offline_settings):
    options = RunOptions.from_params({"candidates": None, "bert_epochs": None, "bert_max_length": 64,
                                      "max_train_rows": 500})
    assert options.candidates is None and options.overrides == {"bert": {"max_length": 64}}
    assert options.config(offline_settings, "bert").max_length == 64
    assert options.config(offline_settings, "tfidf").max_train_rows == 500
    assert options.config(offline_settings, "bert").epochs == offline_settings.candidate_config("bert").epochs


VALIDATED = {"status": "passed", "reason": None, "interval_start": "2026-11-19T02:00:00+00:00",
             "interval_end": "2026-11-20T02:00:00+00:00"}
DONE = NightRecord(judged=["v2 tfidf"], decision="promote version 2", champion=2, documents_due=5,
                   documents_missing=0)


@pytest.mark.parametrize(("failed", "validation", "record", "green", "expected"), [
    ([], VALIDATED, DONE, True, "judged v2 tfidf: promote version 2; 5 of 5 documents"),
    (["train_bert", "score_0"], VALIDATED, None, False, "task(s) failed: train_bert, score_0"),
    ([], None, None, False, "never validated"),
    ([], {**VALIDATED, "status": "failed", "reason": "label 'spam' ..."}, replace(DONE, judged=[]), False,
     "validation failed, nothing was trained: label 'spam'"),
    ([], VALIDATED, replace(DONE, judged=[]), False, "no candidate was judged"),
    # The first night: judged, nothing met the floor, so nothing scored the interval's documents.
    ([], VALIDATED, replace(DONE, decision="no candidate qualified; there is still no champion", champion=None,
                            documents_missing=5), False,
     "5 of 5 documents of the interval [2026-11-19T02:00:00+00:00, 2026-11-20T02:00:00+00:00) have no "
     "prediction: there is no champion (no candidate qualified"),
    ([], VALIDATED, replace(DONE, documents_missing=2), False, "model version 2 did not score them"),
    ([], {**VALIDATED, "status": "no_new_data"}, replace(DONE, judged=[], decision=None), True,
     "no new labelled rows in [2026-11-19T02:00:00+00:00, 2026-11-20T02:00:00+00:00): nothing to retrain; 5 of 5"),
    ([], {**VALIDATED, "status": "no_new_data"}, replace(DONE, judged=[], champion=None, documents_due=0), True,
     "no new labelled rows"),
    ([], {**VALIDATED, "status": "no_new_data"}, replace(DONE, judged=[], champion=None, documents_missing=5),
     False, "have no prediction: there is no champion"),
])
def test_green_means_the_night_did_its_job(failed, validation, record, green, expected):
    verdict = judge_night(failed, validation, record)
    assert verdict.green is green and expected in verdict.summary, verdict


def test_failed_tasks_are_those_airflow_says_failed_mapped_ones_included():
    states = {"train_tfidf": "success", "score_0": "failed", "promote": "skipped", "evaluate": "upstream_failed",
              "extract": "failed", "predict_1": None}
    assert failed_tasks(states) == ["extract", "score_0"]


def test_the_nights_alert_names_the_run_the_verdict_and_each_failure():
    events = [{"task_id": "extract", "event": "task_failed", "message": "failed on try 1: ConfigError: run_root"},
              {"task_id": None, "event": "night_red", "message": "task(s) failed: extract"},
              {"task_id": "finish", "event": "task_failed", "message": "failed on try 1: task(s) failed"}]
    subject, text = failure_alert("textclf_retrain", "scheduled__2026-11-20", "task_failure", events)
    assert subject == "[textclf] textclf_retrain run scheduled__2026-11-20 failed"
    assert text == ("textclf_retrain run scheduled__2026-11-20 failed: task(s) failed: extract | "
                    "extract: failed on try 1: ConfigError: run_root")
    _, timed_out = failure_alert("textclf_retrain", "r1", "timed_out", [])
    assert "did not finish within the night's timeout" in timed_out
    _, unread = failure_alert("textclf_retrain", "r1", "task_failure", None)
    assert unread.endswith("(textclf.pipeline_events could not be read: see the callback's log)")
