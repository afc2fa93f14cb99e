"""textclf_promote: a champion change by hand as an Airflow DAG run (dag.test()), with the actor
and reason in the audit trail, the asset event, refusals that fail on the first try, transient
failures retried without changing the champion twice, and failed runs recorded."""

from __future__ import annotations

from datetime import timedelta

import pytest

from conftest import REPO_ROOT, fetch, register_tiny
from support import ti_states

DAG_FILE = REPO_ROOT / "dags" / "textclf_promote.py"


@pytest.fixture
def promote_dag(airflow_ready):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.get_dag("textclf_promote")


def champion_events() -> list[dict]:
    """The extras of the textclf_champion asset's events, from Airflow's metadata database."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return [e.extra for e in session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .filter(AssetModel.name == "textclf_champion").order_by(AssetEvent.id)]


def registry_history(settings) -> list[dict]:
    from tasks import db, registry

    with db.transaction(settings) as cur:
        return registry.champion_history(cur)


def test_promote_then_rollback_through_the_dag(promote_dag, settings, pg, tiny_tfidf_dir):
    v1 = register_tiny(settings, tiny_tfidf_dir, key="a")
    v2 = register_tiny(settings, tiny_tfidf_dir, key="b")
    before = len(champion_events())  # other tests' nights emit them too

    run = promote_dag.test(run_conf={"action": "promote", "version": v1, "reason": "first model"})
    assert str(run.state) == "success" and ti_states(run)["change_champion"] == "success"
    run = promote_dag.test(run_conf={"action": "promote", "version": v2, "reason": "canary looked good"})
    assert str(run.state) == "success"
    [(champion, reason, actor)] = fetch(pg, "SELECT model_version, reason, actor FROM textclf.champion_history "
                                            "WHERE valid_to IS NULL")
    assert (champion, reason) == (v2, "canary looked good") and actor.startswith("airflow:")
    assert [e["version"] for e in champion_events()[before:]] == [v1, v2]

    again = promote_dag.test(run_conf={"action": "promote", "version": v2, "reason": "again"})
    assert ti_states(again)["change_champion"] == "skipped"  # already champion: no event
    assert len(champion_events()) == before + 2

    back = promote_dag.test(run_conf={"action": "rollback", "reason": "v2 misbehaves"})
    assert str(back.state) == "success"
    assert fetch(pg, "SELECT model_version FROM textclf.champion_history WHERE valid_to IS NULL") == [(v1,)]


def test_an_unknown_version_fails_on_the_first_try_and_changes_nothing(promote_dag, settings, pg, tiny_tfidf_dir):
    v1 = register_tiny(settings, tiny_tfidf_dir, key="a")
    promote_dag.test(run_conf={"action": "promote", "version": v1, "reason": "first model"})
    run = promote_dag.test(run_conf={"action": "promote", "version": 999, "reason": "typo"})
    assert str(run.state) == "failed"
    [ti] = run.get_task_instances()
    assert ti.try_number == 1 and ti.max_tries == 2  # retries are configured, a refusal skips them
    assert fetch(pg, "SELECT model_version FROM textclf.champion_history WHERE valid_to IS NULL") == [(v1,)]
    # The task's failure and the run's (the DAG callback: the one alert's text) are recorded.
    recorded = fetch(pg, "SELECT event, task_id, message FROM textclf.pipeline_events WHERE run_id = %s "
                         "ORDER BY id", (run.run_id,))
    assert [(e, t) for e, t, _ in recorded] == [("task_failed", "change_champion"), ("run_failed", None)]
    assert recorded[1][2].startswith(f"textclf_promote run {run.run_id} failed: ")
    assert "change_champion: failed on try 1: RegistryError: model version 999 does not exist" in recorded[1][2]


@pytest.mark.parametrize(("action", "decision"), [("rollback", "rollback"), ("promote", "manual")])
def test_a_retry_after_the_commit_does_not_change_the_champion_again(promote_dag, settings, pg, tiny_tfidf_dir,
                                                                     monkeypatch, action, decision):
    """The first try commits, then fails on something transient (the connection is lost before
    Airflow hears of the success): the retry must not roll back again (that would undo the
    rollback) nor record a second decision, and it emits the asset event the first try never did."""
    import psycopg2

    from tasks import pipeline

    v1 = register_tiny(settings, tiny_tfidf_dir, key="a")
    v2 = register_tiny(settings, tiny_tfidf_dir, key="b")
    promote_dag.test(run_conf={"action": "promote", "version": v1, "reason": "first model"})
    promote_dag.test(run_conf={"action": "promote", "version": v2, "reason": "second model"})
    decisions_before = fetch(pg, "SELECT count(*) FROM textclf.promotion_decisions")[0][0]
    events_before = len(champion_events())

    real_step, calls = pipeline.change_champion_step, []

    def commits_then_loses_the_connection(*args, **kwargs):
        calls.append(real_step(*args, **kwargs))
        if len(calls) == 1:
            raise psycopg2.OperationalError("server closed the connection unexpectedly")
        return calls[-1]

    monkeypatch.setattr(pipeline, "change_champion_step", commits_then_loses_the_connection)
    promote_dag.get_task("change_champion").retry_delay = timedelta(0)
    run = promote_dag.test(run_conf={"action": action, "version": v1, "reason": "v2 misbehaves"})

    assert str(run.state) == "success"
    [ti] = run.get_task_instances()
    assert (ti.try_number, str(ti.state)) == (2, "success")
    # The retry found the change of the first try (by run id) and replayed it, not repeated it.
    assert [c["replayed"] for c in calls] == [False, True]
    assert fetch(pg, "SELECT model_version FROM textclf.champion_history WHERE valid_to IS NULL") == [(v1,)]
    assert fetch(pg, "SELECT decision, champion_before, champion_after FROM textclf.promotion_decisions "
                     "ORDER BY id OFFSET %s", (decisions_before,)) == [(decision, v2, v1)]
    assert [(e["version"], e["previous"]) for e in champion_events()[events_before:]] == [(v1, v2)]


def test_a_retry_does_not_redo_a_change_that_was_changed_since(promote_dag, settings, pg, tiny_tfidf_dir,
                                                              monkeypatch):
    """The first try's rollback committed, then someone else changed the champion before the
    retry: the retry repeats nothing (it is skipped, saying so)."""
    import psycopg2

    from tasks import db, pipeline, registry

    v1, v2, v3 = (register_tiny(settings, tiny_tfidf_dir, key=k) for k in "abc")
    for version in (v1, v2):
        promote_dag.test(run_conf={"action": "promote", "version": version, "reason": f"model {version}"})
    real_step = pipeline.change_champion_step

    def commits_then_someone_promotes_v3(*args, **kwargs):
        real_step(*args, **kwargs)
        monkeypatch.setattr(pipeline, "change_champion_step", real_step)
        with db.transaction(settings) as cur:
            registry.set_champion(cur, settings, v3, reason="nightly", actor="night")
        raise psycopg2.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(pipeline, "change_champion_step", commits_then_someone_promotes_v3)
    promote_dag.get_task("change_champion").retry_delay = timedelta(0)
    run = promote_dag.test(run_conf={"action": "rollback", "reason": "v2 misbehaves"})

    [ti] = run.get_task_instances()
    assert (ti.try_number, str(ti.state)) == (2, "skipped")
    assert [h["model_version"] for h in registry_history(settings)] == [v1, v2, v1, v3]


def test_failures_are_recorded_and_alert_once():
    import runpy

    import textclf_airflow

    dag = runpy.run_path(str(DAG_FILE))["textclf_promote"]()
    assert dag.on_failure_callback is textclf_airflow.night_failed
    assert dag.default_args["on_failure_callback"] is textclf_airflow.task_failed


def test_an_empty_reason_fails_on_the_first_try_and_the_form_field_is_optional(promote_dag, settings, pg,
                                                                               tiny_tfidf_dir):
    param = promote_dag.params.get_param("reason")
    assert param.value is None and "null" in param.schema["type"]  # "" would disable Trigger
    v1 = register_tiny(settings, tiny_tfidf_dir, key="a")
    run = promote_dag.test(run_conf={"action": "promote", "version": v1})
    assert str(run.state) == "failed"
    assert fetch(pg, "SELECT count(*) FROM textclf.champion_history") == [(0,)]
