"""Candidate kinds are plug-ins: one module and one KINDS entry add a kind to the
configuration, the registry, the CLI and the DAG (the README's "Add your own candidate")."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import centroid
from centroid.model import CentroidClassifier
from conftest import fetch
from support import in_transaction, seed, ti_states
from tasks import candidates, registry
from tasks.config import REPO_ROOT, ConfigError, load_settings


def test_every_kind_fulfils_the_contract():
    for name, kind in candidates.KINDS.items():
        assert kind.name == name
        kind.config_class()  # every setting has a default
        assert callable(kind.train) and callable(kind.load)
    assert candidates.default_candidates() == ("tfidf", "bert")
    with pytest.raises(KeyError, match="unknown candidate kind 'xgb'; known kinds: tfidf, bert"):
        candidates.get_kind("xgb")


@pytest.fixture
def with_centroid_kind(monkeypatch):
    monkeypatch.setitem(candidates.KINDS, "centroid", centroid.KIND)


def test_a_new_kind_is_configured_from_its_own_table(with_centroid_kind, tmp_path, monkeypatch):
    config = tmp_path / "textclf.toml"
    config.write_text('candidates = ["tfidf", "centroid"]\n[centroid]\ntemperature = 0.5\n')
    monkeypatch.setenv("TEXTCLF_CONFIG", str(config))
    settings = load_settings()
    assert settings.candidate_config("centroid") == centroid.CentroidConfig(temperature=0.5)
    config.write_text("[centroid]\ntemprature = 0.5\n")
    with pytest.raises(ConfigError, match=r"unknown setting in \[centroid\]: temprature"):
        load_settings()


@pytest.mark.slow
def test_a_new_kind_runs_through_the_dag(with_centroid_kind, airflow_ready, clean_db, pg):
    from airflow.dag_processing.dagbag import DagBag

    from tasks.airflow_env import manual_run_interval

    dag = DagBag(dag_folder=str(REPO_ROOT / "dags")).dags["textclf_retrain"]
    task = dag.get_task("train_centroid")
    assert (task.queue, task.pool) == ("default", "default_pool")
    assert "centroid" in dag.params.get_param("candidates").schema["items"]["enum"]

    settings = load_settings(database_url=clean_db)
    day = datetime(2026, 11, 20, tzinfo=UTC)
    seed(settings, days=3, per_day=60, end=manual_run_interval(day.date())[1])
    run = dag.test(logical_date=day, run_conf={"candidates": ["tfidf", "centroid"]})
    states = ti_states(run)
    assert str(run.state) == "success", states
    assert states["train_centroid"] == states["train_tfidf"] == "success"
    assert states["train_bert"] == "skipped"
    evaluated = fetch(pg, """
        SELECT mv.kind, count(DISTINCT e.test_fingerprint) FROM textclf.evaluations e
        JOIN textclf.model_versions mv ON mv.version = e.model_version
        WHERE e.run_id = %s GROUP BY mv.kind ORDER BY mv.kind""", (run.run_id,))
    assert evaluated == [("centroid", 1), ("tfidf", 1)]  # both judged on the same test rows
    [(version,)] = fetch(pg, "SELECT version FROM textclf.model_versions WHERE kind = 'centroid'")
    model = in_transaction(settings, registry.load_model, settings, version)
    assert isinstance(model, CentroidClassifier)
    assert model.labels[model.predict_proba(["love wonderful great"]).argmax()] == "positive"
