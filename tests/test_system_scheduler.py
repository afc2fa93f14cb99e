"""The real Airflow (``textclf airflow``: airflow standalone with the api-server, scheduler with
LocalExecutor, dag-processor and triggerer) driving textclf_retrain the way an operator does:
through the REST API the UI calls.

One Airflow per module, on a free port, with an Airflow metadata database of its own
(``<test database>_airflow_system``, recreated per run). Every wait has a generous deadline and
fails fast, with the task log and the tail of the service logs, as soon as a task fails or goes up
for retry. Only the TF-IDF candidate trains (``dag_run_conf``), to keep it quick on a CPU.
"""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from airflow_helpers import (
    BAD_TASK_STATES,
    FINISHED,
    AirflowStandalone,
    dag_runs,
    diagnose,
    fail_fast,
    iso,
    task_instances,
    wait_for_run,
)
from conftest import (
    autocommit_connection,
    fetch,
    recreate_database,
    synthetic_corpus,
    truncate_project_tables,
)
from support import SlackWebhook, in_transaction
from tasks import db, registry
from tasks.config import load_settings
from tasks.importer import CsvOptions, Record, import_records

pytestmark = pytest.mark.slow

DAG_ID = "textclf_retrain"
FAST = {"candidates": ["tfidf"]}
LABELLED_ROWS = 420  # over the last 7 days: 60 a day, three balanced, easily separable classes
DOCUMENTS_PER_DAY = 20
DAYS = 7
RUN_TIMEOUT = 600  # seconds for one backfill (three runs); a run takes ~30 s
NIGHT_DEADLINE_SECONDS = 3


# --- fixtures ------------------------------------------------------------------------------


def _seed(settings, now: datetime) -> None:
    """Labelled rows and documents spread evenly over the 7 days before today's midnight (UTC),
    so every daily interval gets the same rows whatever the time of day."""
    end = datetime.combine(now.date(), datetime.min.time(), UTC)
    start = end - timedelta(days=DAYS)
    span = end - start

    def records(rows, column):
        header = ["id", "text", "label", column]
        return header, (
            Record(n, dict(zip(header, [str(n), text, label,
                                        (start + span * (n - 1) / len(rows)).isoformat()], strict=True)))
            for n, (text, label) in enumerate(rows, start=1)
        )

    labelled = synthetic_corpus(LABELLED_ROWS, seed=1)
    documents = synthetic_corpus(DOCUMENTS_PER_DAY * DAYS, seed=2)
    with db.connect(settings) as conn:
        for kind, rows, column in (("labelled", labelled, "labelled_at"),
                                   ("documents", documents, "created_at")):
            header, recs = records(rows, column)
            report = import_records(conn, settings, kind, header, recs, CsvOptions(),
                                    source="system-test")
            assert report.loaded == len(rows) and report.quarantined == 0, report.summary()


@pytest.fixture(scope="module")
def slack():
    """Where the Airflow under test posts its alerts (a Slack webhook on loopback)."""
    webhook = SlackWebhook()
    yield webhook
    webhook.close()


@pytest.fixture(scope="module")
def system(database_url, tmp_path_factory, slack):
    """Seeded project database + running Airflow services; always stopped at the end."""
    from sqlalchemy.engine import make_url

    truncate_project_tables(database_url)
    airflow_db = f"{make_url(database_url).database}_airflow_system"
    recreate_database(database_url, airflow_db)
    settings = load_settings(home=tmp_path_factory.mktemp("system") / "home",
                             database_url=database_url)
    now = datetime.now(UTC)
    _seed(settings, now)

    # Only backfills and explicit triggers create runs: with catchup=False the scheduler would
    # otherwise add the latest nightly run as soon as the DAG is unpaused.
    services = AirflowStandalone(settings.home, database_url, extra_env={
        "TEXTCLF_AIRFLOW_DATABASE": airflow_db,
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        # Every night here runs longer than this: the scheduler calls the deadline alert for each.
        "TEXTCLF_NIGHT_DEADLINE_SECONDS": str(NIGHT_DEADLINE_SECONDS),
        **slack.env,
    })
    with services:
        healthy = services.wait_healthy(timeout=300)
        print(f"\nAirflow standalone healthy {healthy:.0f} s after start")
        response = services.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
        assert response.status_code == 200, response.text
        assert response.json()["is_paused"] is False
        yield services, settings, now


