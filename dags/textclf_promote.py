"""
### textclf_promote: change the champion by hand

Trigger this DAG to make a model version champion (**promote**) or to go back to the previous
champion (**rollback**), with a reason. Airflow decides who may (its RBAC on this DAG), the
audit trail records the Airflow user who triggered the run as the actor, and the change emits
the `textclf_champion` asset event exactly as a nightly promotion does, so DAGs scheduled on
the asset run. The model's artifact is verified (checksum) before it becomes champion.

The nightly `textclf_retrain` keeps judging challengers against whatever champion this leaves.
`textclf promote` / `textclf rollback` on the command line do the same outside Airflow.

A try that fails on something transient (a lost connection, the champion lock held too long) is
retried; a retry after the change was committed does not change the champion again (a second
rollback would undo the first), it emits the event the earlier try could not. A refusal (unknown
version, no reason) fails on the first try. A failed run is recorded in `textclf.pipeline_events`
and sent to the configured notifiers (e-mail, Slack).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset, Metadata, Param, dag, task
from textclf_airflow import night_failed, run_step, task_failed, textclf_settings

from tasks.airflow_client import CHAMPION_ASSET, CHAMPION_ASSET_URI
from tasks.airflow_env import START_DATE

CHAMPION = Asset(CHAMPION_ASSET, uri=CHAMPION_ASSET_URI)


@dag(
    dag_id="textclf_promote",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["textclf", "ml"],
    params={
        "action": Param("promote", type="string", enum=["promote", "rollback"], title="Action",
                        description="promote: make the version below champion; rollback: the "
                        "previous champion again.", section="Change"),
        "version": Param(None, type=["null", "integer"], minimum=1, title="Model version",
                         description="The version to promote (see the textclf registry page); "
                         "ignored by rollback.", section="Change"),
        # None, not "": an empty string default makes a required field that disables Trigger.
        "reason": Param(None, type=["null", "string"], minLength=3, maxLength=500, title="Reason",
                        description="Why: kept in the audit trail with your user name.",
                        section="Change"),
    },
    on_failure_callback=night_failed,  # one alert naming the run, the reason and the task's error
    # Transient failures are retried soon (someone is waiting); refusals fail at once (run_step).
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30),
                  "execution_timeout": timedelta(minutes=10), "on_failure_callback": task_failed},
)
def textclf_promote():
    @task(outlets=[CHAMPION], doc_md="Verify and switch the champion; the asset event on a change.")
    def change_champion(*, params=None, dag_run=None, run_id=None):
        from airflow.sdk.exceptions import AirflowSkipException

        from tasks.pipeline import change_champion_step

        actor = f"airflow:{dag_run.triggering_user_name or 'unknown'}"
        # run_id: a retry after an earlier try committed replays that change, never repeats it.
        result = run_step(change_champion_step, run_step(textclf_settings), params["action"],
                          params.get("version"), params.get("reason") or "", actor, run_id)
        if not result["changed"]:
            raise AirflowSkipException(f"model version {result['champion']} already was champion "
                                       "(decision recorded)")
        yield Metadata(CHAMPION, {"version": result["champion"], "previous": result["previous"],
                                  "summary": f"{result['action']} by {actor}: {result['reason']}"})
        return result

    change_champion()


textclf_promote()
