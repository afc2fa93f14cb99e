"""Green means the night did its job, through the real DAG (dag.test(): Airflow's own task and
DAG callback paths, its own contexts): a user's first night with a stray label trains,
promotes and predicts; a later unknown label is one red line and one alert; one
misconfiguration is one alert with every failed task recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conftest import fetch, synthetic_corpus
from support import SlackWebhook, seed, ti_states
from tasks.config import REPO_ROOT

pytestmark = pytest.mark.slow
DAG_FILE = REPO_ROOT / "dags" / "textclf_retrain.py"
FAST = {"candidates": ["tfidf"]}


@pytest.fixture
def dagbag(airflow_ready):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAG_FILE.parent))


@pytest.fixture
def slack(monkeypatch):
    webhook = SlackWebhook()
    for key, value in webhook.env.items():
        monkeypatch.setenv(key, value)
    yield webhook
    webhook.close()


def add_labelled(pg, rows: list[tuple[str, str]], start: datetime, first_id: int) -> None:
    """Rows written straight into the source table, labelled one minute apart from ``start``."""
    with pg.cursor() as cur:
        cur.executemany(
            "INSERT INTO textclf.labelled_texts (id, text, label, labelled_at) VALUES (%s, %s, %s, %s)",
            [(first_id + i, text, label, start + timedelta(minutes=i)) for i, (text, label) in enumerate(rows)])


def events(pg, run_id: str) -> list[tuple]:
    return fetch(pg, "SELECT task_id, event, message FROM textclf.pipeline_events WHERE run_id = %s "
                     "ORDER BY id", (run_id,))


def test_a_stray_label_on_the_first_night_is_set_aside_and_a_later_unknown_label_is_one_red_line(
        dagbag, clean_db, pg, slack):
    from tasks.airflow_env import manual_run_interval
    from tasks.config import load_settings

    settings = load_settings(database_url=clean_db)
    dag = dagbag.get_dag("textclf_retrain")
    day = datetime(2026, 11, 20, tzinfo=UTC)
    start, end = manual_run_interval(day.date())
    seed(settings, days=3, per_day=60, end=end)
    add_labelled(pg, [("win a free cruise now, reply yes", "spam")], start + timedelta(hours=3), 10_001)

    first = dag.test(logical_date=day, run_conf=FAST)
    states = ti_states(first)
    assert str(first.state) == "success", states
    [(status, labels)] = fetch(pg, "SELECT v.status, l.labels FROM textclf.validation_runs v, "
                                   "textclf.label_sets l WHERE v.run_id = %s", (first.run_id,))
    assert status == "passed" and labels == ["negative", "neutral", "positive"]
    [(reason,)] = fetch(pg, "SELECT reason FROM textclf.quarantine WHERE source_row = '10001'")
    assert "label 'spam' is on 1 row of the first snapshot, fewer than min_label_rows" in reason
    assert fetch(pg, "SELECT count(*) FROM textclf.champion_history")[0][0] == 1
    assert fetch(pg, "SELECT count(*) FROM textclf.predictions WHERE run_id = %s", (first.run_id,))[0][0] > 0
    [(verdict,)] = [(m,) for _, e, m in events(pg, first.run_id) if e == "night_done"]
    assert verdict.startswith("judged v1 tfidf: promote version 1")
    assert slack.texts == []

    # The next night: the label set is stored now, so an unknown label is a decision for people.
    next_day = day + timedelta(days=1)
    next_start, _ = manual_run_interval(next_day.date())
    add_labelled(pg, [*synthetic_corpus(30, seed=9), ("cheap pills, click here", "spma")],
                 next_start + timedelta(hours=1), 20_001)
    second = dag.test(logical_date=next_day, run_conf=FAST)
    states = ti_states(second)
    assert str(second.state) == "failed" and states["finish"] == "failed", states
    assert states["validate"] == "success" and states["train_tfidf"] == "skipped"
    [(verdict,)] = [(m,) for _, e, m in events(pg, second.run_id) if e == "night_red"]
    assert verdict.startswith("validation failed, nothing was trained")
    assert ("label 'spma' on 1 new row is not in the stored label set ('negative', 'neutral', 'positive')"
            in verdict)
    assert "allow_new_labels = true" in verdict
    [alert] = slack.texts  # one alert for the night, naming the run and the label
    assert alert.startswith(f"[textclf] textclf_retrain run {second.run_id} failed: validation failed")
    assert "'spma'" in alert


@pytest.mark.parametrize(("setting", "error"), [
    ('[validation]\nmax_text_length = "long"\n', "ConfigError: [validation] max_text_length"),
    # A run_root that cannot be written (here: under a file; a read-only mount reads the same).
    ('run_root = "{blocker}/runs"\n', "ConfigError: run_root ({blocker}/runs) cannot be written"),
], ids=["bad-value", "unwritable-run-root"])
def test_one_misconfiguration_is_one_alert_and_every_failed_task_is_recorded(
        dagbag, clean_db, pg, slack, tmp_path, monkeypatch, setting, error):
    from tasks.airflow_env import manual_run_interval
    from tasks.config import load_settings

    settings = load_settings(database_url=clean_db)
    day = datetime(2026, 11, 20, tzinfo=UTC)
    seed(settings, days=3, per_day=60, end=manual_run_interval(day.date())[1])
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    setting, error = setting.format(blocker=blocker), error.format(blocker=blocker)
    config = tmp_path / "textclf.toml"
    config.write_text(setting)
    monkeypatch.setenv("TEXTCLF_CONFIG", str(config))

    run = dagbag.get_dag("textclf_retrain").test(logical_date=day, run_conf=FAST)
    states = ti_states(run)
    assert str(run.state) == "failed"
    assert states["extract"] == "failed" and states["finish"] == "failed", states
    # The bookkeeping tasks skip at once instead of failing on the same configuration again.
    for bookkeeping in ("plan_scoring", "plan_scoring_gpu", "evaluate", "plan_predictions",
                        "plan_predictions_gpu"):
        assert states[bookkeeping] == "skipped", (bookkeeping, states)
    [extract] = [ti for ti in run.get_task_instances() if ti.task_id == "extract"]
    assert extract.try_number == 1  # a configuration error: no retry

    recorded = events(pg, run.run_id)
    failed = {task: message for task, event, message in recorded if event == "task_failed"}
    assert set(failed) == {"extract", "finish"}, recorded
    assert error in failed["extract"]
    assert [m for _, e, m in recorded if e == "night_red"] == ["task(s) failed: extract"]
    [alert] = slack.texts
    assert f"run {run.run_id} failed: task(s) failed: extract | extract: failed on try 1: {error}" in alert
    assert "run None" not in alert
