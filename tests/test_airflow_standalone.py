"""`textclf airflow` is Airflow's own `airflow standalone` with textclf's environment: secrets
kept with mode 0600, connections made in the UI encrypted, and no Airflow process left behind
when `textclf airflow` is stopped, however it is stopped."""

from __future__ import annotations

import signal
import stat
import time

import psycopg2
import pytest

from airflow_helpers import AirflowStandalone, process_tree, processes_marked, still_running
from conftest import recreate_database, url_for_database


def wait_until_gone(processes: list, timeout: float = 60) -> list:
    deadline = time.monotonic() + timeout
    while (left := still_running(processes)) and time.monotonic() < deadline:
        time.sleep(1)
    return left


def test_leftovers_are_the_processes_this_test_started_and_no_others():
    """Another user's Airflow on the same machine is not a leftover of ours."""
    import os
    import subprocess
    import sys

    from airflow_helpers import PROCESS_MARKER

    sleeper = [sys.executable, "-c", "import time; time.sleep(60)", "airflow scheduler"]
    ours = subprocess.Popen(sleeper, env={**os.environ, PROCESS_MARKER: "ours"})
    theirs = subprocess.Popen(sleeper, env={k: v for k, v in os.environ.items() if k != PROCESS_MARKER})
    try:
        assert [p.pid for p in processes_marked("ours")] == [ours.pid]
        assert processes_marked("nobody") == []
    finally:
        for proc in (ours, theirs):
            proc.kill()
            proc.wait()
    assert processes_marked("ours") == []


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGHUP, signal.SIGKILL], ids=["SIGHUP", "SIGKILL"])
def test_stopping_textclf_airflow_leaves_no_airflow_process(database_url, tmp_path, stop_signal):
    metadata_db = f"textclf_test_standalone_{stop_signal.name.lower()}"
    recreate_database(database_url, metadata_db)
    airflow = AirflowStandalone(tmp_path / "home", database_url,
                                extra_env={"TEXTCLF_AIRFLOW_DATABASE": metadata_db})
    with airflow:
        airflow.wait_healthy(timeout=300)
        assert airflow.process is not None
        tree = process_tree(airflow.process.pid)
        running = " | ".join(" ".join(p.cmdline()) for p in tree)
        for component in ("standalone", "scheduler", "api_server", "triggerer", "dag-processor"):
            assert component in running, running

        if stop_signal == signal.SIGHUP:
            # Connections made in the UI are stored encrypted with the generated Fernet key.
            response = airflow.api("POST", "/api/v2/connections", json={
                "connection_id": "crm_db", "conn_type": "postgres", "host": "crm.example",
                "password": "s3cret"})
            assert response.status_code == 201, response.text
            with psycopg2.connect(url_for_database(database_url, metadata_db)) as conn, conn.cursor() as cur:
                cur.execute("SELECT is_encrypted, password FROM connection WHERE conn_id = 'crm_db'")
                encrypted, stored = cur.fetchone()
            assert encrypted and stored != "s3cret"
        for secret in (".fernet_key", ".jwt_secret", ".api_secret", "simple_auth_manager_passwords.json"):
            mode = stat.S_IMODE((airflow.airflow_home / secret).stat().st_mode)
            assert mode == 0o600, (secret, oct(mode))
        marker = (airflow.airflow_home / ".migrated").read_text()
        assert "postgres" not in marker  # a hash of the URL, not the URL and its password

        code = airflow.stop(stop_signal)
        assert code == (0 if stop_signal == signal.SIGHUP else -signal.SIGKILL)
        left = wait_until_gone(tree) + wait_until_gone(processes_marked(airflow.marker))
        assert left == [], [" ".join(p.cmdline()) for p in left]
