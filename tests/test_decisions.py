"""The nightly decision across runs, retries and backfills (pipeline steps called as the DAG
calls them): promote is idempotent per run, a run older than the current champion's decision is
historical and never changes it, and re-running any date writes the same rows with the same
model version."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from conftest import fetch
from support import in_transaction, run_date, seed
from tasks import registry
from tasks.airflow_env import manual_run_interval
from tasks.errors import Skip
from tasks.pipeline import (
    extract_step,
    plan_predictions_step,
    predict_partition_step,
    predict_step,
    promote_step,
    summarize_predictions,
    validate_step,
)

DAY = datetime(2026, 11, 20, tzinfo=UTC)


def decisions(pg, run_id: str) -> list[tuple]:
    return fetch(pg, "SELECT decision, champion_before, champion_after FROM textclf.promotion_decisions "
                     "WHERE run_id = %s ORDER BY id", (run_id,))


def predictions_of(pg, run_id: str) -> list[tuple]:
    return fetch(pg, "SELECT document_id, model_version, label, confidence, predicted_at "
                     "FROM textclf.predictions WHERE run_id = %s ORDER BY document_id", (run_id,))


def test_a_retried_promotion_returns_the_decision_already_taken(settings, pg):
    seed(settings, days=3, per_day=60, end=manual_run_interval(DAY.date())[1])
    first = run_date(settings, DAY, "run-a")
    assert first["promotion"]["promoted"] and not first["promotion"]["replayed"]
    champion = first["promotion"]["champion"]

    # The retry of a promote task whose first try committed the champion change: it must not judge
    # the winner against itself and report "kept".
    retry = promote_step(settings, "run-a", first["validation"], first["evaluation"])
    assert retry == {**first["promotion"], "replayed": True}
    assert decisions(pg, "run-a") == [("promoted", None, champion)]
    assert in_transaction(settings, registry.current_champion) == champion


def test_backfills_predict_with_the_champion_of_their_date_and_never_change_the_current_one(settings, pg):
    day1, day2 = DAY - timedelta(days=1), DAY
    seed(settings, days=4, per_day=60, end=manual_run_interval(day2.date())[1])

    one = run_date(settings, day1, "d1")
    v1 = one["promotion"]["champion"]
    rows_d1 = predictions_of(pg, "d1")
    assert rows_d1 and {r[1] for r in rows_d1} == {v1}

    two = run_date(settings, day2, "d2", min_delta=-1.0)  # more data, a new version, forced in
    v2 = two["promotion"]["champion"]
    assert two["promotion"]["promoted"] and v2 != v1
    [(role, version, same_rows)] = fetch(pg, """
        SELECT e.role, e.model_version, e.test_fingerprint = c.test_fingerprint
        FROM textclf.evaluations e JOIN textclf.evaluations c ON c.run_id = e.run_id AND c.role = 'candidate'
        WHERE e.run_id = 'd2' AND e.role = 'champion'""")
    assert (role, version, same_rows) == ("champion", v1, True)  # judged on the same test rows

    # Re-running day 1 under its own run id (a clear, a reprocess backfill): same decision, same rows.
    rerun = run_date(settings, day1, "d1")
    assert rerun["promotion"] == {**one["promotion"], "replayed": True}
    assert predictions_of(pg, "d1") == rows_d1
    assert in_transaction(settings, registry.current_champion) == v2

    # A new run of day 1 (a backfill) whose candidate the policy would promote: historical.
    late = run_date(settings, day1, "d1-late", min_delta=-1.0, max_train_rows=100)
    assert late["candidate"]["version"] not in (v1, v2)
    [(decision, before, after)] = decisions(pg, "d1-late")
    assert (decision, before, after) == ("historical", v1, v1)
    [(summary,)] = fetch(pg, "SELECT reasons->>'summary' FROM textclf.promotion_decisions "
                             "WHERE run_id = 'd1-late'")
    assert summary.startswith("historical run: not applied") and "promote version" in summary
    assert late["promotion"]["promoted"] is False
    assert in_transaction(settings, registry.current_champion) == v2  # never changed by an older date
    assert late["prediction"]["model_version"] == v1  # the champion of day 1
    assert predictions_of(pg, "d1") == rows_d1  # identical rows, not even re-stamped
    assert fetch(pg, "SELECT count(*) FROM textclf.evaluations WHERE run_id = 'd1-late'")[0][0] == 2

    history = in_transaction(settings, registry.champion_history)
    assert [h["model_version"] for h in history] == [v1, v2]
    assert history[0]["effective_from"] == manual_run_interval(day1.date())[1]

    # A date before any champion took effect: nothing to score with, and the reason says so.
    day0 = day1 - timedelta(days=1)
    start, end = manual_run_interval(day0.date())
    validation = validate_step(settings, "d0", day0, extract_step(settings, "d0", start, end))
    with pytest.raises(Skip, match="there was no champion for data up to"):
        predict_step(settings, "d0", day0, validation)


def test_scoring_is_split_into_id_ranges_that_cover_every_document_once(settings, pg):
    seed(settings, days=3, per_day=60, end=manual_run_interval(DAY.date())[1])
    first = run_date(settings, DAY, "run-p")  # promoted: every document before the end is scored
    scored = fetch(pg, "SELECT document_id, model_version, label, confidence FROM textclf.predictions "
                       "ORDER BY document_id")
    with pg.cursor() as cur:
        cur.execute("TRUNCATE textclf.predictions")
    small = replace(settings, prediction_partition_rows=15, max_prediction_partitions=4)
    plan = plan_predictions_step(small, "run-p", first["validation"])
    assert plan["gpu"] == [] and plan["documents"] == len(scored) == 42
    ranges = plan["cpu"]
    assert len(ranges) == 3 and ranges[0]["id_from"] is None and ranges[-1]["id_to"] is None
    assert all(a["id_to"] == b["id_from"] for a, b in itertools.pairwise(ranges))  # contiguous
    results = [predict_partition_step(small, "run-p", DAY, r) for r in reversed(ranges)]
    sizes = [r["documents"] for r in results]
    assert sum(sizes) == 42 and all(12 <= size <= 16 for size in sizes)  # about equal
    assert fetch(pg, "SELECT document_id, model_version, label, confidence FROM textclf.predictions "
                     "ORDER BY document_id") == scored
    again = predict_partition_step(small, "run-p", DAY, ranges[1])  # one partition retried alone
    assert (again["documents"], again["rows_written"]) == (results[1]["documents"], 0)
    assert summarize_predictions(results)["documents"] == 42


def test_each_date_judged_against_a_champion_spends_its_nights_budget_once(settings, pg):
    from tasks import dashboard
    from tasks.policy import night_level

    days = [DAY + timedelta(days=d) for d in range(3)]
    seed(settings, days=5, per_day=60, end=manual_run_interval(days[-1].date())[1])
    v1 = run_date(settings, days[0], "b1")["promotion"]["champion"]

    def budget(run_id: str):
        [(value,)] = fetch(pg, "SELECT reasons->'budget' FROM textclf.promotion_decisions WHERE run_id = %s",
                           (run_id,))
        return value

    assert budget("b1") is None  # the first model is judged against no champion
    run_date(settings, days[1], "b2", min_delta=0.5)  # cannot promote: kept
    first = budget("b2")
    assert (first["night"], first["level"], first["spent"], first["rerun"]) == (
        1, pytest.approx(night_level(1, settings.promotion)), True, False)

    # The same date, a new run id, challengers that would pass (min_delta -1): the date's level
    # was spent by b2, so nothing is left to test them at, and the champion stays.
    again = run_date(settings, days[1], "b2-again", min_delta=-1)["promotion"]
    assert again["decision"] == "kept" and again["champion"] == v1
    spent = budget("b2-again")
    assert (spent["night"], spent["level"], spent["spent"], spent["rerun"]) == (1, 0.0, False, True)
    [(detail,)] = fetch(pg, """SELECT r->>'detail' FROM textclf.promotion_decisions,
        jsonb_array_elements(reasons->'verdicts'->0->'rules') r WHERE run_id = 'b2-again' AND r->>'rule' = 'beats_champion'""")
    assert "a re-run of a night already judged" in detail

    run_date(settings, days[2], "b3", min_delta=0.5)
    assert (budget("b3")["night"], budget("b3")["spent_before"]) == (2, pytest.approx(first["level"]))
    [(detail,)] = fetch(pg, """SELECT r->>'detail' FROM textclf.promotion_decisions,
        jsonb_array_elements(reasons->'verdicts'->0->'rules') r WHERE run_id = 'b3' AND r->>'rule' = 'beats_champion'""")
    assert "night 2 of this champion's reign" in detail  # the audit trail names the budget

    # A backfill of a date before the champion took effect is historical: no budget, nothing spent.
    with pytest.raises(Skip, match="no champion"):  # decided, then nothing to predict with
        run_date(settings, days[0] - timedelta(days=1), "b0", min_delta=0.5)
    assert decisions(pg, "b0") == [("historical", None, None)] and budget("b0") is None

    shown = dashboard.snapshot(settings)["budget"]
    assert (shown["version"], shown["nights"], shown["window"]) == (v1, 2, 1)
    assert shown["spent"] == pytest.approx(night_level(1, settings.promotion) + night_level(2, settings.promotion))
    assert shown["next_level"] == pytest.approx(night_level(3, settings.promotion))

    # A decision judged with a stale count of nights (another date was judged meanwhile) is not
    # written: the caller judges it again with the night it really is.
    stale = in_transaction(settings, registry.apply_run_decision, run_id="b4", interval_end=days[2],
                           expected_champion=v1, winner=None, summary="kept", reasons={},
                           actor="test", judged_nights=[])
    assert stale is None and decisions(pg, "b4") == []


def test_after_a_rollback_reruns_of_the_revoked_reign_follow_it(settings, pg):
    """Was: v2 rolled back (a bad model, or its artifact gone), re-runs of the dates it decided
    still picked v2. Now the champion of those dates, and of their re-runs, is the rolled-back-to
    one; the history still shows v2's reign for the audit."""
    days = [DAY + timedelta(days=d) for d in range(2)]
    seed(settings, days=4, per_day=60, end=manual_run_interval(days[-1].date())[1])
    v1 = run_date(settings, days[0], "r1")["promotion"]["champion"]
    second = run_date(settings, days[1], "r2", min_delta=-1)["promotion"]
    v2 = second["champion"]
    assert second["promoted"] and v2 != v1
    end2 = manual_run_interval(days[1].date())[1]
    assert in_transaction(settings, registry.champion_of, end2) == v2
    in_transaction(settings, registry.rollback, settings, actor="ops", reason="v2 misbehaves")
    assert in_transaction(settings, registry.champion_of, end2) == v1
    assert in_transaction(settings, registry.run_champion, "r2", end2) == v1
    rerun = run_date(settings, days[1], "r2")  # the same run id: its decision replays...
    assert rerun["promotion"]["replayed"] and rerun["prediction"]["model_version"] == v1  # ...v1 scores
    assert [h["model_version"] for h in in_transaction(settings, registry.champion_history)] == [v1, v2, v1]
