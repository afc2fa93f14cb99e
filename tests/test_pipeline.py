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


def test_a_champion_of_an_older_split_scheme_is_compared_only_on_rows_it_never_saw(settings, pg, tiny_tfidf_dir):
    """A deployment changes its split key ([split] options or a new scheme in the code): the
    champion, trained under the old scheme, saw some of the new test rows. Evaluation still
    scores it on every new test row (the leaderboard), but the comparisons that decide promotion
    use only the test rows that were test rows under its scheme too."""
    from tasks.extract import SCHEME_V2, SPLIT_SCHEME, read_snapshot, split_key_text, split_under_scheme

    start, end = manual_run_interval(DAY.date())
    seed(settings, days=3, per_day=60, end=end)
    snapshot = extract_step(settings, "run-s", start, end)
    assert snapshot["fingerprint"]["split_scheme"] == SPLIT_SCHEME
    validation = validate_step(settings, "run-s", DAY, snapshot)
    with_old_scheme = {**validation["fingerprint"], "split_scheme": SCHEME_V2}
    old_champion = in_transaction(
        settings, registry.register_model, settings, kind="tfidf", staged_dir=tiny_tfidf_dir,
        labels=validation["labels"], params={}, metrics={}, data_fingerprint=with_old_scheme,
        run_id="old", logical_date=None, train_seconds=1.0, peak_memory_bytes=None, training_key="old")
    in_transaction(settings, registry.apply_run_decision, run_id="run-old", interval_end=start,
                   expected_champion=None, winner=old_champion, summary="old", reasons={}, actor="test")
    candidate = train_step(settings, "tfidf", "run-s", DAY, validation, RunOptions(candidates=("tfidf",)))

    evaluation = evaluate_step(settings, "run-s", validation, [candidate], RunOptions(candidates=("tfidf",)))

    test = read_snapshot(validation["clean_path"]).query("split == 'test'")
    unseen_texts = [t for t, i in zip(test["text"], test["id"], strict=True) if split_under_scheme(SCHEME_V2, t, i) == "test"]
    unseen = len(unseen_texts)
    assert 0 < unseen < len(test)
    (comparison, champion_rows, roles), = fetch(
        pg, "SELECT c.comparison, h.test_rows, c.role FROM textclf.evaluations c "
            "JOIN textclf.evaluations h ON h.run_id = c.run_id AND h.role = 'champion' "
            "WHERE c.run_id = 'run-s' AND c.role = 'candidate'")
    assert evaluation["champion"] == old_champion and champion_rows == len(test)
    assert comparison["rows_compared"] == unseen
    # The bootstrap resamples the distinct split keys of those rows, not the rows.
    assert comparison["groups_compared"] == len({split_key_text(t) for t in unseen_texts})
    page = (settings.run_dir("run-s") / "report" / "index.html").read_text()
    assert "another split scheme" in page
