"""The Airflow services of a local textclf installation, as child processes of one Python process.

``textclf airflow`` (and the system test) start ``airflow api-server``, ``scheduler``,
``dag-processor`` and ``triggerer`` with the configuration of :mod:`tasks.airflow_env`, plus:

- LocalExecutor: the scheduler forks the task workers; they reach the Execution API of the
  api-server at ``http://<host>:<port>/execution/``;
- the simple auth manager with one ``admin`` user whose password is generated once and kept in
  ``$AIRFLOW_HOME/simple_auth_manager_passwords.json`` (mode 0600, never in the repository);
- the ``textclf_db`` connection (``AIRFLOW_CONN_TEXTCLF_DB``) built from the resolved database URL.

Each service runs in a process group of its own and logs to
``$AIRFLOW_HOME/logs/services/<service>.log``; :meth:`AirflowServices.stop` sends SIGTERM, waits,
then SIGKILLs whatever is left (task processes included, which Airflow puts in groups of their
own). Nothing here imports Airflow.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tasks import db
from tasks.airflow_env import DAG_ID, airflow_environment, airflow_version, prepare_airflow
from tasks.config import Settings

SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")
ADMIN_USER = "admin"
PASSWORDS_FILE = "simple_auth_manager_passwords.json"
SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)


class ServiceError(RuntimeError):
    """An Airflow service could not start, died, or did not become healthy in time."""


class PortInUse(ServiceError):
    """The api-server port is taken."""


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


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel considers free right now (for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def admin_password(airflow_home: Path) -> tuple[str, Path]:
    """The admin password, generated on first use and stored where the auth manager reads it."""
    path = airflow_home / PASSWORDS_FILE
    passwords: dict[str, str] = {}
    if path.exists():
        text = path.read_text().strip()
        passwords = json.loads(text) if text else {}
    if not passwords.get(ADMIN_USER):
        passwords[ADMIN_USER] = secrets.token_urlsafe(18)
        airflow_home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(passwords) + "\n")
    path.chmod(0o600)
    return passwords[ADMIN_USER], path


def connection_json(url: str) -> str:
    """``AIRFLOW_CONN_TEXTCLF_DB`` in Airflow's JSON form, from a PostgreSQL URL."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    conn: dict[str, Any] = {
        "conn_type": "postgres",
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 5432,
        "login": parsed.username or "postgres",
        "schema": parsed.database,
    }
    if parsed.password:
        conn["password"] = parsed.password
    if parsed.query:
        conn["extra"] = {k: v if isinstance(v, str) else v[-1] for k, v in parsed.query.items()}
    return json.dumps(conn)


