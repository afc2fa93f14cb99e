import json
import math
import time
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics

from support import KeywordModel
from tasks.calibration import softmax
from tasks.evaluate import (
    Comparison,
    EvaluationReport,
    ModelEvaluation,
    TextClassifier,
    bootstrap_indices,
    compare,
    directory_size_bytes,
    evaluate_all,
    evaluate_model,
    expected_calibration_error,
    grouped_calibration_error,
    mcnemar,
    paired_bootstrap,
    paired_bootstrap_macro_f1,
    reliability_bins,
)

# ---------------------------------------------------------------- tiny models


class NoisyKeywordModel:
    """Random-but-deterministic probabilities per text, tilted towards a keyword label."""

    kind = "noisy"

    def __init__(self, labels, tilt=1.0):
        self.labels = list(labels)
        self.tilt = tilt

    def predict_proba(self, texts):
        out = np.empty((len(texts), len(self.labels)))
        for row, text in enumerate(texts):
            rng = np.random.default_rng(zlib.crc32(text.encode()))
            scores = rng.dirichlet(np.ones(len(self.labels)))
            for column, label in enumerate(self.labels):
                if label in text.split():
                    scores[column] += self.tilt
            out[row] = scores / scores.sum()
        return out


class TableModel:
    """Returns a stored probability row for each known text."""

    kind = "table"

    def __init__(self, labels, rows):
        self.labels = list(labels)
        self.rows = rows

    def predict_proba(self, texts):
        return np.array([self.rows[text] for text in texts], dtype=float)


class SleepyModel(KeywordModel):
    """Keyword model that takes 1 ms per document and records its batch sizes."""

    kind = "sleepy"

    def __init__(self, labels):
        super().__init__(labels)
        self.batch_sizes = []

    def predict_proba(self, texts):
        self.batch_sizes.append(len(texts))
        time.sleep(0.001 * len(texts))
        return super().predict_proba(texts)


def synthetic_split(n_labels, n_rows, seed=0, keyword_share=0.7):
    """Texts that name their true label in `keyword_share` of rows, otherwise a random other word."""
    rng = np.random.default_rng(seed)
    labels = [f"label{i:02d}" for i in range(n_labels)]
    truth = rng.integers(0, n_labels, size=n_rows)
    texts, true_labels = [], []
    for row, label_index in enumerate(truth):
        named = labels[label_index] if rng.random() < keyword_share else labels[rng.integers(n_labels)]
        texts.append(f"doc{row} about {named}")
        true_labels.append(labels[label_index])
    return texts, true_labels, labels


# ---------------------------------------------------------------- bootstrap


def cyclic_errors(y_true, correct_share, n_labels):
    """Predictions right on the first `correct_share` of each class's rows, else the next class.

    Every class then has precision = recall = F1 = correct_share.
    """
    pred = (y_true + 1) % n_labels
    for label in range(n_labels):
        rows = np.flatnonzero(y_true == label)
        pred[rows[: int(round(correct_share * len(rows)))]] = label
    return pred


