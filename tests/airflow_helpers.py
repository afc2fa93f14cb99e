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
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tasks.airflow_env import ADMIN_USER, DAG_ID, PASSWORDS_FILE

FINISHED = {"success", "failed"}
PROCESS_MARKER = "TEXTCLF_TEST_PROCESS_MARKER"
BAD_TASK_STATES = {"failed", "upstream_failed", "up_for_retry"}


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
        # Every process this start spawns inherits the marker: leftovers are found by it, never
        # by "any Airflow process on the machine" (another user's scheduler is not ours).
        self.marker = uuid.uuid4().hex
        self.env = {**inherited, "TEXTCLF_HOME": str(home), "TEXTCLF_DATABASE_URL": database_url,
                    PROCESS_MARKER: self.marker, **(extra_env or {})}
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

    def wait_healthy(self, timeout: float = 300.0, dag_id: str = DAG_ID) -> float:
        """Seconds from start until Airflow is healthy and ``dag_id`` parsed (see wait_healthy)."""
        assert self.started_at is not None
        return wait_healthy(self.rest, self.started_at, self.check_alive, self.log_tails,
                            ("scheduler", "triggerer", "dag_processor"), timeout, dag_id)


def wait_healthy(rest: RestClient, started_at: datetime, check_alive, log_tails, components: tuple[str, ...],
                 timeout: float = 300.0, dag_id: str = DAG_ID) -> float:
    """Until the api-server answers, the ``components`` heartbeat (this start's, not an old
    record) and ``dag_id`` is parsed without import errors. Returns seconds since start."""

    def fresh(heartbeat: str | None) -> bool:
        return bool(heartbeat) and datetime.fromisoformat(heartbeat) >= started_at - timedelta(seconds=1)

    deadline = time.monotonic() + timeout
    last: Any = "no answer from the api-server yet"
    while time.monotonic() < deadline:
        check_alive()
        health = rest.health()
        if health is not None:
            last = health
            if health.get("metadatabase", {}).get("status") == "healthy" and all(
                health.get(c, {}).get("status") == "healthy" and fresh(health[c].get(f"latest_{c}_heartbeat"))
                for c in components
            ):
                break
        time.sleep(1)
    else:
        raise AirflowError(f"Airflow not healthy after {timeout:.0f} s; last health: {last}\n{log_tails()}")
    while time.monotonic() < deadline:
        check_alive()
        response = rest.api("GET", f"/api/v2/dags/{dag_id}")
        if response.status_code == 200 and not response.json().get("is_stale"):
            return (datetime.now(UTC) - started_at).total_seconds()
        errors = rest.api("GET", "/api/v2/importErrors").json().get("import_errors", [])
        if errors:
            details = "\n".join(f"{e.get('filename')}:\n{e.get('stack_trace')}" for e in errors)
            raise AirflowError(f"the DAG files have import errors:\n{details}")
        time.sleep(1)
    raise AirflowError(f"DAG {dag_id!r} was not parsed within {timeout:.0f} s\n{log_tails()}")


class AirflowComponents:
    """Airflow's components as separate processes (what `textclf airflow` cannot show: the
    CeleryExecutor with workers per queue), each in a session of its own, logging to a file."""

    def __init__(self, env: dict[str, str], log_dir: Path, commands: dict[str, list[str]],
                 envs: dict[str, dict[str, str]] | None = None) -> None:
        self.env = env
        self.log_dir = log_dir
        self.commands = commands
        self.envs = envs or {}  # per component: what differs from ``env`` (its own home, say)
        self.processes: dict[str, subprocess.Popen] = {}
        self.started_at = datetime.now(UTC)
        self.rest = RestClient(env["AIRFLOW__API__BASE_URL"],
                               Path(env["AIRFLOW_HOME"]) / PASSWORDS_FILE)
        self.api = self.rest.api

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def __enter__(self) -> AirflowComponents:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.started_at = datetime.now(UTC)
        for name, command in self.commands.items():
            with open(self.log_path(name), "wb") as log:
                self.processes[name] = subprocess.Popen(
                    command, env={**self.env, **self.envs.get(name, {})}, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.log_dir)
        return self

    def __exit__(self, *exc_info) -> None:
        import psutil

        everything = [p for proc in self.processes.values() for p in process_tree(proc.pid)]
        for proc in self.processes.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        _, alive = psutil.wait_procs(everything, timeout=30)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        for proc in self.processes.values():
            proc.wait(timeout=10)
        self.rest.close()

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise AirflowError(f"airflow {name} exited with {proc.returncode}\n{self.log_tails()}")

    def log_tails(self, lines: int = 40) -> str:
        parts = []
        for name in self.commands:
            path = self.log_path(name)
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {name} ---\n" + "\n".join(tail))
        return "\n".join(parts)


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


