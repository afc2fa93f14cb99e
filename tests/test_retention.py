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
    settings = replace(settings, retention=RetentionPolicy(keep_candidates=1, max_age_days=30))
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
    config.write_text("[retention]\nkeep_candidates = 1\nmax_age_days = 30\n")
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
