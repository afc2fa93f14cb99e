"""
### textclf_retrain: keep the text classifier fresh

Every night at 02:00 UTC, for the data interval that just closed:

1. **extract** the labelled rows of PostgreSQL into a training snapshot (new rows = labelled in
   the interval; snapshot = everything labelled before its end; frozen hash-based splits);
2. **validate** it with Great Expectations: bad rows go to `textclf.quarantine` with the
   expectation that rejected them; batch-level failures skip training with the reason;
3. **train** one task per candidate kind (`tasks.candidates.KINDS`), in parallel: the TF-IDF
   baseline, **BERT fine-tuning** (queue `gpu`, pool `gpu`), a pre-trained checkpoint;
4. **score** every candidate and the current champion on the same frozen test rows, each on
   its own device (a GPU kind on the `gpu` queue: **score_gpu**), then **evaluate** them
   (paired-bootstrap interval, McNemar), with an HTML study report;
5. **promote** the winner under the promotion policy (every reason is stored);
6. **plan_predictions** / **predict** (mapped over id ranges; on the `gpu` queue for a BERT
   champion) / **publish_predictions**: the champion of the run scores the interval's new
   documents into `textclf.predictions` (everything, when this run promoted it).

Predictions are tasks of this DAG rather than a separate asset-triggered DAG: what a run
writes is a function of (the interval's documents, the champion decided in that same run), so
re-running a date rewrites exactly its own rows. Downstream DAGs can still schedule on the
`textclf_predictions` asset. Backfills should run one date at a time (the UI's default; pass
`"max_active_runs": 1` to the REST API): if runs do overlap, `promote` notices that another run
changed the champion since its evaluation and judges its candidates again.

**Green means the night did its job**: it judged its candidates and every document of its
interval has a prediction from the run's champion (or a quarantine row saying why not), or
there were no new labelled rows and **finish** says so. Otherwise the night is red on the first
try (**finish** fails with the reason in one line, also in `textclf.pipeline_events`), and the
DAG's failure callback sends **one** alert naming the run, the reason and each failed task.
A skipped task is not an error: its log says why (no new rows, champion kept, candidate
disabled, nothing to summarise because an earlier task failed). Trigger a run with the form to
change candidates, the BERT budget, the promotion margin, or to evaluate without promoting.
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import (
    Asset,
    CronDataIntervalTimetable,
    DeadlineAlert,
    DeadlineReference,
    Metadata,
    Param,
    SyncCallback,
    TriggerRule,
    dag,
    task,
)
from airflow.sdk.configuration import conf
from textclf_airflow import night_deadline_missed, night_failed, task_failed
from textclf_airflow import run_step as _run

from tasks.airflow_client import CHAMPION_ASSET, CHAMPION_ASSET_URI
from tasks.airflow_env import IN_PROCESS_RUN, START_DATE, night_deadline
from tasks.candidates import KINDS
from tasks.candidates.base import MAX_TRAIN_ROWS
from tasks.candidates.bert.config import HUB_ID_PATTERN
from tasks.k8s import executor_config

# A night that has not ended after this long is failed (and alerted by `night_failed`): a hung
# fine-tune must not hold back the next night for ever. The tasks' own timeouts and retries fit
# inside it (tests/test_dag.py adds up the longest path).
NIGHT_TIMEOUT = timedelta(hours=20)
SHORT_TASK = timedelta(minutes=10)  # bookkeeping tasks: plans, promotion, totals

# Under the KubernetesExecutor, GPU tasks ask for a GPU pod (tasks/k8s.py); elsewhere nothing.
EXECUTOR = conf.get("core", "executor")
# `airflow dags test` (textclf run, the demo, in-process tests) of Airflow 3.3.2 fails at the end
# of a successful run of a DAG with a deadline alert (DagRun.update_state reads the alerts as
# ids); runs made that way, with no scheduler to watch them anyway, go without it.
IN_PROCESS = os.environ.get(IN_PROCESS_RUN) == "1"

CHAMPION = Asset(CHAMPION_ASSET, uri=CHAMPION_ASSET_URI)
PREDICTIONS = Asset("textclf_predictions", uri="postgres://textclf-db:5432/textclf/textclf/predictions")

PARAMS = {
    "candidates": Param(
        None,
        type=["null", "array"],
        items={"type": "string", "enum": list(KINDS)},
        examples=list(KINDS),  # the trigger form shows a multi-select of these
        uniqueItems=True,
        minItems=1,
        title="Candidates",
        description="Which candidate kinds to train and evaluate in this run; empty = the "
        f"configured ones (textclf.toml `candidates`). Kinds: {', '.join(KINDS)}.",
        section="Training",
    ),
    "bert_checkpoint": Param(
        None,
        type=["null", "string"],
        pattern=HUB_ID_PATTERN,
        title="BERT checkpoint",
        description="A hub id to fine-tune (where the hub is reachable); empty = the configured "
        "one (default: the packaged MiniLM). Local directories are set in textclf.toml.",
        section="Training",
    ),
    "bert_epochs": Param(
        None,
        type=["null", "number"],
        minimum=0.05,
        maximum=20,
        title="BERT epochs",
        description="Empty = the configured default.",
        section="Training",
    ),
    "bert_max_train_rows": Param(
        None,
        type=["null", "integer"],
        minimum=10,
        maximum=MAX_TRAIN_ROWS,
        title="BERT max training rows",
        description="Fine-tune BERT on the newest this many training rows: the CPU budget "
        "knob. Empty = the configured default.",
        section="Training",
    ),
    "bert_learning_rate": Param(
        None,
        type=["null", "number"],
        exclusiveMinimum=0,
        maximum=0.01,
        title="BERT peak learning rate",
        description="Small budgets learn faster with a higher rate (2e-4 for a 2,000-row CPU "
        "run). Empty = the configured default (5e-5).",
        section="Training",
    ),
    "bert_max_length": Param(
        None,
        type=["null", "integer"],
        minimum=8,
        maximum=512,
        title="BERT max sequence length",
        description="Tokens per text (longer texts keep their head and tail). Empty = default.",
        section="Training",
    ),
    "max_train_rows": Param(
        None,
        type=["null", "integer"],
        minimum=10,
        maximum=MAX_TRAIN_ROWS,
        title="Max training rows",
        description="Train every candidate on the newest this many training rows (by "
        "labelled_at); empty = as configured.",
        section="Training",
    ),
    "learning_curve": Param(
        False,
        type="boolean",
        title="Learning-curve report",
        description="Also train TF-IDF and BERT on 10/25/50/100% of the rows for the report "
        "(slow).",
        section="Evaluation",
    ),
    "min_delta": Param(
        None,
        type=["null", "number"],
        minimum=-1,
        maximum=1,
        title="Promotion margin (min_delta)",
        description="A challenger must be significantly better than the champion by more than this "
        "macro-F1 margin (one-sided test at the night's share of the lifetime budget); empty = "
        "the configured policy.",
        section="Promotion",
    ),
    "dry_run": Param(
        False,
        type="boolean",
        title="Evaluate but do not promote",
        description="Record the decision without changing the champion.",
        section="Promotion",
    ),
    "rescore_all": Param(
        False,
        type="boolean",
        title="Rescore all documents",
        description="Score every document with the champion, not only the interval's new ones.",
        section="Prediction",
    ),
}


def _settings():
    """Project settings with the database of the `textclf_db` Airflow connection; refused when
    its roots are worker-local under a distributed executor, or cannot be written."""
    from textclf_airflow import textclf_settings

    from tasks.topology import check_shared_roots, check_writable_roots

    settings = _run(textclf_settings)
    _run(check_shared_roots, settings, EXECUTOR)
    _run(check_writable_roots, settings)
    return settings


def _check_gpu(task_name: str, settings) -> None:
    """On the gpu queue: fail at once when this worker has no CUDA (unless allowed)."""
    import torch

    from tasks.topology import check_gpu_worker

    _run(check_gpu_worker, task_name, EXECUTOR, torch.cuda.is_available(), settings.allow_cpu_fallback)


def _report(step: str, result) -> None:
    """The step's figures as Airflow metrics (tasks/observability.py names them)."""
    from textclf_airflow import emit_metrics

    from tasks.observability import step_metrics

    emit_metrics(step_metrics(step, result))


