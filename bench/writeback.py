"""Prediction write-back: textclf's writer (COPY, falling back to UPSERT on conflict, one
transaction per chunk) over N rows split into P partitions written concurrently, as the mapped
predict tasks do, against a bare COPY of the same rows in one stream; and, for context, against
a naive one-transaction executemany.

    python bench/writeback.py --rows 10000000 --partitions 4    # make bench
    python bench/writeback.py --rows 400000 --partitions 4      # make bench-quick

Goals: partitions >= 0.5x the bare COPY (issue 10); >= 10x the naive executemany (issue 4,
reported, not met on this schema: see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Result, bench_database_url  # noqa: E402

LABELS = ["negative", "neutral", "positive"]
INSERT = (
    "INSERT INTO textclf.predictions (document_id, model_version, label, confidence, "
    "probabilities, run_id, logical_date) VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
CHUNK_ROWS = 5_000


def make_rows(first: int, last: int, model_version: int):
    """Rows for document ids first..last-1, generated lazily (10M rows do not fit in memory)."""
    logical_date = datetime(2026, 11, 20, tzinfo=UTC).isoformat()
    for i in range(first, last):
        a = (i * 7919 % 1000) / 1000
        probabilities = {"negative": round(a * 0.5, 6), "neutral": round(0.5 - a * 0.25, 6)}
        probabilities["positive"] = round(1 - sum(probabilities.values()), 6)
        label = max(probabilities, key=probabilities.__getitem__)
        yield (i, model_version, label, probabilities[label], json.dumps(probabilities), "bench", logical_date)


def write_partition(url: str, first: int, last: int, version: int) -> int:
    """What one mapped predict task does with its id range: chunked textclf writes."""
    import itertools

    import psycopg2

    from tasks import db

    conn = psycopg2.connect(url)
    written = 0
    rows = make_rows(first, last, version)
    while chunk := list(itertools.islice(rows, CHUNK_ROWS)):
        with conn, conn.cursor() as cur:
            written += db.write_predictions(cur, chunk)
    conn.close()
    return written


def bare_copy(url: str, rows: int, version: int) -> None:
    import psycopg2

    from tasks import db

    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        for first in range(1, rows + 1, 1_000_000):  # one transaction; buffers of 1M rows
            db.copy_rows(cur, "textclf.predictions", db.PREDICTION_COLUMNS,
                         make_rows(first, min(rows + 1, first + 1_000_000), version))
    conn.close()


def naive(url: str, rows: int, version: int) -> None:
    import psycopg2

    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.executemany(INSERT, list(make_rows(1, rows + 1, version)))
    conn.close()


def prepare(url: str) -> int:
    import psycopg2

    from tasks import db

    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("TRUNCATE textclf.predictions, textclf.model_versions CASCADE")
        version = db.upsert_model_version(cur, {
            "kind": "tfidf", "labels": LABELS, "params": {}, "metrics": {}, "artifact_uri": "",
            "artifact_sha256": "", "size_bytes": 0, "data_fingerprint": None, "code_version": "bench",
            "run_id": "bench", "logical_date": None, "train_seconds": None, "peak_memory_bytes": None,
            "training_key": "bench",
        })
    conn.close()
    return version


def timed(url: str, expected: int, fn, *args) -> float:
    import psycopg2

    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("TRUNCATE textclf.predictions")
    started = time.perf_counter()
    fn(*args)
    seconds = time.perf_counter() - started
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM textclf.predictions")
        written = cur.fetchone()[0]
    conn.close()
    assert written == expected, f"wrote {written} of {expected} rows"
    return seconds


def partitioned(url: str, rows: int, partitions: int, version: int) -> int:
    """Rows inserted or changed by ``partitions`` concurrent writers (0 when all were there)."""
    bounds = [1 + rows * p // partitions for p in range(partitions + 1)]
    with ProcessPoolExecutor(max_workers=partitions) as pool:
        return sum(pool.map(write_partition, [url] * partitions, bounds[:-1], bounds[1:],
                            [version] * partitions))


def run(rows: int, partitions: int, naive_rows: int) -> list[Result]:
    url = bench_database_url()
    version = prepare(url)
    copy_rate = rows / timed(url, rows, bare_copy, url, rows, version)
    ours = rows / timed(url, rows, partitioned, url, rows, partitions, version)
    started = time.perf_counter()
    changed = partitioned(url, rows, partitions, version)  # everything again: every chunk conflicts
    rerun = time.perf_counter() - started
    assert changed == 0, f"a rerun changed {changed} rows"
    naive_rate = naive_rows / timed(url, naive_rows, naive, url, naive_rows, version)
    return [
        Result("writeback_partitions", ours, f"rows/s ({rows:,} rows, {partitions} partitions)",
               copy_rate, "rows/s (bare COPY, one stream)", "ratio >= 0.5", ours >= 0.5 * copy_rate,
               f"rerun of the same rows (UPSERT, nothing changes): {rerun:.1f} s"),
        Result("writeback_vs_naive", ours, "rows/s", naive_rate,
               f"rows/s (executemany, one transaction, {naive_rows:,} rows)", "ratio >= 10",
               ours >= 10 * naive_rate, "bare COPY itself is about 6x executemany on this schema"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--naive-rows", type=int, default=100_000)
    args = parser.parse_args()
    for result in run(args.rows, args.partitions, args.naive_rows):
        print(result.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
