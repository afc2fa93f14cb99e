"""The real textclf_retrain DAG: integrity, Params, and end-to-end runs with dag.test()."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from conftest import fetch
from support import TINY_BERT, seed, ti_states
from tasks.config import REPO_ROOT

DAG_FILE = REPO_ROOT / "dags" / "textclf_retrain.py"


@pytest.fixture
def dagbag(airflow_ready):
    """Parsed afresh for every test: dag.test() leaves a run's conf in the in-memory DAG's
    Params, which would leak into the next test's run."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAG_FILE.parent))


def test_dagbag_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    dag = dagbag.get_dag("textclf_retrain")
    assert {t.task_id for t in dag.tasks} == {
        "extract", "validate", "train_tfidf", "train_bert", "train_pretrained", "plan_scoring",
        "plan_scoring_gpu", "score", "score_gpu", "evaluate", "promote", "plan_predictions",
        "plan_predictions_gpu", "predict", "predict_gpu", "publish_predictions", "finish",
    }
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
    bert = dag.get_task("train_bert")
    assert (bert.queue, bert.pool) == ("gpu", "gpu")
    for t in dag.tasks:
        assert t.execution_timeout is not None, t.task_id
        assert t.retries >= 1 or t.task_id == "finish", t.task_id
    assert dag.get_task("plan_predictions").upstream_task_ids == {"promote", "validate"}
    # Scoring is mapped over id ranges; a BERT champion's ranges go to the GPU workers.
    assert dag.get_task("predict").upstream_task_ids == {"plan_predictions"}
    assert dag.get_task("predict_gpu").upstream_task_ids == {"plan_predictions_gpu"}
    for on_cpu, on_gpu in (("predict", "predict_gpu"), ("score", "score_gpu")):
        gpu = dag.get_task(on_gpu)
        assert (gpu.queue, gpu.pool) == ("gpu", "gpu") and dag.get_task(on_cpu).queue == "default"
    # Test rows are scored where each model runs (BERT on the gpu queue), then compared.
    assert dag.get_task("score_gpu").upstream_task_ids == {"plan_scoring_gpu", "validate"}
    assert dag.get_task("evaluate").upstream_task_ids >= {"score", "score_gpu"}
    # One failed candidate does not stop the others from being judged; the verdict comes last.
    assert dag.get_task("evaluate").trigger_rule == "all_done"
    assert dag.get_task("plan_scoring").trigger_rule == "all_done"
    assert dag.get_task("finish").upstream_task_ids == {"train_tfidf", "train_bert", "train_pretrained",
                                                        "publish_predictions", "validate"}
    assert dag.leaves == [dag.get_task("finish")]
    assert "frozen test rows" in dag.doc_md


def test_params_carry_titles_sections_and_validation(dagbag):
    from airflow.sdk.definitions.param import ParamsDict

    dag = dagbag.get_dag("textclf_retrain")
    for name in dag.params:
        param = dag.params.get_param(name)
        assert param.description and param.schema.get("title") and param.schema.get("section"), name
    from airflow.sdk.exceptions import ParamValidationError

    params = ParamsDict(dag.params)
    with pytest.raises(ParamValidationError, match="'xgboost' is not one of"):
        params["candidates"] = ["xgboost"]
    with pytest.raises(ParamValidationError, match="bert_epochs"):
        params["bert_epochs"] = 1000
    params["candidates"] = ["tfidf"]  # a valid value is accepted


def test_every_failed_task_is_recorded_and_a_night_alerts_once(monkeypatch):
    """Task failures are recorded (no alert of their own); the DAG's failure callback sends the
    night's one alert through the configured channels (tests/test_night_signals.py runs them)."""
    import runpy

    module = runpy.run_path(str(DAG_FILE))  # puts plugins/ on the path, as Airflow does
    import textclf_airflow

    dag = module["textclf_retrain"]()
    assert dag.on_failure_callback is textclf_airflow.night_failed
    for task in dag.tasks:  # a plain callback, or (mapped tasks) Airflow's list of one
        callbacks = task.on_failure_callback
        assert (callbacks if isinstance(callbacks, list) else [callbacks]) == [textclf_airflow.task_failed]

    monkeypatch.delenv("TEXTCLF_FAILURE_EMAIL", raising=False)
    monkeypatch.delenv("TEXTCLF_FAILURE_SLACK_CONN", raising=False)
    assert textclf_airflow.notifiers("s", "t") == []
    monkeypatch.setenv("TEXTCLF_FAILURE_EMAIL", "ml-oncall@example.com")
    monkeypatch.setenv("TEXTCLF_FAILURE_SLACK_CONN", "slack_ml_alerts")
    mail, slack = textclf_airflow.notifiers("subject", "text")
    assert type(mail).__name__ == "SmtpNotifier" and mail.to == "ml-oncall@example.com"
    assert type(slack).__name__ == "SlackWebhookNotifier" and slack.slack_webhook_conn_id == "slack_ml_alerts"


