"""Hardening: a user's own tables full of real-world garbage through every entrance, injected
faults, concurrent champion changes and least privilege. docs/reliability.md lists each
guarantee with the test here that proves it.

The row invariant checked throughout: every row a snapshot reads is either clean (and may
train) or quarantined with a reason; nothing is dropped silently.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from psycopg2 import sql

from conftest import CORPUS_WORDS, fetch, recreate_database, register_tiny, synthetic_corpus
from support import in_transaction
from tasks import db, registry, storage
from tasks.airflow_env import manual_run_interval
from tasks.cli import main
from tasks.config import REPO_ROOT, ConfigError, load_settings
from tasks.errors import InputError, Skip
from tasks.pipeline import RunOptions, extract_step, train_step, validate_step
from tasks.predict import predict_documents, predict_texts

DAY = datetime(2026, 11, 20, tzinfo=UTC)
LABELS = sorted(CORPUS_WORDS)
HUGE = "great " * 200_000  # 1.2 MB


def readme_config() -> dict:
    """The textclf.toml the README shows (the block with the custom sources)."""
    blocks = re.findall(r"```toml\n(.*?)```", (REPO_ROOT / "docs" / "configuration.md").read_text(), re.S)
    [block] = [b for b in blocks if "[labelled_source]" in b]
    return tomllib.loads(block)


def toml_table(name: str, values: dict) -> str:
    lines = [f"[{name}]"] + [f"{key} = {value!r}" for key, value in values.items()]
    return "\n".join(lines).replace("'", '"') + "\n"


def write_config(home: Path, labelled: dict, documents: dict | None = None, extra: str = "") -> None:
    home.mkdir(parents=True, exist_ok=True)
    text = extra + toml_table("labelled_source", labelled)
    if documents:
        text += toml_table("documents_source", documents)
    (home / "textclf.toml").write_text(text)


def create_source_tables(pg, labelled: dict, documents: dict | None = None) -> None:
    """A CRM's tables as real ones are: every column nullable, no primary key."""
    with pg.cursor() as cur:
        for source in filter(None, (labelled, documents)):
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}").format(
                s=sql.Identifier(source["schema"])))
        columns = [sql.SQL("{} bigint").format(sql.Identifier(labelled["id_column"])),
                   sql.SQL("{} text").format(sql.Identifier(labelled["text_column"])),
                   sql.SQL("{} text").format(sql.Identifier(labelled["label_column"])),
                   sql.SQL("{} timestamptz").format(sql.Identifier(labelled["timestamp_column"]))]
        if labelled.get("weight_column"):
            columns.append(sql.SQL("{} real").format(sql.Identifier(labelled["weight_column"])))
        cur.execute(sql.SQL("CREATE TABLE {}.{} ({})").format(
            sql.Identifier(labelled["schema"]), sql.Identifier(labelled["table"]),
            sql.SQL(", ").join(columns)))
        if documents:
            cur.execute(sql.SQL("CREATE TABLE {}.{} ({} bigint, {} text, {} timestamptz)").format(
                sql.Identifier(documents["schema"]), sql.Identifier(documents["table"]),
                sql.Identifier(documents["id_column"]), sql.Identifier(documents["text_column"]),
                sql.Identifier(documents["timestamp_column"])))


def insert(pg, source: dict, rows: list[tuple], columns: tuple[str, ...]) -> None:
    with pg.cursor() as cur:
        cur.executemany(
            sql.SQL("INSERT INTO {}.{} ({}) VALUES ({})").format(
                sql.Identifier(source["schema"]), sql.Identifier(source["table"]),
                sql.SQL(", ").join(sql.Identifier(source[c]) for c in columns),
                sql.SQL(", ").join(sql.Placeholder() * len(columns))),
            rows)


