"""How textclf runs Airflow on this machine, without importing Airflow.

Airflow is driven through its own CLI in subprocesses (``airflow dags test``, ``airflow
standalone`` components), configured entirely through environment variables: the metadata
database lives in the same PostgreSQL server as the project data (database
``textclf_airflow``), DAGs and plugins come from this repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from tasks import db
from tasks.config import REPO_ROOT, Settings
from tasks.errors import ConfigError, InputError, RunInProgress
from tasks.process_guard import run_guarded

AIRFLOW_DATABASE = "textclf_airflow"
DAG_ID = "textclf_retrain"
IN_PROCESS_RUN = "TEXTCLF_IN_PROCESS_RUN"  # set for `airflow dags test` (see dags/textclf_retrain.py)
ADMIN_USER = "admin"
PASSWORDS_FILE = "simple_auth_manager_passwords.json"
SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)
SCHEDULE_HOUR = 2  # keep in step with the DAG's CronDataIntervalTimetable("0 2 * * *")
START_DATE = datetime(2026, 1, 1, tzinfo=UTC)  # the DAG's start_date: no run is older
NIGHT_DEADLINE = "TEXTCLF_NIGHT_DEADLINE_SECONDS"


def night_deadline() -> timedelta:
    """How long after it was queued a night that still runs is reported (the DAG's deadline
    alert): 8 hours, or TEXTCLF_NIGHT_DEADLINE_SECONDS (the system tests use seconds)."""
    raw = os.environ.get(NIGHT_DEADLINE)
    if not raw:
        return timedelta(hours=8)
    try:
        seconds = float(raw)
    except ValueError:
        raise ConfigError(f"{NIGHT_DEADLINE}={raw!r} is not a number of seconds") from None
    if not 0 < seconds <= 20 * 3600:
        raise ConfigError(f"{NIGHT_DEADLINE}={raw!r}: the deadline must be in (0, 72000] seconds, "
                          "inside the night's 20-hour timeout")
    return timedelta(seconds=seconds)


def airflow_home(settings: Settings) -> Path:
    return settings.home / "airflow"


def _secret(home: Path, name: str, generate=lambda: secrets.token_urlsafe(32)) -> str:
    """A random secret generated once per installation, mode 0600, kept out of the repository."""
    path = home / f".{name}"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(generate())
    return path.read_text().strip()


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def connection_json(url: str) -> str:
    """``AIRFLOW_CONN_TEXTCLF_DB`` in Airflow's JSON form, from a PostgreSQL URL (its query
    parameters, e.g. sslmode, become the connection's extras)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    query = {k: v if isinstance(v, str) else v[-1] for k, v in parsed.query.items()}
    conn: dict[str, Any] = {
        "conn_type": "postgres",
        # The embedded server listens on a Unix socket: its directory is the host.
        "host": parsed.host or query.pop("host", None) or "127.0.0.1",
        "port": parsed.port or 5432,
        "login": parsed.username or "postgres",
        "schema": parsed.database,
    }
    if parsed.password:
        conn["password"] = parsed.password
    if query:
        conn["extra"] = query
    return json.dumps(conn)


def airflow_environment(
    settings: Settings, *, port: int = 8080, host: str = "127.0.0.1"
) -> dict[str, str]:
    """The environment of every Airflow process of a local installation (``textclf airflow``,
    ``textclf run``): metadata database ``textclf_airflow`` on the project's server, this
    repository's DAGs and plugins, the `textclf_db` connection, secrets kept under AIRFLOW_HOME."""
    url = db.database_url(settings)
    metadata_database = os.environ.get("TEXTCLF_AIRFLOW_DATABASE", AIRFLOW_DATABASE)
    home = airflow_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    venv_bin = str(Path(sys.executable).parent)
    base_url = f"http://{host}:{port}"
    env = dict(os.environ)
    env.pop("TEXTCLF_DATABASE_URL", None)  # inside Airflow the connection is the one source
    env.pop(IN_PROCESS_RUN, None)
    env.update({
        "PATH": venv_bin + os.pathsep + env.get("PATH", ""),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # LocalExecutor forks this many workers up front (Airflow's default, 32, is for big hosts).
        "AIRFLOW__CORE__PARALLELISM": env.get("AIRFLOW__CORE__PARALLELISM")
        or str(max(4, os.cpu_count() or 1)),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db.sqlalchemy_url(url, metadata_database),
        "AIRFLOW__API_AUTH__JWT_SECRET": _secret(home, "jwt_secret"),
        "AIRFLOW__API__SECRET_KEY": _secret(home, "api_secret"),
        # Connections and variables made in the UI are stored encrypted with this key.
        "AIRFLOW__CORE__FERNET_KEY": env.get("AIRFLOW__CORE__FERNET_KEY")
        or _secret(home, "fernet_key", _fernet_key),
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        # user:role pairs; TEXTCLF_AIRFLOW_USERS adds more, e.g. "admin:admin,analyst:viewer".
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": env.get("TEXTCLF_AIRFLOW_USERS") or f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / PASSWORDS_FILE),
        "AIRFLOW__API__HOST": host,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        f"AIRFLOW_CONN_{db.CONNECTION_ID.upper()}": connection_json(url),
        "TEXTCLF_HOME": str(settings.home),
        "PYTHONPATH": str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    })
    return env


def admin_password(home: Path, user: str = ADMIN_USER) -> tuple[str, Path]:
    """A user's password (default: the admin's), generated on first use (mode 0600) where the
    simple auth manager reads it; other users' entries are kept."""
    path = home / PASSWORDS_FILE
    passwords: dict[str, str] = {}
    if path.exists():
        text = path.read_text().strip()
        passwords = json.loads(text) if text else {}
    if not passwords.get(user):
        passwords[user] = secrets.token_urlsafe(18)
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(passwords) + "\n")
    path.chmod(0o600)
    return passwords[user], path