def _worst_case(task) -> timedelta:
    """Every try of ``task`` running into its timeout, with Airflow's retry delays between."""
    total = task.execution_timeout * (task.retries + 1)
    for attempt in range(1, task.retries + 1):
        delay = task.retry_delay
        if task.retry_exponential_backoff:
            delay = min(delay * task.retry_exponential_backoff ** (attempt - 1), task.max_retry_delay)
        total += delay
    return total


def test_the_longest_chain_of_timeouts_and_retries_fits_in_the_nights_timeout(dagbag):
    """dagrun_timeout must be the last resort, not hit by a night whose every task behaved as
    configured: the longest path through the DAG, each task timing out on every try, fits."""
    dag = dagbag.get_dag("textclf_retrain")
    longest: dict[str, timedelta] = {}
    for task in dag.topological_sort():
        before = max((longest[u] for u in task.upstream_task_ids), default=timedelta(0))
        longest[task.task_id] = before + _worst_case(task)
    worst = max(longest.values())
    assert worst <= dag.dagrun_timeout, (worst, dag.dagrun_timeout)
    assert longest["train_bert"] - longest["validate"] == _worst_case(dag.get_task("train_bert"))
    assert worst > dag.dagrun_timeout / 2  # the bound is not absurdly loose either


def test_dag_file_parses_without_heavy_imports():
    heavy = ["torch", "transformers", "pandas", "sklearn", "great_expectations", "tasks.candidates.bert.model", "tasks.candidates.bert.training",
             "tasks.candidates.tfidf.training"]
    code = (
        f"import runpy, sys; runpy.run_path({str(DAG_FILE)!r}); "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_end_to_end_runs_promote_predict_and_rerun_changes_nothing(dagbag, clean_db, pg):
    from tasks.airflow_env import manual_run_interval
    from tasks.config import load_settings

    settings = load_settings(database_url=clean_db)
    dag = dagbag.get_dag("textclf_retrain")
    day = datetime(2026, 11, 20, tzinfo=UTC)
    start, end = manual_run_interval(day.date())
    seed(settings, days=5, per_day=80, end=end)

    first = dag.test(logical_date=day, run_conf=TINY_BERT)
    assert str(first.state) == "success", ti_states(first)
    states = ti_states(first)
    assert states["train_tfidf"] == states["train_bert"] == "success"
    assert states["train_pretrained"] == "skipped"
    assert states["promote"] == states["plan_predictions"] == states["publish_predictions"] == "success"
    [(champion_kind,)] = fetch(pg, "SELECT mv.kind FROM textclf.champion_history h JOIN "
                                   "textclf.model_versions mv ON mv.version = h.model_version")
    scored_on, idle = ("predict_gpu", "predict") if champion_kind == "bert" else ("predict", "predict_gpu")
    assert (states[scored_on], states[idle]) == ("success", "skipped")  # BERT scores on the GPU queue

    (status, new_rows, interval_start), = fetch(
        pg, "SELECT status, new_rows, interval_start FROM textclf.validation_runs "
            "WHERE run_id = %s", (first.run_id,))
    assert (status, new_rows, interval_start) == ("passed", 80, start)
    kinds = fetch(pg, "SELECT kind FROM textclf.model_versions ORDER BY kind")
    assert kinds == [("bert",), ("tfidf",)]
    evaluated = fetch(pg, "SELECT count(*), count(DISTINCT test_fingerprint) "
                          "FROM textclf.evaluations WHERE run_id = %s", (first.run_id,))
    assert evaluated == [(2, 1)]  # both candidates, the same frozen test rows
    champion = fetch(pg, "SELECT model_version FROM textclf.champion_history "
                         "WHERE valid_to IS NULL")
    assert len(champion) == 1
    predictions = fetch(pg, "SELECT count(*) FROM textclf.predictions")[0][0]
    created_before_end = fetch(
        pg, "SELECT count(*) FROM textclf.documents WHERE created_at < %s", (end,))[0][0]
    assert predictions == created_before_end == 42  # a promotion rescores every document
    report = settings.run_dir(first.run_id) / "report" / "index.html"
    assert report.is_file()
    # Registered models leave no checkpoints behind.
    assert not (settings.home / "checkpoints" / settings.run_dir(first.run_id).name / "bert").exists()
    assert states["finish"] == "success"

    rows_before = fetch(pg, "SELECT * FROM textclf.predictions ORDER BY document_id")
    again = dag.test(logical_date=day, run_conf=TINY_BERT)
    assert str(again.state) == "success", ti_states(again)
    assert fetch(pg, "SELECT count(*) FROM textclf.model_versions")[0][0] == 2
    assert fetch(pg, "SELECT * FROM textclf.predictions ORDER BY document_id") == rows_before
    assert ti_states(again)["promote"] == "skipped"  # same models: the champion is kept
    (decision,), = fetch(pg, "SELECT decision FROM textclf.promotion_decisions "
                             "WHERE run_id = %s", (again.run_id,))
    assert decision == "kept"


@pytest.mark.slow
def test_a_bad_batch_skips_training_ends_red_with_the_reason_and_loses_nothing(dagbag, clean_db, pg):
    from tasks.airflow_env import manual_run_interval
    from tasks.config import load_settings

    settings = load_settings(database_url=clean_db)
    dag = dagbag.get_dag("textclf_retrain")
    day = datetime(2026, 11, 20, tzinfo=UTC)
    _, end = manual_run_interval(day.date())
    seed(settings, days=3, per_day=60, end=end, bad_texts_on_last_day=0.6)

    run = dag.test(logical_date=day, run_conf={"candidates": ["tfidf"]})
    states = ti_states(run)
    assert str(run.state) == "failed", states  # nothing was judged: red, on the first try
    assert states["validate"] == "success" and states["finish"] == "failed"
    assert states["train_tfidf"] == states["evaluate"] == states["promote"] == "skipped"
    [(verdict,)] = fetch(pg, "SELECT message FROM textclf.pipeline_events WHERE run_id = %s AND "
                             "event = 'night_red'", (run.run_id,))
    assert verdict.startswith("validation failed, nothing was trained: expect_column_values_to_not_match_regex")
    (status, failures), = fetch(
        pg, "SELECT status, failures FROM textclf.validation_runs WHERE run_id = %s",
        (run.run_id,))
    assert status == "failed"
    assert any("expect_column_values_to_not_match_regex" in f and "60.0%" in f for f in failures)
    quarantined = fetch(pg, "SELECT count(DISTINCT source_row) FROM textclf.quarantine "
                            "WHERE stage = 'validation'")[0][0]
    assert quarantined == 36
    assert fetch(pg, "SELECT count(*) FROM textclf.labelled_texts")[0][0] == 180


@pytest.mark.slow
def test_candidates_in_textclf_toml_decide_when_the_form_is_left_empty(dagbag, clean_db, pg, tmp_path,
                                                                      monkeypatch):
    from tasks.airflow_env import manual_run_interval
    from tasks.config import load_settings

    config = tmp_path / "textclf.toml"
    config.write_text('candidates = ["tfidf"]\n[tfidf]\nsolver = "sgd"\nalphas = [0.0002]\n')
    monkeypatch.setenv("TEXTCLF_CONFIG", str(config))
    settings = load_settings(database_url=clean_db)
    day = datetime(2026, 11, 20, tzinfo=UTC)
    seed(settings, days=3, per_day=60, end=manual_run_interval(day.date())[1])

    run = dagbag.get_dag("textclf_retrain").test(logical_date=day)  # every Param at its default
    states = ti_states(run)
    assert str(run.state) == "success", states
    assert states["train_tfidf"] == "success" and states["train_bert"] == "skipped"
    [(kind, params)] = fetch(pg, "SELECT kind, params FROM textclf.model_versions")
    assert kind == "tfidf" and params["solver"] == "sgd" and params["alpha"] == 0.0002  # as configured


@pytest.mark.slow
def test_a_failed_candidate_fails_the_run_but_the_others_are_judged_and_predictions_written(
        dagbag, clean_db, pg, tmp_path, monkeypatch):
    from tasks.airflow_env import manual_run_interval
    from tasks.config import load_settings

    # A checkpoint directory that is not there: a configuration error (the trigger conf may only
    # name hub ids, see test_run_conf_is_checked_before_anything_runs).
    config = tmp_path / "textclf.toml"
    config.write_text('[bert]\ncheckpoint = "/no/such/checkpoint"\n')
    monkeypatch.setenv("TEXTCLF_CONFIG", str(config))

    settings = load_settings(database_url=clean_db)
    dag = dagbag.get_dag("textclf_retrain")
    assert dag.get_task("train_bert").retries > 0  # a missing checkpoint fails at once all the same
    day = datetime(2026, 11, 20, tzinfo=UTC)
    seed(settings, days=3, per_day=60, end=manual_run_interval(day.date())[1])

    run = dag.test(logical_date=day, run_conf=TINY_BERT)
    states = ti_states(run)
    assert states["train_bert"] == "failed" and states["train_tfidf"] == "success", states
    [bert] = [ti for ti in run.get_task_instances() if ti.task_id == "train_bert"]
    assert bert.try_number == 1  # a configuration error: no retry, no back-off
    assert states["evaluate"] == states["promote"] == states["predict"] == "success", states
    assert states["publish_predictions"] == "success", states
    assert states["finish"] == "failed" and str(run.state) == "failed"
    [(kind,)] = fetch(pg, "SELECT mv.kind FROM textclf.champion_history h "
                          "JOIN textclf.model_versions mv ON mv.version = h.model_version")
    assert kind == "tfidf"
    assert fetch(pg, "SELECT count(*) FROM textclf.predictions WHERE run_id = %s", (run.run_id,))[0][0] > 0
    events = fetch(pg, "SELECT task_id, event, message FROM textclf.pipeline_events WHERE run_id = %s "
                       "ORDER BY id", (run.run_id,))
    failed = {task: message for task, event, message in events if event == "task_failed"}
    assert set(failed) == {"train_bert", "finish"}, events  # one row per failed task
    assert "ConfigError" in failed["train_bert"] and "/no/such/checkpoint" in failed["train_bert"]
    assert [m for _, e, m in events if e == "night_red"] == ["task(s) failed: train_bert"]
    [night] = [m for _, e, m in events if e == "night_failed"]  # the DAG callback: the one alert's text
    assert night.startswith(f"textclf_retrain run {run.run_id} failed: task(s) failed: train_bert | "
                            "train_bert: failed on try 1: ConfigError")


def test_a_hung_night_is_reported_then_timed_out(monkeypatch):
    """The deadline alert and the timeout are configured; tests/test_system_scheduler.py sees the
    scheduler call the deadline callback and name the run."""
    import runpy

    monkeypatch.delenv("TEXTCLF_IN_PROCESS_RUN")  # as the scheduler parses it
    module = runpy.run_path(str(DAG_FILE))
    dag = module["textclf_retrain"]()
    assert dag.dagrun_timeout == module["NIGHT_TIMEOUT"] <= timedelta(hours=23)
    [alert] = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline]
    assert alert.interval == timedelta(hours=8) < dag.dagrun_timeout
    assert "DAGRUN_QUEUED_AT" in type(alert.reference).__name__.upper() or "queued" in str(alert.reference).lower()
    assert alert.callback.path.endswith("textclf_airflow.night_deadline_missed")
    monkeypatch.setenv("TEXTCLF_NIGHT_DEADLINE_SECONDS", "90")
    [alert] = runpy.run_path(str(DAG_FILE))["textclf_retrain"]().deadline
    assert alert.interval == timedelta(seconds=90)
    monkeypatch.setenv("TEXTCLF_NIGHT_DEADLINE_SECONDS", "forever")
    with pytest.raises(Exception, match="TEXTCLF_NIGHT_DEADLINE_SECONDS='forever' is not a number"):
        runpy.run_path(str(DAG_FILE))
