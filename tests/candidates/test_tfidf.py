"""The TF-IDF baseline: hashed features that match their reference, both solvers learn (the
exact one equals LinearSVC on the same features), the solver and the grid's edges are chosen
as documented, its probabilities keep the decision, weights count, it saves in a safe format,
and old artifacts still load."""

from __future__ import annotations

import dataclasses
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
from tasks.candidates.tfidf.training import (
    _search,
    choose_solver,
    extended_value,
    halving_survivors,
    train_tfidf,
)

LABELS = ["negative", "neutral", "positive"]
FAST = TfidfConfig(alphas=(1e-4,), min_df=1, epochs=5)
SOLVERS = {
    "exact": TfidfConfig(solver="exact", cs=(1.0,), min_df=1, max_grid_extensions=0),
    "sgd": TfidfConfig(solver="sgd", alphas=(1e-4,), min_df=1, epochs=5, max_grid_extensions=0),
}


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


def test_a_full_word_cache_evicts_by_second_chance_keeps_frequent_words_and_stays_exact():
    """A stream of batches of Zipf-distributed words, more distinct words than the cache holds:
    the n-grams stay exactly scikit-learn's, the cache stays bounded, a word used in every batch
    is never hashed twice, and there are fewer misses than a cache cleared whenever full (the
    former policy, counted by a plain loop) would have."""
    rng = np.random.default_rng(0)
    vocabulary = [f"w{i}" for i in range(3000)]
    zipf = 1 / np.arange(1, len(vocabulary) + 1)
    batches = [[" ".join(["often", *rng.choice(vocabulary, 8, p=zipf / zipf.sum())]) for _ in range(20)]
               for _ in range(60)]
    limit = 300
    hasher = CharWbHasher((2, 5), 2**12, cache_limit=limit)
    reference = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 5), n_features=2**12,
                                  alternate_sign=False, norm=None)
    for batch in batches:
        np.testing.assert_array_equal(hasher.transform(batch).toarray(), reference.transform(batch).toarray())
        batch_words = {w for text in batch for w in text.split()}
        assert len(hasher._cache) <= max(limit, len(batch_words))
        assert "often" in hasher._cache
    cleared, misses = set(), 0
    for batch in batches:
        new = {w for text in batch for w in text.split()} - cleared
        if len(cleared) + len(new) > limit:
            cleared = set()
        misses += len(new)
        cleared |= new
    assert hasher.words_hashed < misses


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_learns_a_separable_corpus_and_survives_save_and_load(tmp_path, solver):
    train_x, train_y = split(synthetic_corpus(300, seed=1))
    test_x, test_y = split(synthetic_corpus(90, seed=2))
    model, result = train_tfidf(train_x, train_y, test_x[:30], test_y[:30], LABELS, SOLVERS[solver])
    assert result.params["solver"] == model.solver == solver
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
    assert again.solver == solver and json.loads((tmp_path / "textclf.json").read_text())["solver"] == solver


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_training_is_deterministic_and_the_chunk_size_only_bounds_memory(tmp_path, solver):
    train_x, train_y = split(synthetic_corpus(300, seed=1))
    val_x, val_y = split(synthetic_corpus(60, seed=2))
    one, _ = train_tfidf(train_x, train_y, val_x, val_y, LABELS, SOLVERS[solver])
    two, _ = train_tfidf(train_x, train_y, val_x, val_y, LABELS, SOLVERS[solver])
    np.testing.assert_array_equal(one.coef, two.coef)
    small, result = train_tfidf(train_x, train_y, val_x, val_y, LABELS,
                                dataclasses.replace(SOLVERS[solver], chunk_rows=37))
    assert result.val_macro_f1 > 0.9
    assert (small.predict_proba(val_x).argmax(1) == one.predict_proba(val_x).argmax(1)).mean() > 0.95


def test_the_exact_solver_is_liblinear_on_the_same_features():
    """Reference: scikit-learn's LinearSVC fitted directly on the model's own TF-IDF rows."""
    from sklearn.svm import LinearSVC

    x, y = split(synthetic_corpus(240, seed=8))
    x = [f"{t} {'noise' if i % 7 else 'great'}" for i, t in enumerate(x)]  # not quite separable
    val_x, val_y = split(synthetic_corpus(60, seed=9))
    model, result = train_tfidf(x, y, val_x, val_y, LABELS, dataclasses.replace(SOLVERS["exact"], cs=(0.5,)))
    reference = LinearSVC(C=0.5, class_weight={label: 1.0 for label in LABELS}, max_iter=5000)
    reference.fit(model.features.transform(x), y)
    assert result.params["C"] == 0.5 and model.classes == list(reference.classes_)
    np.testing.assert_allclose(model.coef, reference.coef_, atol=1e-3)
    np.testing.assert_allclose(model.intercept, reference.intercept_, atol=1e-3)


