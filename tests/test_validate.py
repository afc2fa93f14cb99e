import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import ValidationThresholds
from tasks.validate import ValidationOutcome, ValidationParams, load_suite, validate_snapshot

SUITES = Path(__file__).resolve().parents[1] / "expectations"
END = datetime(2024, 6, 2, tzinfo=UTC)
LABELS = ["positive", "negative", "neutral"]
N_OLD, N_NEW = 300, 200

NOT_NULL = "expect_column_values_to_not_be_null"
NOT_BLANK = "expect_column_values_to_not_match_regex"
LENGTH = "expect_column_value_lengths_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
UNIQUE = "expect_column_values_to_be_unique"
BEFORE_END = "expect_column_values_to_be_between"
ROW_COUNT = "expect_table_row_count_to_be_between"
DRIFT = "expect_column_kl_divergence_to_be_less_than"
MEAN = "expect_column_mean_to_be_between"

# keys of ValidationOutcome.results
BLANK_RESULT = f"labelled_rows.{NOT_BLANK}.text"
IN_SET_RESULT = f"labelled_rows.{IN_SET}.label"
ROW_COUNT_RESULT = f"labelled_batch.{ROW_COUNT}"
DRIFT_RESULT = f"labelled_batch.{DRIFT}.label"
CONFLICT_RESULT = f"labelled_batch.{MEAN}.is_conflicting"
DUPLICATE_RESULT = f"labelled_batch.{MEAN}.is_duplicate"