def _options(params):
    from tasks.pipeline import RunOptions

    return RunOptions.from_params(dict(params))


@dag(
    dag_id="textclf_retrain",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    # One still running 8 hours after it was queued is reported first.
    dagrun_timeout=NIGHT_TIMEOUT,
    # A red night sends one alert (night_failed), whatever number of tasks failed; each failed
    # task is recorded (task_failed) and listed in it.
    on_failure_callback=night_failed,
    deadline=None if IN_PROCESS else DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=night_deadline(),
        callback=SyncCallback(night_deadline_missed)),
    params=PARAMS,
    doc_md=__doc__,
    tags=["textclf", "ml"],
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=20),
        "execution_timeout": timedelta(minutes=30),
        "on_failure_callback": task_failed,
    },
)
def textclf_retrain():
    @task(doc_md="Checks the run's conf and the pools, then streams the interval's training "
          "snapshot from PostgreSQL into Parquet.")
    def extract(*, run_id=None, data_interval_start=None, data_interval_end=None, dag_run=None, dag=None):
        import logging

        from textclf_airflow import API_CONNECTION_ID, airflow_pools

        from tasks.pipeline import check_run_conf, extract_step
        from tasks.topology import check_pools

        _run(check_run_conf, dag_run.conf or {}, PARAMS)
        pools = _run(airflow_pools)
        if pools is None:
            logging.getLogger("textclf").info("pools not checked: no %s connection", API_CONNECTION_ID)
        else:  # a task in a missing pool would wait for ever, unalerted
            _run(check_pools, {t.pool: t.pool_slots for t in dag.tasks}, pools)
        result = _run(extract_step, _settings(), run_id, data_interval_start, data_interval_end,
                      run_after=dag_run.run_after)
        _report("extract", result)
        return result

    @task(doc_md="Great Expectations gate; quarantines bad rows, records the run.")
    def validate(snapshot: dict, *, run_id=None, logical_date=None):
        from tasks.pipeline import validate_step

        result = _run(validate_step, _settings(), run_id, logical_date, snapshot)
        _report("validate", result)
        return result

    @task
    def train(validation: dict, kind: str, *, run_id=None, logical_date=None, params=None):
        from tasks.pipeline import train_step

        settings = _settings()
        if KINDS[kind].needs_gpu:
            _check_gpu(f"train_{kind}", settings)
        result = _run(train_step, settings, kind, run_id, logical_date, validation, _options(params))
        _report("train", result)
        return result

    @task(
        # Runs once every candidate is done, whatever became of each: one failed candidate (a GPU
        # worker gone, an out-of-memory BERT) must not stop the others from being judged.
        trigger_rule=TriggerRule.ALL_DONE, execution_timeout=SHORT_TASK,
        doc_md="Which models (this run's candidates and the champion) score the test rows on this "
        "device. One planning task per device: the other one's list is empty, so no GPU worker is "
        "needed when no GPU kind is involved.",
    )
    def plan_scoring(validation, trained: list, device: str):
        from tasks.pipeline import plan_scoring_step, require_candidates

        _run(require_candidates, validation, trained)  # before the settings: skip at once
        return _run(plan_scoring_step, _settings(), validation, trained, device)

    @task(map_index_template="{{ model_label }}",
          doc_md="One model's probabilities on the frozen test rows, stored for evaluate.")
    def score(version: int, validation: dict, *, run_id=None, task=None):
        from airflow.sdk import get_current_context

        from tasks.pipeline import score_test_step

        get_current_context()["model_label"] = f"model version {version}"

        settings = _settings()
        if task.queue == "gpu":
            _check_gpu(task.task_id, settings)
        return _run(score_test_step, settings, run_id, validation, version)

    @task(trigger_rule=TriggerRule.ALL_DONE,
          doc_md="Candidates and the champion, scored on the same frozen test rows, compared; "
          "HTML report.")
    def evaluate(validation, trained: list, on_cpu, on_gpu, *, run_id=None, params=None):
        from tasks.pipeline import evaluate_step, require_candidates

        _run(require_candidates, validation, trained)
        scored = [*(on_cpu or []), *(on_gpu or [])]
        result = _run(evaluate_step, _settings(), run_id, validation, trained, _options(params),
                      scored=scored)
        _report("evaluate", result)
        return result

    @task(outlets=[CHAMPION], execution_timeout=SHORT_TASK,
          doc_md="Promotion policy; skipped when the champion is kept.")
    def promote(validation: dict, evaluation: dict, *, run_id=None, params=None):
        from airflow.sdk.exceptions import AirflowSkipException

        from tasks.pipeline import promote_step

        result = _run(
            promote_step, _settings(), run_id, validation, evaluation,
            min_delta=params.get("min_delta"), dry_run=bool(params.get("dry_run")),
        )
        _report("promote", result)
        if not result["promoted"]:
            raise AirflowSkipException(result["summary"])
        yield Metadata(CHAMPION, {"version": result["champion"], "previous": result["previous"],
                                  "summary": result["summary"]})
        return result

    @task(
        trigger_rule=TriggerRule.ALL_DONE, execution_timeout=SHORT_TASK,
        doc_md="Which documents the champion of this run (its own decision, else that of its date) "
        "scores: the interval's new ones, all after a promotion; split into id ranges. One planning "
        "task per device: the other one's list is empty, so no GPU worker is needed for a CPU model.",
    )
    def plan_predictions(validation, device: str, *, run_id=None, params=None):
        from tasks.pipeline import plan_predictions_step, require_validated

        _run(require_validated, validation)
        plan = _run(plan_predictions_step, _settings(), run_id, validation,
                    rescore_all=bool(params.get("rescore_all")))
        return plan[device]

    @task(map_index_template="{{ partition_label }}",
          doc_md="Score one id range of documents; a retry rewrites only what is missing.")
    def predict(partition: dict, *, run_id=None, logical_date=None, task=None):
        from airflow.sdk import get_current_context

        from tasks.pipeline import predict_partition_step

        get_current_context()["partition_label"] = (
            f"ids {partition['id_from'] or 'start'} to {partition['id_to'] or 'end'}")
        settings = _settings()
        if task.queue == "gpu":
            _check_gpu(task.task_id, settings)
        return _run(predict_partition_step, settings, run_id, logical_date, partition)

    @task(outlets=[PREDICTIONS], trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
          execution_timeout=SHORT_TASK,
          doc_md="Totals of the scored partitions; the predictions asset event when rows changed.")
    def publish_predictions(on_cpu, on_gpu):
        from airflow.sdk.exceptions import AirflowSkipException

        from tasks.pipeline import summarize_predictions

        result = _run(summarize_predictions, [*(on_cpu or []), *(on_gpu or [])])
        _report("predict", result)
        if result["rows_written"] == 0:
            raise AirflowSkipException(f"{result['documents']} documents scored, predictions unchanged")
        yield Metadata(PREDICTIONS, {"model_version": result["model_version"],
                                     "rows_written": result["rows_written"]})
        return result

    # A red verdict fails on its first try (AirflowFailException); retries are for a lost connection.
    @task(trigger_rule=TriggerRule.ALL_DONE, execution_timeout=SHORT_TASK, retry_delay=timedelta(seconds=30),
          doc_md="The night's verdict: green when it judged its candidates and every document of "
          "its interval has a prediction (or there was no new data, and it says so); otherwise "
          "red, on this first try, with the reason in one line (textclf.pipeline_events).")
    def finish(validation, *, ti=None, run_id=None):
        import logging

        from airflow.sdk.exceptions import AirflowFailException
        from textclf_airflow import record_event

        from tasks.night import failed_tasks, judge_night, night_record

        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[run_id]).get(run_id, {})
        failed = failed_tasks({t: s for t, s in states.items() if t != ti.task_id})
        record = None if failed or validation is None else _run(night_record, _settings(), run_id, validation)
        verdict = judge_night(failed, validation, record)
        record_event(run_id, None, "night_done" if verdict.green else "night_red", verdict.summary)
        if not verdict.green:
            raise AirflowFailException(verdict.summary)
        logging.getLogger("textclf").info("green: %s", verdict.summary)
        return verdict.summary

    gpu = {"queue": "gpu", "pool": "gpu", "executor_config": executor_config(True, EXECUTOR)}
    validation = validate(extract())
    trained = [
        train.override(
            task_id=f"train_{kind.name}", queue=kind.queue, pool=kind.pool or "default_pool",
            execution_timeout=kind.execution_timeout, retries=kind.retries, doc_md=kind.description,
            executor_config=executor_config(kind.needs_gpu, EXECUTOR),
        )(validation, kind.name)
        for kind in KINDS.values()
    ]
    # Each model scores the test rows where it runs best: a GPU kind (BERT) on the gpu queue.
    for_cpu = plan_scoring.override(task_id="plan_scoring")(validation, trained, "cpu")
    for_gpu = plan_scoring.override(task_id="plan_scoring_gpu")(validation, trained, "gpu")
    scored_cpu = score.partial(validation=validation).expand(version=for_cpu)
    scored_gpu = score.override(task_id="score_gpu", **gpu).partial(validation=validation).expand(version=for_gpu)
    evaluation = evaluate(validation, trained, scored_cpu, scored_gpu)
    promoted = promote(validation, evaluation)
    cpu_ranges = plan_predictions.override(task_id="plan_predictions")(validation, "cpu")
    gpu_ranges = plan_predictions.override(task_id="plan_predictions_gpu")(validation, "gpu")
    promoted >> [cpu_ranges, gpu_ranges]
    on_cpu = predict.expand(partition=cpu_ranges)
    # A champion whose kind needs a GPU (BERT) scores on the GPU workers.
    on_gpu = predict.override(task_id="predict_gpu", **gpu).expand(partition=gpu_ranges)
    published = publish_predictions(on_cpu, on_gpu)
    [*trained, published] >> finish(validation)


textclf_retrain()
