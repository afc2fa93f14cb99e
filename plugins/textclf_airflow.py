"""textclf inside Airflow: the project settings with the database of the `textclf_db`
connection. The DAG and the registry plugin both call ``textclf_settings()``; the plugins folder
is on ``sys.path`` in every Airflow process, so both can import this module."""

from __future__ import annotations


def textclf_settings():
    """``tasks.config.load_settings()`` with the `textclf_db` connection's database (extras such
    as sslmode, sslrootcert and options kept). A missing connection is an error naming it.
    When ``storage_conn_id`` is set, that connection's credentials open run_root and
    artifact_root for the rest of this process."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    from tasks.config import load_settings
    from tasks.db import CONNECTION_ID, connection_url, missing_connection
    from tasks.errors import ConfigError

    try:
        conn = Connection.get(CONNECTION_ID)
    except AirflowNotFoundException:
        raise missing_connection() from None
    settings = load_settings(database_url=connection_url(
        conn.host, conn.port, conn.login, conn.password, conn.schema, conn.extra_dejson
    ))
    if settings.storage_conn_id:
        from tasks import storage
        from tasks.topology import storage_options_from_connection

        try:
            store = Connection.get(settings.storage_conn_id)
        except AirflowNotFoundException:
            raise ConfigError(f"storage_conn_id: the Airflow connection {settings.storage_conn_id!r} "
                              "does not exist (Admin > Connections, or AIRFLOW_CONN_"
                              f"{settings.storage_conn_id.upper()})") from None
        storage.use_storage_options(storage_options_from_connection(
            store.conn_type, store.login, store.password, store.host, store.extra_dejson))
    return settings


API_CONNECTION_ID = "textclf_airflow_api"


def airflow_pools() -> dict[str, int] | None:
    """This Airflow's pools and their slots, read through its REST API with the
    `textclf_airflow_api` connection (type http: host = the api-server's base URL, login and
    password of an Airflow user who may read pools); None when that connection is not set (a
    task cannot see pools any other way in Airflow 3)."""
    import httpx
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    from tasks.errors import AirflowUnreachable

    try:
        conn = Connection.get(API_CONNECTION_ID)
    except AirflowNotFoundException:
        return None
    host = conn.host or "127.0.0.1"
    base_url = host if "://" in host else f"http://{host}:{conn.port or 8080}"
    try:
        with httpx.Client(base_url=base_url, timeout=15) as client:
            token = client.post("/auth/token", json={"username": conn.login, "password": conn.password})
            token.raise_for_status()
            pools = client.get("/api/v2/pools", params={"limit": 1000},
                               headers={"Authorization": f"Bearer {token.json()['access_token']}"})
            pools.raise_for_status()
    except httpx.HTTPError as exc:
        raise AirflowUnreachable(f"reading the pools at {base_url} ({API_CONNECTION_ID}): {exc}") from exc
    return {pool["name"]: int(pool["slots"]) for pool in pools.json()["pools"]}


def run_step(step, *args, **kwargs):
    """Call a tasks.pipeline step from a task. Its Skip becomes a skipped task with the reason
    logged; an error a retry cannot fix (tasks.errors.is_final) fails the task on this try, in
    one line."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from tasks.errors import Skip, is_final, one_line

    try:
        return step(*args, **kwargs)
    except Skip as reason:
        raise AirflowSkipException(str(reason)) from None
    except Exception as exc:
        if is_final(exc):
            raise AirflowFailException(f"{type(exc).__name__}: {one_line(exc)}") from exc
        raise


def notifiers(subject: str, text: str) -> list:
    """The configured alert channels, as Airflow notifiers: e-mail when TEXTCLF_FAILURE_EMAIL is
    set (through the `smtp_default` connection), Slack when TEXTCLF_FAILURE_SLACK_CONN names a
    Slack incoming-webhook connection. ``subject`` and ``text`` may be Jinja templates (Airflow
    renders them for task and DAG callbacks)."""
    import os

    channels: list = []
    if os.environ.get("TEXTCLF_FAILURE_EMAIL"):
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        channels.append(SmtpNotifier(to=os.environ["TEXTCLF_FAILURE_EMAIL"], subject=subject,
                                     html_content=text))
    if os.environ.get("TEXTCLF_FAILURE_SLACK_CONN"):
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        channels.append(SlackWebhookNotifier(
            slack_webhook_conn_id=os.environ["TEXTCLF_FAILURE_SLACK_CONN"], text=f"[textclf] {text}"))
    return channels


