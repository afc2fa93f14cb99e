"""``textclf airflow``: Airflow's own ``airflow standalone`` with textclf's environment.

Standalone runs the api-server, scheduler, dag-processor and triggerer (LocalExecutor) as its
children. textclf adds what a local installation needs (see ``tasks.airflow_env``): the
metadata database on the project's PostgreSQL server, this repository's DAGs and plugins, the
`textclf_db` connection, a Fernet key, JWT and API secrets and the admin password, each
generated once and kept under AIRFLOW_HOME with mode 0600, the `gpu` pool. Standalone runs under
``tasks.process_guard``: Ctrl-C, SIGTERM, SIGHUP or even SIGKILL of ``textclf airflow`` leave no
Airflow process behind.
"""

from __future__ import annotations

import errno
import json
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tasks import db
from tasks.airflow_env import (
    ADMIN_USER,
    DAG_ID,
    admin_password,
    airflow_environment,
    airflow_version,
    prepare_airflow,
)
from tasks.config import Settings
from tasks.process_guard import run_guarded


def port_is_free(host: str, port: int) -> bool:
    """Whether the api-server could bind ``host:port`` (same socket options as uvicorn)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _wait_for_port(host: str, port: int, guardian, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and guardian.poll() is None:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(1)
    return False


def _instructions(url: str, password: str, password_file: Path, log: Path, home: Path) -> str:
    now = datetime.now(UTC)
    today = now.date()
    trigger = json.dumps({"logical_date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                          "conf": {"candidates": ["tfidf"], "dry_run": True}})
    backfill = json.dumps({
        "dag_id": DAG_ID, "from_date": f"{today - timedelta(days=3)}T00:00:00Z",
        "to_date": f"{today - timedelta(days=1)}T00:00:00Z", "max_active_runs": 1,
        "reprocess_behavior": "none",
    })
    login = json.dumps({"username": ADMIN_USER, "password": password})
    auth = '-H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json"'
    return f"""
Airflow {airflow_version()} (airflow standalone) is up: {url}
  login     user {ADMIN_USER}, password {password}
            (generated once, kept in {password_file}; never commit it)
  DAG       {DAG_ID}: {url}/dags/{DAG_ID}
            new DAGs start paused: switch it on in the UI, or
            curl -X PATCH {url}/api/v2/dags/{DAG_ID} {auth} -d '{{"is_paused": false}}'
  REST      TOKEN=$(curl -s -X POST {url}/auth/token -H 'Content-Type: application/json' \\
                -d '{login}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  trigger   UI: Trigger on the DAG page (a form with the validated Params), or
            curl -X POST {url}/api/v2/dags/{DAG_ID}/dagRuns {auth} -d '{trigger}'
  backfill  UI: Trigger > Backfill (keep max active runs at 1: dates run oldest first), or
            curl -X POST {url}/api/v2/backfills {auth} -d '{backfill}'
  logs      {log}; task logs under {home}/logs
Press Ctrl-C to stop Airflow."""


def serve(settings: Settings, port: int = 8080, host: str = "127.0.0.1") -> int:
    """Run ``airflow standalone`` until Ctrl-C, SIGTERM or SIGHUP; returns an exit status."""
    if not port_is_free(host, port):
        print(f"textclf: error: port {port} on {host} is already in use: stop whatever listens "
              f"there (`ss -ltnp 'sport = :{port}'` shows it) or choose another port "
              "(textclf airflow --port N)")
        return 2
    env = airflow_environment(settings, port=port, host=host)
    home = Path(env["AIRFLOW_HOME"])
    print(f"textclf schema at migration {db.upgrade(db.database_url(settings))}; preparing Airflow's "
          f"metadata database ({home})...", flush=True)
    prepare_airflow(settings, env)
    password, password_file = admin_password(home)
    log = home / "logs" / "standalone.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    url = env["AIRFLOW__API__BASE_URL"]
    print(f"starting airflow standalone (log: {log})...", flush=True)

    def announce(guardian) -> None:
        if _wait_for_port(host, port, guardian, timeout=300):
            print(_instructions(url, password, password_file, log, home), flush=True)
        elif guardian.poll() is None:
            print(f"the api-server did not answer on {url} within 5 minutes; see {log}", flush=True)

    with open(log, "ab") as log_file:
        code = run_guarded(["airflow", "standalone"], env, cwd=home, stdout=log_file,
                           on_start=announce)
    stopped_by_signal = code > 128
    print("Airflow stopped." if stopped_by_signal else
          f"airflow standalone exited with status {code}; see {log}", flush=True)
    return 0 if stopped_by_signal else (code or 1)