def slow_reference_bootstrap(y_true, pred_a, pred_b, n_labels, n_resamples, seed, confidence=0.95):
    """scikit-learn's macro-F1 with its default labels (the classes present as truth or
    prediction: textclf's definition, tasks/metrics.py), resample by resample."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_resamples):
        rows = bootstrap_indices(rng, len(y_true))
        f1_a = metrics.f1_score(y_true[rows], pred_a[rows], average="macro", zero_division=0)
        f1_b = metrics.f1_score(y_true[rows], pred_b[rows], average="macro", zero_division=0)
        diffs.append(f1_a - f1_b)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    diff = (metrics.f1_score(y_true, pred_a, average="macro", zero_division=0)
            - metrics.f1_score(y_true, pred_b, average="macro", zero_division=0))
    return diff, low, high


def test_bootstrap_interval_brackets_a_known_difference_and_excludes_zero():
    n_labels = 4
    y_true = np.random.default_rng(1).permutation(np.repeat(np.arange(n_labels), 250))
    pred_a = cyclic_errors(y_true, 0.9, n_labels)  # right on every row B gets right, plus 20% more
    pred_b = cyclic_errors(y_true, 0.7, n_labels)

    diff, low, high = paired_bootstrap_macro_f1(y_true, pred_a, pred_b, n_labels, n_resamples=1000, seed=0)

    assert diff == pytest.approx(0.2, abs=1e-12)
    assert 0.0 < low < 0.2 < high
    assert high - low < 0.1


def test_bootstrap_interval_includes_zero_for_nearly_identical_models():
    n_labels = 4
    y_true = np.random.default_rng(2).permutation(np.repeat(np.arange(n_labels), 250))
    pred_b = cyclic_errors(y_true, 0.8, n_labels)
    pred_a = pred_b.copy()
    wrong = np.flatnonzero(pred_b != y_true)[:5]
    right = np.flatnonzero(pred_b == y_true)[:5]
    pred_a[wrong] = y_true[wrong]  # A fixes five of B's errors ...
    pred_a[right] = (y_true[right] + 1) % n_labels  # ... and breaks five of its hits

    diff, low, high = paired_bootstrap_macro_f1(y_true, pred_a, pred_b, n_labels, n_resamples=1000, seed=0)

    assert abs(diff) < 0.01
    assert low < 0.0 < high


@pytest.mark.parametrize("n_labels, n_rows", [(2, 400), (50, 300)])
def test_fast_bootstrap_equals_slow_sklearn_reference(n_labels, n_rows):
    rng = np.random.default_rng(n_labels)
    y_true = rng.integers(0, n_labels, size=n_rows)
    # 50 labels over 300 rows: many resamples miss some classes entirely.
    pred_a = np.where(rng.random(n_rows) < 0.6, y_true, rng.integers(0, n_labels, size=n_rows))
    pred_b = np.where(rng.random(n_rows) < 0.5, y_true, rng.integers(0, n_labels, size=n_rows))

    fast = paired_bootstrap_macro_f1(y_true, pred_a, pred_b, n_labels, n_resamples=200, seed=7)
    slow = slow_reference_bootstrap(y_true, pred_a, pred_b, n_labels, n_resamples=200, seed=7)

    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)


def test_per_class_f1_of_every_resample_equals_sklearn():
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 4, size=150)
    pred_a = np.where(rng.random(150) < 0.7, y_true, rng.integers(0, 4, size=150))
    pred_b = np.where(rng.random(150) < 0.6, y_true, rng.integers(0, 4, size=150))
    resamples = paired_bootstrap(y_true, pred_a, pred_b, 4, n_resamples=40, seed=9)
    draw = np.random.default_rng(9)
    for r in range(40):
        rows = bootstrap_indices(draw, 150)
        for model, f1 in ((pred_a, resamples.class_f1_a[r]), (pred_b, resamples.class_f1_b[r])):
            expected = metrics.f1_score(y_true[rows], model[rows], labels=range(4), average=None,
                                        zero_division=0)
            np.testing.assert_allclose(f1, expected, rtol=0, atol=1e-12)
    draw = np.random.default_rng(9)
    expected_diffs = []
    for _ in range(40):
        rows = bootstrap_indices(draw, 150)
        expected_diffs.append(metrics.f1_score(y_true[rows], pred_a[rows], average="macro", zero_division=0)
                              - metrics.f1_score(y_true[rows], pred_b[rows], average="macro", zero_division=0))
    np.testing.assert_allclose(resamples.macro_f1_diffs, expected_diffs, rtol=0, atol=1e-12)


def test_fast_bootstrap_equals_reference_across_chunks(monkeypatch):
    import tasks.evaluate as evaluate

    monkeypatch.setattr(evaluate, "_BOOTSTRAP_CHUNK_ELEMENTS", 7 * 50)  # 7 resamples per chunk
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 3, size=50)
    pred_a = rng.integers(0, 3, size=50)
    pred_b = rng.integers(0, 3, size=50)

    fast = paired_bootstrap_macro_f1(y_true, pred_a, pred_b, 3, n_resamples=30, seed=11, confidence=0.9)
    slow = slow_reference_bootstrap(y_true, pred_a, pred_b, 3, n_resamples=30, seed=11, confidence=0.9)

    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    n_labels=st.integers(2, 6),
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
)
def test_fast_bootstrap_equals_reference_on_random_inputs(n_labels, data, seed):
    n_rows = data.draw(st.integers(1, 40))
    label = st.integers(0, n_labels - 1)
    y_true = np.array(data.draw(st.lists(label, min_size=n_rows, max_size=n_rows)))
    pred_a = np.array(data.draw(st.lists(label, min_size=n_rows, max_size=n_rows)))
    pred_b = np.array(data.draw(st.lists(label, min_size=n_rows, max_size=n_rows)))

    fast = paired_bootstrap_macro_f1(y_true, pred_a, pred_b, n_labels, n_resamples=15, seed=seed)
    slow = slow_reference_bootstrap(y_true, pred_a, pred_b, n_labels, n_resamples=15, seed=seed)

    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)


def slow_cluster_bootstrap(y_true, pred_a, pred_b, groups, n_labels, n_resamples, seed):
    """Draw keys (sorted, with replacement), take every row of each drawn key, score with sklearn."""
    rng = np.random.default_rng(seed)
    keys = sorted(set(groups))
    rows_of = {key: [i for i, g in enumerate(groups) if g == key] for key in keys}
    diffs = []
    for _ in range(n_resamples):
        rows = [i for k in bootstrap_indices(rng, len(keys)) for i in rows_of[keys[k]]]
        diffs.append(metrics.f1_score(y_true[rows], pred_a[rows], average="macro", zero_division=0)
                     - metrics.f1_score(y_true[rows], pred_b[rows], average="macro", zero_division=0))
    return np.array(diffs)


@settings(max_examples=25, deadline=None)
@given(n_labels=st.integers(2, 5), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_cluster_bootstrap_equals_a_loop_over_drawn_keys(n_labels, data, seed):
    n_rows = data.draw(st.integers(1, 40))
    label = st.integers(0, n_labels - 1)
    y_true, pred_a, pred_b = (np.array(data.draw(st.lists(label, min_size=n_rows, max_size=n_rows)))
                              for _ in range(3))
    groups = data.draw(st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f"]), min_size=n_rows, max_size=n_rows))
    fast = paired_bootstrap(y_true, pred_a, pred_b, n_labels, n_resamples=15, seed=seed, groups=groups)
    slow = slow_cluster_bootstrap(y_true, pred_a, pred_b, groups, n_labels, 15, seed)
    np.testing.assert_allclose(fast.macro_f1_diffs, slow, rtol=0, atol=1e-12)


def test_distinct_keys_make_the_cluster_bootstrap_the_row_bootstrap():
    rng = np.random.default_rng(2)
    y_true, pred_a, pred_b = (rng.integers(0, 3, size=120) for _ in range(3))
    rows = paired_bootstrap(y_true, pred_a, pred_b, 3, n_resamples=50, seed=4)
    keyed = paired_bootstrap(y_true, pred_a, pred_b, 3, n_resamples=50, seed=4, groups=[f"t{i:03d}" for i in range(120)])
    np.testing.assert_array_equal(rows.macro_f1_diffs, keyed.macro_f1_diffs)


def test_copies_of_texts_need_the_cluster_bootstrap_to_keep_the_interval_honest():
    """Simulation: 150 distinct texts, each in the test split 8 times (same truth, same
    predictions), two equally good models. The 95% interval of the difference should miss the
    true difference 0 about 5% of the time; resampling rows treats each copy as new evidence."""
    n_labels, texts, copies, trials = 3, 150, 8, 200
    misses = {"rows": 0, "texts": 0}
    groups = np.repeat(np.arange(texts), copies)
    for trial in range(trials):
        rng = np.random.default_rng(trial)
        truth = rng.integers(0, n_labels, size=texts)
        right_a, right_b = rng.random(texts) < 0.7, rng.random(texts) < 0.7  # equally good
        pred_a = np.where(right_a, truth, (truth + 1) % n_labels)
        pred_b = np.where(right_b, truth, (truth + 2) % n_labels)
        y, a, b = truth[groups], pred_a[groups], pred_b[groups]
        for unit, keys in (("rows", None), ("texts", groups)):
            resamples = paired_bootstrap(y, a, b, n_labels, n_resamples=300, seed=trial, groups=keys)
            low, high = np.percentile(resamples.macro_f1_diffs, [2.5, 97.5])
            true_diff = 0.0
            misses[unit] += not low <= true_diff <= high
    assert misses["texts"] / trials <= 0.10  # nominal 0.05
    assert misses["rows"] / trials >= 0.30  # copies counted as independent rows


def test_bootstrap_depends_only_on_seed():
    rng = np.random.default_rng(4)
    y_true = rng.integers(0, 3, size=200)
    pred_a = np.where(rng.random(200) < 0.7, y_true, 0)
    pred_b = np.where(rng.random(200) < 0.6, y_true, 1)

    first = paired_bootstrap_macro_f1(y_true, pred_a, pred_b, 3, n_resamples=300, seed=5)
    again = paired_bootstrap_macro_f1(y_true, pred_a, pred_b, 3, n_resamples=300, seed=5)
    other = paired_bootstrap_macro_f1(y_true, pred_a, pred_b, 3, n_resamples=300, seed=6)

    assert first == again
    assert first[1:] != other[1:]
    assert first[0] == other[0]


def test_bootstrap_rejects_mismatched_inputs():
    with pytest.raises(ValueError):
        paired_bootstrap_macro_f1([0, 1], [0, 1, 1], [0, 1], 2)
    with pytest.raises(ValueError):
        paired_bootstrap_macro_f1([0, 1], [0, 1], [0, 1], 2, confidence=1.0)
    with pytest.raises(ValueError, match="indices"):
        paired_bootstrap_macro_f1([0, 2], [0, 1], [0, 1], 2)


# ---------------------------------------------------------------- McNemar


def paired_predictions(both_right, only_a_right, only_b_right, both_wrong):
    """Binary-label predictions with the given counts of each correctness pattern."""
    counts = [both_right, only_a_right, only_b_right, both_wrong]
    a_right = np.repeat([True, True, False, False], counts)
    b_right = np.repeat([True, False, True, False], counts)
    y_true = np.zeros(sum(counts), dtype=int)
    return y_true, np.where(a_right, 0, 1), np.where(b_right, 0, 1)


def test_mcnemar_exact_binomial_for_few_discordant_pairs():
    y_true, pred_a, pred_b = paired_predictions(both_right=40, only_a_right=2, only_b_right=8, both_wrong=5)

    statistic, p_value, b, c = mcnemar(y_true, pred_a, pred_b)

    # Two-sided exact test: 2 * P(X <= 2), X ~ Binomial(10, 1/2) = 2 * (1 + 10 + 45) / 1024.
    assert (b, c) == (2, 8)
    assert statistic == 2.0
    assert p_value == pytest.approx(112 / 1024, rel=1e-12)


def brute_force_mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact McNemar by summing binomial probabilities with exact integers."""
    n, k = b + c, min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)


