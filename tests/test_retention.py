"""Retention (textclf gc, the textclf_maintenance DAG): space is freed, and nothing a rollback
needs is ever deleted."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from conftest import fetch, register_tiny
from support import in_transaction
from tasks import registry
from tasks.config import REPO_ROOT, RetentionPolicy
from tasks.retention import collect_garbage


def age(path, days: float) -> None:
    stamp = time.time() - days * 86400
    for p in [path, *path.rglob("*")]:
        os.utime(p, (stamp, stamp))


@pytest.fixture
def cluttered(settings, pg, tiny_tfidf_dir):
    """Five versions (v1 then v2 were champion), an old and a recent run, old and new checkpoints."""
    settings = replace(settings, retention=RetentionPolicy(keep_candidates=1, max_age_days=30, grace_hours=0))
    versions = [register_tiny(settings, tiny_tfidf_dir, key=f"k{i}") for i in range(5)]
    in_transaction(settings, registry.set_champion, settings, versions[0], reason="first", actor="test")
    in_transaction(settings, registry.set_champion, settings, versions[1], reason="second", actor="test")
    for run_id, validated in (("old-run", datetime.now(UTC) - timedelta(days=45)),
                              ("new-run", datetime.now(UTC) - timedelta(days=1))):
        run_dir = settings.run_dir(run_id)
        (run_dir / "report").mkdir(parents=True)
        (run_dir / "snapshot.parquet").write_bytes(b"x" * 100_000)
        with pg.cursor() as cur:
            cur.execute("""INSERT INTO textclf.validation_runs (run_id, interval_start, interval_end,
                status, new_rows, snapshot_rows, quarantined_rows, failures, results, fingerprint, validated_at)
                VALUES (%s, now(), now(), 'passed', 1, 1, 0, '[]', '{}', '{}', %s)""", (run_id, validated))
    for name, days in (("old-run", 40), ("new-run", 1)):
        checkpoint = settings.home / "checkpoints" / name / "bert"
        checkpoint.mkdir(parents=True)
        (checkpoint / "optimizer.pt").write_bytes(b"y" * 50_000)
        age(checkpoint.parent, days)
    return settings, versions


def test_a_dry_run_lists_and_deletes_nothing(cluttered):
    settings, versions = cluttered
    report = collect_garbage(settings, dry_run=True)
    assert {f.what for f in report.freed} == {
        f"model artifact (v{versions[2]} tfidf)", f"model artifact (v{versions[3]} tfidf)", "run folder",
        "checkpoints"}
    assert report.bytes_freed > 150_000 and report.summary().startswith("retention would free")
    assert all(in_transaction(settings, registry.fetch_artifact, settings, v) for v in versions)
    assert settings.run_dir("old-run").exists()


@pytest.mark.slow
def test_the_maintenance_dag_frees_space_and_a_rollback_still_works(cluttered, airflow_ready, pg, monkeypatch,
                                                                    tmp_path):
    from airflow.dag_processing.dagbag import DagBag

    settings, versions = cluttered
    config = tmp_path / "textclf.toml"
    config.write_text("[retention]\nkeep_candidates = 1\nmax_age_days = 30\ngrace_hours = 0\n")
    monkeypatch.setenv("TEXTCLF_CONFIG", str(config))
    monkeypatch.setenv("TEXTCLF_HOME", str(settings.home))
    dag = DagBag(dag_folder=str(REPO_ROOT / "dags")).dags["textclf_maintenance"]
    run = dag.test(logical_date=datetime(2026, 11, 28, 4, tzinfo=UTC))
    assert str(run.state) == "success"
    [ti] = run.get_task_instances()
    assert str(ti.state) == "success"
    deleted = [v for (v,) in fetch(pg, "SELECT version FROM textclf.model_versions "
                                       "WHERE artifact_deleted_at IS NOT NULL ORDER BY version")]
    assert deleted == versions[2:4]  # never champion, not among the newest keep_candidates
    assert not settings.run_dir("old-run").exists() and settings.run_dir("new-run").exists()
    assert not (settings.home / "checkpoints" / "old-run").exists()
    assert (settings.home / "checkpoints" / "new-run").exists()

    assert in_transaction(settings, registry.rollback, settings, actor="ops") == versions[0]  # the previous champion is there
    assert in_transaction(settings, registry.load_model, settings, versions[0]).predict_proba(["great"]).shape == (1, 3)
    with pytest.raises(registry.RegistryError, match="deleted by retention"):
        in_transaction(settings, registry.load_model, settings, versions[2])
    with pytest.raises(registry.RegistryError, match="deleted by retention"):
        in_transaction(settings, registry.set_champion, settings, versions[3], reason="oops", actor="ops")
    again = collect_garbage(settings)
    assert again.freed == []  # idempotent


def test_versions_younger_than_the_grace_or_judged_by_an_undecided_run_are_kept(cluttered, pg):
    settings, versions = cluttered
    graced = replace(settings, retention=replace(settings.retention, grace_hours=24))
    assert not [f for f in collect_garbage(graced, dry_run=True).freed if f.what.startswith("model")]  # < 1 day
    with pg.cursor() as cur:
        cur.execute("UPDATE textclf.model_versions SET created_at = now() - interval '2 days', "
                    "last_used_at = now() - interval '2 days'")
        # v3 was judged an hour ago by a run that has not decided yet: a night in flight.
        cur.execute("""INSERT INTO textclf.evaluations (run_id, model_version, role, test_rows, test_fingerprint,
                       metrics) VALUES ('in-flight', %s, 'candidate', 10, 'x', '{}')""", (versions[2],))
    freed = [f.what for f in collect_garbage(graced, dry_run=True).freed if f.what.startswith("model")]
    assert freed == [f"model artifact (v{versions[3]} tfidf)"]


def test_a_night_promotes_while_retention_runs_in_a_loop(settings, pg):
    """gc with keep_candidates = 0 every few milliseconds during a whole night: tonight's winner
    is young, so it is kept, promoted and scores the documents."""
    import threading

    from support import run_date, seed
    from tasks.airflow_env import manual_run_interval

    eager = replace(settings, retention=RetentionPolicy(keep_candidates=0, max_age_days=30))
    day = datetime(2026, 11, 20, tzinfo=UTC)
    seed(settings, days=3, per_day=60, end=manual_run_interval(day.date())[1])
    stop, sweeps = threading.Event(), []

    def sweep():
        while not stop.is_set():
            sweeps.append(collect_garbage(eager))
            time.sleep(0.01)

    sweeper = threading.Thread(target=sweep)
    sweeper.start()
    try:
        night = run_date(settings, day, "night-with-gc")
    finally:
        stop.set()
        sweeper.join()
    assert len(sweeps) > 5 and night["promotion"]["promoted"]
    assert fetch(pg, "SELECT count(*) FROM textclf.model_versions WHERE artifact_deleted_at IS NOT NULL") == [(0,)]
    assert night["prediction"]["rows_written"] > 0


def test_a_winner_deleted_while_it_was_judged_is_not_promoted(settings, pg):
    """Retention misconfigured with no grace deletes the winner between evaluate and promote:
    the promotion re-checks the artifact under the champion lock and refuses, naming it."""
    from support import seed
    from tasks.airflow_env import manual_run_interval
    from tasks.errors import is_final
    from tasks.pipeline import (
        RunOptions,
        evaluate_step,
        extract_step,
        promote_step,
        train_step,
        validate_step,
    )

    day = datetime(2026, 11, 20, tzinfo=UTC)
    start, end = manual_run_interval(day.date())
    seed(settings, days=3, per_day=60, end=end)
    validation = validate_step(settings, "r", day, extract_step(settings, "r", start, end))
    trained = train_step(settings, "tfidf", "r", day, validation, RunOptions(candidates=("tfidf",)))
    evaluation = evaluate_step(settings, "r", validation, [trained])
    reckless = replace(settings, retention=RetentionPolicy(keep_candidates=0, max_age_days=30, grace_hours=0))
    assert [f.what for f in collect_garbage(reckless).freed if f.what.startswith("model")] == [
        f"model artifact (v{trained['version']} tfidf)"]
    with pytest.raises(registry.RegistryError, match="retention deleted its artifact") as raised:
        promote_step(settings, "r", validation, evaluation)
    assert is_final(raised.value) and "grace_hours" in str(raised.value)
    assert fetch(pg, "SELECT count(*) FROM textclf.champion_history") == [(0,)]


def test_folders_nothing_points_at_are_swept_once_old(cluttered):
    """Was: a run that failed before validation recorded it, and an artifact whose registration
    never committed, kept their folders for ever. A dry run lists them first."""
    settings, versions = cluttered
    failed_run = settings.run_dir("failed-in-validate")
    (failed_run / "snapshot.parquet").parent.mkdir(parents=True)
    (failed_run / "snapshot.parquet").write_bytes(b"z" * 30_000)
    age(failed_run, 40)
    running_now = settings.run_dir("extracting-now")  # a night in flight, not validated yet
    running_now.mkdir(parents=True)
    (running_now / "snapshot.parquet").write_bytes(b"z")
    stray = settings.models_dir / "999"  # uploaded, then the registration rolled back
    stray.mkdir(parents=True)
    (stray / "model.safetensors").write_bytes(b"w" * 20_000)
    age(stray, 2)
    listed = {(f.what, f.where) for f in collect_garbage(settings, dry_run=True).freed}
    assert ("run folder (never validated)", str(failed_run)) in listed
    assert ("artifact folder (no version row)", str(stray)) in listed
    assert failed_run.exists() and stray.exists()  # a dry run deletes nothing
    collect_garbage(settings)
    assert not failed_run.exists() and not stray.exists()
    assert running_now.exists() and settings.run_dir("new-run").exists()
    assert all((settings.models_dir / str(v)).exists() for v in versions[:2])  # champions keep theirs
