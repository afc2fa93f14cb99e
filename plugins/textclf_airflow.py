"""textclf inside Airflow: the project settings with the database of the `textclf_db`
connection. The DAG and the registry plugin both call ``textclf_settings()``; the plugins folder
is on ``sys.path`` in every Airflow process, so both can import this module."""

from __future__ import annotations


def textclf_settings():
    """``tasks.config.load_settings()`` with the `textclf_db` connection's database (extras such
    as sslmode, sslrootcert and options kept). A missing connection is an error naming it."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    from tasks.config import load_settings
    from tasks.db import CONNECTION_ID, connection_url, missing_connection

    try:
        conn = Connection.get(CONNECTION_ID)
    except AirflowNotFoundException:
        raise missing_connection() from None
    return load_settings(database_url=connection_url(
        conn.host, conn.port, conn.login, conn.password, conn.schema, conn.extra_dejson
    ))


def night_deadline_missed(context: dict | None = None, **_: object) -> None:
    """Deadline alert of textclf_retrain: a night still running hours after it was queued (a
    hung fine-tune, a worker gone) would silently hold back the next one (max_active_runs=1).
    Logged and written to textclf.pipeline_events; the task failure e-mail does not fire for a
    run that is merely slow."""
    import logging

    from tasks.pipeline import record_failure

    dag_run = (context or {}).get("dag_run") or {}
    deadline = (context or {}).get("deadline") or {}
    message = (f"textclf_retrain run {dag_run.get('run_id')} missed its deadline "
               f"{deadline.get('deadline_time')}: still {dag_run.get('state')}")
    logging.getLogger("textclf").warning("%s", message)
    record_failure(textclf_settings(), dag_run.get("run_id"), None, message, event="deadline_missed")