def test_the_solver_is_exact_while_rows_and_nonzeros_fit_and_recorded_when_streamed():
    cfg = TfidfConfig(exact_max_rows=1000, exact_max_nonzeros=50_000)
    assert choose_solver(cfg, 1000, 50_000, 3) == "exact"
    assert choose_solver(cfg, 1001, 50_000, 3) == "sgd"
    assert choose_solver(cfg, 1000, 50_001, 3) == "sgd"
    assert choose_solver(cfg, 10, 10, 1) == "sgd"  # liblinear needs two classes; SGD learns one
    assert choose_solver(dataclasses.replace(cfg, solver="exact"), 10**9, 10**12, 3) == "exact"
    assert choose_solver(dataclasses.replace(cfg, solver="sgd"), 1, 1, 3) == "sgd"
    x, y = split(synthetic_corpus(150, seed=10))
    _, result = train_tfidf(x, y, x[:30], y[:30], LABELS, TfidfConfig(exact_max_rows=149, min_df=1, epochs=2))
    assert result.params["solver"] == "sgd" and "alpha" in result.params
    assert result.params["train_nonzeros"] > 150
    _, result = train_tfidf(x, y, x[:30], y[:30], LABELS, TfidfConfig(exact_max_rows=150, min_df=1))
    assert result.params["solver"] == "exact" and "C" in result.params


def test_the_grid_extends_past_an_edge_only_when_the_edge_is_strictly_best():
    grid = (0.1, 0.3, 1.0)  # ratio 3.16
    assert extended_value({0.1: 0.5, 0.3: 0.6, 1.0: 0.7}, grid) == pytest.approx(1.0 * 10**0.5)
    assert extended_value({0.1: 0.7, 0.3: 0.6, 1.0: 0.5}, grid) == pytest.approx(0.1 / 10**0.5)
    assert extended_value({0.1: 0.5, 0.3: 0.7, 1.0: 0.6}, grid) is None  # inside
    assert extended_value({0.1: 0.7, 0.3: 0.7, 1.0: 0.6}, grid) is None  # a plateau, not an edge
    assert extended_value({2.0: 0.7}, (2.0,)) is None  # one value: no slope to follow
    assert extended_value({2.0: 0.7, 1.0: 0.6}, (2.0,)) == 6.0  # a one-value grid steps by 3


def test_simulated_searches_find_an_optimum_beyond_the_grid_and_stay_put_inside_it():
    """Validation score = a peak in log(C) plus noise (sd 0.003, about a validation split of
    20k rows). With the peak 1.5 grid steps past the edge, the extended search must end
    within half a step of it in >= 95% of 200 seeded runs; with the peak inside the grid it
    must pick the grid's best value and add at most one fit in >= 95% of runs."""
    cfg = TfidfConfig(max_candidates=12, max_grid_extensions=3)
    grid, step = (0.1, 0.3, 1.0), np.log(10**0.5)

    def run(peak: float, seed: int) -> list:
        rng = np.random.default_rng(seed)

        def fit(points):
            return [(None, 0.8 - 0.02 * (np.log(c / peak) / step) ** 2 + rng.normal(0, 0.003)) for c, _ in points]

        return _search(fit, grid, (0.0,), cfg)

    beyond = 1.0 * 10 ** (0.5 * 1.5)
    ends = [max(run(beyond, seed), key=lambda c: c.score).value for seed in range(200)]
    assert np.mean([abs(np.log(v / beyond)) <= 0.5 * step + 1e-9 for v in ends]) >= 0.95
    inside = [run(0.3, seed) for seed in range(200)]
    assert np.mean([max(c, key=lambda c: c.score).value == 0.3 and len(c) <= 4 for c in inside]) >= 0.95


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


def test_tfidf_weighting_equals_scikit_learns_sublinear_smooth_idf_per_block():
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfTransformer

    x, _ = split(synthetic_corpus(80, seed=9))
    model, _ = train_tfidf(x, [LABELS[i % 3] for i in range(80)], x[:9], [LABELS[i % 3] for i in range(9)],
                           LABELS, TfidfConfig(alphas=(1e-4,), min_df=1, epochs=1, word_features_log2=12,
                                               char_features_log2=12))
    word, char = model.features.counts(x)
    reference = sparse.hstack([TfidfTransformer(sublinear_tf=True).fit(block).transform(block)
                               for block in (word, char)]).toarray()
    np.testing.assert_allclose(model.features.weight(word, char).toarray(), reference, rtol=1e-5, atol=1e-6)


