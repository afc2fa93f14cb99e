"""Extraction at scale: peak memory of streaming a 1M-row snapshot to Parquet against a 100k-row
one, each in a process of its own, from the same table (goal: <= 1.2x, flat in the row count).

    python bench/extract_scale.py --rows 1000000 --baseline-rows 100000   # make bench
    python bench/extract_scale.py --rows 100000 --baseline-rows 10000     # make bench-quick
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Result, bench_database_url, child, peak_rss_bytes, synthetic_tweets  # noqa: E402

START = datetime(2026, 1, 1, tzinfo=UTC)


def labelled_at(row: int) -> datetime:
    return START + timedelta(seconds=row)  # row n is the n-th labelled: the first k rows end at START + k s


def load(url: str, rows: int) -> None:
    import psycopg2

    from tasks import db

    texts, labels, weights = synthetic_tweets(rows)
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("TRUNCATE textclf.labelled_texts")
        for start in range(0, rows, 100_000):
            db.copy_rows(cur, "textclf.labelled_texts", ("id", "text", "label", "labelled_at", "weight"), (
                (i + 1, texts[i], labels[i], labelled_at(i).isoformat(), weights[i])
                for i in range(start, min(rows, start + 100_000))))
    conn.close()


def extract(url: str, rows: int) -> dict:
    from tasks.config import load_settings
    from tasks.extract import extract_snapshot

    end = labelled_at(rows)
    with tempfile.TemporaryDirectory() as scratch:
        settings = load_settings(home=Path(scratch), database_url=url)
        started = time.perf_counter()
        snapshot = extract_snapshot(settings, end - timedelta(days=1), end, Path(scratch) / "s.parquet")
        seconds = time.perf_counter() - started
    assert snapshot.snapshot_rows == rows, snapshot.snapshot_rows
    return {"rows": rows, "seconds": seconds, "peak_rss_bytes": peak_rss_bytes()}


def run(rows: int, baseline_rows: int) -> list[Result]:
    url = bench_database_url()
    load(url, rows)
    small = child("bench/extract_scale.py", "--role", "extract", "--rows", str(baseline_rows), "--url", url)
    large = child("bench/extract_scale.py", "--role", "extract", "--rows", str(rows), "--url", url)
    return [Result(
        "extract_peak_rss", large["peak_rss_bytes"] / 2**20, f"MB at {rows:,} rows",
        small["peak_rss_bytes"] / 2**20, f"MB at {baseline_rows:,} rows", "ratio <= 1.2",
        large["peak_rss_bytes"] <= 1.2 * small["peak_rss_bytes"],
        f"{rows / large['seconds']:,.0f} rows/s streamed to Parquet",
    )]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline-rows", type=int, default=100_000)
    parser.add_argument("--role", choices=["extract"])
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.role:
        print(json.dumps(extract(args.url, args.rows)))
        return 0
    for result in run(args.rows, args.baseline_rows):
        print(result.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
