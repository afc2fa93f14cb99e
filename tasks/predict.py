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

import numpy as np

from tasks import db, registry
from tasks.config import Settings


@dataclass
class PredictionStats:
    model_version: int
    documents: int = 0
    rows_written: int = 0
    chunks: int = 0


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
    model = registry.load_model(settings, model_version)
    stats = PredictionStats(model_version=model_version)
    chunk_rows = chunk_rows or settings.prediction_chunk_rows
    with db.connect(settings) as reader, db.connect(settings) as writer:
        for chunk in db.iter_documents(reader, settings.documents_source, start, end, chunk_rows,
                                       id_from, id_to):
            ids = [row[0] for row in chunk]
            probabilities = model.predict_proba([row[1] for row in chunk])
            rows = list(prediction_rows(ids, probabilities, model.labels, model_version, run_id,
                                        logical_date))
            with writer, writer.cursor() as cur:
                stats.rows_written += db.write_predictions(cur, rows)
            stats.documents += len(chunk)
            stats.chunks += 1
            if after_chunk is not None:
                after_chunk(stats.chunks)
    return stats


def predict_texts(settings: Settings, texts: list[str], model_version: int | None = None):
    """Label and probabilities of each text from the champion (or a given version)."""
    version = model_version or registry.current_champion(settings)
    if version is None:
        raise registry.RegistryError("there is no champion yet: run the retrain DAG first")
    model = registry.load_model(settings, version)
    probabilities = model.predict_proba(texts)
    return version, [
        {
            "text": text,
            "label": model.labels[int(row.argmax())],
            "probabilities": {label: float(p) for label, p in zip(model.labels, row, strict=True)},
        }
        for text, row in zip(texts, probabilities, strict=True)
    ]
