"""Extraction of the training snapshot for one data interval.

New rows are those labelled in [start, end); the training snapshot is every row labelled before
``end`` (optionally only the last ``snapshot_window_days``). Each row's split comes from a hash
of its split key: the text in NFKC, case folded, whitespace collapsed and, by default ([split]
in textclf.toml), without a leading retweet marker, URLs, user mentions and punctuation. So a
row never changes split as data grows, every model, champion or challenger, is judged on the
same frozen test rows, and identical texts and near-duplicates (`RT @user: ...`, the same text
with another link) always share a split. The scheme is recorded in the snapshot's fingerprint
(``split_scheme``); ``split_under_scheme`` recomputes any recorded scheme's split, so a model
trained under an older scheme can be told which of today's test rows it has seen.
"""

from __future__ import annotations

import hashlib
import re
import sys
import unicodedata
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from tasks import db, storage
from tasks.config import Settings, SplitOptions
from tasks.normalize import normalize_label

if TYPE_CHECKING:
    from upath import UPath

TRAIN_SHARE = 0.8
VALIDATION_SHARE = 0.1
SNAPSHOT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("label", pa.string()),
        ("labelled_at", pa.timestamp("us", tz="UTC")),
        ("split", pa.string()),
        ("is_new", pa.bool_()),
        ("weight", pa.float64()),  # NULL when the source has no weight for the row
        ("row_hash", pa.string()),  # this version of the row (quarantine is per row version)
    ]
)


# v1 hashed the row id (identical texts with different ids leaked across splits; its snapshots
# recorded no scheme); v2 the normalised text; v3 the near-duplicate key, its options in the name.
SCHEME_V1 = "row-id-sha256-v1"
SCHEME_V2 = "normalised-text-sha256-v2"
_V3_PREFIX = "near-duplicate-text-sha256-v3:"
_OPTION_TAGS = {"remove_retweet_marker": "rt", "remove_urls": "urls", "remove_mentions": "mentions",
                "remove_punctuation": "punct"}
_RETWEET_MARKER = re.compile(r"^(?:\s*rt\s*(?::\s*)?@\w+\s*:?|\s*rt\s*:)+")
_URL = re.compile(r"(?:https?://|www\.)\S+")
_MENTION = re.compile(r"(?<!\w)@\w+")


def split_scheme(options: SplitOptions) -> str:
    """The scheme's name, recorded in the fingerprint. With every option off the key is v2's."""
    tags = [tag for name, tag in _OPTION_TAGS.items() if getattr(options, name)]
    return _V3_PREFIX + ",".join(tags) if tags else SCHEME_V2


def scheme_options(scheme: str | None) -> SplitOptions | None:
    """The split options a recorded scheme used; None for v1 (the row id decided)."""
    if scheme is None or scheme == SCHEME_V1:
        return None
    if scheme == SCHEME_V2:
        return SplitOptions(**{name: False for name in _OPTION_TAGS})
    if scheme.startswith(_V3_PREFIX):
        tags = set(scheme.removeprefix(_V3_PREFIX).split(","))
        if tags <= set(_OPTION_TAGS.values()):
            return SplitOptions(**{name: tag in tags for name, tag in _OPTION_TAGS.items()})
    raise ValueError(f"unknown split scheme {scheme!r}")


DEFAULT_SPLIT = SplitOptions()
SPLIT_SCHEME = split_scheme(DEFAULT_SPLIT)  # the default