def test_halving_keeps_the_best_third_at_least_two_in_grid_order():
    assert halving_survivors({0: 0.5, 1: 0.9, 2: 0.7, 3: 0.9, 4: 0.1, 5: 0.2, 6: 0.3, 7: 0.8, 8: 0.85}) == [1, 3, 8]
    assert halving_survivors({0: 0.5, 1: 0.5, 2: 0.5}) == [0, 1]  # ties: the earlier in the grid
    assert halving_survivors({0: 0.1, 1: 0.9}) == [0, 1]
    assert halving_survivors({0: 0.3}) == [0]


def test_successive_halving_trains_the_survivors_exactly_as_the_full_search_does():
    x, y = split(synthetic_corpus(240, seed=11))
    noisy = [LABELS[(LABELS.index(label) + (i % 4 == 0)) % 3] for i, label in enumerate(y)]  # 25% wrong
    val_x, val_y = split(synthetic_corpus(60, seed=12))
    cfg = TfidfConfig(solver="sgd", alphas=(1e-6, 1e-4, 1e-2), weight_powers=(0.0, 1.0, 2.0), min_df=1,
                      epochs=3, chunk_rows=50, max_grid_extensions=0)
    weights = [0.2 + (i % 5) / 5 for i in range(len(x))]
    halved, with_halving = train_tfidf(x, noisy, val_x, val_y, LABELS, cfg, train_weights=weights)
    full, without = train_tfidf(x, noisy, val_x, val_y, LABELS, dataclasses.replace(cfg, successive_halving=False),
                                train_weights=weights)
    assert with_halving.candidates_tried == without.candidates_tried == 9
    assert (with_halving.params["alpha"], with_halving.params["weight_power"]) == (
        without.params["alpha"], without.params["weight_power"])
    np.testing.assert_array_equal(halved.coef, full.coef)  # the same passes over the same chunks
    survivors = [i for i, (a, b) in enumerate(zip(with_halving.params["candidate_scores"],
                                                   without.params["candidate_scores"], strict=True)) if a == b]
    assert len(survivors) >= 3  # the stopped six keep their first-pass score, which may differ


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_label_weights_are_searched_on_the_validation_split(solver):
    x, y = split(synthetic_corpus(300, seed=4))
    # Most positive rows are mislabelled "negative" but weigh nothing: only weighting ignores them.
    wrong = [label == "positive" and i % 5 != 0 for i, label in enumerate(y)]
    noisy_y = ["negative" if w else label for w, label in zip(wrong, y, strict=True)]
    weights = [0.0 if w else 1.0 for w in wrong]
    val_x, val_y = split(synthetic_corpus(60, seed=5))
    cfg = dataclasses.replace(SOLVERS[solver], weight_powers=(0.0, 1.0))
    _, weighted = train_tfidf(x, noisy_y, val_x, val_y, LABELS, cfg, train_weights=weights)
    assert weighted.params["weight_power"] == 1.0
    assert weighted.candidates_tried == 2
    _, unweighted = train_tfidf(x, noisy_y, val_x, val_y, LABELS, cfg)
    assert unweighted.candidates_tried == 1 and unweighted.params["weight_power"] == 0.0
    assert weighted.val_macro_f1 > unweighted.val_macro_f1


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_the_search_is_bounded_by_a_fit_count(solver):
    x, y = split(synthetic_corpus(90, seed=7))
    cfg = TfidfConfig(solver=solver, alphas=(1e-5, 1e-4, 1e-3), cs=(0.1, 1.0, 10.0), weight_powers=(0.0, 1.0),
                      max_candidates=4, epochs=1, min_df=1)
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


@pytest.mark.parametrize("solver", sorted(SOLVERS))
@pytest.mark.parametrize("labels", [["0", "1", "2"], ["-1", "0", "1"], ["1", "3", "5"], ["true", "false", "1.5"]],
                         ids=["0-2", "-1-1", "stars", "mixed"])
def test_labels_that_look_like_numbers_are_categories(solver, labels):
    """scikit-learn reads numeric-looking targets as numbers ("The classes, [0, 1, 2], are not in
    class_weight"): the fitters get label indices, and the model answers in the label strings."""
    rename = dict(zip(LABELS, labels, strict=True))
    train_x, train_y = split(synthetic_corpus(300, seed=1))
    val_x, val_y = split(synthetic_corpus(60, seed=2))
    model, result = train_tfidf(train_x, [rename[y] for y in train_y], val_x, [rename[y] for y in val_y],
                                labels, SOLVERS[solver])
    assert model.labels == labels and result.val_macro_f1 > 0.9
    predicted = [labels[i] for i in model.predict_proba(val_x).argmax(1)]
    assert np.mean([p == rename[y] for p, y in zip(predicted, val_y, strict=True)]) > 0.9
