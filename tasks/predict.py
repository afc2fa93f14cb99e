"""Batch predictions written back to PostgreSQL, chunk by chunk.

Documents stream through a server-side cursor; each chunk is scored and written (COPY into a
staging table, then UPSERT on (document_id, model_version)) in its own transaction, so a
retried task keeps the chunks already committed and a re-run converges to the same rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from tasks import db, registry
from tasks.config import Settings
from tasks.errors import InputError
from tasks.normalize import is_blank


@dataclass
class PredictionStats:
    model_version: int
    documents: int = 0
    rows_written: int = 0
    chunks: int = 0
    quarantined: int = 0  # documents with no text, or too long, recorded instead of scored


def prediction_rows(document_ids, probabilities: np.ndarray, labels, model_version, run_id,
                    logical_date):
    """Rows for db.write_predictions; probabilities as JSON text, rounded to 6 decimals."""
    best = probabilities.argmax(axis=1)
    rounded = np.round(probabilities, 6).tolist()
    stamp = logical_date.isoformat() if logical_date else None
    for doc_id, row, top in zip(document_ids, rounded, best, strict=True):
        yield (
            doc_id, model_version, labels[top], row[top],
            json.dumps(dict(zip(labels, row, strict=True))), run_id, stamp,
        )


def split_scorable(chunk: list[tuple], max_length: int, previous_id: Any = None,
                   ) -> tuple[list[tuple], list[tuple[Any, str, str, int | None]]]:
    """(documents to score, (id, field, reason, length) of those that cannot be): a document with no
    text gets no confident-looking label, one longer than max_text_length is not scored, one
    without an id cannot be written back, and a repeated id (a view can repeat one; documents
    come in id order) is scored once, from its first row."""
    scorable, rejected = [], []
    for doc_id, text in chunk:
        length = None if text is None else len(text)
        if doc_id is None:
            rejected.append((db.NO_ID, "id", "document has no id: its prediction could not be written back",
                             length))
        elif doc_id == previous_id:
            rejected.append((doc_id, "id", "duplicate document id: scored once, from its first row", length))
        elif is_blank(text):
            rejected.append((doc_id, "text", "no text to score (NULL, empty, whitespace or invisible "
                             "characters only)", length))
        elif len(text) > max_length:
            rejected.append((doc_id, "text", f"text of {len(text)} characters is longer than max_text_length "
                             f"{max_length}", length))
        else:
            scorable.append((doc_id, text))
        if doc_id is not None:
            previous_id = doc_id
    return scorable, rejected


def predict_documents(
    settings: Settings,
    *,
    model_version: int,
    run_id: str | None,
    logical_date: datetime | None,
    start: datetime | None,
    end: datetime | None,
    chunk_rows: int | None = None,
    after_chunk: Callable[[int], None] | None = None,
    id_from: int | None = None,
    id_to: int | None = None,
) -> PredictionStats:
    """Score documents created in [start, end) with id in [id_from, id_to) (None = unbounded)
    with ``model_version``."""
    with db.transaction(settings) as cur:
        model = registry.load_model(cur, settings, model_version)
    stats = PredictionStats(model_version=model_version)
    chunk_rows = chunk_rows or settings.prediction_chunk_rows
    previous_id = None
    with (db.connect(settings) as reader, db.connect(settings) as writer,
          db.reading_source(settings.documents_source, "documents_source")):
        for chunk in db.iter_documents(reader, settings.documents_source, start, end, chunk_rows,
                                       id_from, id_to):
            scorable, rejected = split_scorable(chunk, settings.validation.max_text_length, previous_id)
            previous_id = chunk[-1][0] if chunk[-1][0] is not None else previous_id
            ids = [row[0] for row in scorable]
            probabilities = model.predict_proba([row[1] for row in scorable]) if scorable else None
            rows = (list(prediction_rows(ids, probabilities, model.labels, model_version, run_id,
                                         logical_date)) if probabilities is not None else [])
            with writer, writer.cursor() as cur:
                if rows:
                    stats.rows_written += db.write_predictions(cur, rows)
                db.quarantine_rows(cur, [
                    {"stage": "prediction", "source": settings.documents_source.qualified_name,
                     "source_row": str(doc_id), "field": field, "reason": reason, "run_id": run_id,
                     "raw": {"id": doc_id, "length": length}}
                    for doc_id, field, reason, length in rejected
                ])
            stats.quarantined += len(rejected)
            stats.documents += len(chunk)
            stats.chunks += 1
            if after_chunk is not None:
                after_chunk(stats.chunks)
    return stats


def predict_texts(settings: Settings, texts: list[str], model_version: int | None = None):
    """Label and probabilities of each text from the champion (or a given version). Texts that
    could not be scored in a nightly run (none, blank, longer than max_text_length) are refused,
    naming them, rather than given a label."""
    if not texts:
        raise InputError("no text to label: pass --text, or lines on standard input")
    _, rejected = split_scorable(list(enumerate(texts, start=1)), settings.validation.max_text_length)
    if rejected:
        raise InputError("; ".join(f"text {number}: {reason}" for number, _, reason, _ in rejected))
    with db.transaction(settings) as cur:
        version = model_version or registry.current_champion(cur)
        if version is None:
            raise registry.RegistryError("there is no champion yet: run the retrain DAG first")
        model = registry.load_model(cur, settings, version)
    probabilities = model.predict_proba(texts)
    return version, [
        {
            "text": text,
            "label": model.labels[int(row.argmax())],
            "probabilities": {label: float(p) for label, p in zip(model.labels, row, strict=True)},
        }
        for text, row in zip(texts, probabilities, strict=True)
    ]
