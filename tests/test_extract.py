"""Interval extraction: boundaries, frozen splits, fingerprints, chunked reading."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tasks import db
from tasks.config import SplitOptions
from tasks.extract import (
    SCHEME_V1,
    SCHEME_V2,
    SPLIT_SCHEME,
    extract_snapshot,
    normalize_text,
    read_snapshot,
    scheme_options,
    split_key_text,
    split_of,
    split_scheme,
    split_under_scheme,
)
from tasks.importer import CsvOptions, Record, import_records

START = datetime(2026, 11, 18, 2, tzinfo=UTC)
END = datetime(2026, 11, 19, 2, tzinfo=UTC)


def load(settings, rows):
    """rows: (id, text, label, labelled_at)"""
    header = ["id", "text", "label", "labelled_at"]
    records = (
        Record(n, dict(zip(header, [str(i), text, label, ts.isoformat()], strict=True)))
        for n, (i, text, label, ts) in enumerate(rows, start=2)
    )
    with db.connect(settings) as conn:
        import_records(conn, settings, "labelled", header, records, CsvOptions(), source="test")


def test_interval_boundaries_start_inclusive_end_exclusive(settings, tmp_path):
    load(settings, [
        (1, "old", "a", START - timedelta(days=3)),
        (2, "at start", "b", START),
        (3, "inside", "a", START + timedelta(hours=5)),
        (4, "just before end", "b", END - timedelta(microseconds=1)),
        (5, "at end", "a", END),
        (6, "future", "b", END + timedelta(days=1)),
    ])
    snapshot = extract_snapshot(settings, START, END, tmp_path / "s.parquet")
    frame = read_snapshot(snapshot.path)
    assert sorted(frame["id"].astype(int)) == [1, 2, 3, 4]
    assert sorted(frame.loc[frame["is_new"], "id"].astype(int)) == [2, 3, 4]
    assert (snapshot.snapshot_rows, snapshot.new_rows) == (4, 3)
    assert snapshot.fingerprint["max_id"] == "4"


def test_snapshot_window_limits_history(settings, tmp_path):
    load(settings, [
        (1, "very old", "a", END - timedelta(days=40)),
        (2, "recent", "b", END - timedelta(days=2)),
        (3, "new", "a", START + timedelta(hours=1)),
    ])
    windowed = settings.__class__(**{**settings.__dict__, "snapshot_window_days": 30})
    frame = read_snapshot(extract_snapshot(windowed, START, END, tmp_path / "w.parquet").path)
    assert sorted(frame["id"].astype(int)) == [2, 3]


def test_splits_are_frozen_as_data_grows(settings, tmp_path):
    day = timedelta(days=1)
    load(settings, [(i, f"text {i}", "ab"[i % 2], START - day) for i in range(1, 501)])
    first = read_snapshot(extract_snapshot(settings, START, END, tmp_path / "1.parquet").path)
    load(settings, [(i, f"text {i}", "ab"[i % 2], START + day) for i in range(501, 1001)])
    later_end = END + 2 * day
    second = read_snapshot(
        extract_snapshot(settings, START + day, later_end, tmp_path / "2.parquet").path
    )
    before = dict(zip(first["id"], first["split"], strict=True))
    after = dict(zip(second["id"], second["split"], strict=True))
    assert len(after) == 1000
    assert all(after[i] == split for i, split in before.items())
    shares = second["split"].value_counts(normalize=True)
    assert 0.75 < shares["train"] < 0.85 and 0.05 < shares["test"] < 0.15
    assert second["split"].tolist() == [split_of(t) for t in second["text"]]


@given(st.text(st.characters(codec="latin-1"), min_size=1, max_size=40).filter(str.strip),
       st.integers(1, 10**9), st.integers(1, 10**9))
@hsettings(max_examples=200, deadline=None)
def test_identical_texts_share_a_split_whatever_their_ids_case_and_spacing(text, id_a, id_b):
    variant = "  " + text.upper().replace(" ", "\n\t ") + " "
    assert split_of(text, id_a) == split_of(variant, id_b)
    assert split_of(None, id_a) == split_of(None, str(id_a))  # no text: the id decides


def test_no_text_is_in_two_splits_of_a_snapshot(settings, tmp_path):
    # 400 distinct texts, each labelled 3 times under different ids (re-annotations, copies),
    # once in capitals with extra spaces.
    spellings = ["text number {}", "TEXT  NUMBER {} ", "text number {}"]
    rows = [(n * 3 + k + 1, spelling.format(n), "ab"[n % 2], START - timedelta(hours=k + 1))
            for n in range(400) for k, spelling in enumerate(spellings)]
    load(settings, rows)
    snapshot = extract_snapshot(settings, START, END, tmp_path / "s.parquet")
    frame = read_snapshot(snapshot.path)
    splits_per_text = frame.assign(norm=frame["text"].map(normalize_text)).groupby("norm")["split"].nunique()
    assert len(splits_per_text) == 400 and (splits_per_text == 1).all()
    assert snapshot.fingerprint["split_scheme"] == SPLIT_SCHEME


def test_fingerprint_changes_with_content_and_reading_is_chunked(settings, tmp_path):
    load(settings, [(i, f"text {i}", "ab"[i % 2], START - timedelta(hours=i)) for i in range(1, 51)])
    one = extract_snapshot(settings, START, END, tmp_path / "a.parquet", chunk_rows=7)
    two = extract_snapshot(settings, START, END, tmp_path / "b.parquet", chunk_rows=50)
    assert one.fingerprint == two.fingerprint and one.snapshot_rows == 50
    assert read_snapshot(one.path).equals(read_snapshot(two.path))
    load(settings, [(7, "relabelled text", "a", START - timedelta(hours=7))])
    three = extract_snapshot(settings, START, END, tmp_path / "c.parquet")
    assert three.fingerprint["sha256"] != one.fingerprint["sha256"]


def test_rows_quarantined_by_validation_are_not_extracted(settings, tmp_path):
    load(settings, [(1, "keep", "a", START), (2, "drop", "b", START)])
    with db.connect(settings) as conn, conn, conn.cursor() as cur:
        db.quarantine_rows(cur, [{
            "stage": "validation", "source": "textclf.labelled_texts", "source_row": "2",
            "reason": "test", "raw": {},
        }])
    frame = read_snapshot(extract_snapshot(settings, START, END, tmp_path / "q.parquet").path)
    assert frame["id"].tolist() == ["1"]


WORDS = st.text(st.characters(codec="latin-1", categories=("Ll", "Lu", "Nd")), min_size=1, max_size=12)


@given(st.lists(WORDS, min_size=1, max_size=8), st.sampled_from(["bob", "Some_User1"]),
       st.sampled_from(["http://t.co/abc", "https://example.com/a?b=1", "www.site.org/x"]),
       st.sampled_from(["!", "...", " ,", "?!", ""]))
@hsettings(max_examples=200, deadline=None)
def test_retweets_link_and_punctuation_variants_share_a_split(words, user, url, punctuation):
    text = " ".join(words)
    variants = [f"RT @{user}: {text}", f"{text} {url}", f"@{user} {text}{punctuation}",
                f"rt @{user} {text} {url}{punctuation}", f"{text.upper()} {url}"]
    assert {split_key_text(v) for v in variants} == {split_key_text(text)}
    assert {split_of(v, i) for i, v in enumerate(variants)} == {split_of(text, 99)}


def test_each_option_removes_only_its_own_noise():
    text = "RT @ann: Great, game! http://t.co/x @bob"
    off = SplitOptions(remove_retweet_marker=False, remove_urls=False, remove_mentions=False,
                       remove_punctuation=False)
    assert split_key_text(text, off) == normalize_text(text)
    assert split_key_text(text, replace(off, remove_retweet_marker=True)) == "great, game! http://t.co/x @bob"
    assert split_key_text(text, replace(off, remove_urls=True)) == "rt @ann: great, game! @bob"
    assert split_key_text(text, replace(off, remove_mentions=True)) == "rt : great, game! http://t.co/x"
    assert split_key_text(text, SplitOptions()) == "great game"
    assert split_key_text("rtfm, people") == "rtfm people"  # a word that starts with rt stays
    assert split_key_text("http://t.co/only @someone") == "http://t.co/only @someone"  # nothing left


def test_scheme_names_encode_the_options_and_all_off_is_v2():
    assert SPLIT_SCHEME == "near-duplicate-text-sha256-v3:rt,urls,mentions,punct"
    for options in (SplitOptions(), SplitOptions(remove_punctuation=False),
                    SplitOptions(remove_urls=False, remove_mentions=False)):
        assert scheme_options(split_scheme(options)) == options
    off = scheme_options(SCHEME_V2)
    assert off is not None and split_scheme(off) == SCHEME_V2
    assert scheme_options(None) is None and scheme_options(SCHEME_V1) is None
    with pytest.raises(ValueError, match="unknown split scheme"):
        scheme_options("something-else")


def _reference_split(key: str) -> str:
    unit = int.from_bytes(hashlib.sha256(f"textclf-split:{key}".encode()).digest()[:8], "big") / 2**64
    return "train" if unit < 0.8 else "validation" if unit < 0.9 else "test"


@given(st.text(min_size=1, max_size=40).filter(str.strip), st.integers(1, 10**9))
@hsettings(max_examples=200, deadline=None)
def test_recorded_schemes_reproduce_the_splits_they_made(text, row_id):
    # v1 hashed the row id, v2 the normalised text: an old deployment's rows keep their old split.
    assert split_under_scheme(None, text, row_id) == _reference_split(str(row_id))
    assert split_under_scheme(SCHEME_V1, text, row_id) == _reference_split(str(row_id))
    assert split_under_scheme(SCHEME_V2, text, row_id) == _reference_split(f"text:{normalize_text(text)}")
    assert split_under_scheme(SPLIT_SCHEME, text, row_id) == split_of(text, row_id)


def test_the_split_options_of_the_settings_decide_the_splits_and_the_scheme(settings, tmp_path):
    texts = [f"RT @user{n}: tweet number {n}!" for n in range(300)]
    load(settings, [(n + 1, text, "ab"[n % 2], START - timedelta(hours=1)) for n, text in enumerate(texts)])
    v2 = replace(settings, split=scheme_options(SCHEME_V2))
    old = extract_snapshot(v2, START, END, tmp_path / "v2.parquet")
    new = extract_snapshot(settings, START, END, tmp_path / "v3.parquet")
    assert old.fingerprint["split_scheme"] == SCHEME_V2 and new.fingerprint["split_scheme"] == SPLIT_SCHEME
    assert read_snapshot(old.path)["split"].tolist() == [split_under_scheme(SCHEME_V2, t, 0) for t in texts]
    assert read_snapshot(new.path)["split"].tolist() == [_reference_split(f"text:tweet number {n}")
                                                         for n in range(300)]