class AirflowServices:
    """api-server, scheduler, dag-processor and triggerer as child processes.

    Use it as a context manager (``with AirflowServices(settings, port) as airflow: ...``):
    the services are stopped on exit whatever happens, and at interpreter exit as a last resort.
    ``extra_env`` overrides Airflow settings (e.g. ``AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE``).
    """

    def __init__(
        self,
        settings: Settings,
        port: int = 8080,
        *,
        host: str = "127.0.0.1",
        parallelism: int | None = None,
        extra_env: dict[str, str] | None = None,
        grace_seconds: float = 20.0,
    ) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self.base_url = f"http://{host}:{port}"
        self.parallelism = parallelism or max(4, os.cpu_count() or 1)
        self.extra_env = dict(extra_env or {})
        self.grace_seconds = grace_seconds
        self.processes: dict[str, subprocess.Popen] = {}
        self.env: dict[str, str] = {}
        self.airflow_home: Path | None = None
        self.log_dir: Path | None = None
        self.password_file: Path | None = None
        self.started_at: datetime | None = None
        self._password: str | None = None
        self._token: str | None = None
        self._client = None

    # --- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> AirflowServices:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def environment(self) -> dict[str, str]:
        """The environment every service (and every task process) runs with."""
        env = airflow_environment(self.settings, executor="LocalExecutor")
        home = Path(env["AIRFLOW_HOME"])
        env.update({
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / PASSWORDS_FILE),
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__API__HOST": self.host,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW_CONN_TEXTCLF_DB": connection_json(env["TEXTCLF_DATABASE_URL"]),
        })
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        if self.processes:
            raise ServiceError("the Airflow services are already running")
        if not port_is_free(self.host, self.port):
            raise PortInUse(
                f"port {self.port} on {self.host} is already in use: stop whatever listens there "
                f"(`ss -ltnp 'sport = :{self.port}'` shows it) or choose another port "
                "(textclf airflow --port N)"
            )
        self.env = self.environment()
        self.airflow_home = Path(self.env["AIRFLOW_HOME"])
        prepare_airflow(self.settings, self.env)
        self._password, self.password_file = admin_password(self.airflow_home)
        self.log_dir = self.airflow_home / "logs" / "services"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.started_at = datetime.now(UTC)
        atexit.register(self.stop)
        commands = {
            "api-server": ["airflow", "api-server", "--host", self.host, "--port", str(self.port),
                           "--workers", "1"],
            # LocalExecutor tasks write their logs where the api-server reads them: no log server.
            "scheduler": ["airflow", "scheduler", "--skip-serve-logs"],
            "dag-processor": ["airflow", "dag-processor"],
            "triggerer": ["airflow", "triggerer", "--skip-serve-logs"],
        }
        for name in SERVICES:
            log_path = self.log_path(name)
            if log_path.exists():
                log_path.replace(log_path.with_suffix(".log.1"))
            with open(log_path, "wb") as log_file:
                self.processes[name] = subprocess.Popen(
                    commands[name], env=self.env, stdin=subprocess.DEVNULL, stdout=log_file,
                    stderr=subprocess.STDOUT, start_new_session=True, cwd=self.airflow_home,
                )

    def log_path(self, name: str) -> Path:
        assert self.log_dir is not None
        return self.log_dir / f"{name}.log"

    def stop(self) -> None:
        """SIGTERM every service (its whole process group), SIGKILL what is left after the grace
        period, including task processes that live in process groups of their own. Idempotent."""
        if not self.processes:
            return
        import psutil

        processes, self.processes = self.processes, {}
        descendants: dict[int, psutil.Process] = {}
        for proc in processes.values():
            try:
                for child in psutil.Process(proc.pid).children(recursive=True):
                    descendants[child.pid] = child
            except psutil.NoSuchProcess:
                pass
        for proc in processes.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_seconds
        for proc in processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in processes.values():
            if proc.poll() is None:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=10)
            else:
                _signal_group(proc, signal.SIGKILL)  # stragglers left in its group
        _, alive = psutil.wait_procs(list(descendants.values()),
                                     timeout=max(0.0, deadline - time.monotonic()))
        for child in alive:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        if self._client is not None:
            self._client.close()
            self._client = None
        self._token = None
        atexit.unregister(self.stop)

    # --- health -----------------------------------------------------------------------------

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            code = proc.poll()
            if code is not None:
                raise ServiceError(
                    f"airflow {name} exited with status {code}\n{self.log_tails()}"
                )

    def log_tails(self, lines: int = 40) -> str:
        """The last lines of every service log, for error messages."""
        if self.log_dir is None:
            return ""
        parts = []
        for name in SERVICES:
            path = self.log_path(name)
            if path.exists():
                tail = [line for line in path.read_text(errors="replace").splitlines()
                        if "[http.access]" not in line][-lines:]
                parts.append(f"--- {path} (last {len(tail)} lines) ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def health(self) -> dict[str, Any] | None:
        import httpx

        try:
            response = httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def _fresh(self, heartbeat: str | None) -> bool:
        if not heartbeat or self.started_at is None:
            return False
        return datetime.fromisoformat(heartbeat) >= self.started_at - timedelta(seconds=1)

    def wait_healthy(self, timeout: float = 180.0, dag_id: str = DAG_ID) -> float:
        """Wait until the api-server answers, scheduler, triggerer and dag-processor heartbeat
        (this start's processes, not an old record), and ``dag_id`` is parsed without import
        errors. Returns the seconds since start."""
        deadline = time.monotonic() + timeout
        components = ("scheduler", "triggerer", "dag_processor")
        last: Any = "no answer from the api-server yet"
        while time.monotonic() < deadline:
            self.check_alive()
            health = self.health()
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
            raise ServiceError(
                f"Airflow services not healthy after {timeout:.0f} s; last health: {last}\n"
                f"{self.log_tails()}"
            )
        while time.monotonic() < deadline:
            self.check_alive()
            response = self.api("GET", f"/api/v2/dags/{dag_id}")
            if response.status_code == 200 and not response.json().get("is_stale"):
                return (datetime.now(UTC) - self.started_at).total_seconds()
            errors = self.api("GET", "/api/v2/importErrors").json().get("import_errors", [])
            if errors:
                details = "\n".join(f"{e.get('filename')}:\n{e.get('stack_trace')}" for e in errors)
                raise ServiceError(f"the DAG files have import errors:\n{details}")
            time.sleep(1)
        raise ServiceError(
            f"DAG {dag_id!r} was not parsed within {timeout:.0f} s\n{self.log_tails()}"
        )

    # --- REST API ---------------------------------------------------------------------------

    @property
    def password(self) -> str:
        if self._password is None:
            raise ServiceError("the services have not been started")
        return self._password

    def _http(self):
        import httpx

        if self._client is None:
            self._client = httpx.Client(base_url=self.base_url, timeout=60)
        return self._client

    def token(self, refresh: bool = False) -> str:
        """A JWT for the admin user (``POST /auth/token``), cached."""
        if self._token is None or refresh:
            response = self._http().post(
                "/auth/token", json={"username": ADMIN_USER, "password": self.password}
            )
            if response.status_code != 201:
                raise ServiceError(
                    f"POST /auth/token answered {response.status_code}: {response.text}"
                )
            self._token = response.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, json: Any = None, *, headers: dict | None = None,
            **kwargs):
        """One REST call with the bearer token (renewed once on 401); returns the response."""
        def call(token: str):
            return self._http().request(
                method, path, json=json,
                headers={**(headers or {}), "Authorization": f"Bearer {token}"}, **kwargs,
            )

        response = call(self.token())
        if response.status_code == 401:
            response = call(self.token(refresh=True))
        return response


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the child's pid
    except (ProcessLookupError, PermissionError):
        pass