def processes_marked(marker: str) -> list:
    """Live processes whose environment carries ``marker`` (see AirflowStandalone): the ones a
    test started, however they were spawned, and none of anybody else's."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get(PROCESS_MARKER) == marker:
                found.extend(still_running([proc]))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- runs, through the REST API (``services``: anything with api, log_tails, check_alive) ---


def dag_runs(services, dates: list[datetime] | None = None) -> list[dict]:
    response = services.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns",
                            params={"limit": 100, "order_by": "logical_date"})
    assert response.status_code == 200, response.text
    runs = response.json()["dag_runs"]
    if dates is not None:
        wanted = {iso(d) for d in dates}
        runs = [r for r in runs if r["logical_date"] and
                iso(datetime.fromisoformat(r["logical_date"])) in wanted]
    return runs


def task_instances(services, run_id: str) -> list[dict]:
    response = services.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
    assert response.status_code == 200, response.text
    return response.json()["task_instances"]


def task_log(services, run_id: str, ti: dict, lines: int = 60) -> str:
    response = services.api(
        "GET",
        f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/"
        f"{max(ti['try_number'], 1)}",
        params={"full_content": "true"}, headers={"Accept": "application/json"},
    )
    if response.status_code != 200:
        return f"(log not available: {response.status_code} {response.text[:200]})"
    text = []
    for entry in response.json().get("content", []):
        if not isinstance(entry, dict):
            text.append(str(entry))
            continue
        text.append(f"{entry.get('level', '')} {entry.get('event', '')}".strip())
        for error in entry.get("error_detail") or []:  # the structured traceback
            text += [f"  {f['filename']}:{f['lineno']} in {f['name']}" for f in error["frames"]]
            text.append(f"  {error['exc_type']}: {error['exc_value']}")
    return "\n".join(text[-lines:])


def diagnose(services, runs: list[dict]) -> str:
    parts = []
    for run in runs:
        tis = task_instances(services, run["dag_run_id"])
        parts.append(f"run {run['dag_run_id']}: {run['state']}; tasks "
                     + ", ".join(f"{t['task_id']}={t['state']}" for t in tis))
        for ti in tis:
            if ti["state"] in BAD_TASK_STATES:
                parts.append(f"--- log of {ti['task_id']} (try {ti['try_number']}) ---\n"
                             + task_log(services, run["dag_run_id"], ti))
    return "\n".join(parts) + "\n" + services.log_tails()


def fail_fast(services, runs: list[dict], what: str) -> None:
    """A failed task or one up for retry fails the test now, not after the DAG's retry delays."""
    for run in runs:
        if run["state"] == "failed" or (run["state"] == "running" and any(
            t["state"] in BAD_TASK_STATES for t in task_instances(services, run["dag_run_id"])
        )):
            pytest.fail(f"{what}: a task failed\n{diagnose(services, runs)}")


def wait_for_run(services, run_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = services.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
        assert response.status_code == 200, response.text
        run = response.json()
        fail_fast(services, [run], f"run {run_id}")
        if run["state"] in FINISHED:
            assert run["state"] == "success", diagnose(services, [run])
            return run
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} still {run['state']} after {timeout:.0f} s\n"
                        f"{diagnose(services, [run])}")
        services.check_alive()
        time.sleep(2)