@pytest.fixture(scope="module")
def first_backfill(system):
    """Three daily intervals backfilled in order (max_active_runs=1, what the UI dialog sends)."""
    services, settings, now = system
    dates = backfill_dates(now)
    started = time.perf_counter()
    runs = backfill(services, dates, reprocess="none")
    print(f"\nbackfill of {len(dates)} dates: {time.perf_counter() - started:.0f} s")
    return dates, runs


# --- helpers -------------------------------------------------------------------------------


def backfill_dates(now: datetime) -> list[datetime]:
    """Logical dates 5, 4 and 3 days back at 02:00: whole intervals, clear of the latest one."""
    first = datetime.combine((now - timedelta(days=5)).date(), datetime.min.time(), UTC)
    return [first + timedelta(days=d, hours=2) for d in range(3)]


def backfill(services: AirflowStandalone, dates: list[datetime], reprocess: str) -> list[dict]:
    body = {
        "dag_id": DAG_ID, "from_date": iso(dates[0]), "to_date": iso(dates[-1]),
        "dag_run_conf": FAST, "reprocess_behavior": reprocess, "max_active_runs": 1,
    }
    planned = services.api("POST", "/api/v2/backfills/dry_run", json=body)
    assert planned.status_code == 200, planned.text
    assert [b["logical_date"] for b in planned.json()["backfills"]] == [iso(d) for d in dates]
    response = services.api("POST", "/api/v2/backfills", json=body)
    assert response.status_code == 200, response.text
    backfill_id = response.json()["id"]
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        runs = dag_runs(services, dates)
        fail_fast(services, runs, f"backfill {backfill_id}")
        state = services.api("GET", f"/api/v2/backfills/{backfill_id}").json()
        if state["completed_at"] and all(r["state"] in FINISHED for r in runs):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"backfill {backfill_id} not finished after {RUN_TIMEOUT} s; runs: "
                        f"{[(r['dag_run_id'], r['state']) for r in runs]}\n{services.log_tails()}")
        services.check_alive()
        time.sleep(2)
    assert [r["state"] for r in runs] == ["success"] * len(dates), diagnose(services, runs)
    return runs


def predictions(pg) -> list[tuple]:
    return fetch(pg, """
        SELECT document_id, model_version, label, confidence, run_id, logical_date, predicted_at
        FROM textclf.predictions ORDER BY document_id, model_version""")


def no_failure_events(pg) -> bool:
    """The task failure callback writes a task_failed event for every task that failed."""
    return fetch(pg, "SELECT count(*) FROM textclf.pipeline_events "
                     "WHERE event = 'task_failed'") == [(0,)]


@pytest.fixture(scope="module")
def pg(database_url):
    with autocommit_connection(database_url) as conn:
        yield conn


# --- tests ---------------------------------------------------------------------------------


def test_backfill_runs_every_date_in_order_and_writes_its_rows(system, first_backfill, pg):
    services, _, _ = system
    dates, runs = first_backfill
    assert [r["run_type"] for r in runs] == ["backfill"] * 3
    assert all(r["conf"] == FAST for r in runs)
    # max_active_runs=1: each run starts after the previous one ended (oldest first).
    for earlier, later in itertools.pairwise(runs):
        assert earlier["end_date"] <= later["start_date"], (earlier, later)
    for run in runs:
        run_id = run["dag_run_id"]
        states = {t["task_id"]: (t["state"], t["try_number"])
                  for t in task_instances(services, run_id)}
        assert states["train_tfidf"] == ("success", 1), states
        assert states["train_bert"][0] == "skipped", states  # not a candidate in this conf
        # No retries; 0 for a mapped task over nothing (score_gpu and predict_gpu without BERT).
        assert all(try_number == 1 or (task, state) in {("predict_gpu", "skipped"), ("score_gpu", "skipped")}
                   for task, (state, try_number) in states.items()), f"retries: {states}"
        [(status, new_rows)] = fetch(
            pg, "SELECT status, new_rows FROM textclf.validation_runs WHERE run_id = %s", (run_id,))
        assert status == "passed" and new_rows > 0, (run_id, status, new_rows)
        assert fetch(pg, "SELECT count(*) FROM textclf.evaluations WHERE run_id = %s",
                     (run_id,))[0][0] >= 1, run_id
        assert fetch(pg, "SELECT count(*) FROM textclf.predictions WHERE run_id = %s",
                     (run_id,))[0][0] > 0, run_id
    # The first run made the first champion; the later ones (no better on separable data) kept it.
    decisions = fetch(pg, "SELECT run_id, decision FROM textclf.promotion_decisions ORDER BY id")
    assert decisions == [(runs[0]["dag_run_id"], "promoted")] + [
        (r["dag_run_id"], "kept") for r in runs[1:]], decisions
    assert no_failure_events(pg)