def textclf_database_url() -> str:
    """The project database from the `textclf_db` connection alone: what recording a failure
    needs, and nothing of textclf.toml or the storage roots, which may be what failed."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    from tasks.db import CONNECTION_ID, connection_url, missing_connection

    try:
        conn = Connection.get(CONNECTION_ID)
    except AirflowNotFoundException:
        raise missing_connection() from None
    return connection_url(conn.host, conn.port, conn.login, conn.password, conn.schema, conn.extra_dejson)


def record_event(run_id: str | None, task_id: str | None, event: str, message: str) -> bool:
    """One row in textclf.pipeline_events, needing only the database. When even that is out of
    reach, the task log says so (and why) instead: a failure callback must never fail."""
    import logging

    from tasks.db import record_event_at

    try:
        record_event_at(textclf_database_url(), run_id, task_id, event, message)
        return True
    except Exception as exc:  # noqa: BLE001 - whatever broke, the log must say it
        logging.getLogger("textclf").error(
            "could not record %s for run %s in textclf.pipeline_events (%s: %s); the event was: %s",
            event, run_id, type(exc).__name__, " ".join(str(exc).split()), message)
        return False


def task_failed(context) -> None:
    """Task failure callback (after its last try): one `task_failed` row naming the task, the
    try and the error. No alert of its own: the night's one alert (``night_failed``) lists it."""
    from tasks.errors import one_line

    ti = context["ti"]
    exception = context.get("exception")
    # run_step already turned a final error into AirflowFailException("ConfigError: ..."): say it once.
    error = ("failed" if exception is None else one_line(exception)
             if type(exception).__name__ == "AirflowFailException"
             else f"{type(exception).__name__}: {one_line(exception)}")
    record_event(context["run_id"], ti.task_id, "task_failed", f"failed on try {ti.try_number}: {error}")


def night_failed(context) -> None:
    """DAG failure callback of every textclf DAG: the run's one alert. It names the run and why
    it is red: the verdict `finish` recorded (textclf_retrain), else (a timed-out night: Airflow
    skips the unfinished tasks, so no `finish` runs) Airflow's reason, with every task failure
    recorded for the run. Written to textclf.pipeline_events (`night_failed` / `night_timed_out`
    for textclf_retrain, `run_failed` for the others), then sent to the configured notifiers."""
    import logging

    from tasks.db import run_events_at
    from tasks.night import failure_alert

    dag = context.get("dag")
    dag_id = getattr(dag, "dag_id", None) or "textclf_retrain"
    run_id = context.get("run_id") or getattr(context.get("dag_run"), "run_id", None)
    reason = str(context.get("reason") or "failed")
    started = getattr(context.get("dag_run"), "start_date", None)  # a cleared run keeps its id
    try:
        events = run_events_at(textclf_database_url(), run_id, since=started)
    except Exception as exc:  # noqa: BLE001 - the alert goes out without the record
        events = None
        logging.getLogger("textclf").error("could not read the night's events for %s: %s", run_id, exc)
    subject, message = failure_alert(dag_id, run_id, reason, events)
    logging.getLogger("textclf").error("%s", message)
    kind = "night" if dag_id == "textclf_retrain" else "run"
    record_event(run_id, None, f"{kind}_timed_out" if "timed_out" in reason else f"{kind}_failed", message)
    for channel in notifiers(subject, message):
        channel.notify(context)  # the text is final: nothing to render


