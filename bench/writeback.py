"""Benchmark: prediction write-back, textclf's path vs a naive executemany and a bare COPY.

All three write the same precomputed rows into `textclf.predictions` of a scratch database,
side by side in one process, table emptied between them. Reports rows/s and the ratios the
registry issue asks for (textclf >= 10x naive, >= 0.5x bare COPY).

    python bench/writeback.py                      # 1M rows (naive measured on 200k rows)
    python bench/writeback.py --rows 100000 --naive-rows 20000

Throughput of executemany is flat in the row count (one round trip per row), so the naive
method is timed on a sample to keep the run short; pass --naive-rows equal to --rows to time
it on everything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks import db  # noqa: E402

LABELS = ["negative", "neutral", "positive"]
INSERT = (
    "INSERT INTO textclf.predictions (document_id, model_version, label, confidence, "
    "probabilities, run_id, logical_date) VALUES (%s, %s, %s, %s, %s, %s, %s)"
)


def make_rows(n: int, model_version: int) -> list[tuple]:
    logical_date = datetime(2026, 11, 20, tzinfo=UTC)
    rows = []
    for i in range(1, n + 1):
        a = (i * 7919 % 1000) / 1000
        probabilities = {"negative": round(a * 0.5, 6), "neutral": round(0.5 - a * 0.25, 6)}
        probabilities["positive"] = round(1 - sum(probabilities.values()), 6)
        label = max(probabilities, key=probabilities.get)
        rows.append((i, model_version, label, probabilities[label], json.dumps(probabilities),
                     "bench", logical_date.isoformat()))
    return rows


def truncate(conn) -> None:
    with conn, conn.cursor() as cur:
        cur.execute("TRUNCATE textclf.predictions")


def naive(conn, rows) -> None:
    with conn, conn.cursor() as cur:
        cur.executemany(INSERT, rows)


def naive_autocommit(conn, rows) -> None:
    """One INSERT and one commit per row: what a per-row ORM save does."""
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for row in rows:
                cur.execute(INSERT, row)
    finally:
        conn.autocommit = False


def textclf_path(conn, rows, chunk_rows: int) -> None:
    for start in range(0, len(rows), chunk_rows):
        with conn, conn.cursor() as cur:
            db.write_predictions(cur, rows[start:start + chunk_rows])


def bare_copy(conn, rows) -> None:
    with conn, conn.cursor() as cur:
        db.copy_rows(cur, "textclf.predictions", db.PREDICTION_COLUMNS, rows)


def timed(label: str, fn, conn, rows, *args) -> dict:
    truncate(conn)
    started = time.perf_counter()
    fn(conn, rows, *args)
    seconds = time.perf_counter() - started
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM textclf.predictions")
        written = cur.fetchone()[0]
    conn.commit()
    assert written == len(rows), f"{label}: wrote {written} of {len(rows)} rows"
    result = {"method": label, "rows": len(rows), "seconds": round(seconds, 3),
              "rows_per_s": round(len(rows) / seconds)}
    print(f"  {label:<28} {len(rows):>9} rows  {seconds:8.2f} s  {result['rows_per_s']:>9} rows/s",
          flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--naive-rows", type=int, default=200_000,
                        help="rows for the executemany baseline (a tenth for commit-per-row)")
    parser.add_argument("--chunk-rows", type=int, default=5_000)
    parser.add_argument("--server", default=os.environ.get(
        "TEXTCLF_BENCH_SERVER", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    url = args.server.rsplit("/", 1)[0] + "/textclf_bench"
    db.ensure_database(args.server, "textclf_bench")
    db.upgrade(url)
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("TRUNCATE textclf.predictions, textclf.model_versions CASCADE")
        version = db.upsert_model_version(cur, {
            "kind": "tfidf", "labels": LABELS, "params": {}, "metrics": {}, "artifact_uri": "",
            "artifact_sha256": "", "size_bytes": 0, "data_fingerprint": None,
            "code_version": "bench", "run_id": "bench", "logical_date": None,
            "train_seconds": None, "peak_memory_bytes": None, "training_key": "bench",
        })
    rows = make_rows(args.rows, version)
    print(f"write-back of {args.rows} precomputed predictions into {url}")
    results = [
        timed("naive executemany INSERT", naive, conn, rows[: args.naive_rows]),
        timed(f"textclf write_predictions/{args.chunk_rows}", textclf_path, conn, rows,
              args.chunk_rows),
        timed("bare COPY", bare_copy, conn, rows),
    ]
    # For context only (the ratios use the stronger one-transaction executemany above).
    per_row = timed("naive, commit per row", naive_autocommit, conn,
                    rows[: max(1, args.naive_rows // 10)])
    # Re-running the same write (every row conflicts, nothing changes) is the backfill case.
    started = time.perf_counter()
    textclf_path(conn, rows, args.chunk_rows)
    rerun = time.perf_counter() - started
    naive_rate, ours, copy_rate = (r["rows_per_s"] for r in results)
    summary = {
        "results": results + [per_row],
        "rerun_seconds_same_rows": round(rerun, 3),
        "textclf_vs_naive": round(ours / naive_rate, 2),
        "textclf_vs_bare_copy": round(ours / copy_rate, 2),
    }
    print(f"  re-run of the same rows (no change): {rerun:.2f} s")
    print(f"textclf / naive executemany = {summary['textclf_vs_naive']}x (target >= 10x)")
    print(f"textclf / bare COPY         = {summary['textclf_vs_bare_copy']}x (target >= 0.5x)")
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2))
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
