"""Test helpers that drive a real Airflow: ``textclf airflow`` (airflow standalone) in a
subprocess, a health wait and a small REST client. Only tests use them; the product itself is
``tasks.services.serve``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tasks.airflow_env import ADMIN_USER, DAG_ID, PASSWORDS_FILE


class AirflowError(RuntimeError):
    """Airflow did not start, died, or did not become healthy in time."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class RestClient:
    """The REST API as the admin user (token from ``POST /auth/token``, renewed on 401)."""

    def __init__(self, base_url: str, password_file: Path) -> None:
        self.base_url = base_url
        self.password_file = password_file
        self._client = httpx.Client(base_url=base_url, timeout=60)
        self._token: str | None = None

    @property
    def password(self) -> str:
        return json.loads(self.password_file.read_text())[ADMIN_USER]

    def token(self, refresh: bool = False) -> str:
        if self._token is None or refresh:
            response = self._client.post("/auth/token",
                                         json={"username": ADMIN_USER, "password": self.password})
            if response.status_code != 201:
                raise AirflowError(f"POST /auth/token answered {response.status_code}: {response.text}")
            self._token = response.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, json: Any = None, *, headers: dict | None = None, **kwargs):
        def call(token: str):
            return self._client.request(method, path, json=json,
                                        headers={**(headers or {}), "Authorization": f"Bearer {token}"},
                                        **kwargs)

        response = call(self.token())
        if response.status_code == 401:
            response = call(self.token(refresh=True))
        return response

    def health(self) -> dict[str, Any] | None:
        try:
            response = self._client.get("/api/v2/monitor/health", timeout=5)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def close(self) -> None:
        self._client.close()


class AirflowStandalone:
    """``textclf airflow --port PORT`` as a subprocess with a project home of its own."""

    def __init__(self, home: Path, database_url: str, port: int | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.home = home
        self.airflow_home = home / "airflow"
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # As from a user's shell: none of the test session's Airflow settings.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        self.env = {**inherited, "TEXTCLF_HOME": str(home), "TEXTCLF_DATABASE_URL": database_url,
                    **(extra_env or {})}
        self.process: subprocess.Popen | None = None
        self.output = home / "textclf-airflow.out"
        self.started_at: datetime | None = None
        self.rest = RestClient(self.base_url, self.airflow_home / PASSWORDS_FILE)
        self.api = self.rest.api

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.started_at = datetime.now(UTC)
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tasks.cli", "airflow", "--port", str(self.port)],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )

    def __enter__(self) -> AirflowStandalone:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 90) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.rest.close()
        return self.process.returncode

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AirflowError(f"textclf airflow exited with status {self.process.returncode}\n"
                               f"{self.log_tails()}")

    def log_tails(self, lines: int = 60) -> str:
        parts = []
        for path in (self.output, self.airflow_home / "logs" / "standalone.log"):
            if path.exists():
                tail = [line for line in path.read_text(errors="replace").splitlines()
                        if "[http.access]" not in line and "GET /api/v2" not in line][-lines:]
                parts.append(f"--- {path} (last {len(tail)} lines) ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def _fresh(self, heartbeat: str | None) -> bool:
        if not heartbeat or self.started_at is None:
            return False
        return datetime.fromisoformat(heartbeat) >= self.started_at - timedelta(seconds=1)

    def wait_healthy(self, timeout: float = 300.0, dag_id: str = DAG_ID) -> float:
        """Until the api-server answers, scheduler, triggerer and dag-processor heartbeat (this
        start's, not an old record) and ``dag_id`` is parsed. Returns seconds since start."""
        deadline = time.monotonic() + timeout
        components = ("scheduler", "triggerer", "dag_processor")
        last: Any = "no answer from the api-server yet"
        while time.monotonic() < deadline:
            self.check_alive()
            health = self.rest.health()
            if health is not None:
                last = health
                if health.get("metadatabase", {}).get("status") == "healthy" and all(
                    health.get(c, {}).get("status") == "healthy"
                    and self._fresh(health[c].get(f"latest_{c}_heartbeat"))
                    for c in components
                ):
                    break
            time.sleep(1)
        else:
            raise AirflowError(f"Airflow not healthy after {timeout:.0f} s; last health: {last}\n"
                               f"{self.log_tails()}")
        while time.monotonic() < deadline:
            self.check_alive()
            response = self.api("GET", f"/api/v2/dags/{dag_id}")
            if response.status_code == 200 and not response.json().get("is_stale"):
                assert self.started_at is not None
                return (datetime.now(UTC) - self.started_at).total_seconds()
            errors = self.api("GET", "/api/v2/importErrors").json().get("import_errors", [])
            if errors:
                details = "\n".join(f"{e.get('filename')}:\n{e.get('stack_trace')}" for e in errors)
                raise AirflowError(f"the DAG files have import errors:\n{details}")
            time.sleep(1)
        raise AirflowError(f"DAG {dag_id!r} was not parsed within {timeout:.0f} s\n{self.log_tails()}")


def process_tree(pid: int) -> list:
    """``pid`` and its live descendants (psutil processes)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def still_running(processes: list) -> list:
    """Those of ``processes`` (psutil) still alive: same pid and start time, not a zombie."""
    import psutil

    alive = []
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            continue
    return alive


def airflow_processes_since(started: float) -> list:
    """Live processes started after ``started`` (epoch seconds) whose command line runs Airflow."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline", "create_time"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["create_time"] >= started and "airflow" in cmdline and proc.pid != os.getpid():
            found.extend(still_running([proc]))
    return found
