"""The TF-IDF baseline: hashed features that match their reference, it learns, its probabilities
keep the decision, weights count, it saves in a safe format, and old artifacts still load."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import HashingVectorizer, TfidfVectorizer
from sklearn.utils import murmurhash3_32

from conftest import synthetic_corpus
from tasks.candidates.tfidf import TfidfConfig
from tasks.candidates.tfidf.model import (
    LEGACY_TRUSTED_TYPES,
    CharWbHasher,
    LegacyTfidfClassifier,
    TfidfClassifier,
)
from tasks.candidates.tfidf.training import train_tfidf

LABELS = ["negative", "neutral", "positive"]
FAST = TfidfConfig(alphas=(1e-4,), min_df=1, epochs=5)


def split(rows):
    return [t for t, _ in rows], [label for _, label in rows]


TEXTS = ["Hello  world", "a", "Élan vital, naïve café!", "x y\tz", "aa bb aa", "ünïcödé\nline two", "I"]


def test_char_ngrams_hash_exactly_like_scikit_learn_and_a_brute_force_loop():
    reference_ngrams = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5)).build_analyzer()
    hasher = CharWbHasher((2, 5), 2**12)
    for text in TEXTS:
        assert sum((hasher.ngrams(w) for w in text.lower().split()), []) == reference_ngrams(text)
    counts = np.zeros((len(TEXTS), 2**12))
    for row, text in enumerate(TEXTS):  # a plain loop: hash every n-gram, count it
        for gram in reference_ngrams(text):
            counts[row, abs(murmurhash3_32(gram, seed=0)) % 2**12] += 1
    ours = hasher.transform(TEXTS).toarray()
    np.testing.assert_array_equal(ours, counts)
    sklearn_hashing = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 5), n_features=2**12,
                                        alternate_sign=False, norm=None)
    np.testing.assert_array_equal(ours, sklearn_hashing.transform(TEXTS).toarray())
    np.testing.assert_array_equal(hasher.transform(TEXTS[::-1]).toarray(), ours[::-1])  # from the cache
    assert hasher.transform([]).shape == (0, 2**12)
    wide = CharWbHasher((4, 6), 2**12)  # words shorter than n count once, as in scikit-learn
    assert wide.ngrams("a") == [" a "]


def test_learns_a_separable_corpus_and_survives_save_and_load(tmp_path):
    train_x, train_y = split(synthetic_corpus(300, seed=1))
    test_x, test_y = split(synthetic_corpus(90, seed=2))
    model, result = train_tfidf(train_x, train_y, test_x[:30], test_y[:30], LABELS, FAST)
    proba = model.predict_proba(test_x)
    accuracy = np.mean([LABELS[i] == y for i, y in zip(proba.argmax(1), test_y, strict=True)])
    assert accuracy > 0.9 and result.val_macro_f1 > 0.9
    assert np.allclose(proba.sum(axis=1), 1.0)
    # Temperature scaling changes confidence, never the decision.
    assert (proba.argmax(1) == model.decision_function(test_x).argmax(1)).all()
    model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "textclf.json"]
    again = TfidfClassifier.load(tmp_path)
    assert np.allclose(again.predict_proba(test_x), proba, atol=1e-6)
    assert again.labels == LABELS and again.predict_proba([]).shape == (0, 3)


def test_training_is_deterministic_and_the_chunk_size_only_bounds_memory(tmp_path):
    train_x, train_y = split(synthetic_corpus(300, seed=1))
    val_x, val_y = split(synthetic_corpus(60, seed=2))
    one, _ = train_tfidf(train_x, train_y, val_x, val_y, LABELS, FAST)
    two, _ = train_tfidf(train_x, train_y, val_x, val_y, LABELS, FAST)
    np.testing.assert_array_equal(one.coef, two.coef)
    small, result = train_tfidf(train_x, train_y, val_x, val_y, LABELS,
                                TfidfConfig(alphas=(1e-4,), min_df=1, epochs=5, chunk_rows=37))
    assert result.val_macro_f1 > 0.9
    assert (small.predict_proba(val_x).argmax(1) == one.predict_proba(val_x).argmax(1)).mean() > 0.95


def test_columns_follow_our_label_order_and_binary_works():
    rows = [(t, label) for t, label in synthetic_corpus(200, seed=3) if label != "neutral"]
    x, y = split(rows)
    model, _ = train_tfidf(x, y, x[:20], y[:20], ["positive", "negative"], FAST)
    proba = model.predict_proba(["love great wonderful", "hate awful terrible"])
    assert proba.shape == (2, 2)
    assert proba[0, 0] > 0.5 and proba[1, 1] > 0.5


def test_min_df_zeroes_the_weight_of_rare_columns():
    x, y = split(synthetic_corpus(120, seed=6))
    model, _ = train_tfidf(x + ["zyzzyva"], y + ["neutral"], x[:20], y[:20], LABELS,
                           TfidfConfig(alphas=(1e-4,), min_df=2, epochs=2))
    word = model.features.counts(["zyzzyva"])[0]
    assert word.nnz == 1 and model.features.idf_word[word.indices[0]] == 0.0


def test_label_weights_are_searched_on_the_validation_split():
    x, y = split(synthetic_corpus(300, seed=4))
    # Most positive rows are mislabelled "negative" but weigh nothing: only weighting ignores them.
    wrong = [label == "positive" and i % 5 != 0 for i, label in enumerate(y)]
    noisy_y = ["negative" if w else label for w, label in zip(wrong, y, strict=True)]
    weights = [0.0 if w else 1.0 for w in wrong]
    val_x, val_y = split(synthetic_corpus(60, seed=5))
    cfg = TfidfConfig(alphas=(1e-4,), min_df=1, weight_powers=(0.0, 1.0))
    _, weighted = train_tfidf(x, noisy_y, val_x, val_y, LABELS, cfg, train_weights=weights)
    assert weighted.params["weight_power"] == 1.0
    assert weighted.candidates_tried == 2
    _, unweighted = train_tfidf(x, noisy_y, val_x, val_y, LABELS, cfg)
    assert unweighted.candidates_tried == 1 and unweighted.params["weight_power"] == 0.0
    assert weighted.val_macro_f1 > unweighted.val_macro_f1


def test_the_search_is_bounded_by_a_fit_count():
    x, y = split(synthetic_corpus(90, seed=7))
    cfg = TfidfConfig(alphas=(1e-5, 1e-4, 1e-3), weight_powers=(0.0, 1.0), max_candidates=4, epochs=1, min_df=1)
    _, result = train_tfidf(x, y, x[:30], y[:30], LABELS, cfg, train_weights=[1.0, 2.0] * 45)
    assert result.candidates_tried == 4 and len(result.params["candidate_scores"]) == 4


class Passthrough(BaseEstimator, TransformerMixin):
    """A type no textclf artifact contains."""

    def fit(self, x, y=None):
        return self

    def transform(self, x):
        return x


def legacy_artifact(directory, extra_step=None):
    """A model of the former format: a skops-saved vocabulary TF-IDF + LinearSVC pipeline."""
    import skops.io
    from sklearn.pipeline import Pipeline
    from sklearn.svm import LinearSVC

    x, y = split(synthetic_corpus(90))
    pipeline = Pipeline([("tfidf", TfidfVectorizer()), ("clf", LinearSVC())]).fit(x, y)
    if extra_step:
        pipeline = Pipeline([("f", extra_step), *pipeline.steps])
    skops.io.dump(pipeline, directory / "model.skops")
    (directory / "textclf.json").write_text(json.dumps({"kind": "tfidf", "labels": LABELS, "temperature": 0.5}))


def test_champions_saved_in_the_former_format_still_load_and_untrusted_types_do_not(tmp_path):
    legacy_artifact(tmp_path)
    model = TfidfClassifier.load(tmp_path)
    assert isinstance(model, LegacyTfidfClassifier)
    assert model.predict_proba(["love great wonderful"]).argmax() == LABELS.index("positive")
    legacy_artifact(tmp_path, extra_step=Passthrough())
    with pytest.raises(ValueError, match="types textclf does not trust"):
        TfidfClassifier.load(tmp_path)
    assert "sklearn.svm._classes.LinearSVC" in LEGACY_TRUSTED_TYPES
