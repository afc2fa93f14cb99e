"""
### textclf_promote: change the champion by hand

Trigger this DAG to make a model version champion (**promote**) or to go back to the previous
champion (**rollback**), with a reason. Airflow decides who may (its RBAC on this DAG), the
audit trail records the Airflow user who triggered the run as the actor, and the change emits
the `textclf_champion` asset event exactly as a nightly promotion does, so DAGs scheduled on
the asset run. The model's artifact is verified (checksum) before it becomes champion.

The nightly `textclf_retrain` keeps judging challengers against whatever champion this leaves.
`textclf promote` / `textclf rollback` on the command line do the same outside Airflow.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset, Metadata, Param, dag, task
from textclf_airflow import run_step, textclf_settings

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
    default_args={"retries": 0, "execution_timeout": timedelta(minutes=10)},
)
def textclf_promote():
    @task(outlets=[CHAMPION], doc_md="Verify and switch the champion; the asset event on a change.")
    def change_champion(*, params=None, dag_run=None):
        from airflow.sdk.exceptions import AirflowSkipException

        from tasks.pipeline import change_champion_step

        actor = f"airflow:{dag_run.triggering_user_name or 'unknown'}"
        result = run_step(change_champion_step, run_step(textclf_settings), params["action"],
                          params.get("version"), params.get("reason") or "", actor)
        if not result["changed"]:
            raise AirflowSkipException(f"model version {result['champion']} already was champion "
                                       "(decision recorded)")
        yield Metadata(CHAMPION, {"version": result["champion"], "previous": result["previous"],
                                  "summary": f"{result['action']} by {actor}: {result['reason']}"})
        return result

    change_champion()


textclf_promote()
