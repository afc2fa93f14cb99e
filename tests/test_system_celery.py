"""Three hosts that share only PostgreSQL and an object store, for real: Airflow's CeleryExecutor
(Redis broker on 127.0.0.1) with a scheduler host and two workers, one serving the `default`
queue and one `gpu` (CPU torch, allow_cpu_fallback), each with its own TEXTCLF_HOME and
AIRFLOW_HOME in its own temporary directory; run data and models go to an S3 API server
(moto) on loopback. One night trains TF-IDF and BERT, scores, evaluates, promotes and predicts;
the registry page serves the report from the store; `gc` deletes from the store; the night's
figures reach a StatsD listener."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from airflow_helpers import AirflowComponents, free_port, iso, task_instances, wait_for_run, wait_healthy
from conftest import S3_CREDENTIALS, recreate_database
from support import TINY_BERT, seed
from tasks.airflow_env import admin_password, airflow_environment, manual_run_interval, prepare_airflow
from tasks.config import load_settings

pytestmark = pytest.mark.slow
REDIS = ("127.0.0.1", 6379)
# Worker-local by design (tasks/storage.py): caches, scratch, checkpoints, Airflow's own files.
WORKER_LOCAL = {"cache", "scratch", "checkpoints", "airflow", "textclf.toml", "components"}


def redis_running() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=1):
            return True
    except OSError:
        return False


class StatsdListener:
    """A StatsD server on loopback UDP that keeps every line it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            self.lines.extend(data.decode(errors="replace").splitlines())

    def value(self, name: str) -> float:
        found = [line for line in self.lines if line.startswith(f"airflow.{name}:")]
        assert found, f"no {name} among {sorted({line.split(':')[0] for line in self.lines if 'textclf' in line})}"
        return float(found[-1].split(":", 1)[1].split("|")[0])

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_a_night_on_three_hosts_sharing_only_postgres_and_s3(database_url, tmp_path, monkeypatch,
                                                               clean_db, s3_endpoint, s3_bucket, pg):
    from dataclasses import replace
    from datetime import UTC, datetime

    from sqlalchemy.engine import make_url

    from conftest import fetch
    from tasks import storage
    from tasks.config import RetentionPolicy
    from tasks.retention import collect_garbage

    assert redis_running(), "this test needs Redis on 127.0.0.1:6379 (the CI machine runs one)"
    metadata_db = f"{make_url(database_url).database}_airflow_celery"
    recreate_database(database_url, metadata_db)
    monkeypatch.setenv("TEXTCLF_AIRFLOW_DATABASE", metadata_db)
    roots = {"TEXTCLF_RUN_ROOT": f"{s3_bucket}/runs", "TEXTCLF_ARTIFACT_ROOT": f"{s3_bucket}/models"}
    for name, value in roots.items():
        monkeypatch.setenv(name, value)
    homes = {host: tmp_path / host for host in ("scheduler", "worker-default", "worker-gpu")}
    for home in homes.values():
        home.mkdir()
        (home / "textclf.toml").write_text("prediction_partition_rows = 15\n")  # three partitions
    with open(homes["worker-gpu"] / "textclf.toml", "a") as toml:
        toml.write("allow_cpu_fallback = true  # CPU torch on this 'GPU' worker\n")
    settings = load_settings(home=homes["scheduler"], database_url=clean_db)
    day = datetime(2026, 11, 20, tzinfo=UTC)
    seed(settings, days=3, per_day=60, end=manual_run_interval(day.date())[1])

    statsd = StatsdListener()
    port = free_port()
    password, _ = admin_password(homes["scheduler"] / "airflow")
    env = airflow_environment(settings, port=port)
    env.update({
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS[0]}:{REDIS[1]}/7",
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the run triggered below
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
        **S3_CREDENTIALS, "AWS_ENDPOINT_URL": s3_endpoint, **roots,
        # The REST API the first task reads the pools through.
        "AIRFLOW_CONN_TEXTCLF_AIRFLOW_API": json.dumps({
            "conn_type": "http", "host": f"http://127.0.0.1:{port}", "login": "admin", "password": password}),
    })
    prepare_airflow(settings, env)
    own_home = {name: {"TEXTCLF_HOME": str(home), "AIRFLOW_HOME": str(home / "airflow")}
                for name, home in homes.items() if name != "scheduler"}
    worker = ["airflow", "celery", "worker", "--skip-serve-logs"]
    commands = {
        "api-server": ["airflow", "api-server", "--port", str(port)],
        "scheduler": ["airflow", "scheduler"],
        "dag-processor": ["airflow", "dag-processor"],
        "worker-default": [*worker, "--queues", "default", "--concurrency", "2",
                           "--celery-hostname", "default@%h"],
        "worker-gpu": [*worker, "--queues", "gpu", "--concurrency", "1", "--celery-hostname", "gpu@%h"],
    }
    try:
        with AirflowComponents(env, tmp_path / "components", commands, own_home) as airflow:
            wait_healthy(airflow.rest, airflow.started_at, airflow.check_alive, airflow.log_tails,
                         ("scheduler", "dag_processor"), timeout=300)
            assert airflow.api("PATCH", "/api/v2/dags/textclf_retrain", json={"is_paused": False}).status_code == 200
            response = airflow.api("POST", "/api/v2/dags/textclf_retrain/dagRuns",
                                   json={"logical_date": iso(day), "conf": TINY_BERT})
            assert response.status_code == 200, response.text
            run = wait_for_run(airflow, response.json()["dag_run_id"], timeout=1200)
            run_id = run["dag_run_id"]

            by_task: dict[str, list[dict]] = {}
            for ti in task_instances(airflow, run_id):
                by_task.setdefault(ti["task_id"], []).append(ti)
            # GPU work stayed on the gpu queue: the fine-tune and BERT's test scoring.
            assert [(t["queue"], t["state"]) for t in by_task["train_bert"]] == [("gpu", "success")]
            assert [(t["queue"], t["state"]) for t in by_task["score_gpu"]] == [("gpu", "success")]
            assert {(t["queue"], t["state"]) for t in by_task["score"]} == {("default", "success")}
            scoring = by_task["predict"] if by_task["predict"][0]["state"] == "success" else by_task["predict_gpu"]
            assert len(scoring) == 3 and all(t["state"] == "success" for t in scoring)
            gpu_log = airflow.log_path("worker-gpu").read_text()
            default_log = airflow.log_path("worker-default").read_text()
            assert "train_bert" in gpu_log and "train_tfidf" not in gpu_log
            assert "train_tfidf" in default_log and "train_bert" not in default_log
            assert "task_id='score_gpu'" in gpu_log and "task_id='score_gpu'" not in default_log
            [extract_log] = (homes["worker-default"] / "airflow" / "logs").rglob("task_id=extract/**/*.log")
            assert "pools not checked" not in extract_log.read_text()  # checked, and the gpu pool is there

            # The registry page (api-server on the scheduler host) serves the report from S3.
            page = airflow.rest._client.get(f"/textclf/runs/{run_id}/report/index.html",
                                            headers={"Authorization": f"Bearer {airflow.rest.token()}"})
            assert page.status_code == 200 and "macro-F1" in page.text
    finally:
        statsd.close()

    # Every hand-over went through the store: nothing but caches and scratch in any home.
    for host, home in homes.items():
        leftovers = sorted(p.name for p in home.iterdir() if p.name not in WORKER_LOCAL)
        assert leftovers == [], (host, leftovers)
    assert not (homes["worker-default"] / "cache" / "models").exists() or any(
        (homes["worker-default"] / "cache" / "models").iterdir())
    [(snapshot_path,)] = fetch(pg, "SELECT snapshot_path FROM textclf.validation_runs")
    assert snapshot_path.startswith(f"{s3_bucket}/runs/"), snapshot_path
    uris = [u for (u,) in fetch(pg, "SELECT artifact_uri FROM textclf.model_versions ORDER BY version")]
    assert len(uris) == 2 and all(u.startswith(f"{s3_bucket}/models/") for u in uris)
    assert all(storage.upath(u).exists() for u in uris)

    # The night's figures, through Airflow's own StatsD client.
    assert statsd.value("textclf.extract.new_rows") == 60
    assert 0 < statsd.value("textclf.evaluate.tfidf.macro_f1") <= 1
    assert 0 < statsd.value("textclf.evaluate.bert.macro_f1") <= 1
    assert statsd.value("textclf.promote.promoted") == 1
    assert statsd.value("textclf.predict.rows_written") > 0

    # gc on yet another host deletes the never-champion artifact from the store itself.
    operator = load_settings(home=tmp_path / "operator", database_url=clean_db)
    report = collect_garbage(replace(operator, retention=RetentionPolicy(keep_candidates=0, grace_hours=0)))
    [(loser,)] = fetch(pg, "SELECT artifact_uri FROM textclf.model_versions WHERE artifact_deleted_at IS NOT NULL")
    assert any(item.where == loser for item in report.freed)
    assert not storage.upath(loser).exists()
    assert sum(storage.upath(u).exists() for u in uris) == 1  # the champion's stays
