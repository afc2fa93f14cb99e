"""The TF-IDF baseline: it learns, its probabilities keep the decision, weights count."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin

from conftest import synthetic_corpus
from tasks.candidates.tfidf import TfidfConfig
from tasks.train_tfidf import TRUSTED_TYPES, TfidfClassifier, train_tfidf

LABELS = ["negative", "neutral", "positive"]
FAST = TfidfConfig(c_values=(0.5,), min_df_values=(1,))


def split(rows):
    return [t for t, _ in rows], [label for _, label in rows]


def test_learns_a_separable_corpus_and_survives_save_and_load(tmp_path):
    train_x, train_y = split(synthetic_corpus(300, seed=1))
    test_x, test_y = split(synthetic_corpus(90, seed=2))
    model, result = train_tfidf(train_x, train_y, test_x[:30], test_y[:30], LABELS, FAST)
    proba = model.predict_proba(test_x)
    accuracy = np.mean([LABELS[i] == y for i, y in zip(proba.argmax(1), test_y, strict=True)])
    assert accuracy > 0.9 and result.val_macro_f1 > 0.9
    assert np.allclose(proba.sum(axis=1), 1.0)
    # Temperature scaling changes confidence, never the decision.
    decisions = model.pipeline.decision_function(test_x).argmax(1)
    assert (proba.argmax(1) == decisions).all()
    model.save(tmp_path)
    again = TfidfClassifier.load(tmp_path)
    assert np.allclose(again.predict_proba(test_x), proba)
    assert again.labels == LABELS


def test_columns_follow_our_label_order_and_binary_works():
    rows = [(t, label) for t, label in synthetic_corpus(200, seed=3) if label != "neutral"]
    x, y = split(rows)
    model, _ = train_tfidf(x, y, x[:20], y[:20], ["positive", "negative"], FAST)
    proba = model.predict_proba(["love great wonderful", "hate awful terrible"])
    assert proba.shape == (2, 2)
    assert proba[0, 0] > 0.5 and proba[1, 1] > 0.5


class Passthrough(BaseEstimator, TransformerMixin):
    """A type no textclf artifact contains."""

    def fit(self, x, y=None):
        return self

    def transform(self, x):
        return x


def test_untrusted_types_refuse_to_load(tmp_path):
    import skops.io
    from sklearn.pipeline import Pipeline

    x, y = split(synthetic_corpus(60))
    model, _ = train_tfidf(x, y, x, y, LABELS, FAST)
    model.save(tmp_path)
    tampered = Pipeline([("f", Passthrough()), *model.pipeline.steps])
    skops.io.dump(tampered, tmp_path / "model.skops")
    with pytest.raises(ValueError, match="types textclf does not trust"):
        TfidfClassifier.load(tmp_path)
    assert "sklearn.svm._classes.LinearSVC" in TRUSTED_TYPES


def test_label_weights_are_searched_on_the_validation_split():
    x, y = split(synthetic_corpus(300, seed=4))
    # Most positive rows are mislabelled "negative" but weigh nothing: only weighting ignores them.
    wrong = [label == "positive" and i % 5 != 0 for i, label in enumerate(y)]
    noisy_y = ["negative" if w else label for w, label in zip(wrong, y, strict=True)]
    weights = [0.0 if w else 1.0 for w in wrong]
    val_x, val_y = split(synthetic_corpus(60, seed=5))
    cfg = TfidfConfig(c_values=(0.5,), min_df_values=(1,), weight_powers=(0.0, 1.0))
    _, weighted = train_tfidf(x, noisy_y, val_x, val_y, LABELS, cfg, train_weights=weights)
    assert weighted.params["weight_power"] == 1.0
    assert weighted.candidates_tried == 2
    _, unweighted = train_tfidf(x, noisy_y, val_x, val_y, LABELS, cfg)
    assert unweighted.candidates_tried == 1 and unweighted.params["weight_power"] == 0.0
    assert weighted.val_macro_f1 > unweighted.val_macro_f1
