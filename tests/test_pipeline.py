"""The pipeline steps called directly (as the DAG tasks call them), for paths the DAG runs
in tests do not reach: the learning-curve report, a champion changed by another run between
evaluate and promote, and a run without a data interval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conftest import fetch, register_tiny
from support import in_transaction, seed
from tasks import registry
from tasks.airflow_env import manual_run_interval
from tasks.pipeline import (
    RunOptions,
    evaluate_step,
    extract_step,
    promote_step,
    train_step,
    validate_step,
)

DAY = datetime(2026, 11, 20, tzinfo=UTC)


def test_steps_learning_curve_and_a_champion_changed_during_the_run(settings, pg, tiny_tfidf_dir):
    start, end = manual_run_interval(DAY.date())
    seed(settings, days=3, per_day=60, end=end)
    snapshot = extract_step(settings, "run-1", None, None, run_after=DAY)
    assert (snapshot["interval_start"], snapshot["interval_end"]) == (
        start.isoformat(), end.isoformat())
    validation = validate_step(settings, "run-1", DAY, snapshot)
    assert validation["status"] == "passed"
    candidate = train_step(settings, "tfidf", "run-1", DAY, validation,
                           RunOptions(candidates=("tfidf",)))

    evaluation = evaluate_step(settings, "run-1", validation, [candidate, None],
                               RunOptions(candidates=("tfidf",), learning_curve=True))
    report_dir = settings.run_dir("run-1") / "report"
    assert evaluation["champion"] is None
    assert (report_dir / "learning_curve.png").is_file()
    assert "learning curve" in (report_dir / "index.html").read_text().lower()
    assert f"v{candidate['version']} tfidf solver</td><td>exact" in (report_dir / "index.html").read_text()

    # Another run (an earlier date's, in parallel) promotes a model after this run's evaluation,
    # before its promotion.
    other = register_tiny(settings, tiny_tfidf_dir, key="other-run")
    in_transaction(settings, registry.apply_run_decision, run_id="run-0", interval_end=end - timedelta(days=1), expected_champion=None,
        winner=other, summary="other run", reasons={}, actor="test")
    result = promote_step(settings, "run-1", validation, evaluation)
    (before, roles), = fetch(
        pg, "SELECT d.champion_before, array_agg(e.role ORDER BY e.role) "
            "FROM textclf.promotion_decisions d JOIN textclf.evaluations e USING (run_id) "
            "WHERE d.run_id = 'run-1' GROUP BY d.champion_before")
    assert before == other  # judged against the champion in place at promotion time
    assert roles == ["candidate", "champion"]
    assert result["previous"] == other