def test_the_scheduler_calls_the_deadline_alert_and_it_names_the_run(system, first_backfill, pg, slack):
    """Airflow's own deadline path (scheduler -> executor callback, with the context Airflow
    builds): each backfilled night outlived its deadline, and each alert names its run."""
    _, runs = first_backfill
    missed = dict(fetch(pg, "SELECT run_id, message FROM textclf.pipeline_events WHERE event = 'deadline_missed'"))
    for run in runs:
        run_id = run["dag_run_id"]
        assert run_id in missed, (run_id, missed)
        assert missed[run_id].startswith(f"textclf_retrain run {run_id} missed its deadline"), missed[run_id]
        assert "still running" in missed[run_id] or "still queued" in missed[run_id]
        assert [t for t in slack.texts if f"run {run_id} missed its deadline" in t], slack.texts
    assert not [t for t in slack.texts if "run None" in t or "failed" in t], slack.texts


def test_reprocessing_completed_dates_rewrites_nothing(system, first_backfill, pg):
    services, _, _ = system
    dates, runs = first_backfill
    before = predictions(pg)
    models_before = fetch(pg, "SELECT version, training_key FROM textclf.model_versions "
                              "ORDER BY version")
    assert before
    started = time.perf_counter()
    rerun = backfill(services, dates, reprocess="completed")
    print(f"\nreprocessing backfill: {time.perf_counter() - started:.0f} s")
    # Completed runs are cleared and run again under the same run ids, not duplicated.
    assert [r["dag_run_id"] for r in rerun] == [r["dag_run_id"] for r in runs]
    assert len(dag_runs(services, dates)) == len(dates)
    for run in rerun:
        tis = task_instances(services, run["dag_run_id"])
        assert not [t for t in tis if t["state"] in BAD_TASK_STATES], tis
        assert {t["task_id"]: t["try_number"] for t in tis}["extract"] == 2  # really ran again
    after = predictions(pg)
    assert len(after) == len(before)
    assert {(d, v) for d, v, *_ in after} == {(d, v) for d, v, *_ in before}
    assert after == before  # same labels, confidences, run ids, and not even re-stamped
    # Same data, settings and code: training reused the registered versions.
    assert fetch(pg, "SELECT version, training_key FROM textclf.model_versions "
                     "ORDER BY version") == models_before
    assert no_failure_events(pg)


def test_trigger_with_params_takes_effect(system, first_backfill, pg):
    services, settings, now = system
    champion = in_transaction(settings, registry.current_champion)
    assert champion is not None
    # min_delta -1 makes any sound challenger qualify; dry_run must still keep the champion.
    conf = {"candidates": ["tfidf"], "dry_run": True, "min_delta": -1}
    response = services.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                            json={"logical_date": iso(now), "conf": conf})
    assert response.status_code == 200, response.text
    run_id = response.json()["dag_run_id"]
    run = wait_for_run(services, run_id)
    assert run["run_type"] == "manual" and run["conf"] == conf
    states = {t["task_id"]: t["state"] for t in task_instances(services, run_id)}
    assert states["train_tfidf"] == "success" and states["train_bert"] == "skipped", states
    assert states["promote"] == "skipped", states  # not promoted
    [(decision, before, after, reasons)] = fetch(pg, """
        SELECT decision, champion_before, champion_after, reasons
        FROM textclf.promotion_decisions WHERE run_id = %s""", (run_id,))
    assert (decision, before, after) == ("kept", champion, champion)
    assert reasons["action"] == "promote", reasons  # the policy (min_delta -1) would promote...
    assert "dry run" in reasons["summary"], reasons  # ...but the dry run recorded, not promoted
    [challenger] = [v for v in reasons["verdicts"] if v["qualifies"]]
    [beats] = [r for r in challenger["rules"] if r["rule"] == "beats_champion"]
    assert "not above -1.0000" in beats["detail"], beats
    assert in_transaction(settings, registry.current_champion) == champion
    assert fetch(pg, "SELECT DISTINCT kind FROM textclf.model_versions WHERE run_id = %s",
                 (run_id,)) == [("tfidf",)]