def normalize_text(text: str) -> str:
    """The form in which texts count as identical: Unicode NFKC, case folded, whitespace
    collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@cache
def _punctuation_to_space() -> dict[int, str]:
    return {code: " " for code in range(sys.maxunicode + 1)
            if unicodedata.category(chr(code)).startswith("P")}


def split_key_text(text: str, options: SplitOptions = DEFAULT_SPLIT) -> str:
    """The text as the split key sees it. A text that is nothing but what the options remove
    (a bare link) keeps its normalised form, rather than sharing one empty key with all such."""
    normal = normalize_text(text)
    key = normal
    if options.remove_retweet_marker:
        key = _RETWEET_MARKER.sub(" ", key)
    if options.remove_urls:
        key = _URL.sub(" ", key)
    if options.remove_mentions:
        key = _MENTION.sub(" ", key)
    if options.remove_punctuation:
        key = key.translate(_punctuation_to_space())
    return " ".join(key.split()) or normal


def _split_of_key(key: str) -> str:
    digest = hashlib.sha256(f"textclf-split:{key}".encode()).digest()
    unit = int.from_bytes(digest[:8], "big") / 2**64
    if unit < TRAIN_SHARE:
        return "train"
    if unit < TRAIN_SHARE + VALIDATION_SHARE:
        return "validation"
    return "test"


def split_of(text: str | None, row_id: object = None, options: SplitOptions = DEFAULT_SPLIT) -> str:
    """train / validation / test, a pure function of the split key. A row without text
    (quarantined by validation anyway) falls back to its id."""
    if not isinstance(text, str):
        return _split_of_key(f"id:{row_id}")
    return _split_of_key(f"text:{split_key_text(text, options)}")


def split_under_scheme(scheme: str | None, text: str | None, row_id: object) -> str:
    """The split a row had under a recorded scheme (None: a v1 snapshot, which recorded none)."""
    options = scheme_options(scheme)
    if options is None:
        return _split_of_key(str(row_id))
    return split_of(text, row_id, options)


@dataclass(frozen=True)
class Snapshot:
    path: str
    interval_start: datetime
    interval_end: datetime
    snapshot_rows: int
    new_rows: int
    split_rows: dict[str, int]
    fingerprint: dict[str, object]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["interval_start"] = self.interval_start.isoformat()
        data["interval_end"] = self.interval_end.isoformat()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Snapshot:
        return cls(
            **{
                **data,
                "interval_start": datetime.fromisoformat(data["interval_start"]),
                "interval_end": datetime.fromisoformat(data["interval_end"]),
            }
        )


def extract_snapshot(
    settings: Settings,
    interval_start: datetime,
    interval_end: datetime,
    out_path: str | Path | UPath,
    chunk_rows: int = 10_000,
) -> Snapshot:
    """Stream the snapshot from PostgreSQL into a Parquet file, chunk by chunk."""
    if interval_end < interval_start:
        raise ValueError(f"data interval end {interval_end} is before its start {interval_start}")
    window_start = (
        interval_end - timedelta(days=settings.snapshot_window_days)
        if settings.snapshot_window_days
        else None
    )
    out_path = storage.ensure_parent(storage.upath(out_path))
    tmp_path = out_path.with_name(out_path.name + ".partial")
    content_hash = hashlib.sha256()
    total = new = 0
    last_id = None
    split_rows = {"train": 0, "validation": 0, "test": 0}
    with db.connect(settings) as conn, conn.cursor() as cur:
        db.check_timestamp_column(cur, settings.labelled_source, "labelled_source")
        # The documents are scored at the end of the night: a source that cannot be fails now.
        with db.reading_source(settings.documents_source, "documents_source"):
            db.check_timestamp_column(cur, settings.documents_source, "documents_source")
            db.check_document_id_column(cur, settings.documents_source, "documents_source")
    with (db.connect(settings) as conn, tmp_path.open("wb") as sink,
          pq.ParquetWriter(sink, SNAPSHOT_SCHEMA) as writer,
          db.reading_source(settings.labelled_source, "labelled_source")):
        for rows in db.iter_labelled_rows(
            conn, settings.labelled_source, interval_end, window_start, chunk_rows
        ):
            ids, texts, raw_labels, stamps, weights, hashes = (list(col) for col in zip(*rows, strict=True))
            # Labels are normalised before anything else sees them (`Positive`, `positive ` and
            # `ｐｏｓｉｔｉｖｅ` are one class); row_hash still identifies the row as stored.
            labels = [normalize_label(label, settings.label_case_fold) for label in raw_labels]
            splits = [split_of(text, row_id, settings.split) for text, row_id in zip(texts, ids, strict=True)]
            is_new = [ts is not None and interval_start <= ts < interval_end for ts in stamps]
            for row_id, text, label, weight in zip(ids, texts, labels, weights, strict=True):
                content_hash.update(f"{row_id}\x1f{text}\x1f{label}\x1f{weight}\x1e".encode())
            for s in splits:
                split_rows[s] += 1
            total += len(rows)
            new += sum(is_new)
            last_id = ids[-1]
            writer.write_table(
                pa.table(
                    [ids, texts, labels, stamps, splits, is_new, weights, hashes],
                    schema=SNAPSHOT_SCHEMA,
                )
            )
    storage.move(tmp_path, out_path)
    return Snapshot(
        path=str(out_path),
        interval_start=interval_start,
        interval_end=interval_end,
        snapshot_rows=total,
        new_rows=new,
        split_rows=split_rows,
        fingerprint={"rows": total, "max_id": last_id, "sha256": content_hash.hexdigest(),
                     "split_scheme": split_scheme(settings.split)},
    )


def read_snapshot(path: str | Path | UPath):
    """The snapshot (a local path or any fsspec URI) as a pandas DataFrame."""
    return storage.read_parquet(str(path))