def test_mcnemar_is_exact_for_every_count():
    for b, c in [(13, 13), (30, 10), (21, 4), (0, 7), (120, 95), (400, 390)]:
        statistic, p_value, got_b, got_c = mcnemar(*paired_predictions(5, b, c, 3))
        assert (got_b, got_c, statistic) == (b, c, min(b, c))
        assert p_value == pytest.approx(brute_force_mcnemar_p(b, c), rel=1e-9), (b, c)
    # The continuity-corrected chi-square gave 0.845 here; equal counts are no evidence at all.
    assert mcnemar(*paired_predictions(0, 13, 13, 0))[1] == 1.0


@given(st.integers(0, 300), st.integers(0, 300))
@settings(max_examples=200, deadline=None)
def test_mcnemar_agrees_with_scipy_binomtest(b, c):
    from scipy.stats import binomtest

    p_value = mcnemar(*paired_predictions(1, b, c, 1))[1]
    expected = 1.0 if b + c == 0 else binomtest(min(b, c), b + c, 0.5).pvalue
    assert p_value == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert 0.0 <= p_value <= 1.0


def test_mcnemar_without_discordant_pairs_is_not_significant():
    assert mcnemar(*paired_predictions(10, 0, 0, 3)) == (0.0, 1.0, 0, 0)