# --- textclf airflow -----------------------------------------------------------------------


def _print_instructions(services: AirflowServices, seconds: float) -> None:
    url = services.base_url
    now = datetime.now(UTC)
    today = now.date()
    trigger = json.dumps({"logical_date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                          "conf": {"candidates": ["tfidf"], "dry_run": True}})
    backfill = json.dumps({
        "dag_id": DAG_ID, "from_date": f"{today - timedelta(days=3)}T00:00:00Z",
        "to_date": f"{today - timedelta(days=1)}T00:00:00Z", "max_active_runs": 1,
        "reprocess_behavior": "none", "dag_run_conf": {"candidates": ["tfidf"]},
    })
    login = json.dumps({"username": ADMIN_USER, "password": services.password})
    auth = '-H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json"'
    print(f"""
Airflow {airflow_version(services.env)} is up after {seconds:.0f} s: {url}
  login     user {ADMIN_USER}, password {services.password}
            (generated once, kept in {services.password_file}; never commit it)
  DAG       {DAG_ID}: {url}/dags/{DAG_ID}
            new DAGs start paused: switch it on in the UI, or
            curl -X PATCH {url}/api/v2/dags/{DAG_ID} {auth} -d '{{"is_paused": false}}'
  REST      TOKEN=$(curl -s -X POST {url}/auth/token -H 'Content-Type: application/json' \\
                -d '{login}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  trigger   UI: Trigger on the DAG page (a form with the validated Params), or
            curl -X POST {url}/api/v2/dags/{DAG_ID}/dagRuns {auth} \\
                -d '{trigger}'
  backfill  UI: Trigger > Backfill (date range, reprocess behaviour; keep max active runs at 1
            so that the dates run one after the other, oldest first), or
            curl -X POST {url}/api/v2/backfills {auth} \\
                -d '{backfill}'
  database  {_hide_password(db.database_url(services.settings))} (Airflow connection textclf_db)
  logs      {services.log_dir}/<service>.log; task logs under {services.airflow_home}/logs
Press Ctrl-C to stop the services.""", flush=True)


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def serve(settings: Settings, port: int = 8080) -> int:
    """Start the services, print how to use them, block until Ctrl-C, stop cleanly."""
    services = AirflowServices(settings, port)
    if not port_is_free(services.host, port):
        print(f"textclf: error: port {port} on {services.host} is already in use: stop whatever "
              f"listens there (`ss -ltnp 'sport = :{port}'` shows it) or choose another port "
              "(textclf airflow --port N)", file=sys.stderr)
        return 2

    def terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        print(f"starting Airflow (api-server on {services.base_url}, scheduler, dag-processor, "
              "triggerer)...", flush=True)
        try:
            services.start()
            seconds = services.wait_healthy(timeout=300)
        except ServiceError as exc:
            print(f"textclf: error: {exc}", file=sys.stderr)
            return 2 if isinstance(exc, PortInUse) else 1
        except subprocess.CalledProcessError as exc:
            print(f"textclf: error: `{' '.join(exc.cmd)}` failed (exit {exc.returncode})",
                  file=sys.stderr)
            return 1
        _print_instructions(services, seconds)
        while True:
            try:
                services.check_alive()
            except ServiceError as exc:
                print(f"textclf: error: {exc}", file=sys.stderr)
                return 1
            time.sleep(2)
    except KeyboardInterrupt:
        print("\nstopping the Airflow services...", flush=True)
        return 0
    finally:
        services.stop()
        signal.signal(signal.SIGTERM, previous)
        print("Airflow services stopped.", flush=True)