def good_rows(end: datetime, days: int = 3, per_day: int = 60) -> list[tuple]:
    """(id, text, label, timestamp): an easy 3-class corpus over ``days`` days before ``end``."""
    return [(i + 1, text, label, end - timedelta(days=days - i // per_day, minutes=-(i % per_day)))
            for i, (text, label) in enumerate(synthetic_corpus(days * per_day, seed=3))]


def bad_rows(end: datetime) -> dict[str, tuple[tuple, str]]:
    """Real-world garbage, dated two days before ``end`` (older rows: each is quarantined or
    accepted on its own, the batch of new rows stays judgeable). case -> (row, outcome), where
    outcome is the quarantined field, "accepted", or "later" (dated after the interval)."""
    old = end - timedelta(days=2, hours=5)
    return {
        "NULL text": ((1001, None, "positive", old), "text"),
        "empty text": ((1002, "", "positive", old), "text"),
        "whitespace text": ((1003, " \t\n ", "negative", old), "text"),
        "1 MB text": ((1004, HUGE, "positive", old), "text"),
        "control characters": ((1005, "love\x01 it\x07 \x1b[31mgreat\x1b[0m wonderful", "positive", old),
                               "accepted"),
        "NULL label": ((1006, "hate broken awful product", None, old), "label"),
        "unknown label": ((1007, "what a day meeting tuesday", "angry", old), "label"),
        "NULL id": ((None, "happy excellent best ever", "positive", old), "id"),
        "duplicate id, first": ((1008, "terrible worst thing", "negative", old), "id"),
        "duplicate id, second": ((1008, "schedule the report", "neutral", old), "id"),
        "NULL timestamp": ((1009, "love it great", "positive", None), "labelled_at"),
        "future timestamp": ((1010, "love it wonderful", "positive", end + timedelta(days=30)), "later"),
        "conflicting labels, a": ((1011, "the table was great", "positive", old), "accepted"),
        "conflicting labels, b": ((1012, "the table was great", "neutral", old), "accepted"),
    }


def validation_of(pg, run_id: str) -> dict:
    rows = fetch(pg, "SELECT status, snapshot_rows, quarantined_rows, failures FROM textclf.validation_runs "
                     "WHERE run_id = %s", (run_id,))
    (status, snapshot_rows, quarantined_rows, failures), = rows
    return {"status": status, "snapshot_rows": snapshot_rows, "quarantined_rows": quarantined_rows,
            "failures": failures}


def quarantine_fields(pg, source: str, stage: str = "validation") -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for row, field, reason in fetch(pg, "SELECT source_row, field, reason FROM textclf.quarantine "
                                        "WHERE stage = %s AND source = %s AND released_at IS NULL",
                                    (stage, source)):
        if stage == "validation":
            assert f"field '{field}'" in reason, (row, field, reason)
        found.setdefault(row, set()).add(field)
    return found


def assert_row_invariant(settings, pg, run_id: str, source: dict, end: datetime) -> set:
    """snapshot rows = clean rows + quarantined rows = the source rows dated before ``end`` or
    undated. Returns the clean rows' ids."""
    validation = validation_of(pg, run_id)
    clean = storage.read_parquet(settings.run_dir(run_id) / "clean.parquet")
    assert validation["snapshot_rows"] == len(clean) + validation["quarantined_rows"]
    (in_source,), = fetch(pg, sql.SQL("SELECT count(*) FROM {}.{} WHERE {ts} < %s OR {ts} IS NULL").format(
        sql.Identifier(source["schema"]), sql.Identifier(source["table"]),
        ts=sql.Identifier(source["timestamp_column"])).as_string(pg), (end,))
    assert validation["snapshot_rows"] == in_source
    return set(clean["id"])


# --- 1. bad input through every entrance ------------------------------------------------------


@pytest.mark.slow
def test_the_readme_custom_source_with_nullable_columns_runs_end_to_end(airflow_ready, clean_db, pg, tmp_path,
                                                                       monkeypatch):
    """The README's [labelled_source] and [documents_source], as tables with nullable columns
    and real-world garbage, through the real DAG: bad rows quarantined with their field, the
    rest trains a champion, documents that cannot be scored are quarantined, not labelled."""
    from airflow.dag_processing.dagbag import DagBag

    config = readme_config()
    labelled, documents = config["labelled_source"], config["documents_source"]
    home = tmp_path / "home"
    write_config(home, labelled, documents, extra=f"labels = {config['labels']!r}\n".replace("'", '"'))
    monkeypatch.setenv("TEXTCLF_HOME", str(home))
    settings = load_settings(database_url=clean_db)
    assert settings.labelled_source.weight_column == labelled["weight_column"]
    create_source_tables(pg, labelled, documents)
    start, end = manual_run_interval(DAY.date())
    good = good_rows(end)
    cases = bad_rows(end)
    columns = ("id_column", "text_column", "label_column", "timestamp_column", "weight_column")
    # Weights: mostly 1, some NULL (counts as 1), one negative (refused).
    insert(pg, labelled, [(*row, None if row[0] % 7 == 0 else 1.0) for row in good], columns)
    insert(pg, labelled, [(*row, 1.0) for row, _ in cases.values()], columns)
    insert(pg, labelled, [(1013, "angry hate worst", "negative", end - timedelta(days=2), -1.0)], columns)
    docs = [(i, text, end - timedelta(hours=1 + i % 20)) for i, (text, _) in
            enumerate(synthetic_corpus(60, seed=4), start=1)]
    bad_docs = {"NULL text": (61, None), "empty text": (62, ""), "whitespace": (63, "  \n"),
                "1 MB text": (64, HUGE), "repeated id": (5, "a second row with id 5"),
                "NULL id": (None, "love it")}
    insert(pg, documents, docs + [(i, t, end - timedelta(hours=2)) for i, t in bad_docs.values()],
           ("id_column", "text_column", "timestamp_column"))

    run = DagBag(dag_folder=str(REPO_ROOT / "dags")).get_dag("textclf_retrain").test(
        logical_date=DAY, run_conf={"candidates": ["tfidf"]})
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "success", states
    assert states["promote"] == "success"

    validation = validation_of(pg, run.run_id)
    assert validation["status"] == "passed", validation["failures"]
    clean_ids = assert_row_invariant(settings, pg, run.run_id, labelled, end)
    quarantined = quarantine_fields(pg, f"{labelled['schema']}.{labelled['table']}")
    for case, ((row_id, *_), outcome) in cases.items():
        key = db.NO_ID if row_id is None else str(row_id)
        if outcome == "accepted":
            assert key in clean_ids and key not in quarantined, case
        elif outcome == "later":
            assert key not in clean_ids and key not in quarantined, case  # the next interval's row
        else:
            assert outcome in quarantined.get(key, set()), (case, quarantined.get(key))
            assert key not in clean_ids, case
    assert quarantined["1013"] == {"weight"}
    assert len(clean_ids) == len(good) + 3  # the control characters and the two conflicting rows

    champion = in_transaction(settings, registry.current_champion)
    assert champion is not None
    scored = dict(fetch(pg, "SELECT document_id, count(*) FROM textclf.predictions GROUP BY 1"))
    assert set(scored) == {i for i, *_ in docs} and set(scored.values()) == {1}  # id 5 once
    not_scored = fetch(pg, "SELECT source_row, field, reason FROM textclf.quarantine WHERE stage = 'prediction' "
                           "AND source = %s ORDER BY source_row", (f"{documents['schema']}.{documents['table']}",))
    by_row = {row: (field, reason) for row, field, reason in not_scored}
    assert set(by_row) == {"61", "62", "63", "64", "5", db.NO_ID}, by_row
    assert by_row["61"][0] == by_row["64"][0] == "text" and "longer than max_text_length" in by_row["64"][1]
    assert "duplicate document id" in by_row["5"][1] and by_row[db.NO_ID][0] == "id"


def test_a_view_without_weights_that_repeats_ids(settings, pg, tmp_path):
    """A custom source that names no weight column (extraction must not ask for one) and is a
    view repeating some ids: every copy of a repeated id is quarantined, the invariant holds."""
    labelled = {"schema": "crm_view", "table": "raw_tickets", "id_column": "ticket_id", "text_column": "body",
                "label_column": "category", "timestamp_column": "closed_at"}
    create_source_tables(pg, labelled)
    with pg.cursor() as cur:
        cur.execute("CREATE VIEW crm_view.tickets AS SELECT * FROM crm_view.raw_tickets "
                    "UNION ALL SELECT * FROM crm_view.raw_tickets WHERE ticket_id IN (7, 8)")
    source = {**labelled, "table": "tickets"}
    write_config(settings.home, source)
    settings = load_settings(home=settings.home, database_url=settings.database_url)
    assert settings.labelled_source.weight_column is None
    _, end = manual_run_interval(DAY.date())
    insert(pg, labelled, good_rows(end), ("id_column", "text_column", "label_column", "timestamp_column"))

    snapshot = extract_step(settings, "view-1", None, None, run_after=DAY)
    validation = validate_step(settings, "view-1", DAY, snapshot)
    assert validation["status"] == "passed", validation["reason"]
    clean_ids = assert_row_invariant(settings, pg, "view-1", source, end)
    assert validation["quarantined_rows"] == 4  # both copies of ids 7 and 8
    assert quarantine_fields(pg, "crm_view.tickets") == {"7": {"id"}, "8": {"id"}}
    assert {"7", "8"}.isdisjoint(clean_ids) and len(clean_ids) == 178


def test_a_missing_table_or_column_is_a_configuration_error_naming_it(settings, pg):
    write_config(settings.home, {"schema": "public", "table": "no_such_table"})
    missing_table = load_settings(home=settings.home, database_url=settings.database_url)
    with pytest.raises(ConfigError, match=r"\[labelled_source\] public.no_such_table: .*does not exist"):
        extract_step(missing_table, "missing-1", None, None, run_after=DAY)
    labelled = {"schema": "crm_cols", "table": "tickets", "id_column": "ticket_id", "text_column": "body",
                "label_column": "category", "timestamp_column": "closed_at"}
    create_source_tables(pg, labelled)
    write_config(settings.home, {**labelled, "weight_column": "confidence"})
    missing_column = load_settings(home=settings.home, database_url=settings.database_url)
    with pytest.raises(ConfigError, match=r"\[labelled_source\] crm_cols.tickets: .*confidence"):
        extract_step(missing_column, "missing-2", None, None, run_after=DAY)


def test_direct_sql_into_the_default_tables(settings, pg):
    """Upstream jobs writing straight into textclf.labelled_texts (its columns are NOT NULL,
    but blank, huge, control-character and unknown-label rows go in) and documents."""
    _, end = manual_run_interval(DAY.date())
    rows = good_rows(end)
    old = end - timedelta(days=2)
    bad = [(2001, "   ", "positive", old), (2002, HUGE, "negative", old), (2003, "ok \x02 control", "neutral", old),
           (2004, "love great", "furious", old), (2005, "\n\n", "positive", old)]
    with pg.cursor() as cur:
        cur.executemany("INSERT INTO textclf.labelled_texts (id, text, label, labelled_at) VALUES (%s, %s, %s, %s)",
                        rows + bad)
    settings = load_settings(home=settings.home, database_url=settings.database_url, labels=tuple(LABELS))
    snapshot = extract_step(settings, "sql-1", None, None, run_after=DAY)
    validation = validate_step(settings, "sql-1", DAY, snapshot)
    assert validation["status"] == "passed", validation["reason"]
    clean_ids = {int(i) for i in assert_row_invariant(
        settings, pg, "sql-1", {"schema": "textclf", "table": "labelled_texts", "timestamp_column": "labelled_at"},
        end)}
    assert quarantine_fields(pg, "textclf.labelled_texts") == {
        "2001": {"text"}, "2002": {"text"}, "2004": {"label"}, "2005": {"text"}}
    assert 2003 in clean_ids and {2001, 2002, 2004, 2005}.isdisjoint(clean_ids)


def test_an_empty_source_is_green_and_a_single_label_is_red_with_a_reason_instead_of_crashing(airflow_ready, clean_db, pg):
    """Regressions: no labelled rows at all crashed validation (label_set must not be empty);
    a snapshot with one label crashed TF-IDF training. Both retried three times and failed."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO_ROOT / "dags")).get_dag("textclf_retrain")
    run = dag.test(logical_date=DAY, run_conf={"candidates": ["tfidf"]})
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "success", states
    assert states["validate"] == "success" and states["train_tfidf"] == "skipped"
    assert validation_of(pg, run.run_id)["status"] == "no_new_data"
    assert {ti.try_number for ti in run.get_task_instances() if ti.state == "success"} <= {1}

    _, end = manual_run_interval(DAY.date() + timedelta(days=1))
    with pg.cursor() as cur:
        cur.executemany("INSERT INTO textclf.labelled_texts (id, text, label, labelled_at) VALUES (%s, %s, %s, %s)",
                        [(i, text, "positive", ts) for i, text, _, ts in good_rows(end)])
    run = dag.test(logical_date=DAY + timedelta(days=1), run_conf={"candidates": ["tfidf"]})
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    # Nothing could be trained: red on the first try (finish), with the reason; nothing crashed.
    assert str(run.state) == "failed" and states["finish"] == "failed", states
    assert states["validate"] == "success" and states["train_tfidf"] == "skipped"
    assert {ti.try_number for ti in run.get_task_instances() if ti.state == "failed"} == {1}
    validation = validation_of(pg, run.run_id)
    assert validation["status"] == "failed"
    assert any("expect_column_unique_value_count_to_be_between" in f and "at least 2" in f
               for f in validation["failures"]), validation["failures"]
    assert fetch(pg, "SELECT count(*) FROM textclf.label_sets")[0][0] == 0  # one label is not a label set
    assert fetch(pg, "SELECT count(*) FROM textclf.promotion_decisions")[0][0] == 0


def test_label_set_poisoning_heals_and_quarantine_is_per_row_version_and_reversible(settings, pg, capsys):
    """A first snapshot with one label no longer fixes the label set for good; a corrected row
    is judged again; an unchanged row stays out until `textclf quarantine release` lets it back."""
    _, end1 = manual_run_interval(DAY.date())
    with pg.cursor() as cur:
        cur.executemany("INSERT INTO textclf.labelled_texts (id, text, label, labelled_at) VALUES (%s, %s, %s, %s)",
                        [(i, f"only positive row {i}", "positive", end1 - timedelta(hours=i)) for i in range(1, 40)])
    first = validate_step(settings, "poison-1", DAY, extract_step(settings, "poison-1", None, None, run_after=DAY))
    assert first["status"] == "failed"
    with pytest.raises(Skip, match="validation failed"):
        train_step(settings, "tfidf", "poison-1", DAY, first, RunOptions(candidates=("tfidf",)))

    # Old rows were all one label: the new mix is a drift this test is not about.
    (settings.home / "textclf.toml").write_text("[validation]\nmax_label_drift = 100.0\n")
    settings = load_settings(home=settings.home, database_url=settings.database_url)
    day2 = DAY + timedelta(days=1)
    _, end2 = manual_run_interval(day2.date())
    rows = [(100 + i, text, label, end2 - timedelta(hours=1, minutes=i)) for i, (text, label) in
            enumerate(synthetic_corpus(150, seed=8))]
    rows += [(300, "   ", "negative", end2 - timedelta(days=2)),         # blank: fixed upstream later
             (301, "great " * 5_000, "positive", end2 - timedelta(days=2))]  # too long today
    insert_default(pg, rows)
    second = validate_step(settings, "poison-2", day2, extract_step(settings, "poison-2", None, None,
                                                                      run_after=day2))
    assert second["status"] == "passed", second["reason"]
    assert sorted(second["labels"]) == LABELS  # learned now, from a snapshot with three labels
    assert fetch(pg, "SELECT labels FROM textclf.label_sets")[0][0] == LABELS
    assert quarantine_fields(pg, "textclf.labelled_texts") == {"300": {"text"}, "301": {"text"}}

    # The blank text is fixed in the source; longer texts are allowed by a new setting.
    with pg.cursor() as cur:
        cur.execute("UPDATE textclf.labelled_texts SET text = 'hate awful broken' WHERE id = 300")
    (settings.home / "textclf.toml").write_text(
        "[validation]\nmax_label_drift = 100.0\nmax_text_length = 50000\n")
    settings = load_settings(home=settings.home, database_url=settings.database_url)
    day3 = day2 + timedelta(days=1)
    _, end3 = manual_run_interval(day3.date())
    insert_default(pg, [(500 + i, text, label, end3 - timedelta(hours=2, minutes=i)) for i, (text, label) in
                        enumerate(synthetic_corpus(30, seed=9))])
    third = extract_step(settings, "poison-3", None, None, run_after=day3)
    ids = set(storage.read_parquet(third["path"])["id"])
    assert "300" in ids and "301" not in ids  # the corrected row is judged again; 301 is unchanged

    assert main(["quarantine", "release", "--row", "301", "--by", "on-call"]) == 0
    assert "released 1 quarantine entry" in capsys.readouterr().out
    fourth = validate_step(settings, "poison-4", day3, extract_step(settings, "poison-4", None, None,
                                                                      run_after=day3))
    assert fourth["status"] == "passed", fourth["reason"]
    clean = set(storage.read_parquet(fourth["clean_path"])["id"])
    assert {"300", "301"} <= clean
    assert main(["quarantine", "list", "--all"]) == 0
    assert "released" in capsys.readouterr().out


def insert_default(pg, rows: list[tuple]) -> None:
    with pg.cursor() as cur:
        cur.executemany("INSERT INTO textclf.labelled_texts (id, text, label, labelled_at) VALUES (%s, %s, %s, %s)",
                        rows)


@pytest.mark.parametrize("case", ["brand-new label", "95% one label", "conflicting labels"])
def test_a_bad_batch_fails_validation_naming_the_expectation_and_never_trains(settings, pg, case):
    _, end = manual_run_interval(DAY.date())
    rows = good_rows(end, days=3, per_day=60)
    last_day = [r for r in rows if r[3] >= end - timedelta(days=1)]
    if case == "brand-new label":
        changed = {r[0]: (r[0], r[1], "sarcastic", r[3]) for r in last_day[:3]}
        expectation = "expect_column_values_to_be_in_set"
    elif case == "95% one label":
        changed = {r[0]: (r[0], r[1] + " really", "positive", r[3]) for r in last_day[: int(len(last_day) * 0.95)]}
        expectation = "expect_column_kl_divergence_to_be_less_than"
    else:
        changed = {r[0]: (r[0], last_day[0][1], LABELS[i % 3], r[3]) for i, r in enumerate(last_day[:12])}
        expectation = "expect_column_mean_to_be_between"
    rows = [changed.get(r[0], r) for r in rows]
    with pg.cursor() as cur:
        cur.executemany("INSERT INTO textclf.labelled_texts (id, text, label, labelled_at) VALUES (%s, %s, %s, %s)",
                        rows)
    settings = load_settings(home=settings.home, database_url=settings.database_url, labels=tuple(LABELS))
    validation = validate_step(settings, "batch-1", DAY, extract_step(settings, "batch-1", None, None,
                                                                        run_after=DAY))
    assert validation["status"] == "failed"
    assert expectation in validation["reason"], validation["reason"]
    with pytest.raises(Skip, match="validation failed"):
        train_step(settings, "tfidf", "batch-1", DAY, validation, RunOptions(candidates=("tfidf",)))
    assert fetch(pg, "SELECT count(*) FROM textclf.model_versions")[0][0] == 0


def test_csv_import_of_every_kind_of_bad_line(settings, pg, tmp_path, capsys):
    """One file, every bad line quarantined with its line number and reason, the good ones
    loaded, the future timestamp reported; nothing ends the import with a traceback."""
    lines = [
        b"id,text,label,labelled_at",
        b"1,good text one,positive,2026-11-01T10:00:00Z",
        b"2,\"NUL \x00 inside\",positive,2026-11-01T10:00:00Z",
        b"3,\xff\xfe invalid utf-8,negative,2026-11-01T10:00:00Z",
        b"4,\"" + b"x" * 200_000 + b"\",neutral,2026-11-01T10:00:00Z",   # over csv's 131,072 limit
        b"99999999999999999999,id beyond bigint,positive,2026-11-01T10:00:00Z",
        b"6,short line",
        b"7,from the future,positive,2031-01-01T00:00:00Z",
        b"8,   ,positive,2026-11-01T10:00:00Z",
        b"9,no label,,2026-11-01T10:00:00Z",
        b"10,\"control \x01\x07 characters\",neutral,2026-11-01T10:00:00Z",
        b"11,bad time,positive,yesterday-ish",
        b"1,duplicate of line 2,negative,2026-11-01T10:00:00Z",
    ]
    path = tmp_path / "labelled.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert main(["import", "labelled", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Traceback" not in out and "1 loaded row(s) have a timestamp in the future" in out
    loaded = {i for i, in fetch(pg, "SELECT id FROM textclf.labelled_texts")}
    assert loaded == {1, 7, 10}
    reasons = dict(fetch(pg, "SELECT source_row, reason FROM textclf.quarantine WHERE stage = 'import'"))
    assert set(reasons) == {str(n) for n in range(3, 14)} - {"8", "11"}, reasons  # file line numbers
    assert "NUL byte" in reasons["3"]
    assert "undecodable bytes in field 'text' (not valid utf-8)" in reasons["4"]
    assert "over the maximum" in reasons["5"]
    assert "does not fit the id column" in reasons["6"]
    assert "expected 4 fields (the header's), found 2" in reasons["7"]
    assert "missing or empty text" in reasons["9"] and "missing label" in reasons["10"]
    assert "unparseable timestamp" in reasons["12"] and "duplicate id 1" in reasons["13"]

    utf16 = tmp_path / "labelled-utf16.csv"
    utf16.write_text("id,text,label,labelled_at\n20,héllo wörld ✓,positive,2026-11-01T10:00:00Z\n",
                     encoding="utf-16")
    assert main(["import", "labelled", str(utf16), "--encoding", "utf-16"]) == 0
    assert fetch(pg, "SELECT text FROM textclf.labelled_texts WHERE id = 20") == [("héllo wörld ✓",)]


def test_predict_refuses_what_it_cannot_label(settings, tiny_tfidf_dir, monkeypatch, capsys):
    version = register_tiny(settings, tiny_tfidf_dir)
    in_transaction(settings, registry.set_champion, settings, version, reason="test", actor="test")
    with pytest.raises(InputError, match="no text to label"):
        predict_texts(settings, [])
    with pytest.raises(InputError, match="text 2: no text to score"):
        predict_texts(settings, ["great", "  "])
    with pytest.raises(InputError, match="text 1: text of 20001 characters is longer"):
        predict_texts(settings, ["x" * 20_001])
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["predict"]) == 2
    assert "textclf: error: no text to label" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("love it\n\nhate it\n"))
    assert main(["predict"]) == 2
    assert "text 2: no text to score" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("love it\nhate it\n"))
    assert main(["predict"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["model_version"] == version and len(answer["predictions"]) == 2


# --- 2. faults -----------------------------------------------------------------------------------


def documents(pg, n: int) -> None:
    with pg.cursor() as cur:
        cur.executemany("INSERT INTO textclf.documents (id, text, created_at) VALUES (%s, %s, %s)",
                        [(i, text, DAY - timedelta(hours=1)) for i, (text, _) in
                         enumerate(synthetic_corpus(n, seed=5), start=1)])


def prediction_rows(conn) -> list[tuple]:
    return fetch(conn, "SELECT document_id, model_version, label, confidence, probabilities::text "
                       "FROM textclf.predictions ORDER BY document_id")


KILLED_PREDICT = """
import os, signal, sys
from tasks import db
from tasks.config import load_settings
from tasks.predict import predict_documents

written = []
copy = db.write_predictions
def write_then_die(cur, rows):
    n = copy(cur, rows)
    written.append(n)
    if len(written) == 3:  # the third chunk is written but not committed
        os.kill(os.getpid(), signal.SIGKILL)
    return n
db.write_predictions = write_then_die
predict_documents(load_settings(), model_version=int(sys.argv[1]), run_id="killed", logical_date=None,
                  start=None, end=None, chunk_rows=40)
"""


def test_a_predict_killed_mid_write_leaves_no_partial_chunk_and_the_retry_converges(settings, pg, tiny_tfidf_dir):
    version = register_tiny(settings, tiny_tfidf_dir)
    documents(pg, 250)
    predict_documents(settings, model_version=version, run_id="clean", logical_date=None, start=None, end=None,
                      chunk_rows=40)
    clean_run = prediction_rows(pg)
    assert len(clean_run) == 250
    with pg.cursor() as cur:
        cur.execute("TRUNCATE textclf.predictions")

    env = {**os.environ, "TEXTCLF_HOME": str(settings.home), "TEXTCLF_DATABASE_URL": settings.database_url}
    killed = subprocess.run([sys.executable, "-c", KILLED_PREDICT, str(version)], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(prediction_rows(pg)) == 80  # two whole chunks; the third was never committed

    stats = predict_documents(settings, model_version=version, run_id="retry", logical_date=None, start=None,
                              end=None, chunk_rows=40)
    assert stats.documents == 250
    assert prediction_rows(pg) == clean_run


def test_postgresql_restarted_during_scoring_then_the_retry_succeeds(tmp_path, tiny_tfidf_dir):
    """A PostgreSQL of its own (pgserver), restarted after the first chunk of a scoring run."""
    from pgserver._commands import pg_ctl

    # Under the repository (as `make demo`'s server): pgserver's own user must reach the folder.
    home = REPO_ROOT / ".textclf"
    server = db.embedded_server(home, f"fault-pg-{os.getpid()}")
    try:
        server.psql("CREATE DATABASE textclf;")
        url = server.get_uri("textclf")
        db.upgrade(url)
        settings = load_settings(home=tmp_path / "home", database_url=url)
        version = register_tiny(settings, tiny_tfidf_dir)
        conn = psycopg2.connect(url)
        conn.autocommit = True
        documents(conn, 200)
        conn.close()

        def restart(chunk: int) -> None:
            if chunk == 1:
                pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user)

        with pytest.raises(psycopg2.OperationalError):
            predict_documents(settings, model_version=version, run_id="first-try", logical_date=None, start=None,
                              end=None, chunk_rows=50, after_chunk=restart)
        stats = predict_documents(settings, model_version=version, run_id="retry", logical_date=None, start=None,
                                  end=None, chunk_rows=50)
        assert stats.documents == 200
        conn = psycopg2.connect(url)
        (rows, documents_scored), = fetch(conn, "SELECT count(*), count(DISTINCT document_id) FROM textclf.predictions")
        conn.close()
        assert rows == documents_scored == 200
    finally:
        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user)
        shutil.rmtree(server.pgdata, ignore_errors=True)


def test_a_corrupted_artifact_is_refused_and_the_champion_stays(settings, pg, tiny_tfidf_dir, capsys, caplog):
    good = register_tiny(settings, tiny_tfidf_dir, key="good")
    in_transaction(settings, registry.set_champion, settings, good, reason="first", actor="test")
    other_dir = settings.home / "other"
    shutil.copytree(tiny_tfidf_dir, other_dir)
    corrupted = register_tiny(settings, other_dir, key="corrupted")
    artifact = next(p for p in (settings.models_dir / str(corrupted)).iterdir() if p.suffix != ".json")
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, as a bad disk or a partial copy would leave
    artifact.write_bytes(bytes(data))

    with pytest.raises(registry.ChecksumMismatch, match=f"model version {corrupted}: artifact at .* refusing"):
        in_transaction(settings, registry.set_champion, settings, corrupted, reason="manual", actor="test")
    assert main(["promote", str(corrupted), "--reason", "try", "--no-airflow"]) == 2
    assert "refusing to load it" in capsys.readouterr().err
    with pytest.raises(registry.ChecksumMismatch):
        in_transaction(settings, registry.find_trained, settings, "corrupted")  # a retried training does not quietly replace it
    with pytest.raises(registry.ChecksumMismatch):
        predict_documents(settings, model_version=corrupted, run_id="x", logical_date=None, start=None, end=None)
    assert in_transaction(settings, registry.current_champion) == good
    assert [h["model_version"] for h in in_transaction(settings, registry.champion_history)] == [good]


# --- 3. concurrency ------------------------------------------------------------------------------


def test_racing_champion_changes_are_serialised_and_history_never_overlaps(settings, pg, tiny_tfidf_dir):
    """Nightly promotions of several runs, manual promotions (in-process and a `textclf promote`
    process) and rollbacks, all at once: one change at a time, one open period, no overlap."""
    versions = [register_tiny(settings, tiny_tfidf_dir, key=f"v{i}") for i in range(6)]
    in_transaction(settings, registry.set_champion, settings, versions[0], reason="start", actor="test")
    barrier = threading.Barrier(7)
    errors: list[BaseException] = []

    def nightly(i: int) -> None:
        barrier.wait()
        for _ in range(3):  # judged against the champion it saw; re-judged if it changed meanwhile
            current = in_transaction(settings, registry.current_champion)
            if in_transaction(settings, registry.apply_run_decision, run_id=f"night-{i}", interval_end=DAY + timedelta(days=i),
                    expected_champion=current, winner=versions[i], summary="better", reasons={},
                    actor="scheduler") is not None:
                return

    def manual(i: int) -> None:
        barrier.wait()
        in_transaction(settings, registry.set_champion, settings, versions[i], reason="operator", actor="alice")
        in_transaction(settings, registry.rollback, settings, actor="bob")

    def guarded(target, i):
        def run():
            try:
                target(i)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
        return threading.Thread(target=run)

    threads = [guarded(nightly, i) for i in (1, 2, 3)] + [guarded(manual, i) for i in (4, 5)]
    threads.append(guarded(lambda i: (barrier.wait(), subprocess.run(
        [sys.executable, "-m", "tasks.cli", "promote", str(versions[i]), "--reason", "cli", "--no-airflow"],
        cwd=REPO_ROOT, check=True, capture_output=True,
        env={**os.environ, "TEXTCLF_HOME": str(settings.home), "TEXTCLF_DATABASE_URL": settings.database_url})),
        1))
    for t in threads:
        t.start()
    barrier.wait()
    for t in threads:
        t.join(120)
    assert errors == []

    history = fetch(pg, "SELECT valid_from, valid_to FROM textclf.champion_history ORDER BY valid_from, id")
    assert sum(1 for _, valid_to in history if valid_to is None) == 1
    for (_, end), (start, _) in zip(history, history[1:], strict=False):
        assert end == start  # each period ends where the next begins: no gap, no overlap
    (overlaps,), = fetch(pg, "SELECT count(*) FROM textclf.champion_history a JOIN textclf.champion_history b "
                             "ON a.id < b.id AND tstzrange(a.valid_from, a.valid_to) && "
                             "tstzrange(b.valid_from, b.valid_to)")
    assert overlaps == 0
    changes = fetch(pg, "SELECT count(*) FROM textclf.promotion_decisions WHERE champion_before IS DISTINCT "
                        "FROM champion_after AND decision <> 'historical'")[0][0]
    assert len(history) == changes  # every change (the first champion included) is one period
    nights = fetch(pg, "SELECT run_id FROM textclf.promotion_decisions WHERE run_id LIKE %s", ("night-%",))
    assert sorted(run for run, in nights) == ["night-1", "night-2", "night-3"]  # each decided once


def test_a_stuck_lock_holder_is_an_error_not_a_hang_and_the_reader_cannot_take_the_lock(settings, pg,
                                                                                       tiny_tfidf_dir, monkeypatch):
    version = register_tiny(settings, tiny_tfidf_dir)
    holder = psycopg2.connect(settings.database_url)
    with holder.cursor() as cur:
        cur.execute("SELECT 1 FROM textclf.champion_lock WHERE id = 1 FOR UPDATE")  # held, never released
    monkeypatch.setattr(db, "CHAMPION_LOCK_WAIT_SECONDS", 1.0)
    started = time.monotonic()
    with pytest.raises(db.ChampionLocked, match="another champion change has held the lock"):
        in_transaction(settings, registry.set_champion, settings, version, reason="blocked", actor="test")
    assert time.monotonic() - started < 10
    holder.rollback()
    holder.close()
    assert in_transaction(settings, registry.set_champion, settings, version, reason="free again", actor="test")

    with pg.cursor() as cur:
        cur.execute("SET ROLE textclf_reader")
        try:
            for statement in ("SELECT 1 FROM textclf.champion_lock WHERE id = 1 FOR UPDATE",
                              "LOCK TABLE textclf.champion_lock IN ROW SHARE MODE"):
                cur.execute("BEGIN")
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cur.execute(statement)
                cur.execute("ROLLBACK")
        finally:
            cur.execute("RESET ROLE")


# --- 4. security ---------------------------------------------------------------------------------

IDENTIFIER_KEYS = ["schema", "table", "id_column", "text_column", "label_column", "timestamp_column",
                   "weight_column"]
INJECTIONS = ["t; DROP TABLE x", 'a"b', "a--", "x) OR 1=1 --", "ünïcode", "", " lead", "1starts_with_digit",
              "a" * 64, "tab\tle", "semi;colon", "quote'd"]


@hypothesis_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(section=st.sampled_from(["labelled_source", "documents_source"]), key=st.sampled_from(IDENTIFIER_KEYS),
       value=st.one_of(st.sampled_from(INJECTIONS), st.text(min_size=1, max_size=80).filter(
           lambda v: not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", v))))
def test_identifiers_from_config_with_injection_attempts_are_rejected_naming_the_key(tmp_path, section, key,
                                                                                     value):
    home = tmp_path / "fuzz"
    home.mkdir(exist_ok=True)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if c.isprintable() or c == " " else f"\\U{ord(c):08x}" for c in escaped)
    (home / "textclf.toml").write_text(f'[{section}]\n{key} = "{escaped}"\n')
    with pytest.raises(ConfigError) as error:
        load_settings(home=home)
    assert f"[{section}] {key} = " in str(error.value)
    assert "not a valid SQL identifier" in str(error.value)


def test_the_reader_role_reads_predictions_and_the_views_and_nothing_else(pg, settings, tiny_tfidf_dir):
    version = register_tiny(settings, tiny_tfidf_dir)
    in_transaction(settings, registry.set_champion, settings, version, reason="first", actor="test")
    documents(pg, 50)
    predict_documents(settings, model_version=version, run_id="r", logical_date=DAY, start=None, end=None)
    readme = (REPO_ROOT / "docs" / "analysts.md").read_text()
    [queries] = re.findall(r"```sql\n(.*?)```", readme, re.S)
    with pg.cursor() as cur:
        cur.execute("SET ROLE textclf_reader")
        try:
            for statement in filter(str.strip, queries.split(";")):
                cur.execute(statement)  # every README query works for an analyst
            cur.execute("SELECT count(*) FROM textclf.champion_periods")
            assert cur.fetchone()[0] == 1
            for table in ("model_versions", "champion_history", "evaluations", "quarantine", "labelled_texts",
                          "documents", "promotion_decisions", "champion_lock"):
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cur.execute(sql.SQL("SELECT 1 FROM textclf.{} LIMIT 1").format(sql.Identifier(table)))
            for statement in ("DELETE FROM textclf.predictions", "UPDATE textclf.predictions SET label = 'x'",
                              "INSERT INTO textclf.champion_history (model_version) VALUES (1)"):
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cur.execute(statement)
        finally:
            cur.execute("RESET ROLE")


def test_passwords_are_masked_wherever_a_url_is_shown(settings, pg, tiny_tfidf_dir):
    assert db.masked("postgresql://app:s3cr%40t@db.example:5432/textclf?sslmode=require") == \
        "postgresql://app:***@db.example:5432/textclf?sslmode=require"
    assert db.masked("s3://bucket/models/7") == "s3://bucket/models/7"
    assert db.masked("postgresql://app@db/textclf") == "postgresql://app@db/textclf"
    from tasks.dashboard import snapshot

    version = register_tiny(settings, tiny_tfidf_dir)
    with pg.cursor() as cur:
        cur.execute("UPDATE textclf.model_versions SET artifact_uri = %s WHERE version = %s",
                    ("https://user:token@store.example/models/1", version))
    page = snapshot(settings)
    assert "token" not in json.dumps(page, default=str)
    assert "https://user:***@store.example/models/1" in json.dumps(page, default=str)


def test_a_schema_behind_the_code_is_refused_until_textclf_db_upgrade(database_url, tmp_path, capsys):
    """Migrations are an explicit step: a process connecting to an old schema does not migrate
    it on the side, it says which command to run."""
    from conftest import url_for_database

    recreate_database(database_url, "textclf_test_old_schema")
    url = url_for_database(database_url, "textclf_test_old_schema")
    settings = load_settings(home=tmp_path / "home", database_url=url)
    with pytest.raises(db.SchemaNotCurrent, match="at migration none, this code needs .*textclf db upgrade"):
        in_transaction(settings, registry.current_champion)
    os.environ["TEXTCLF_DATABASE_URL"], saved = url, os.environ["TEXTCLF_DATABASE_URL"]
    try:
        assert main(["models"]) == 2
        assert "textclf db upgrade" in capsys.readouterr().err
        assert main(["db", "upgrade"]) == 0
        assert main(["models"]) == 0
    finally:
        os.environ["TEXTCLF_DATABASE_URL"] = saved


@pytest.mark.slow
def test_kill_9_of_textclf_run_stops_its_night_at_once_and_marks_it_failed(airflow_ready, clean_db, pg, tmp_path):
    """Was: killed as evaluate started, within 8 s the run promoted, wrote 600 predictions and
    ended "success". Now nothing of the night is written after the kill, no Airflow process is
    left, and the run is marked failed in Airflow and recorded."""
    import psutil

    from conftest import url_for_database
    from support import seed
    from tasks.config import load_settings

    home = tmp_path / "home"
    seed(load_settings(home=home, database_url=clean_db), days=3, per_day=60,
         end=manual_run_interval(DAY.date())[1])
    env = {**os.environ, "TEXTCLF_HOME": str(home), "TEXTCLF_DATABASE_URL": clean_db}
    env.pop("TEXTCLF_IN_PROCESS_RUN", None)
    textclf = subprocess.Popen([sys.executable, "-m", "tasks.cli", "run", "--date", DAY.date().isoformat(),
                                "--quiet", "--conf", '{"candidates": ["tfidf", "bert"], "bert_max_train_rows": 48, '
                                '"bert_max_length": 24, "bert_epochs": 1}'],
                               cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not fetch(pg, "SELECT run_id FROM textclf.validation_runs"):
        assert textclf.poll() is None, "textclf run ended before the night was under way"
        time.sleep(0.5)
    [(run_id,)] = fetch(pg, "SELECT run_id FROM textclf.validation_runs")  # validated: training now
    airflow = [p for p in psutil.Process(textclf.pid).children(recursive=True)
               if "dags" in p.cmdline() and "test" in p.cmdline()]
    assert airflow, "airflow dags test is not running"
    textclf.send_signal(signal.SIGKILL)
    textclf.wait(30)
    _, alive = psutil.wait_procs(airflow, timeout=10)  # at once: SIGKILL, no grace
    assert alive == [], [" ".join(p.cmdline()) for p in alive]

    def written() -> list:
        return fetch(pg, "SELECT (SELECT count(*) FROM textclf.promotion_decisions), "
                         "(SELECT count(*) FROM textclf.predictions), (SELECT count(*) FROM textclf.evaluations)")

    after_kill = written()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not fetch(
            pg, "SELECT 1 FROM textclf.pipeline_events WHERE run_id = %s AND event = 'night_failed'", (run_id,)):
        time.sleep(1)
    [(message,)] = fetch(pg, "SELECT message FROM textclf.pipeline_events WHERE run_id = %s AND event = 'night_failed'",
                         (run_id,))
    assert "textclf run` that ran it was killed" in message
    time.sleep(5)
    assert written() == after_kill == [(0, 0, 0)]  # nothing judged, promoted or scored after the kill
    metadata = url_for_database(clean_db, os.environ["TEXTCLF_AIRFLOW_DATABASE"])
    with psycopg2.connect(metadata) as conn, conn.cursor() as cur:
        cur.execute("SELECT state FROM dag_run WHERE run_id = %s", (run_id,))
        assert cur.fetchall() == [("failed",)]
        cur.execute("SELECT count(*) FROM task_instance WHERE run_id = %s AND state IN ('running', 'queued')",
                    (run_id,))
        assert cur.fetchone() == (0,)


@pytest.mark.slow
def test_postgresql_restarted_mid_night_then_textclf_run_tries_once_more_and_finishes(tmp_path):
    """The embedded default: Airflow's metadata and the data on one PostgreSQL, restarted while
    the night trains. Was: `textclf run` died with a 1,305-line traceback and the run stayed
    "running". Now it waits for the database, runs the date once more, and the night finishes;
    the run is never left running."""
    from pgserver._commands import pg_ctl

    from support import seed
    from tasks.config import load_settings

    server = db.embedded_server(REPO_ROOT / ".textclf", f"restart-pg-{os.getpid()}")
    try:
        server.psql("CREATE DATABASE textclf;")
        url = server.get_uri("textclf")
        db.upgrade(url)
        home = tmp_path / "home"
        seed(load_settings(home=home, database_url=url), days=3, per_day=60, end=manual_run_interval(DAY.date())[1])
        env = {**os.environ, "TEXTCLF_HOME": str(home), "TEXTCLF_DATABASE_URL": url,
               "TEXTCLF_AIRFLOW_DATABASE": "airflow_restart"}
        env.pop("TEXTCLF_IN_PROCESS_RUN", None)
        textclf = subprocess.Popen([sys.executable, "-m", "tasks.cli", "run", "--date", DAY.date().isoformat(),
                                    "--quiet", "--conf", '{"candidates": ["tfidf"]}'], cwd=REPO_ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        conn = psycopg2.connect(url)
        conn.autocommit = True
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not fetch(conn, "SELECT 1 FROM textclf.validation_runs"):
            assert textclf.poll() is None, textclf.communicate()
            time.sleep(0.5)
        conn.close()
        # Down for a while, as a failover is: whatever the night does next meets no server. It
        # comes back with the options it ran with (its socket folder, no TCP port).
        options = shlex.split((Path(server.pgdata) / "postmaster.opts").read_text())[1:]
        at = options.index("-D")
        options = options[:at] + options[at + 2:]  # pg_ctl names the data folder itself
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
        time.sleep(10)
        pg_ctl(["-w", "-l", str(server.log), "-o", shlex.join(options), "start"], pgdata=server.pgdata,
               user=server.system_user)
        out, err = textclf.communicate(timeout=600)
        assert "the database is back, trying once more" in err, err[-3000:]
        assert textclf.returncode == 0, err[-3000:]
        conn = psycopg2.connect(url)
        conn.autocommit = True
        assert fetch(conn, "SELECT count(*) FROM textclf.champion_history") == [(1,)]
        assert fetch(conn, "SELECT count(*) > 0 FROM textclf.predictions") == [(True,)]
        [(verdict,)] = fetch(conn, "SELECT message FROM textclf.pipeline_events WHERE event = 'night_done'")
        assert verdict.startswith("judged ")
        conn.close()
        metadata = psycopg2.connect(server.get_uri("airflow_restart"))
        with metadata, metadata.cursor() as cur:
            cur.execute("SELECT state FROM dag_run WHERE dag_id = 'textclf_retrain'")
            assert {state for (state,) in cur.fetchall()} == {"success"}
        metadata.close()
    finally:
        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user)
        shutil.rmtree(server.pgdata, ignore_errors=True)