# ---------------------------------------------------------------- evaluate_model


@pytest.mark.parametrize("n_labels", [2, 50])
def test_evaluate_model_metrics_match_sklearn(n_labels):
    texts, true_labels, labels = synthetic_split(n_labels, n_rows=600, seed=n_labels)
    model = NoisyKeywordModel(labels)

    evaluation = evaluate_model("noisy", model, texts, true_labels, labels, batch_size=64)

    y_true = np.array([labels.index(label) for label in true_labels])
    y_pred = np.array(evaluation.predictions)
    probabilities = model.predict_proba(texts)
    every_label = list(range(n_labels))
    assert evaluation.n == 600
    assert np.array_equal(y_pred, probabilities.argmax(axis=1))
    assert 0.2 < evaluation.accuracy < 0.95  # a mix of hits and misses, so the checks below bite
    assert evaluation.accuracy == pytest.approx(metrics.accuracy_score(y_true, y_pred))
    assert evaluation.macro_f1 == pytest.approx(
        metrics.f1_score(y_true, y_pred, labels=every_label, average="macro", zero_division=0)
    )
    assert evaluation.weighted_f1 == pytest.approx(
        metrics.f1_score(y_true, y_pred, labels=every_label, average="weighted", zero_division=0)
    )
    assert evaluation.confusion_matrix == metrics.confusion_matrix(y_true, y_pred, labels=every_label).tolist()
    assert evaluation.log_loss == pytest.approx(metrics.log_loss(y_true, probabilities, labels=every_label))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=every_label, zero_division=0
    )
    for i, label in enumerate(labels):
        assert evaluation.per_class[label] == pytest.approx(
            {"precision": precision[i], "recall": recall[i], "f1": f1[i], "support": support[i]}
        )