def make_snapshot(n_old=N_OLD, n_new=N_NEW, labels=LABELS, int_ids=False):
    """Unique texts, labels round-robin (so old and new rows share one distribution)."""
    rows = []
    for i in range(n_old + n_new):
        new = i >= n_old
        age = timedelta(hours=1, seconds=i) if new else timedelta(days=2, seconds=i)
        rows.append(
            {
                "id": i if int_ids else f"r{i}",
                "text": f"Sample text number {i} with a few words",
                "label": labels[i % len(labels)],
                "labelled_at": END - age,
                "split": ("train", "validation", "test")[(i // len(labels)) % 3],  # every label in each
                "is_new": new,
            }
        )
    return pd.DataFrame(rows)


def rid(i):
    return f"r{i}"


def run(snapshot, data_docs_dir=None, label_set=LABELS, **overrides) -> ValidationOutcome:
    thresholds = ValidationThresholds(**{k: v for k, v in overrides.items() if k != "allow_new_labels"})
    params = ValidationParams(label_set=label_set, interval_end=END, thresholds=thresholds,
                              allow_new_labels=overrides.get("allow_new_labels", False))
    return validate_snapshot(snapshot, params, SUITES, data_docs_dir)


def observed(outcome, key):
    return outcome.results[key]["observed_value"]


def failed(outcome):
    return {key for key, r in outcome.results.items() if r["success"] is False}


def assert_nothing_lost(outcome, snapshot):
    clean_ids = set(outcome.clean["id"])
    assert clean_ids.isdisjoint(outcome.quarantined_ids)
    assert clean_ids | outcome.quarantined_ids == set(snapshot["id"])
    quarantined_rows = snapshot["id"].isin(outcome.quarantined_ids).sum()
    assert len(outcome.clean) + quarantined_rows == len(snapshot)


def _set(snapshot, i, column, value):
    snapshot.at[i, column] = value


@pytest.mark.parametrize("int_ids", [False, True])
def test_clean_snapshot_passes(int_ids):
    snapshot = make_snapshot(int_ids=int_ids)
    outcome = run(snapshot)

    assert outcome.status == "passed"
    assert (outcome.new_rows, outcome.snapshot_rows) == (N_NEW, N_OLD + N_NEW)
    assert outcome.quarantined == [] and outcome.failures == []
    pd.testing.assert_frame_equal(outcome.clean, snapshot)
    assert outcome.results and all(r["success"] for r in outcome.results.values())
    assert observed(outcome, ROW_COUNT_RESULT) == N_NEW
    assert outcome.data_docs_path is None
    json.dumps(outcome.results)  # the caller stores it as jsonb


def test_suites_are_static_json_with_runtime_parameters():
    rows = load_suite(SUITES / "labelled_rows.json")
    batch = load_suite(SUITES / "labelled_batch.json")

    assert set(rows.suite_parameter_options) == {
        "label_set",
        "interval_end",
        "min_text_length",
        "max_text_length",
        "blank_pattern",  # tasks.normalize's one definition of blank, as a regular expression
    }
    assert set(batch.suite_parameter_options) == {
        "min_new_rows",
        "label_partition",
        "max_label_drift",
        "max_conflict_share",
        "max_duplicate_share",
    }
    assert len(type(rows)(**rows.to_json_dict()).expectations) == len(rows.expectations) == 10


# Each case: rows to break (one old and one new unless noted), the bad value, the expectation
# that must quarantine exactly those rows, and the resulting batch status.
AFTER_END = pd.Timestamp(END) + timedelta(days=3)
ROW_FAILURES = {
    "null text": ([3, 305], "text", None, NOT_NULL, "passed"),
    "blank text": ([4, 306], "text", "  \n\t ", NOT_BLANK, "passed"),
    "newlines only": ([5, 307], "text", "\n\n", NOT_BLANK, "passed"),
    "too long": ([6, 308], "text", "x" * 20_001, LENGTH, "passed"),
    "null label": ([7, 309], "label", None, NOT_NULL, "passed"),
    # label-in-set has mostly=1.0: one unknown label among the new rows fails the batch
    "unknown label": ([8, 310], "label", "angry", IN_SET, "failed"),
    # rows labelled at or after the interval end are never new
    "labelled at interval end": ([9, 10], "labelled_at", pd.Timestamp(END), BEFORE_END, "passed"),
    "labelled after interval end": ([11], "labelled_at", AFTER_END, BEFORE_END, "passed"),
    # label weights from a source table: NULL means 1, negative or infinite ones are refused
    "negative weight": ([12, 311], "weight", -0.5, BEFORE_END, "passed"),
    "infinite weight": ([13, 312], "weight", float("inf"), BEFORE_END, "passed"),
}


@pytest.mark.parametrize("case", ROW_FAILURES, ids=list(ROW_FAILURES))
def test_row_failure_quarantines_exactly_the_bad_rows(case):
    positions, column, value, expectation, status = ROW_FAILURES[case]
    snapshot = make_snapshot()
    if column == "weight":
        snapshot["weight"] = 1.0  # a source with weights: mostly counts among the rows that have one
    for i in positions:
        _set(snapshot, i, column, value)

    outcome = run(snapshot)

    assert {q.row_id for q in outcome.quarantined} == {rid(i) for i in positions}
    assert len(outcome.quarantined) == len(positions)
    for q in outcome.quarantined:
        assert (q.expectation, q.column) == (expectation, column)
        assert q.reason.startswith(f"{expectation} failed on field '{column}': ")
    assert outcome.status == status
    assert_nothing_lost(outcome, snapshot)


def test_quarantined_row_carries_value_and_readable_reason():
    snapshot = make_snapshot()
    _set(snapshot, 8, "label", "angry")
    _set(snapshot, 9, "labelled_at", pd.Timestamp(END) + timedelta(hours=2))

    by_id = {q.row_id: q for q in run(snapshot).quarantined}

    assert by_id[rid(8)].value == "angry"
    assert by_id[rid(8)].reason == (
        "expect_column_values_to_be_in_set failed on field 'label': "
        "'angry' is not in the label set ['positive', 'negative', 'neutral']"
    )
    assert by_id[rid(9)].value == END + timedelta(hours=2)
    assert by_id[rid(9)].reason.endswith(
        "'labelled_at': 2024-06-02T02:00:00+00:00 is not before 2024-06-02T00:00:00+00:00"
    )


def test_row_just_before_interval_end_is_kept():
    snapshot = make_snapshot()
    _set(snapshot, 12, "labelled_at", pd.Timestamp(END) - timedelta(microseconds=1))
    assert run(snapshot).quarantined == []


def test_duplicate_id_quarantines_every_row_with_that_id():
    snapshot = make_snapshot()
    _set(snapshot, 310, "id", rid(3))  # a new row reusing an old row's id

    outcome = run(snapshot)

    entries = [(q.row_id, q.expectation, q.column) for q in outcome.quarantined]
    assert entries == [(rid(3), UNIQUE, "id")] * 2
    assert rid(3) not in set(outcome.clean["id"])
    assert len(outcome.clean) == len(snapshot) - 2
    assert outcome.status == "passed"
    assert_nothing_lost(outcome, snapshot)


def test_row_failing_two_expectations_is_quarantined_once_per_expectation():
    snapshot = make_snapshot()
    _set(snapshot, 3, "text", "")  # blank and shorter than min_text_length

    outcome = run(snapshot)

    entries = sorted((q.row_id, q.expectation) for q in outcome.quarantined)
    assert entries == [(rid(3), LENGTH), (rid(3), NOT_BLANK)]
    assert len(outcome.clean) == len(snapshot) - 1


def test_mostly_blank_new_texts_fail_the_batch_and_lose_nothing():
    snapshot = make_snapshot(n_new=100)
    blank = list(range(N_OLD, N_OLD + 60))
    snapshot.loc[blank, "text"] = "   "

    outcome = run(snapshot)

    assert outcome.status == "failed"
    assert failed(outcome) == {BLANK_RESULT}
    [message] = outcome.failures
    assert message.startswith(
        f"{NOT_BLANK} failed on field 'text': observed 60.0% unexpected (60 of 100 new rows), "
        "at most 10.0% allowed (mostly=0.9)"
    )
    assert outcome.results[BLANK_RESULT]["unexpected_count"] == 60
    assert outcome.quarantined_ids == {rid(i) for i in blank}
    assert_nothing_lost(outcome, snapshot)


def test_a_few_blank_new_texts_are_only_quarantined():
    snapshot = make_snapshot(n_new=100)
    snapshot.loc[[N_OLD, N_OLD + 1, N_OLD + 2], "text"] = " "

    outcome = run(snapshot)

    assert outcome.status == "passed"
    assert len(outcome.quarantined) == 3


def test_label_outside_the_set_fails_naming_it():
    snapshot = make_snapshot()
    snapshot.loc[[N_OLD + 1, N_OLD + 4], "label"] = "angry"

    outcome = run(snapshot)

    assert outcome.status == "failed"
    assert failed(outcome) == {IN_SET_RESULT}
    [message] = outcome.failures
    assert message.startswith(
        f"{IN_SET} failed on field 'label': observed 1.0% unexpected (2 of 200 new rows)"
    )
    assert "unexpected values 'angry'" in message
    assert outcome.new_labels == []


def test_allow_new_labels_accepts_and_reports_them():
    snapshot = make_snapshot()
    snapshot.loc[[N_OLD + 1, N_OLD + 4], "label"] = "angry"
    snapshot.loc[[5], "label"] = "bored"

    outcome = run(snapshot, allow_new_labels=True)

    assert outcome.status == "passed", outcome.failures
    assert outcome.new_labels == ["angry", "bored"]
    assert outcome.quarantined == []
    assert outcome.results[IN_SET_RESULT]["success"] is True


@pytest.mark.parametrize(("min_new_rows", "status"), [(N_NEW, "passed"), (N_NEW + 1, "failed")])
def test_min_new_rows(min_new_rows, status):
    outcome = run(make_snapshot(), min_new_rows=min_new_rows)

    assert outcome.status == status
    if status == "failed":
        assert outcome.failures == [
            f"{ROW_COUNT} failed: observed value {N_NEW}, expected at least {N_NEW + 1}"
        ]


def test_label_drift_fails_with_observed_divergence():
    snapshot = make_snapshot()
    snapshot.loc[snapshot["is_new"], "label"] = "positive"

    outcome = run(snapshot)

    assert outcome.status == "failed"
    assert failed(outcome) == {DRIFT_RESULT}
    # all mass on one of three balanced labels: KL = ln 3
    assert observed(outcome, DRIFT_RESULT) == pytest.approx(math.log(3), abs=1e-6)
    [message] = outcome.failures
    assert message.startswith(
        f"{DRIFT} failed on field 'label': observed KL divergence 1.0986, expected at most 0.5"
    )
    assert "positive: 1.00" in message


def test_label_drift_threshold_is_a_parameter():
    snapshot = make_snapshot()
    # new rows: "negative" relabelled "positive" -> about (2/3, 0, 1/3), KL = 2/3 ln 2 ~ 0.46
    new = snapshot.index[snapshot["is_new"]]
    snapshot.loc[new[new % 3 == 1], "label"] = "positive"

    outcome = run(snapshot)

    assert observed(outcome, DRIFT_RESULT) == pytest.approx(2 / 3 * math.log(2), abs=0.01)
    assert outcome.status == "passed"
    assert run(snapshot, max_label_drift=0.4).status == "failed"


def test_drift_is_skipped_without_older_rows():
    outcome = run(make_snapshot(n_old=0))

    assert outcome.status == "passed"
    assert outcome.results[DRIFT_RESULT]["success"] is None


def _copy_old_texts(snapshot, new_positions, same_label):
    """Give new rows the text of an older row, re-cased and re-spaced (equal once normalised)."""
    for i in new_positions:
        j = i - N_OLD + (0 if same_label else 1)  # labels are round-robin over 3, N_OLD % 3 == 0
        _set(snapshot, i, "text", snapshot.at[j, "text"].upper().replace(" ", "  \n "))


@pytest.mark.parametrize(("conflicting", "status"), [(4, "passed"), (20, "failed")])
def test_conflicting_label_share(conflicting, status):
    snapshot = make_snapshot()
    _copy_old_texts(snapshot, range(N_OLD, N_OLD + conflicting), same_label=False)

    outcome = run(snapshot)

    assert observed(outcome, CONFLICT_RESULT) == pytest.approx(conflicting / N_NEW)
    assert outcome.status == status
    if status == "failed":
        assert failed(outcome) == {CONFLICT_RESULT}
        assert outcome.failures == [
            f"{MEAN} failed on field 'is_conflicting': observed value 0.1, "
            "expected between 0.0 and 0.05"
        ]


@pytest.mark.parametrize(("duplicates", "status"), [(40, "passed"), (60, "failed")])
def test_duplicate_text_share(duplicates, status):
    snapshot = make_snapshot()
    _copy_old_texts(snapshot, range(N_OLD, N_OLD + duplicates), same_label=True)

    outcome = run(snapshot)

    assert observed(outcome, DUPLICATE_RESULT) == pytest.approx(duplicates / N_NEW)
    assert observed(outcome, CONFLICT_RESULT) == 0
    assert outcome.status == status
    if status == "failed":
        assert failed(outcome) == {DUPLICATE_RESULT}
        assert outcome.failures == [
            f"{MEAN} failed on field 'is_duplicate': observed value 0.3, "
            "expected between 0.0 and 0.2"
        ]
    assert outcome.quarantined == []  # a batch-level concern: no row is dropped


def test_duplicates_among_new_rows_count_all_but_the_first():
    snapshot = make_snapshot()
    snapshot.loc[N_OLD : N_OLD + 9, "text"] = "the same new text"

    outcome = run(snapshot)

    assert observed(outcome, DUPLICATE_RESULT) == pytest.approx(9 / N_NEW)
    assert observed(outcome, CONFLICT_RESULT) == pytest.approx(10 / N_NEW)  # labels differ


def test_no_new_rows_is_not_a_failure():
    snapshot = make_snapshot(n_new=0)
    _set(snapshot, 3, "text", None)

    outcome = run(snapshot, min_new_rows=10)

    assert outcome.status == "no_new_data"
    assert outcome.new_rows == 0 and outcome.failures == []
    assert outcome.quarantined_ids == {rid(3)}  # the snapshot is still checked row by row
    assert_nothing_lost(outcome, snapshot)


@pytest.mark.parametrize("n_classes", [2, 50])
def test_label_sets_from_2_to_50_classes(n_classes):
    labels = [f"class {i:02d}" for i in range(n_classes)]
    snapshot = make_snapshot(n_old=30 * n_classes, n_new=20 * n_classes, labels=labels)
    _set(snapshot, 1, "label", "not a class")

    outcome = run(snapshot, label_set=labels)

    assert outcome.status == "passed", outcome.failures
    [q] = outcome.quarantined
    assert (q.row_id, q.expectation) == (rid(1), IN_SET)
    if n_classes == 50:
        assert q.reason.endswith("'class 09', ... (50 labels)]")
    assert observed(outcome, DRIFT_RESULT) < 0.01


def test_multi_line_and_20k_char_texts_pass():
    snapshot = make_snapshot()
    snapshot.loc[[0, N_OLD], "text"] = "First line\n\n   \nthird line\r\n\tindented\n"
    long_text = ("word " * 4_000)[:19_999] + "!"
    assert len(long_text) == 20_000
    snapshot.loc[[1, N_OLD + 1], "text"] = long_text
    _set(snapshot, N_OLD + 2, "text", "line\n" * 4_000)

    outcome = run(snapshot)

    assert outcome.quarantined == []
    assert outcome.status == "passed", outcome.failures
    assert outcome.clean["text"].str.len().max() == 20_000


def test_data_docs_site_is_built_in_the_given_directory_only(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    docs = tmp_path / "docs"
    snapshot = make_snapshot()
    _set(snapshot, N_OLD, "text", "  ")

    outcome = run(snapshot, data_docs_dir=docs)

    assert outcome.data_docs_path == docs.resolve() / "index.html"
    assert outcome.data_docs_path.is_file()
    index = outcome.data_docs_path.read_text(encoding="utf-8")
    assert "labelled_rows" in index and "labelled_batch" in index
    pages = sorted(p.relative_to(docs).parts[:2] for p in (docs / "validations").rglob("*.html"))
    assert pages == [("validations", "labelled_batch"), ("validations", "labelled_rows")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "docs"]
    assert list(cwd.iterdir()) == []


def test_invalid_inputs_are_rejected_early():
    with pytest.raises(ValueError, match="timezone-aware"):
        ValidationParams(label_set=LABELS, interval_end=datetime(2024, 6, 2))
    with pytest.raises(ValueError, match="missing columns"):
        run(make_snapshot().drop(columns=["is_new"]))
