"""Airflow's distributed engine, for real: the CeleryExecutor (Redis broker on 127.0.0.1) with
two workers, one serving the `default` queue and one `gpu`, runs textclf_retrain. Airflow's own
records and the workers' logs show that the fine-tune ran on the gpu worker and the mapped
scoring partitions on the other."""

from __future__ import annotations

import socket

import pytest

from airflow_helpers import AirflowComponents, free_port, iso, task_instances, wait_for_run, wait_healthy
from conftest import recreate_database
from support import TINY_BERT, seed
from tasks.airflow_env import admin_password, airflow_environment, manual_run_interval, prepare_airflow
from tasks.config import load_settings

pytestmark = pytest.mark.slow
REDIS = ("127.0.0.1", 6379)


def redis_running() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=1):
            return True
    except OSError:
        return False


def test_fine_tune_on_the_gpu_worker_and_mapped_scoring_on_the_default_worker(database_url, tmp_path,
                                                                               monkeypatch, clean_db):
    from datetime import UTC, datetime

    from sqlalchemy.engine import make_url

    assert redis_running(), "this test needs Redis on 127.0.0.1:6379 (the CI machine runs one)"
    metadata_db = f"{make_url(database_url).database}_airflow_celery"
    recreate_database(database_url, metadata_db)
    monkeypatch.setenv("TEXTCLF_AIRFLOW_DATABASE", metadata_db)
    home = tmp_path / "home"
    home.mkdir()
    (home / "textclf.toml").write_text("prediction_partition_rows = 15\n")  # three mapped partitions
    settings = load_settings(home=home, database_url=clean_db)
    day = datetime(2026, 11, 20, tzinfo=UTC)
    seed(settings, days=3, per_day=60, end=manual_run_interval(day.date())[1])

    port = free_port()
    env = airflow_environment(settings, port=port)
    env.update({
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS[0]}:{REDIS[1]}/7",
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the run triggered below
        "TEXTCLF_HOME": str(home),
    })
    prepare_airflow(settings, env)
    admin_password(home / "airflow")
    worker = ["airflow", "celery", "worker", "--skip-serve-logs"]
    commands = {
        "api-server": ["airflow", "api-server", "--port", str(port)],
        "scheduler": ["airflow", "scheduler"],
        "dag-processor": ["airflow", "dag-processor"],
        "worker-default": [*worker, "--queues", "default", "--concurrency", "2",
                           "--celery-hostname", "default@%h"],
        "worker-gpu": [*worker, "--queues", "gpu", "--concurrency", "1", "--celery-hostname", "gpu@%h"],
    }
    with AirflowComponents(env, home / "components", commands) as airflow:
        wait_healthy(airflow.rest, airflow.started_at, airflow.check_alive, airflow.log_tails,
                     ("scheduler", "dag_processor"), timeout=300)
        assert airflow.api("PATCH", "/api/v2/dags/textclf_retrain", json={"is_paused": False}).status_code == 200
        response = airflow.api("POST", "/api/v2/dags/textclf_retrain/dagRuns",
                               json={"logical_date": iso(day), "conf": TINY_BERT})
        assert response.status_code == 200, response.text
        run = wait_for_run(airflow, response.json()["dag_run_id"], timeout=900)

        tis = task_instances(airflow, run["dag_run_id"])
        by_task: dict[str, list[dict]] = {}
        for ti in tis:
            by_task.setdefault(ti["task_id"], []).append(ti)
        assert [t["queue"] for t in by_task["train_bert"]] == ["gpu"]
        assert by_task["train_bert"][0]["state"] == "success"
        scoring = by_task["predict"] if by_task["predict"][0]["state"] == "success" else by_task["predict_gpu"]
        assert len(scoring) == 3 and all(t["state"] == "success" for t in scoring)
        gpu_log = airflow.log_path("worker-gpu").read_text()
        default_log = airflow.log_path("worker-default").read_text()
        assert "train_bert" in gpu_log and "train_tfidf" not in gpu_log
        assert "train_tfidf" in default_log and "train_bert" not in default_log
        if scoring[0]["task_id"] == "predict":  # a TF-IDF champion scores on the default queue
            assert {t["queue"] for t in scoring} == {"default"}
            assert default_log.count("task_id='predict'") >= 3 and "task_id='predict'" not in gpu_log
        else:
            assert {t["queue"] for t in scoring} == {"gpu"}