def test_columns_are_aligned_when_a_model_orders_labels_differently():
    labels = ["neg", "neu", "pos"]
    texts = ["so pos", "very neg", "meh neu", "pos again", "nothing"]
    true_labels = ["pos", "neg", "neu", "neg", "neu"]

    canonical = evaluate_model("a", KeywordModel(labels), texts, true_labels, labels, keep_probabilities=True)
    shuffled = evaluate_model(
        "b", KeywordModel(["pos", "neg", "neu"]), texts, true_labels, labels, keep_probabilities=True
    )

    assert shuffled.predictions == canonical.predictions == [2, 0, 1, 2, 0]
    np.testing.assert_allclose(shuffled.probabilities[:4], canonical.probabilities[:4])
    assert shuffled.macro_f1 == canonical.macro_f1
    assert shuffled.confusion_matrix == canonical.confusion_matrix


def test_label_missing_from_model_gets_zero_probability():
    labels = ["neg", "neu", "pos"]
    texts = ["so pos", "very neg", "meh neu"]
    true_labels = ["pos", "neg", "neu"]
    # Knows only two of the labels, plus one the evaluation does not use.
    model = KeywordModel(["pos", "spam", "neg"], confidence=0.9)

    evaluation = evaluate_model("partial", model, texts, true_labels, labels, keep_probabilities=True)

    probabilities = np.array(evaluation.probabilities)
    assert np.all(probabilities[:, labels.index("neu")] == 0.0)
    assert labels.index("neu") not in evaluation.predictions
    assert evaluation.per_class["neu"]["recall"] == 0.0
    assert evaluation.per_class["pos"]["recall"] == 1.0
    # The "neu" row's true-label probability is clipped at 1e-15: -log(1e-15) / 3 rows dominates.
    assert evaluation.log_loss > -math.log(1e-15) / 3


def calibration_table(groups):
    """Texts, truths and a table model; each group is (confidence, rows, correct rows)."""
    rows, texts, true_labels = {}, [], []
    for confidence, n_rows, n_correct in groups:
        for i in range(n_rows):
            text = f"{confidence} {i}"
            rows[text] = [confidence, 1.0 - confidence]
            texts.append(text)
            true_labels.append("yes" if i < n_correct else "no")
    return texts, true_labels, TableModel(["yes", "no"], rows)


