"""textclf_promote: a champion change by hand as an Airflow DAG run (dag.test()), with the actor
and reason in the audit trail, the asset event, and refusals that fail on the first try."""

from __future__ import annotations

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
    assert ti.try_number == 1
    assert fetch(pg, "SELECT model_version FROM textclf.champion_history WHERE valid_to IS NULL") == [(v1,)]


def test_an_empty_reason_fails_on_the_first_try_and_the_form_field_is_optional(promote_dag, settings, pg,
                                                                               tiny_tfidf_dir):
    param = promote_dag.params.get_param("reason")
    assert param.value is None and "null" in param.schema["type"]  # "" would disable Trigger
    v1 = register_tiny(settings, tiny_tfidf_dir, key="a")
    run = promote_dag.test(run_conf={"action": "promote", "version": v1})
    assert str(run.state) == "failed"
    assert fetch(pg, "SELECT count(*) FROM textclf.champion_history") == [(0,)]
