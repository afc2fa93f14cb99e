"""
### textclf_retrain: keep the text classifier fresh

Every night at 02:00 UTC, for the data interval that just closed:

1. **extract** the labelled rows of PostgreSQL into a training snapshot (new rows = labelled in
   the interval; snapshot = everything labelled before its end; frozen hash-based splits);
2. **validate** it with Great Expectations: bad rows go to `textclf.quarantine` with the
   expectation that rejected them; batch-level failures skip training with the reason;
3. **train** the TF-IDF baseline and **fine-tune BERT** (queue `gpu`, pool `gpu`) in parallel;
4. **evaluate** every candidate and the current champion on the same frozen test rows
   (paired-bootstrap interval, McNemar), with an HTML study report;
5. **promote** the winner under the promotion policy (every reason is stored);
6. **predict**: the champion scores the interval's new documents into `textclf.predictions`
   (everything, when the champion changed).

Predictions are tasks of this DAG rather than a separate asset-triggered DAG: what a run
writes is a function of (the interval's documents, the champion decided in that same run), so
re-running a date rewrites exactly its own rows. Downstream DAGs can still schedule on the
`textclf_predictions` asset. Backfills should run one date at a time (the UI's default; pass
`"max_active_runs": 1` to the REST API): if runs do overlap, `promote` notices that another run
changed the champion since its evaluation and judges its candidates again.

A skipped task is not an error: its log says why (no new rows, validation failed, champion
kept, candidate disabled). Trigger a run with the form to change candidates, the BERT budget,
the promotion margin, or to evaluate without promoting.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import Asset, CronDataIntervalTimetable, Metadata, Param, TriggerRule, dag, task

CHAMPION = Asset("textclf_champion", uri="textclf://registry/champion")
PREDICTIONS = Asset("textclf_predictions", uri="postgres://textclf-db:5432/textclf/textclf/predictions")

PARAMS = {
    "candidates": Param(
        ["tfidf", "bert"],
        type="array",
        items={"type": "string", "enum": ["tfidf", "bert", "pretrained"]},
        uniqueItems=True,
        minItems=1,
        title="Candidates",
        description="Which candidate kinds to train and evaluate in this run.",
        section="Training",
    ),
    "bert_checkpoint": Param(
        "",
        type="string",
        title="BERT checkpoint",
        description="Local directory or hub id to fine-tune; empty = the packaged MiniLM "
        "(or the configured one).",
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
        title="BERT max training rows",
        description="Fine-tune BERT on at most this many (newest) rows: the CPU budget knob. "
        "Empty = the configured default.",
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
        title="Max training rows",
        description="Train on at most this many (newest) rows; empty = the configured budget.",
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
        description="The lower bound of the 95% interval of the macro-F1 gain over the champion "
        "must exceed this; empty = the configured policy.",
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
    """Project settings; the `textclf_db` Airflow connection is used when no URL is set."""
    import os

    from tasks.config import load_settings

    if os.environ.get("TEXTCLF_DATABASE_URL"):
        return load_settings()
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    from tasks.db import connection_fields_to_url

    try:
        conn = Connection.get("textclf_db")
    except AirflowNotFoundException:
        return load_settings()
    return load_settings(
        database_url=connection_fields_to_url(
            conn.host, conn.port, conn.login, conn.password, conn.schema
        )
    )


def _run(step, *args, **kwargs):
    """Call a tasks.pipeline step; its Skip becomes a skipped task with the reason logged."""
    from airflow.sdk.exceptions import AirflowSkipException

    from tasks.pipeline import Skip

    try:
        return step(*args, **kwargs)
    except Skip as reason:
        raise AirflowSkipException(str(reason)) from None


def _training_options(params) -> dict:
    bert = {}
    if params.get("bert_checkpoint"):
        bert["checkpoint"] = params["bert_checkpoint"]
    if params.get("bert_epochs"):
        bert["epochs"] = float(params["bert_epochs"])
    if params.get("bert_max_train_rows"):
        bert["max_train_rows"] = int(params["bert_max_train_rows"])
    if params.get("bert_max_length"):
        bert["max_length"] = int(params["bert_max_length"])
    if params.get("bert_learning_rate"):
        bert["learning_rate"] = float(params["bert_learning_rate"])
    return {
        "candidates": list(params["candidates"]),
        "max_train_rows": params.get("max_train_rows"),
        "learning_curve": bool(params.get("learning_curve")),
        "bert": bert,
    }


def record_failure(context) -> None:
    """Failure callback: a readable summary in textclf.pipeline_events (and the task log)."""
    from tasks.pipeline import record_failure as record

    ti = context["ti"]
    message = (
        f"{ti.dag_id}.{ti.task_id} failed on try {ti.try_number} for run {context['run_id']}: "
        f"{context.get('exception')!r}"
    )
    record(_settings(), context["run_id"], ti.task_id, message)


def _failure_callbacks() -> list:
    """Always record the failure; also e-mail it when TEXTCLF_FAILURE_EMAIL is set (uses the
    `smtp_default` connection)."""
    import os

    callbacks = [record_failure]
    if os.environ.get("TEXTCLF_FAILURE_EMAIL"):
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        callbacks.append(SmtpNotifier(
            to=os.environ["TEXTCLF_FAILURE_EMAIL"],
            subject="[textclf] {{ ti.dag_id }}.{{ ti.task_id }} failed for {{ run_id }}",
        ))
    return callbacks


@dag(
    dag_id="textclf_retrain",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    doc_md=__doc__,
    tags=["textclf", "ml"],
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=20),
        "execution_timeout": timedelta(minutes=30),
        "on_failure_callback": _failure_callbacks(),
    },
)
def textclf_retrain():
    @task(doc_md="Stream the interval's training snapshot from PostgreSQL into Parquet.")
    def extract(*, run_id=None, data_interval_start=None, data_interval_end=None, dag_run=None):
        from tasks.pipeline import extract_step

        return extract_step(_settings(), run_id, data_interval_start, data_interval_end,
                            run_after=dag_run.run_after)

    @task(doc_md="Great Expectations gate; quarantines bad rows, records the run.")
    def validate(snapshot: dict, *, run_id=None, logical_date=None):
        from tasks.pipeline import validate_step

        return validate_step(_settings(), run_id, logical_date, snapshot)

    @task(doc_md="TF-IDF + linear SVM baseline, tuned on the validation split.")
    def train_tfidf(validation: dict, *, run_id=None, logical_date=None, params=None):
        from tasks.pipeline import train_step

        return _run(train_step, _settings(), "tfidf", run_id, logical_date, validation,
                    _training_options(params))

    @task(
        queue="gpu",
        pool="gpu",
        execution_timeout=timedelta(hours=6),
        doc_md="Fine-tune BERT; checkpoints under $TEXTCLF_HOME so a retry resumes.",
    )
    def train_bert(validation: dict, *, run_id=None, logical_date=None, params=None):
        from tasks.pipeline import train_step

        return _run(train_step, _settings(), "bert", run_id, logical_date, validation,
                    _training_options(params))

    @task(doc_md="Pre-trained checkpoint evaluated as-is (off unless enabled).")
    def register_pretrained(validation: dict, *, run_id=None, logical_date=None, params=None):
        from tasks.pipeline import train_step

        return _run(train_step, _settings(), "pretrained", run_id, logical_date, validation,
                    _training_options(params))

    @task(
        trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
        doc_md="Candidates and champion on the same frozen test rows; HTML report.",
    )
    def evaluate(validation: dict, tfidf, bert, pretrained, *, run_id=None, params=None):
        from tasks.pipeline import evaluate_step

        return _run(evaluate_step, _settings(), run_id, validation, [tfidf, bert, pretrained],
                    _training_options(params))

    @task(outlets=[CHAMPION], doc_md="Promotion policy; skipped when the champion is kept.")
    def promote(validation: dict, evaluation: dict, *, run_id=None, params=None):
        from airflow.sdk.exceptions import AirflowSkipException

        from tasks.pipeline import promote_step

        result = promote_step(
            _settings(), run_id, validation, evaluation,
            min_delta=params.get("min_delta"), dry_run=bool(params.get("dry_run")),
        )
        if not result["promoted"]:
            raise AirflowSkipException(result["summary"])
        yield Metadata(CHAMPION, {"version": result["champion"], "previous": result["previous"],
                                  "summary": result["summary"]})
        return result

    @task(
        outlets=[PREDICTIONS],
        trigger_rule=TriggerRule.NONE_FAILED,
        doc_md="Champion scores new documents (all of them after a promotion).",
    )
    def predict(validation: dict, promotion, *, run_id=None, logical_date=None, params=None):
        from airflow.sdk.exceptions import AirflowSkipException

        from tasks.pipeline import predict_step

        result = _run(
            predict_step, _settings(), run_id, logical_date, validation,
            champion_changed=bool(promotion and promotion.get("promoted")),
            rescore_all=bool(params.get("rescore_all")),
        )
        if result["rows_written"] == 0:
            raise AirflowSkipException(
                f"{result['documents']} documents scored, predictions unchanged"
            )
        yield Metadata(PREDICTIONS, {"model_version": result["model_version"],
                                     "rows_written": result["rows_written"]})
        return result

    validation = validate(extract())
    evaluation = evaluate(
        validation, train_tfidf(validation), train_bert(validation),
        register_pretrained(validation),
    )
    predict(validation, promote(validation, evaluation))


textclf_retrain()