def test_ece_is_zero_for_perfectly_calibrated_probabilities():
    texts, true_labels, model = calibration_table([(0.6, 10, 6), (0.8, 10, 8), (1.0, 5, 5)])

    evaluation = evaluate_model("calibrated", model, texts, true_labels, ["yes", "no"])

    assert evaluation.ece == pytest.approx(0.0, abs=1e-12)
    filled = [b for b in evaluation.reliability_bins if b["count"]]
    assert [b["count"] for b in filled] == [10, 10, 5]
    assert [b["accuracy"] for b in filled] == pytest.approx([0.6, 0.8, 1.0])
    assert len(evaluation.reliability_bins) == 15


def test_ece_measures_over_confidence():
    texts, true_labels, model = calibration_table([(0.95, 20, 10)])

    evaluation = evaluate_model("over-confident", model, texts, true_labels, ["yes", "no"])

    assert evaluation.ece == pytest.approx(0.45, abs=1e-12)


def brute_force_ece(confidences, correct, n_bins=15):
    """ECE by a loop over bins and rows: bins (lower, upper], the first also holding 0."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    total = 0.0
    for b in range(n_bins):
        members = [i for i, c in enumerate(confidences)
                   if edges[b] < c <= edges[b + 1] or (b == 0 and c == 0.0)]
        if members:
            accuracy = sum(bool(correct[i]) for i in members) / len(members)
            confidence = sum(confidences[i] for i in members) / len(members)
            total += len(members) * abs(accuracy - confidence)
    return total / len(confidences)


@given(st.lists(st.tuples(st.sampled_from([0.0, 1 / 3, 0.2, 0.4, 1.0]) | st.floats(0.0, 1.0), st.booleans()),
                min_size=1, max_size=60))
@settings(max_examples=200, deadline=None)
def test_ece_matches_a_brute_force_loop(rows):
    confidences = [c for c, _ in rows]
    correct = [ok for _, ok in rows]
    assert expected_calibration_error(np.array(confidences), np.array(correct)) == pytest.approx(
        brute_force_ece(confidences, correct), abs=1e-12)


def test_ece_over_distinct_texts_counts_each_text_once():
    confidences = np.array([0.9, 0.9, 0.9, 0.9, 0.6, 0.3])
    correct = np.array([True, False, False, False, True, False])
    groups = ["rt", "rt", "rt", "rt", "b", "c"]  # one text four times, right once
    # Three observations: (0.9, 1/4 right), (0.6, right), (0.3, wrong), in their own bins.
    assert grouped_calibration_error(confidences, correct, groups) == pytest.approx(
        (abs(0.25 - 0.9) + abs(1 - 0.6) + abs(0 - 0.3)) / 3)
    assert grouped_calibration_error(confidences, correct, list("abcdef")) == pytest.approx(
        expected_calibration_error(confidences, correct))


class ScaledLogitModel:
    """softmax(logits / T) of fixed per-text logits, with its T exposed as a calibrated model does."""

    kind = "scaled"

    def __init__(self, labels, logits, temperature):
        self.labels, self.logits, self.calibration_temperature = list(labels), logits, temperature

    def predict_proba(self, texts):
        return softmax(np.array([self.logits[t] for t in texts]), self.calibration_temperature)


def test_ece_before_calibration_is_the_ece_of_the_model_at_t_one():
    rng = np.random.default_rng(8)
    labels = ["a", "b", "c"]
    texts = [f"t{i}" for i in range(300)]
    logits = {t: rng.normal(0, 3, 3) for t in texts}
    true_labels = [labels[rng.integers(3)] for _ in texts]
    y = np.array([labels.index(label) for label in true_labels])

    evaluation = evaluate_model("m", ScaledLogitModel(labels, logits, 2.5), texts, true_labels, labels)

    def reference(temperature):
        p = softmax(np.array([logits[t] for t in texts]), temperature)
        return brute_force_ece(list(p.max(axis=1)), list(p.argmax(axis=1) == y))

    assert evaluation.temperature == 2.5
    assert evaluation.ece == pytest.approx(reference(2.5), abs=1e-9)
    assert evaluation.ece_uncalibrated == pytest.approx(reference(1.0), abs=1e-9)
    assert sum(b["count"] for b in evaluation.reliability_bins_uncalibrated) == 300
    plain = evaluate_model("k", KeywordModel(labels), texts, true_labels, labels)
    assert plain.temperature is None and plain.ece_uncalibrated is None


def test_reliability_bins_include_their_upper_edge():
    edges = np.linspace(0.0, 1.0, 16)
    confidences = np.array([0.0, edges[3], edges[3] + 1e-9, 1.0])

    bins = reliability_bins(confidences, np.array([True, True, False, True]))

    assert [b["count"] for b in bins] == [1, 0, 1, 1] + [0] * 10 + [1]
    assert bins[3]["accuracy"] == 0.0 and bins[2]["accuracy"] == 1.0


def test_latency_covers_predict_calls_in_batches():
    texts, true_labels, labels = synthetic_split(3, n_rows=20)
    model = SleepyModel(labels)

    evaluation = evaluate_model("sleepy", model, texts, true_labels, labels, batch_size=8)

    assert model.batch_sizes == [8, 8, 4]
    assert evaluation.latency_ms_per_1000 >= 1000.0  # 1 ms per document
    assert evaluation.latency_ms_per_1000 < 20_000.0


def test_evaluate_model_rejects_bad_inputs():
    labels = ["a", "b"]
    with pytest.raises(ValueError, match="not in the label set"):
        evaluate_model("m", KeywordModel(labels), ["x a"], ["c"], labels)
    with pytest.raises(ValueError, match="shape"):
        evaluate_model("m", TableModel(labels, {"x": [1.0, 0.0, 0.0]}), ["x"], ["a"], labels)
    with pytest.raises(ValueError, match="unique"):
        evaluate_model("m", KeywordModel(["a", "a"]), ["x a"], ["a"], labels)


def test_tiny_models_satisfy_the_protocol():
    assert isinstance(KeywordModel(["a", "b"]), TextClassifier)
    assert not isinstance(object(), TextClassifier)


# ---------------------------------------------------------------- compare / evaluate_all


def test_compare_matches_its_parts():
    texts, true_labels, labels = synthetic_split(4, n_rows=300, seed=9)
    strong = evaluate_model("strong", NoisyKeywordModel(labels, tilt=2.0), texts, true_labels, labels)
    weak = evaluate_model("weak", NoisyKeywordModel(labels, tilt=0.2), texts, true_labels, labels)

    comparison = compare(strong, weak, true_labels, n_resamples=500, seed=3)

    y_true = [labels.index(label) for label in true_labels]
    assert comparison.challenger == "strong" and comparison.champion == "weak"
    assert comparison.macro_f1_diff == pytest.approx(strong.macro_f1 - weak.macro_f1, abs=1e-12)
    assert comparison.macro_f1_diff > 0
    assert comparison.ci_low < comparison.macro_f1_diff < comparison.ci_high
    assert (comparison.mcnemar_statistic, comparison.mcnemar_p_value, comparison.b, comparison.c) == mcnemar(
        y_true, strong.predictions, weak.predictions
    )
    assert compare(strong, weak, y_true, n_resamples=500, seed=3) == comparison


def test_compare_on_some_rows_is_compare_of_those_rows_alone():
    texts, true_labels, labels = synthetic_split(3, n_rows=240, seed=4)
    rows = np.random.default_rng(1).choice(240, size=90, replace=False)
    strong, weak = NoisyKeywordModel(labels, tilt=2.0), NoisyKeywordModel(labels, tilt=0.5)
    full = [evaluate_model(n, m, texts, true_labels, labels) for n, m in (("s", strong), ("w", weak))]
    sub_texts, sub_labels = [texts[i] for i in rows], [true_labels[i] for i in rows]
    alone = [evaluate_model(n, m, sub_texts, sub_labels, labels) for n, m in (("s", strong), ("w", weak))]

    restricted = compare(*full, true_labels, n_resamples=300, seed=2, rows=rows)

    assert restricted == compare(*alone, sub_labels, n_resamples=300, seed=2)
    assert restricted.rows_compared == 90 and sum(restricted.class_support.values()) == 90
    report = evaluate_all({"s": strong, "w": weak}, texts, true_labels, labels, "w", n_resamples=300,
                          seed=2, comparison_rows=rows)
    assert report.comparisons == [restricted] and report.evaluation("s").n == 240
    assert evaluate_all({"s": strong, "w": weak}, texts, true_labels, labels, "w",
                        comparison_rows=[]).comparisons == []  # nothing to judge on: no comparison


def test_compare_refuses_different_label_orders():
    texts, true_labels, labels = synthetic_split(3, n_rows=30)
    first = evaluate_model("first", KeywordModel(labels), texts, true_labels, labels)
    second = evaluate_model("second", KeywordModel(labels), texts, true_labels, labels[::-1])

    with pytest.raises(ValueError, match="label order"):
        compare(first, second, true_labels)


def test_evaluate_all_compares_every_candidate_with_the_champion():
    texts, true_labels, labels = synthetic_split(3, n_rows=200, seed=5)
    models = {
        "champion": NoisyKeywordModel(labels, tilt=1.0),
        "tfidf": NoisyKeywordModel(labels, tilt=2.0),
        "bert": KeywordModel(labels[::-1]),
    }

    report = evaluate_all(
        models, texts, true_labels, labels, "champion", size_bytes={"bert": 123}, train_seconds={"tfidf": 1.5},
        n_resamples=200,
    )

    assert [e.name for e in report.evaluations] == ["champion", "tfidf", "bert"]
    assert [(c.challenger, c.champion) for c in report.comparisons] == [("tfidf", "champion"), ("bert", "champion")]
    assert report.evaluation("bert").size_bytes == 123
    assert report.evaluation("tfidf").train_seconds == 1.5
    assert report.evaluation("champion").size_bytes is None
    assert report.y_true == [labels.index(label) for label in true_labels]
    assert evaluate_all(models, texts, true_labels, labels, None).comparisons == []
    with pytest.raises(ValueError, match="champion"):
        evaluate_all(models, texts, true_labels, labels, "missing")


# ---------------------------------------------------------------- serialisation


def test_model_evaluation_round_trips_through_json():
    texts, true_labels, labels = synthetic_split(3, n_rows=40)
    evaluation = evaluate_model(
        "m", NoisyKeywordModel(labels), texts, true_labels, labels,
        size_bytes=10, train_seconds=2.5, peak_memory_bytes=99, keep_probabilities=True,
    )  # fmt: skip

    restored = ModelEvaluation.from_dict(json.loads(json.dumps(evaluation.to_dict(), allow_nan=False)))

    assert restored == evaluation


def test_evaluation_report_round_trips_through_json():
    texts, true_labels, labels = synthetic_split(3, n_rows=60)
    report = evaluate_all(
        {"a": NoisyKeywordModel(labels), "b": KeywordModel(labels)}, texts, true_labels, labels, "a",
        n_resamples=50,
    )  # fmt: skip

    restored = EvaluationReport.from_dict(json.loads(json.dumps(report.to_dict(), allow_nan=False)))

    assert restored == report
    assert isinstance(restored.comparisons[0], Comparison)
    assert isinstance(restored.evaluations[0], ModelEvaluation)


def test_directory_size_counts_every_file(tmp_path):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.bin").write_bytes(b"x" * 1000)
    (tmp_path / "config.json").write_text("{}")

    assert directory_size_bytes(tmp_path) == 1002


def test_macro_f1_leaves_out_a_class_nobody_has_or_predicts_as_scikit_learn_does():
    """A label retired from the source (0 rows) or a rare class with no test rows that nothing
    predicts no longer caps a perfect model at (k-1)/k; a predicted class with no true rows
    still counts, with F1 0. Reference: scikit-learn's default labels."""
    from tasks.metrics import macro_f1_score

    y_true = np.array([0, 0, 1, 1, 0, 1])
    assert macro_f1_score(y_true, y_true, 3) == 1.0  # class 2: a phantom
    wrong = np.array([0, 2, 1, 1, 0, 1])  # predicts the phantom once
    assert macro_f1_score(y_true, wrong, 3) == pytest.approx(metrics.f1_score(y_true, wrong, average="macro"))
    from tasks.evaluate import evaluation_from_probabilities

    labels = ["negative", "positive", "complaint"]
    ev = evaluation_from_probabilities("v1 a", "a", labels, y_true, np.eye(3)[y_true])
    assert ev.macro_f1 == 1.0 and ev.macro_f1_labels == ["negative", "positive"]
