"""
### textclf_maintenance: retention of artifacts, run folders and checkpoints

Every day at 04:00 UTC (after the nightly retrain), as `textclf gc` does:

* **keeps** every model version that was ever champion (rollback can return to any of them) and
  the newest `keep_candidates` versions (textclf.toml `[retention]`, default 10);
* **deletes** the artifacts of other versions (their rows stay, marked, for the audit trail),
  run folders (snapshots, clean rows, reports, data docs) of runs older than `max_age_days`
  (default 30), and worker-local checkpoints and scratch untouched for as long.

The task log lists what went and the space freed. Trigger with *dry run* to see it first.
A retry is safe (what an earlier try deleted is simply not found again); a failed run is recorded
in `textclf.pipeline_events` and sent to the configured notifiers (e-mail, Slack).
Airflow's own tables grow too: `airflow db clean --clean-before-timestamp <date>` (see the README).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import CronTriggerTimetable, Param, dag, task
from textclf_airflow import night_failed, run_step, task_failed, textclf_settings


@dag(
    dag_id="textclf_maintenance",
    schedule=CronTriggerTimetable("0 4 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["textclf", "maintenance"],
    params={
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="List what would be deleted, delete nothing.", section="Retention"),
    },
    on_failure_callback=night_failed,  # one alert naming the run, the reason and the task's error
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5), "execution_timeout": timedelta(hours=1),
                  "on_failure_callback": task_failed},
)
def textclf_maintenance():
    @task(doc_md="Delete what retention allows; log every item and the space freed.")
    def collect_garbage(*, params=None):
        from tasks.retention import collect_garbage as collect

        # run_step: a configuration error fails on the first try instead of three times.
        return run_step(collect, run_step(textclf_settings), dry_run=bool(params.get("dry_run"))).to_dict()

    collect_garbage()


textclf_maintenance()
