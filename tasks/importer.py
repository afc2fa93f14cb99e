"""Streaming CSV import into the source tables, with quarantine for rows that cannot load.

Invariant: loaded + quarantined == data rows in the file. The file is read record by record
(constant memory), loaded through COPY into a staging table and merged with an UPSERT, all in
one transaction, so a failed import leaves nothing half-written and a re-import of the same
file changes nothing.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from tasks import db
from tasks.config import Settings, SourceTable
from tasks.errors import ImportError_
from tasks.normalize import is_blank

Kind = Literal["labelled", "documents"]
COPY_CHUNK_ROWS = 5_000
INTEGER_TYPES = {"bigint": 63, "integer": 31, "smallint": 15}  # id type -> bits of magnitude
FIELD_SIZE_LIMIT = 256 * 2**20  # characters in one field; longer ones end the import with an error


@dataclass(frozen=True)
class CsvOptions:
    id_column: str = "id"
    text_column: str = "text"
    label_column: str = "label"
    timestamp_column: str | None = None  # default: the target's timestamp column name
    encoding: str = "utf-8"
    delimiter: str = ","
    timestamp_format: str | None = None  # strptime format; default ISO 8601
    weight_column: str | None = None  # labelled only: trust in the label, a number >= 0
    max_text_length: int | None = None  # default: settings.validation.max_text_length


@dataclass
class ImportReport:
    source: str
    kind: str
    data_rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    reasons: Counter = field(default_factory=Counter)
    future_timestamps: int = 0  # loaded, but dated after the import: say so

    @property
    def loaded(self) -> int:
        return self.inserted + self.updated + self.unchanged

    def summary(self) -> str:
        lines = [
            f"{self.source}: {self.data_rows} data rows -> {self.loaded} loaded "
            f"({self.inserted} new, {self.updated} updated, {self.unchanged} unchanged), "
            f"{self.quarantined} quarantined"
        ]
        lines += [f"  {count:>7}  {reason}" for reason, count in self.reasons.most_common(10)]
        if self.future_timestamps:
            lines.append(f"  note: {self.future_timestamps} loaded row(s) have a timestamp in the future; "
                         "they join the data interval that contains it, not an earlier one")
        return "\n".join(lines)


@dataclass(frozen=True)
class Problem:
    field: str
    category: str
    reason: str


@dataclass(frozen=True)
class Record:
    """One data record of a file, with the line it starts on."""

    line_no: int
    values: dict[str, str | None]


def target_table(settings: Settings, kind: Kind) -> SourceTable:
    return settings.labelled_source if kind == "labelled" else settings.documents_source


def read_csv_records(
    path: Path, options: CsvOptions, progress: bool = False
) -> tuple[list[str], Iterator[Record]]:
    """The header and a lazy iterator of records. The file is decoded as a stream (so encodings
    whose bytes are not ASCII-compatible, such as UTF-16, work); undecodable bytes survive as
    surrogates and the record carrying them is quarantined."""
    try:
        codecs.lookup(options.encoding)
    except LookupError:
        raise ImportError_(f"unknown encoding {options.encoding!r}") from None
    raw = open(path, "rb")
    fh = io.TextIOWrapper(raw, encoding=options.encoding, errors="surrogateescape", newline="")
    bar = tqdm(
        total=os.path.getsize(path),
        unit="B",
        unit_scale=True,
        desc=f"import {path.name}",
        disable=not (progress and sys.stderr.isatty()),
    )
    csv.field_size_limit(FIELD_SIZE_LIMIT)  # longer texts are quarantined by length, not fatal
    reader = csv.reader(fh, delimiter=options.delimiter)
    try:
        header = [h.strip().lstrip("\ufeff") for h in next(reader)]
    except StopIteration:
        fh.close()
        raise ImportError_(f"{path}: the file is empty (no header line)") from None
    except csv.Error as exc:
        fh.close()
        raise ImportError_(f"{path}, line 1: {exc}") from None

    def records() -> Iterator[Record]:
        try:
            previous_line = reader.line_num
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    raise ImportError_(f"{path}, line {reader.line_num}: {exc}; nothing was imported") from None
                bar.update(raw.tell() - bar.n)
                start = previous_line + 1
                previous_line = reader.line_num
                if not row:
                    continue  # blank line between records: not a data row
                values: dict[str, str | None] = dict(zip(header, row, strict=False))  # counted below
                if len(row) != len(header):
                    values["__field_count__"] = str(len(row))
                yield Record(start, values)
        finally:
            bar.close()
            fh.close()

    return header, records()


def _printable(value: str | None) -> str | None:
    if value is None:
        return None
    return (
        value.encode("utf-8", "surrogateescape")
        .decode("utf-8", "backslashreplace")
        .replace("\x00", "\\x00")
    )


def _has_undecodable(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def parse_timestamp(value: str, fmt: str | None) -> datetime:
    parsed = datetime.strptime(value, fmt) if fmt else datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_weight(value: str) -> float | None:
    """A finite number >= 0, else None."""
    try:
        weight = float(value)
    except ValueError:
        return None
    return weight if 0 <= weight < float("inf") else None


class RecordChecker:
    """Turns a raw record into a staging row, or into the reason it cannot be loaded."""

    def __init__(self, kind: Kind, options: CsvOptions, target: SourceTable, header, *,
                 id_bits: int | None, max_text_length: int, encoding: str, now: datetime):
        self.kind = kind
        self.options = options
        self.id_bits = id_bits  # integer ids: their range; None: text ids
        self.columns = len(header)
        self.max_text_length = max_text_length
        self.encoding = encoding
        self.now = now
        self.timestamp_column = options.timestamp_column or target.timestamp_column
        self.has_timestamp = self.timestamp_column in header
        required = [options.id_column, options.text_column]
        if kind == "labelled":
            required.append(options.label_column)
        if options.timestamp_column and not self.has_timestamp:
            required.append(options.timestamp_column)
        if options.weight_column:
            if kind != "labelled" or not target.weight_column:
                raise ImportError_(
                    f"--weight-column needs labelled texts and a target table with a weight "
                    f"column ({target.qualified_name} has none configured)"
                )
            required.append(options.weight_column)
        missing = [c for c in required if c not in header]
        if missing:
            raise ImportError_(f"required column(s) {missing} not in the header {header}")

    def check(self, record: Record) -> tuple[tuple | None, Problem | None]:
        """(staging row, None) or (None, the problem)."""
        values = record.values
        if "__field_count__" in values:
            return None, Problem(
                "", "wrong field count",
                f"expected {self.columns} fields (the header's), found {values['__field_count__']}",
            )
        for name, value in values.items():
            if value and _has_undecodable(value):
                return None, Problem(
                    name, "undecodable bytes",
                    f"undecodable bytes in field {name!r} (not valid {self.encoding})",
                )
            if value and "\x00" in value:
                return None, Problem(name, "NUL byte", f"NUL byte in field {name!r}")
        row_id = (values.get(self.options.id_column) or "").strip()
        if not row_id:
            return None, Problem(self.options.id_column, "missing id", "missing id")
        if self.id_bits is not None:
            try:
                number = int(row_id)
            except ValueError:
                return None, Problem(
                    self.options.id_column, "id not an integer", f"id {row_id!r} is not an integer"
                )
            if not -(2**self.id_bits) <= number < 2**self.id_bits:
                return None, Problem(self.options.id_column, "id out of range",
                                     f"id {row_id} does not fit the id column ({self.id_bits + 1}-bit integer)")
            row_id = str(number)
        text = values.get(self.options.text_column)
        if text is None or is_blank(text):
            return None, Problem(self.options.text_column, "missing or empty text",
                                 "missing or empty text")
        if len(text) > self.max_text_length:
            return None, Problem(
                self.options.text_column, "text too long",
                f"text is {len(text)} characters, over the maximum of {self.max_text_length}",
            )
        label = None
        if self.kind == "labelled":
            label = (values.get(self.options.label_column) or "").strip()
            if not label:
                return None, Problem(self.options.label_column, "missing label", "missing label")
        ts_raw = (values.get(self.timestamp_column) or "").strip() if self.has_timestamp else ""
        weight = None
        weight_raw = (values.get(self.options.weight_column or "") or "").strip()
        if weight_raw:
            weight = parse_weight(weight_raw)
            if weight is None:
                return None, Problem(
                    self.options.weight_column or "weight", "invalid weight",
                    f"weight {weight_raw!r} is not a number >= 0",
                )
        if not ts_raw:
            return (record.line_no, row_id, text, label, self.now, True, weight), None
        try:
            ts = parse_timestamp(ts_raw, self.options.timestamp_format)
        except ValueError:
            return None, Problem(
                self.timestamp_column, "unparseable timestamp", f"unparseable timestamp {ts_raw!r}"
            )
        return (record.line_no, row_id, text, label, ts, False, weight), None


def import_csv(
    settings: Settings,
    kind: Kind,
    path: str | Path,
    options: CsvOptions = CsvOptions(),
    *,
    progress: bool = False,
    source_name: str | None = None,
) -> ImportReport:
    path = Path(path)
    source = source_name or str(path.resolve())
    header, records = read_csv_records(path, options, progress)
    with db.connect(settings) as conn:
        return import_records(
            conn, settings, kind, header, records, options, source=source
        )


def import_records(
    conn,
    settings: Settings,
    kind: Kind,
    header: list[str],
    records: Iterable[Record],
    options: CsvOptions,
    *,
    source: str,
) -> ImportReport:
    target = target_table(settings, kind)
    report = ImportReport(source=source, kind=kind)
    with conn, conn.cursor() as cur:
        id_type = db._column_type(cur, target, target.id_column)
        checker = RecordChecker(
            kind, options, target, header,
            id_bits=INTEGER_TYPES.get(id_type),
            max_text_length=options.max_text_length or settings.validation.max_text_length,
            encoding=options.encoding,
            now=datetime.now(UTC),
        )
        db.create_import_staging(cur)
        staged: list[tuple] = []
        rejected: list[dict] = []
        for record in records:
            report.data_rows += 1
            row, problem = checker.check(record)
            if row is not None:
                staged.append(row)
                if not row[5] and row[4] > checker.now:  # a timestamp from the file, in the future
                    report.future_timestamps += 1
            elif problem is not None:
                report.reasons[problem.category] += 1
                rejected.append({
                    "stage": "import", "source": source, "source_row": record.line_no,
                    "field": problem.field or None, "reason": problem.reason,
                    "raw": {k: _printable(v) for k, v in record.values.items()},
                })
            if len(staged) >= COPY_CHUNK_ROWS:
                db.copy_rows(cur, "import_staging", db.STAGING_COLUMNS, staged)
                staged.clear()
            if len(rejected) >= COPY_CHUNK_ROWS:
                db.quarantine_rows(cur, rejected)
                rejected.clear()
        db.copy_rows(cur, "import_staging", db.STAGING_COLUMNS, staged)
        db.quarantine_rows(cur, rejected)
        duplicates = db.quarantine_duplicate_staged_ids(cur, source)
        if duplicates:
            report.reasons["duplicate id in the file"] += duplicates
        report.quarantined = sum(report.reasons.values())
        counts = db.merge_staged_rows(cur, target)
        report.inserted, report.updated, report.unchanged = (
            counts["inserted"], counts["updated"], counts["unchanged"]
        )
    return report
