"""Orchestration overhead: the wall time of a textclf_retrain run minus the sum of its tasks' own
running time, per run, with the real DAG run in-process (`airflow dags test`, the path of
`textclf run`; it leaves out the scheduler's polling and worker start-up, which depend on the
executor and its settings). TF-IDF only, on a small synthetic corpus. No goal is set by the
issue: the line is informational.

    python bench/orchestration.py --runs 3     # make bench
    python bench/orchestration.py --runs 1     # make bench-quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Result, bench_database_url, child, synthetic_tweets  # noqa: E402

FIRST_DAY = datetime(2026, 11, 10, tzinfo=UTC)


def measure(url: str, runs: int) -> dict:
    import psycopg2
    from sqlalchemy.engine import make_url

    home = Path(tempfile.mkdtemp(prefix="textclf-bench-"))
    metadata_db = "textclf_bench_airflow"
    os.environ.update({"TEXTCLF_HOME": str(home), "TEXTCLF_DATABASE_URL": url,
                       "TEXTCLF_AIRFLOW_DATABASE": metadata_db, "TEXTCLF_CONFIG": str(home / "none.toml")})
    (home / "none.toml").write_text("")
    from tasks import db
    from tasks.airflow_env import airflow_environment, manual_run_interval, prepare_airflow
    from tasks.config import load_settings

    settings = load_settings()
    admin = psycopg2.connect(make_url(url).set(database="postgres").render_as_string(hide_password=False))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {metadata_db} WITH (FORCE)")
    admin.close()
    env = airflow_environment(settings)
    os.environ.update(env)
    os.environ["TEXTCLF_IN_PROCESS_RUN"] = "1"  # dag.test(): see dags/textclf_retrain.py
    os.environ["TEXTCLF_DATABASE_URL"] = url
    prepare_airflow(settings, env)

    days = [FIRST_DAY + timedelta(days=d) for d in range(runs)]
    first_start = manual_run_interval(days[0].date())[0] - timedelta(days=5)
    texts, labels, _ = synthetic_tweets(3000)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("TRUNCATE textclf.labelled_texts, textclf.documents, textclf.predictions, "
                    "textclf.model_versions, textclf.validation_runs, textclf.quarantine, "
                    "textclf.label_sets CASCADE")
        span = manual_run_interval(days[-1].date())[1] - first_start
        db.copy_rows(cur, "textclf.labelled_texts", ("id", "text", "label", "labelled_at"), (
            (i + 1, texts[i], labels[i], (first_start + span * i / len(texts)).isoformat())
            for i in range(len(texts))))
        db.copy_rows(cur, "textclf.documents", ("id", "text", "created_at"), (
            (i + 1, texts[i], (first_start + span * i / 500).isoformat()) for i in range(500)))

    from airflow.dag_processing.dagbag import DagBag

    results = []
    for day in days:
        dag = DagBag(dag_folder=str(Path(__file__).resolve().parents[1] / "dags")).dags["textclf_retrain"]
        run = dag.test(logical_date=day, run_conf={"candidates": ["tfidf"]})
        tis = [ti for ti in run.get_task_instances() if ti.start_date and ti.end_date]
        steps = sum((ti.end_date - ti.start_date).total_seconds() for ti in tis)
        wall = (max(ti.end_date for ti in tis) - min(ti.start_date for ti in tis)).total_seconds()
        results.append({"state": str(run.state), "wall": wall, "steps": steps, "tasks": len(tis)})
    return {"runs": results}


def run(runs: int) -> list[Result]:
    measured = child("bench/orchestration.py", "--role", "measure", "--runs", str(runs), "--url",
                     bench_database_url())["runs"]
    wall = sum(r["wall"] for r in measured) / len(measured)
    steps = sum(r["steps"] for r in measured) / len(measured)
    return [Result("orchestration_overhead", wall - steps, "s per run (wall minus steps)", steps,
                   "s per run (sum of the tasks' own time)", "informational", True,
                   f"{len(measured)} run(s) of {measured[0]['tasks']} task instances in-process "
                   f"(airflow dags test), wall {wall:.1f} s, states {[r['state'] for r in measured]}")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--role", choices=["measure"])
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.role:
        print(json.dumps(measure(args.url, args.runs)))
        return 0
    for result in run(args.runs):
        print(result.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
