"""The night's verdict and its one alert.

Green means the night did its job: it judged its candidates and every document of its interval
has a prediction from the run's champion (or a quarantine row saying why not), or there were no
new labelled rows and it says so. Anything else is red, in one line that names the cause. The
verdict reads the tables the night wrote (evaluations, decisions, predictions, quarantine), not
the tasks' own return values, so a task that "succeeded" without doing its work cannot make the
night green.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tasks import db, registry
from tasks.config import Settings


@dataclass(frozen=True)
class NightVerdict:
    green: bool
    summary: str


@dataclass(frozen=True)
class NightRecord:
    """What the database says a night did (``night_record``)."""

    judged: list[str]  # the models evaluated on the run's test rows, "v12 tfidf", "v9 tfidf (champion)"
    decision: str | None  # the promotion decision's summary
    champion: int | None  # the champion the run's predictions came from
    documents_due: int
    documents_missing: int


def failed_tasks(task_states: Mapping[str, str | None]) -> list[str]:
    return sorted(t for t, s in task_states.items() if s == "failed")


def judge_night(failed: Sequence[str], validation: Mapping[str, Any] | None,
                record: NightRecord | None) -> NightVerdict:
    """Green or red, and why, in one line. ``record`` is None when the tasks already failed."""
    if failed:
        return NightVerdict(False, f"task(s) failed: {', '.join(failed)}")
    if validation is None or record is None:
        return NightVerdict(False, "the snapshot was never validated (its tasks did not run)")
    interval = f"[{validation['interval_start']}, {validation['interval_end']})"
    scored = (f"{record.documents_due - record.documents_missing} of {record.documents_due} documents of "
              f"the interval scored by model version {record.champion}" if record.champion
              else "no champion to score documents")
    status = validation["status"]
    if status == "failed":
        return NightVerdict(False, f"validation failed, nothing was trained: {validation.get('reason')}")
    if status == "passed" and not record.judged:
        return NightVerdict(False, f"no candidate was judged although validation passed ({interval})")
    if record.documents_missing:
        why = (f"there is no champion ({record.decision})" if record.champion is None and record.decision
               else "there is no champion" if record.champion is None
               else f"model version {record.champion} did not score them")
        return NightVerdict(False, f"{record.documents_missing} of {record.documents_due} documents of the "
                                   f"interval {interval} have no prediction: {why}")
    if status == "no_new_data":
        return NightVerdict(True, f"no new labelled rows in {interval}: nothing to retrain; {scored}")
    return NightVerdict(True, f"judged {', '.join(record.judged)}: {record.decision or 'no decision'}; {scored}")


def night_record(settings: Settings, run_id: str, validation: Mapping[str, Any]) -> NightRecord:
    """What the night wrote, read back from the tables."""
    end = datetime.fromisoformat(validation["interval_end"])
    start = datetime.fromisoformat(validation["interval_start"])
    with db.transaction(settings) as cur:
        # Every model this run scored on its test rows. A re-run whose candidate is (reused as)
        # the champion itself judged it all the same: its row is the champion's.
        judged = [f"v{e['model_version']} {e['kind']}" + (" (champion)" if e["role"] == "champion" else "")
                  for e in db.evaluations_for_run(cur, run_id)]
        decision = registry.run_decision(cur, run_id)
        champion = registry.run_champion(cur, run_id, end)
        with db.reading_source(settings.documents_source, "documents_source"):
            due, missing = db.documents_unaccounted(cur, settings.documents_source, start, end, champion)
    return NightRecord(judged=sorted(judged), decision=decision["reasons"].get("summary") if decision else None,
                       champion=champion, documents_due=due, documents_missing=missing)


def failure_alert(dag_id: str, run_id: str | None, reason: str,
                  events: Sequence[Mapping[str, Any]] | None) -> tuple[str, str]:
    """(subject, text) of a red night's one alert: the verdict `finish` recorded (night_red) (else
    Airflow's reason), then each failed task with the error it recorded."""
    unread = events is None
    events = events or []
    verdicts = [e["message"] for e in events if e["event"] == "night_red"]
    # finish's own failure is the verdict when it recorded one; else (an error before it could)
    # it is the news.
    failures = [f"{e['task_id']}: {e['message']}" for e in events
                if e["event"] == "task_failed" and (e["task_id"] != "finish" or not verdicts)]
    why = verdicts[-1] if verdicts else (
        "did not finish within the night's timeout (dagrun_timeout); unfinished tasks were stopped"
        if "timed_out" in reason else reason)
    text = f"{dag_id} run {run_id} failed: {why}"
    if failures:
        text += " | " + " | ".join(failures)
    if unread:
        text += " (textclf.pipeline_events could not be read: see the callback's log)"
    return f"[textclf] {dag_id} run {run_id} failed", text