def _migrated_marker(home: Path) -> Path:
    return home / ".migrated"


def prepare_airflow(settings: Settings, env: dict[str, str]) -> dict[str, str]:
    """Metadata database migrated and the `gpu` pool present (each done once per database and
    Airflow version; the marker holds a hash, never the database URL)."""
    home = Path(env["AIRFLOW_HOME"])
    db.ensure_database(db.database_url(settings), metadata_database_name(env))
    marker = _migrated_marker(home)
    stamp = hashlib.sha256(
        f"{env['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN']}|{airflow_version()}".encode()
    ).hexdigest()
    if not marker.exists() or marker.read_text() != stamp:
        subprocess.run(["airflow", "db", "migrate"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(
            ["airflow", "pools", "set", "gpu", "1", "BERT fine-tuning (one GPU)"],
            env=env, check=True, stdout=subprocess.DEVNULL,
        )
        marker.write_text(stamp)
    return env


def metadata_database_name(env: dict[str, str]) -> str:
    from sqlalchemy.engine import make_url

    name = make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).database
    assert name, "the metadata database URL names no database"
    return name


def airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow-core")


def manual_run_interval(day: date) -> tuple[datetime, datetime]:
    """The data interval Airflow infers for a manual run at ``day`` 00:00 UTC: the last
    complete [02:00, 02:00) interval that ends before it."""
    end = datetime.combine(day, time(SCHEDULE_HOUR), tzinfo=UTC) - timedelta(days=1)
    return end - timedelta(days=1), end


def check_interval(start: datetime, end: datetime, now: datetime | None = None) -> None:
    """A run's data interval must have ended (rows labelled in the future are not data yet, and
    a champion promoted from a future date would decide every real night before it) and must
    not begin before the DAG's start_date (Airflow would run nothing)."""
    now = now or datetime.now(UTC)
    if end > now:
        raise InputError(f"the data interval [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}) UTC has not ended "
                         f"yet (now {now:%Y-%m-%d %H:%M} UTC): a date can be run once its interval is over")
    if start < START_DATE:
        raise InputError(f"the data interval starting {start:%Y-%m-%d %H:%M} UTC is before the DAG's "
                         f"start_date {START_DATE:%Y-%m-%d}: Airflow runs nothing for it")


def run_dag_for_date(
    settings: Settings,
    day: date,
    conf: str | None = None,
    log_path: Path | None = None,
) -> int:
    """``airflow dags test textclf_retrain DAY``: the real DAG, in-process, one run; stopping
    this process (even with SIGKILL) stops the run. Returns the exit status."""
    env = prepare_airflow(settings, {**airflow_environment(settings), IN_PROCESS_RUN: "1"})
    command = ["airflow", "dags", "test", DAG_ID, day.isoformat()]
    if conf:
        command += ["--conf", conf]
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT / "plugins"), env.get("PYTHONPATH")]))}

    def plugin_call(function: str, *args: str) -> list[str]:
        return [sys.executable, "-c", f"import sys, textclf_airflow; textclf_airflow.{function}(*sys.argv[1:])",
                DAG_ID, day.isoformat(), *args]

    stopped: list[int] = []  # we were asked to stop (Ctrl-C, SIGTERM): never try again then
    url = db.database_url(settings)

    def run_once() -> int:
        # One `textclf run` of a date at a time, taken again for each try (a restart of the
        # database drops the session that held it). Killed (even by SIGKILL), this process takes
        # the run down at once; then the run is marked failed in Airflow and recorded.
        with db.run_date_lock(url, day.isoformat()) as mine:
            if not mine:
                raise RunInProgress(f"textclf run for {day} is already in progress (another `textclf run` of that "
                                    "date holds its lock); wait for it to end, or stop it")
            if log_path is None:
                return run_guarded(command, env, on_orphaned=plugin_call("abandon_in_process_run"), stopped=stopped)
            with open(log_path, "a") as log_file:
                return run_guarded(command, env, stdout=log_file, on_orphaned=plugin_call("abandon_in_process_run"),
                                   stopped=stopped)

    def left_unfinished() -> bool | None:
        """Whether `airflow dags test` crashed and left its run unfinished (a red night ends its
        run); asked once the database is back; None when it did not come back."""
        if not wait_for_database(url, timeout=DATABASE_COMEBACK_SECONDS):
            return None
        return subprocess.run(plugin_call("exit_if_unfinished"), env=env, check=False,
                              capture_output=True).returncode != 0

    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")
    code = run_once()
    for attempt in (1, 2):
        if code == 0 or stopped:
            break
        unfinished = left_unfinished()
        if unfinished is None:
            print(f"textclf_retrain for {day} stopped (exit {code}) and the database did not come back within "
                  f"{DATABASE_COMEBACK_SECONDS} s: its run may still show as running; re-run the date", file=sys.stderr)
            break
        if not unfinished:
            break  # a red night: it said why
        if attempt == 2:
            subprocess.run(plugin_call("abandon_in_process_run", f"exit {code}, twice"), env=env, check=False)
            break
        # The database went away mid-night (a restart, a failover), or the system killed the
        # runner: one more try from the top; every task is idempotent, so the night converges.
        print(f"textclf_retrain for {day} was left unfinished (exit {code}): the database is back, trying once more",
              file=sys.stderr)
        code = run_once()
    return code


DATABASE_COMEBACK_SECONDS = 120


def wait_for_database(url: str, timeout: float) -> bool:
    """Until PostgreSQL at ``url`` accepts a connection again (True), or ``timeout`` seconds."""
    import time

    import psycopg2

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg2.connect(url, connect_timeout=5).close()
            return True
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                return False
            time.sleep(1)
