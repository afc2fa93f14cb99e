"""How textclf runs Airflow on this machine, without importing Airflow.

Airflow is driven through its own CLI in subprocesses (``airflow dags test``, ``airflow
standalone`` components), configured entirely through environment variables: the metadata
database lives in the same PostgreSQL server as the project data (database
``textclf_airflow``), DAGs and plugins come from this repository.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from tasks import db
from tasks.config import REPO_ROOT, Settings

AIRFLOW_DATABASE = "textclf_airflow"
DAG_ID = "textclf_retrain"
SCHEDULE_HOUR = 2  # keep in step with the DAG's CronDataIntervalTimetable("0 2 * * *")


def airflow_home(settings: Settings) -> Path:
    return settings.home / "airflow"


def _secret(home: Path, name: str) -> str:
    """A random secret generated once per installation and kept out of the repository."""
    path = home / f".{name}"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def airflow_environment(settings: Settings, executor: str = "LocalExecutor") -> dict[str, str]:
    url = db.database_url(settings)
    metadata_database = os.environ.get("TEXTCLF_AIRFLOW_DATABASE", AIRFLOW_DATABASE)
    db.ensure_database(url, metadata_database)
    home = airflow_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    venv_bin = str(Path(sys.executable).parent)
    env = dict(os.environ)
    env.update({
        "PATH": venv_bin + os.pathsep + env.get("PATH", ""),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db.sqlalchemy_url(url, metadata_database),
        "AIRFLOW__API_AUTH__JWT_SECRET": _secret(home, "jwt_secret"),
        "AIRFLOW__API__SECRET_KEY": _secret(home, "api_secret"),
        "AIRFLOW__CORE__FERNET_KEY": env.get("AIRFLOW__CORE__FERNET_KEY", ""),
        "TEXTCLF_DATABASE_URL": url,
        "TEXTCLF_HOME": str(settings.home),
        "PYTHONPATH": str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    })
    return env


def _migrated_marker(home: Path) -> Path:
    return home / ".migrated"


def prepare_airflow(settings: Settings, env: dict[str, str] | None = None) -> dict[str, str]:
    """Metadata database migrated and the `gpu` pool present (each done once)."""
    env = env or airflow_environment(settings)
    home = Path(env["AIRFLOW_HOME"])
    marker = _migrated_marker(home)
    stamp = f"{env['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN']}|{airflow_version(env)}"
    if not marker.exists() or marker.read_text() != stamp:
        subprocess.run(["airflow", "db", "migrate"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(
            ["airflow", "pools", "set", "gpu", "1", "BERT fine-tuning (one GPU)"],
            env=env, check=True, stdout=subprocess.DEVNULL,
        )
        marker.write_text(stamp)
    return env


def airflow_version(env: dict[str, str]) -> str:
    from importlib.metadata import version

    return version("apache-airflow-core")


def manual_run_interval(day: date) -> tuple[datetime, datetime]:
    """The data interval Airflow infers for a manual run at ``day`` 00:00 UTC: the last
    complete [02:00, 02:00) interval that ends before it."""
    end = datetime.combine(day, time(SCHEDULE_HOUR), tzinfo=UTC) - timedelta(days=1)
    return end - timedelta(days=1), end


def run_dag_for_date(
    settings: Settings,
    day: date,
    conf: str | None = None,
    log_path: Path | None = None,
) -> subprocess.CompletedProcess:
    """``airflow dags test textclf_retrain DAY``: the real DAG, in-process, one run."""
    env = prepare_airflow(settings)
    command = ["airflow", "dags", "test", DAG_ID, day.isoformat()]
    if conf:
        command += ["--conf", conf]
    if log_path is None:
        return subprocess.run(command, env=env)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log_file:
        return subprocess.run(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
