"""A user's own table on its first night: label variants and stray labels, naive timestamps,
invisible text, dates that cannot be run, concurrent first runs, a full disk, the trigger conf.
Each case of issue 18, against the real database where it touches one."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from conftest import autocommit_connection, fetch, url_for_database
from support import in_transaction
from tasks import db, registry, storage
from tasks.airflow_env import START_DATE, check_interval, manual_run_interval
from tasks.config import SourceTable
from tasks.errors import ConfigError, InputError, is_final
from tasks.normalize import is_blank, near_duplicate_labels, normalize_label
from tasks.pipeline import check_run_conf, extract_step, validate_step
from tasks.predict import split_scorable

DAY = datetime(2026, 11, 20, tzinfo=UTC)
START, END = manual_run_interval(DAY.date())
WORDS = {"positive": "great love happy", "negative": "awful hate broken", "neutral": "table tuesday report"}


def insert_labelled(pg, rows, table="textclf.labelled_texts"):
    with pg.cursor() as cur:
        cur.executemany(f"INSERT INTO {table} (id, text, label, labelled_at) VALUES (%s, %s, %s, %s)", rows)


def corpus(label_of, n, first_id=1):
    """n rows labelled before END, the label of row i given by label_of(i)."""
    rows = []
    for i in range(n):
        label = label_of(i)
        base = WORDS[normalize_label(label) or "neutral"] if normalize_label(label) in WORDS else "odd words"
        rows.append((first_id + i, f"{base} number {first_id + i}", label, END - timedelta(hours=1 + i % 40)))
    return rows


def night(settings, run_id="night-1"):
    return validate_step(settings, run_id, DAY, extract_step(settings, run_id, START, END))


# --- labels ------------------------------------------------------------------------------------


def test_labels_are_normalised_nfkc_trimmed_and_case_folded():
    assert {normalize_label(v) for v in ["Positive", "positive", "positive ", " POSITIVE\u200b", "ｐｏｓｉｔｉｖｅ"]} == {"positive"}
    assert normalize_label("Positive", case_fold=False) == "Positive"
    assert normalize_label("  \u200b ") is None and normalize_label(None) is None
    assert near_duplicate_labels(["positive", "positve", "negative", "topic_1", "topic_2", "4", "5"]) == [
        ("positive", "positve")]


def test_label_variants_are_one_class_and_a_stray_label_is_quarantined_naming_the_setting(settings, pg):
    variants = ["Positive", "positive", "positive ", "negative", "Negative", "neutral"]
    rows = corpus(lambda i: variants[i % len(variants)], 600)
    rows.append((10_001, "a single odd row", "Sarcasm", END - timedelta(hours=2)))
    insert_labelled(pg, rows)
    validation = night(settings)
    assert validation["labels"] == ["negative", "neutral", "positive"]
    assert fetch(pg, "SELECT labels FROM textclf.label_sets") == [(["negative", "neutral", "positive"],)]
    [(row, reason)] = fetch(pg, "SELECT source_row, reason FROM textclf.quarantine WHERE field = 'label'")
    assert row == "10001" and "'sarcasm'" in reason and "min_label_rows" in reason
    clean = storage.read_parquet(validation["clean_path"])
    assert set(clean["label"]) == {"negative", "neutral", "positive"} and len(clean) == 600


def test_case_folding_can_be_turned_off(settings, pg):
    insert_labelled(pg, corpus(lambda i: ["Pos", "pos"][i % 2], 200))
    validation = night(replace(settings, label_case_fold=False))
    assert validation["labels"] == ["Pos", "pos"]


def test_labels_one_character_apart_fail_validation_naming_both_and_are_not_stored(settings, pg):
    insert_labelled(pg, corpus(lambda i: ["positive", "positve", "negative"][i % 3], 300))
    validation = night(settings)
    assert validation["status"] == "failed"
    assert "'positive' and 'positve' differ by one character" in validation["reason"]
    assert fetch(pg, "SELECT count(*) FROM textclf.label_sets") == [(0,)]


def test_textclf_labels_shows_the_set_and_its_origin(settings, pg, tmp_path):
    insert_labelled(pg, corpus(lambda i: ["positive", "negative"][i % 2], 100))
    night(settings)
    out = subprocess.run([sys.executable, "-m", "tasks.cli", "labels"], capture_output=True, text=True,
                         env={**os.environ, "TEXTCLF_DATABASE_URL": settings.database_url,
                              "TEXTCLF_HOME": str(settings.home)})
    assert out.returncode == 0, out.stderr
    assert "labels (2): negative, positive" in out.stdout and "from: first snapshot, run night-1" in out.stdout


# --- timestamps --------------------------------------------------------------------------------


def own_table(pg, column_type: str) -> None:
    with pg.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS public.my_labels")
        cur.execute(f"CREATE TABLE public.my_labels (id int PRIMARY KEY, text text, label text, labelled_at {column_type})")


@pytest.mark.parametrize(("column_type", "values"), [
    ("integer", [0, 1, 2]), ("smallint", [1, 3, 5]), ("integer", [-1, 0, 1]), ("text", [" 1", "2 ", "3"])],
    ids=["0-2", "stars", "-1-1", "spaced-text"])
def test_integer_like_labels_train_promote_and_predict_as_the_source_wrote_them(settings, pg, column_type, values):
    """A label column of integers (or numbers in text): the night trains, promotes and scores,
    and the labels are stored and shown as the source wrote them (normalised: " 1" is "1")."""
    from support import run_date

    with pg.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS public.my_labels")
        cur.execute(f"CREATE TABLE public.my_labels (id int PRIMARY KEY, text text, label {column_type}, "
                    "labelled_at timestamptz)")
    classes = dict(zip(["negative", "neutral", "positive"], values, strict=True))
    rows = [(i, f"{WORDS[name]} number {i}", classes[name], END - timedelta(days=2) + timedelta(minutes=i))
            for i, name in ((i, ["negative", "neutral", "positive"][i % 3]) for i in range(1, 241))]
    rows += [(1000 + i, f"{WORDS[name]} again {i}", classes[name], START + timedelta(minutes=i))
             for i, name in ((i, ["negative", "neutral", "positive"][i % 3]) for i in range(60))]
    insert_labelled(pg, rows, "public.my_labels")
    with pg.cursor() as cur:
        cur.executemany("INSERT INTO textclf.documents (id, text, created_at) VALUES (%s, %s, %s)",
                        [(i, f"{WORDS['positive']} doc {i}", START + timedelta(hours=1)) for i in range(1, 6)])
    own = replace(settings, labelled_source=SourceTable("public", "my_labels"))
    result = run_date(own, DAY, "numbers")
    expected = sorted(str(v).strip() for v in values)
    assert result["validation"]["labels"] == expected
    assert result["promotion"]["promoted"]
    [(labels,)] = fetch(pg, "SELECT labels FROM textclf.model_versions")
    assert labels == expected
    predicted = {label for (label,) in fetch(pg, "SELECT label FROM textclf.predictions")}
    assert predicted == {str(classes["positive"]).strip()}


def test_documents_with_uuid_ids_fail_the_first_task_naming_the_column(settings, pg):
    """Was: every night failed at predict with "invalid input syntax for type bigint"."""
    with pg.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS public.my_docs")
        cur.execute("CREATE TABLE public.my_docs (id uuid PRIMARY KEY, text text, created_at timestamptz)")
    insert_labelled(pg, corpus(lambda i: ["positive", "negative"][i % 2], 60))
    own = replace(settings, documents_source=SourceTable("public", "my_docs", timestamp_column="created_at",
                                                         label_column=None))
    with pytest.raises(ConfigError) as raised:
        extract_step(own, "uuid-docs", START, END)
    assert str(raised.value).startswith("[documents_source] public.my_docs.id is uuid, but document ids must be "
                                        "whole numbers") and is_final(raised.value)
    # A domain over bigint, and numeric without a fraction, are whole numbers: accepted.
    with pg.cursor() as cur:
        cur.execute("DROP TABLE public.my_docs")
        cur.execute("DROP DOMAIN IF EXISTS public.doc_id")
        cur.execute("CREATE DOMAIN public.doc_id AS bigint CHECK (VALUE > 0)")
        cur.execute("CREATE TABLE public.my_docs (id public.doc_id PRIMARY KEY, text text, created_at timestamptz)")
    extract_step(own, "domain-docs", START, END)
    with pg.cursor() as cur:
        cur.execute("ALTER TABLE public.my_docs ALTER COLUMN id TYPE numeric(12,0)")
    extract_step(own, "numeric-docs", START, END)


def test_a_renamed_label_is_named_as_absent_and_left_out_of_macro_f1(settings, pg, capsys):
    """Was: after `negative` became `complaint`, the set kept `negative` with 0 rows and a perfect
    model scored 0.75 (a binary task was capped at 0.667). Now the night names it, macro-F1
    leaves it out, and `textclf labels` says how to retire it."""
    from tasks.cli import main
    from tasks.evaluate import evaluation_from_probabilities

    insert_labelled(pg, corpus(lambda i: ["positive", "negative", "neutral"][i % 3], 300))
    night(settings, "before-rename")
    with pg.cursor() as cur:
        cur.execute("UPDATE textclf.labelled_texts SET label = 'complaint' WHERE label = 'negative'")
    renamed = night(replace(settings, allow_new_labels=True), "after-rename")
    assert renamed["labels"] == ["complaint", "negative", "neutral", "positive"]
    assert renamed["absent_labels"] == ["negative"]
    [(message,)] = fetch(pg, "SELECT message FROM textclf.pipeline_events WHERE event = 'labels_absent'")
    assert "'negative'" in message and "`labels`" in message
    truth = np.array([0, 2, 3, 0, 2, 3])  # complaint, neutral, positive: a perfect model
    perfect = evaluation_from_probabilities("v1", "x", renamed["labels"], truth, np.eye(4)[truth])
    assert perfect.macro_f1 == 1.0 and perfect.macro_f1_labels == ["complaint", "neutral", "positive"]
    assert main(["labels"]) == 0
    out = capsys.readouterr().out
    assert "negative 0" in out and "no row carries 'negative'" in out and "labels = [...]" in out


def test_naive_timestamps_are_read_in_source_timezone(settings, pg):
    own_table(pg, "timestamp without time zone")
    naive_end = END.replace(tzinfo=None) + timedelta(hours=1)  # Paris is UTC+1 in November
    rows = [(i, f"{WORDS[['positive', 'negative'][i % 2]]} {i}", ["positive", "negative"][i % 2],
             naive_end - timedelta(minutes=30 + i)) for i in range(1, 61)]
    rows.append((99, "great love happy late", "positive", naive_end + timedelta(minutes=5)))  # after END
    insert_labelled(pg, rows, "public.my_labels")
    paris = replace(settings, labelled_source=SourceTable("public", "my_labels"), source_timezone="Europe/Paris")
    snapshot = extract_step(paris, "naive", START, END)
    assert snapshot["snapshot_rows"] == 60 and snapshot["new_rows"] == 60  # 99 is after the interval
    frame = storage.read_parquet(snapshot["path"])
    assert frame["labelled_at"].max() < pd.Timestamp(END)
    # The same naive values read as UTC are an hour later: the 30 labelled in the last 30 minutes
    # before END (Paris time) now fall after it.
    utc = replace(paris, source_timezone="UTC")
    assert extract_step(utc, "naive-utc", START, END)["snapshot_rows"] == 30


def test_an_unusable_timestamp_column_is_a_configuration_error_naming_it(settings, pg):
    own_table(pg, "text")
    own = replace(settings, labelled_source=SourceTable("public", "my_labels"))
    with pytest.raises(ConfigError, match=r"public.my_labels.labelled_at is text, not a timestamp") as raised:
        extract_step(own, "bad-type", START, END)
    assert is_final(raised.value)
    with pytest.raises(ConfigError, match="source_timezone"):
        replace(settings, source_timezone="Mars/Olympus")


# --- invisible text ---------------------------------------------------------------------------


# Was: LRM, Hangul filler and braille blank were not blank (one such text scored at 0.996).
INVISIBLE_TEXTS = ["\u200b\u200c\u200d", "\u200e\u200f", "\u3164\u3164", "\u2800 \u2800", "\u0301", "\x1b\x07"]


def test_text_of_invisible_characters_only_is_blank_everywhere(settings, pg):
    """One definition of blank (tasks.normalize) for validation, import and scoring."""
    import re

    from tasks.normalize import blank_pattern

    assert is_blank("\u200b\u200b") and is_blank("\ufeff \u2060") and not is_blank("\u200bok")
    assert all(is_blank(t) and re.match(blank_pattern(), t) for t in INVISIBLE_TEXTS)
    assert not any(is_blank(t) or re.match(blank_pattern(), t) for t in ["ok", "é", "e\u0301", "\u3164a", "ㅎ"])
    insert_labelled(pg, corpus(lambda i: ["positive", "negative"][i % 2], 100))
    insert_labelled(pg, [(500 + i, text, "positive", END - timedelta(hours=3)) for i, text in enumerate(INVISIBLE_TEXTS)])
    night(settings)
    quarantined = fetch(pg, "SELECT source_row, field, reason FROM textclf.quarantine WHERE source_row::int >= 500")
    assert {row for row, *_ in quarantined} == {str(500 + i) for i in range(len(INVISIBLE_TEXTS))}
    assert all(field == "text" and "is blank" in reason and len(reason) < 300 for _, field, reason in quarantined)
    scorable, rejected = split_scorable([(i, t) for i, t in enumerate(INVISIBLE_TEXTS)] + [(99, "fine")], 1000)
    assert [r[0] for r in rejected] == list(range(len(INVISIBLE_TEXTS))) and [s[0] for s in scorable] == [99]


# --- dates ------------------------------------------------------------------------------------


def test_an_interval_that_has_not_ended_or_starts_before_the_dag_is_refused():
    now = datetime(2026, 12, 2, 12, tzinfo=UTC)
    check_interval(*manual_run_interval(now.date()), now=now)  # yesterday's night: fine
    with pytest.raises(InputError, match="has not ended yet"):
        check_interval(*manual_run_interval((now + timedelta(days=2)).date()), now=now)
    with pytest.raises(InputError, match="before the DAG's start_date 2026-01-01"):
        check_interval(*manual_run_interval(START_DATE.date()), now=now)


def test_textclf_run_refuses_a_future_date_in_one_line():
    out = subprocess.run([sys.executable, "-m", "tasks.cli", "run", "--date", "2031-01-01"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "has not ended yet" in out.stderr


def test_a_champion_never_takes_effect_after_it_was_promoted(settings, pg, tiny_tfidf_dir):
    from conftest import register_tiny

    version = register_tiny(settings, tiny_tfidf_dir)
    future = datetime.now(UTC) + timedelta(days=400)
    in_transaction(settings, registry.apply_run_decision, run_id="future", interval_end=future,
                   expected_champion=None, winner=version, summary="s", reasons={}, actor="test")
    [(effective_from, valid_from)] = fetch(pg, "SELECT effective_from, valid_from FROM textclf.champion_history")
    assert effective_from <= valid_from + timedelta(seconds=1) and effective_from < future
    # so tomorrow's real night is not "historical"
    assert in_transaction(settings, registry.champion_of, datetime.now(UTC) + timedelta(days=1)) == version


def test_champion_for_date_names_the_model_that_decided_that_interval(settings, tiny_tfidf_dir):
    from conftest import register_tiny

    first, second = register_tiny(settings, tiny_tfidf_dir, "a"), register_tiny(settings, tiny_tfidf_dir, "b")
    for run_id, day, winner, before in (("n1", DAY, first, None), ("n2", DAY + timedelta(days=5), second, first)):
        in_transaction(settings, registry.apply_run_decision, run_id=run_id, interval_end=manual_run_interval(day.date())[1],
                       expected_champion=before, winner=winner, summary="s", reasons={}, actor="test")
    env = {**os.environ, "TEXTCLF_DATABASE_URL": settings.database_url}

    def champion(*args):
        return subprocess.run([sys.executable, "-m", "tasks.cli", "champion", *args], capture_output=True,
                              text=True, env=env).stdout
    assert f"model version {first} decided" in champion("--for-date", (DAY + timedelta(days=2)).date().isoformat())
    assert f"model version {second} decided" in champion("--for-date", (DAY + timedelta(days=6)).date().isoformat())
    assert "no champion decided" in champion("--for-date", (DAY - timedelta(days=3)).date().isoformat())
    assert f"model version {second}" in champion()


# --- concurrency and space --------------------------------------------------------------------


def test_concurrent_first_runs_create_the_database_once_without_an_error(database_url):
    name = "textclf_race_test"
    admin = url_for_database(database_url, "postgres")

    def drop() -> None:
        with autocommit_connection(admin) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")

    failures = []

    def create():
        try:
            db.ensure_database(admin, name)
        except Exception as exc:  # noqa: BLE001 - any error is the failure under test
            failures.append(exc)

    for _ in range(3):  # a few rounds: the race is between the check and CREATE DATABASE
        drop()
        threads = [threading.Thread(target=create) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with autocommit_connection(admin) as conn:
            assert fetch(conn, "SELECT count(*) FROM pg_database WHERE datname = %s", (name,)) == [(1,)]
    drop()
    assert failures == []


def test_a_full_disk_while_saving_an_artifact_registers_nothing_and_leaves_no_folder(
        settings, pg, tiny_tfidf_dir, monkeypatch):
    from conftest import register_tiny

    def half_written(source, destination):
        destination.mkdir(parents=True, exist_ok=True)
        (destination / "model.safetensors").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage, "upload_tree", half_written)
    with pytest.raises(OSError) as raised:
        register_tiny(settings, tiny_tfidf_dir)
    assert is_final(raised.value)
    assert fetch(pg, "SELECT count(*) FROM textclf.model_versions") == [(0,)]
    root = registry.artifact_root(settings)
    assert not root.exists() or list(root.iterdir()) == []
    monkeypatch.undo()
    assert register_tiny(settings, tiny_tfidf_dir) >= 1  # the retry (after space is freed) succeeds


# --- the trigger conf --------------------------------------------------------------------------


KNOWN = ["candidates", "max_train_rows", "bert_max_train_rows", "bert_checkpoint", "dry_run"]


@pytest.mark.parametrize(("conf", "message"), [
    ({"max_train_rowz": 100}, "unknown run conf key 'max_train_rowz'"),
    ({"max_train_rows": 1e23}, "not a whole number of rows"),
    ({"bert_max_train_rows": 5}, "not a whole number of rows"),
    ({"max_train_rows": True}, "not a whole number of rows"),
    ({"bert_checkpoint": "../../../../etc"}, "is not a hub id"),
    ({"bert_checkpoint": "/root/models"}, "is not a hub id"),
])
def test_the_run_conf_is_checked_before_anything_runs(conf, message):
    with pytest.raises(InputError, match=message) as raised:
        check_run_conf(conf, KNOWN)
    assert is_final(raised.value)


def test_a_valid_run_conf_passes():
    check_run_conf({"max_train_rows": 5000, "bert_checkpoint": "bert-base-uncased", "dry_run": True}, KNOWN)
    check_run_conf({"bert_checkpoint": "google-bert/bert-base-uncased", "candidates": ["tfidf"]}, KNOWN)


def test_settings_for_an_unreachable_database_give_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tasks.cli", "champion"], capture_output=True, text=True,
                         env={**os.environ, "TEXTCLF_HOME": str(tmp_path),
                              "TEXTCLF_DATABASE_URL": "postgresql://u:s3cret@127.0.0.1:9/x"}, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "cannot reach the database" in out.stderr and "s3cret" not in out.stderr



def test_markup_in_a_label_is_escaped_in_the_data_docs(tmp_path):
    from tasks.config import REPO_ROOT
    from tasks.validate import ValidationParams, validate_snapshot

    xss = "</script><script>alert(document.domain)</script>"
    frame = pd.DataFrame([{"id": f"r{i}", "text": f"text {i} <b>bold</b>", "label": ["pos", "neg", xss][i % 3],
                           "labelled_at": END - timedelta(hours=1), "split": "train", "is_new": True,
                           "weight": float("nan"), "row_hash": f"h{i}"} for i in range(40)])
    outcome = validate_snapshot(frame, ValidationParams(label_set=["pos", "neg"], interval_end=END),
                                REPO_ROOT / "expectations", tmp_path)
    pages = [p.read_text() for p in tmp_path.rglob("*.html")]
    assert outcome.data_docs_path is not None and len(pages) >= 2
    assert not any("<script>alert(" in page for page in pages)  # GX alone leaves it raw
    assert any("&lt;script&gt;alert(" in page for page in pages)