@pytest.mark.parametrize("conf", [{"candidates": ["xgboost"]}, {"bert_epochs": 1000}],
                         ids=["unknown-candidate", "epochs-above-maximum"])
def test_invalid_params_are_refused_and_create_no_run(system, conf):
    services, _, now = system
    before = [r["dag_run_id"] for r in dag_runs(services)]
    response = services.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                            json={"logical_date": iso(now), "conf": conf})
    assert response.status_code == 400, response.text
    param = next(iter(conf))
    assert f"Invalid input for param {param}" in response.json()["detail"]
    backfills_before = services.api("GET", "/api/v2/backfills", params={"dag_id": DAG_ID}).json()
    response = services.api("POST", "/api/v2/backfills", json={
        "dag_id": DAG_ID, "from_date": iso(now - timedelta(days=2)), "to_date": iso(now),
        "dag_run_conf": conf, "max_active_runs": 1})
    assert response.status_code == 422, response.text
    assert f"Invalid input for param {param}" in json.dumps(response.json())
    assert [r["dag_run_id"] for r in dag_runs(services)] == before
    assert services.api("GET", "/api/v2/backfills",
                        params={"dag_id": DAG_ID}).json() == backfills_before


def test_a_misconfigured_night_is_red_on_its_first_try_with_one_alert(system, first_backfill, pg, slack):
    """Last in this module (it breaks textclf.toml for a while): through the real scheduler, one
    configuration error fails the night once, every failed task is recorded, one alert names it."""
    services, settings, now = system
    config = settings.home / "textclf.toml"
    config.write_text('[validation]\nmax_text_length = "long"\n')
    try:
        response = services.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                                json={"logical_date": iso(now - timedelta(days=1)), "conf": FAST})
        assert response.status_code == 200, response.text
        run_id = response.json()["dag_run_id"]
        deadline = time.monotonic() + RUN_TIMEOUT
        while (run := services.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}").json())["state"] not in FINISHED:
            assert time.monotonic() < deadline, run
            services.check_alive()
            time.sleep(2)
    finally:
        config.unlink()
    assert run["state"] == "failed"
    states = {t["task_id"]: (t["state"], t["try_number"]) for t in task_instances(services, run_id)}
    assert states["extract"] == ("failed", 1) and states["finish"][0] == "failed", states
    assert not [task for task, (state, _) in states.items() if state == "up_for_retry"], states
    failed = [task for task, (state, _) in states.items() if state == "failed"]
    recorded = fetch(pg, "SELECT task_id FROM textclf.pipeline_events WHERE run_id = %s AND event = 'task_failed' "
                         "ORDER BY task_id", (run_id,))
    assert [task for (task,) in recorded] == sorted(failed)  # one row per failed task
    # The DAG failure callback runs in the dag-processor, after the run is marked failed.
    deadline = time.monotonic() + 120
    while not (alerts := [t for t in slack.texts if f"run {run_id} failed" in t]):
        assert time.monotonic() < deadline, slack.texts
        time.sleep(1)
    time.sleep(5)  # a second alert for the same night would arrive by now
    alerts = [t for t in slack.texts if f"run {run_id} failed" in t]
    assert len(alerts) == 1, alerts
    assert "extract: failed on try 1: ConfigError: [validation] max_text_length" in alerts[0]
