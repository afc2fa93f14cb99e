"""Batch predictions: idempotent write-back, chunk transactions, the downstream view."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conftest import fetch, register_tiny, synthetic_corpus
from support import in_transaction
from tasks import db, registry
from tasks.importer import CsvOptions, Record, import_records
from tasks.predict import predict_documents, predict_texts

T0 = datetime(2026, 11, 18, 2, tzinfo=UTC)
ROWS = "SELECT document_id, model_version, label, confidence, probabilities, run_id, " \
       "logical_date, predicted_at FROM textclf.predictions ORDER BY document_id, model_version"


def load_documents(settings, n: int) -> None:
    header = ["id", "text", "created_at"]
    records = (
        Record(i + 1, {"id": str(i + 1), "text": text,
                       "created_at": (T0 + timedelta(minutes=i)).isoformat()})
        for i, (text, _) in enumerate(synthetic_corpus(n, seed=1))
    )
    with db.connect(settings) as conn:
        import_records(conn, settings, "documents", header, records, CsvOptions(), source="t")


@pytest.fixture
def champion(settings, tiny_tfidf_dir):
    version = register_tiny(settings, tiny_tfidf_dir)
    in_transaction(settings, registry.set_champion, settings, version, reason="test", actor="test")
    return version


def run(settings, version, **kwargs):
    return predict_documents(settings, model_version=version, run_id="r1",
                             logical_date=T0, start=None, end=None, **kwargs)


def test_write_back_twice_gives_identical_rows(settings, pg, champion):
    load_documents(settings, 120)
    first = run(settings, champion, chunk_rows=50)
    rows = fetch(pg, ROWS)
    second = run(settings, champion, chunk_rows=50)
    assert (first.documents, first.rows_written, first.chunks) == (120, 120, 3)
    assert (second.documents, second.rows_written) == (120, 0)
    assert fetch(pg, ROWS) == rows  # predicted_at included: nothing was rewritten
    doc_id, version, label, confidence, probabilities, *_ = rows[0]
    assert version == champion and label in probabilities
    assert confidence == pytest.approx(max(probabilities.values()), abs=1e-6)
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)


def test_failure_between_chunks_keeps_committed_chunks_and_rerun_completes(settings, pg, champion):
    load_documents(settings, 100)

    def fail_after_second_chunk(chunk: int) -> None:
        if chunk == 2:
            raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        run(settings, champion, chunk_rows=30, after_chunk=fail_after_second_chunk)
    assert fetch(pg, "SELECT count(*) FROM textclf.predictions")[0][0] == 60
    committed = fetch(pg, ROWS)
    rerun = run(settings, champion, chunk_rows=30)
    assert rerun.rows_written == 40
    rows = fetch(pg, ROWS)
    assert len(rows) == 100 and rows[:60] == committed


def test_only_the_interval_is_scored_unless_asked_for_everything(settings, pg, champion):
    load_documents(settings, 60)
    stats = predict_documents(settings, model_version=champion, run_id="r", logical_date=T0,
                              start=T0 + timedelta(minutes=10), end=T0 + timedelta(minutes=20))
    assert stats.documents == 10
    ids = [r[0] for r in fetch(pg, "SELECT document_id FROM textclf.predictions ORDER BY 1")]
    assert ids == list(range(11, 21))


def test_latest_predictions_prefers_the_champion(settings, pg, tiny_tfidf_dir, champion):
    load_documents(settings, 10)
    run(settings, champion)
    other = register_tiny(settings, tiny_tfidf_dir, key="other")
    run(settings, other)  # newer rows from a model that is not champion
    view = fetch(pg, "SELECT document_id, model_version, from_champion "
                     "FROM textclf.latest_predictions ORDER BY document_id")
    assert len(view) == 10 and all(v == champion and c for _, v, c in view)
    in_transaction(settings, registry.set_champion, settings, other, reason="switch", actor="test")
    view = fetch(pg, "SELECT DISTINCT model_version FROM textclf.latest_predictions")
    assert view == [(other,)]


def test_predict_texts_uses_the_champion(settings, champion):
    version, results = predict_texts(settings, ["what a wonderful happy day", "hate it, awful"])
    assert version == champion
    assert [r["label"] for r in results] == ["positive", "negative"]


def test_predict_texts_without_champion_is_a_clear_error(settings):
    with pytest.raises(registry.RegistryError, match="no champion yet"):
        predict_texts(settings, ["hello"])