def night_deadline_missed(context: dict | None = None, **_: object) -> None:
    """Deadline alert of textclf_retrain: a night still running hours after it was queued (a
    hung fine-tune, a worker gone) would silently hold back the next one (max_active_runs=1).
    Logged, written to textclf.pipeline_events and sent to the same notifiers as failures.
    Airflow's context carries the run as `dag_run` in its REST form (``dag_run_id``)."""
    import logging

    dag_run = (context or {}).get("dag_run") or {}
    deadline = (context or {}).get("deadline") or {}
    run_id = dag_run.get("dag_run_id") or dag_run.get("run_id")
    message = (f"{dag_run.get('dag_id') or 'textclf_retrain'} run {run_id} missed its deadline "
               f"{deadline.get('deadline_time')}: still {dag_run.get('state')} "
               f"(queued at {dag_run.get('queued_at')})")
    logging.getLogger("textclf").warning("%s", message)
    record_event(run_id, None, "deadline_missed", message)
    for channel in notifiers(f"[textclf] run {run_id} missed its deadline", message):
        channel.notify(context or {})  # the text is final: nothing to render


def _in_process_runs(session, dag_id: str, day: str) -> list:
    """The runs `airflow dags test DAG DAY` makes: logical date exactly midnight of ``day``,
    triggered by a test (never the scheduler's 02:00 night of the same day)."""
    from datetime import UTC, datetime

    from airflow.models.dagrun import DagRun
    from airflow.utils.types import DagRunTriggeredByType

    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return list(session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.logical_date == start,
                                             DagRun.triggered_by == DagRunTriggeredByType.TEST))


def exit_if_unfinished(dag_id: str, day: str) -> None:
    """Exit 3 when a run of ``day`` was left running or queued (its `airflow dags test` crashed:
    the database went away, say), 0 when every run of it finished (any other status: could not
    tell, counted as unfinished)."""
    import sys

    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    with create_session() as session:
        unfinished = [r for r in _in_process_runs(session, dag_id, day)
                      if r.state in (DagRunState.RUNNING, DagRunState.QUEUED)]
    sys.exit(3 if unfinished else 0)


def abandon_in_process_run(dag_id: str, day: str, why: str = "killed") -> None:
    """After `textclf run` was killed and its `airflow dags test` stopped with it: the run of
    ``day`` it left running is marked failed, with its unfinished tasks, and recorded
    (`night_failed`), so nothing waits on a run that nobody runs any more."""
    import logging
    import os

    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, State, TaskInstanceState

    from tasks.db import connection_url_from_env, record_event_at, run_date_lock

    url = connection_url_from_env(os.environ["AIRFLOW_CONN_TEXTCLF_DB"])
    with run_date_lock(url, day) as mine, create_session() as session:
        if not mine:  # a new `textclf run` of the date already took over: its run is not ours
            logging.getLogger("textclf").warning("a new textclf run of %s is under way: nothing abandoned", day)
            return
        runs = [run for run in _in_process_runs(session, dag_id, day)
                if run.state in (DagRunState.RUNNING, DagRunState.QUEUED)]
        for run in runs:
            for ti in run.get_task_instances(session=session):
                if ti.state not in State.finished:
                    ti.state = TaskInstanceState.FAILED
            run.set_state(DagRunState.FAILED)
        session.commit()
    for run in runs:
        message = (f"{dag_id} run {run.run_id} failed: the `textclf run` that ran it was killed; the night was "
                   "stopped at once and marked failed (re-run the date)" if why == "killed" else
                   f"{dag_id} run {run.run_id} failed: its `airflow dags test` crashed twice ({why}); the run "
                   "was marked failed (re-run the date once the cause is fixed)")
        logging.getLogger("textclf").error("%s", message)
        try:
            record_event_at(url, run.run_id, None, "night_failed", message)
        except Exception as exc:  # noqa: BLE001 - the run is marked failed all the same
            logging.getLogger("textclf").error("could not record it in textclf.pipeline_events: %s", exc)


def emit_metrics(metrics) -> None:
    """Send ``tasks.observability.Metric``s through Airflow's stats client (StatsD or
    OpenTelemetry as configured; nothing when metrics are off)."""
    from airflow.sdk.observability.stats import Stats

    for metric in metrics:
        if metric.type == "timing":
            Stats.timing(metric.name, metric.value)
        else:
            Stats.gauge(metric.name, metric.value)
