"""TF-IDF baseline that scales: hashed word and character n-grams, a linear SVM, temperature-scaled
probabilities, saved as safetensors + JSON.

Exact where it fits, streamed where it must (``choose_solver``). The rows are vectorised once,
chunk by chunk, into a scratch directory (features are hashed: no vocabulary to hold). While the
training rows and their feature non-zeros fit under ``exact_max_rows`` / ``exact_max_nonzeros``
the chunks are stacked and liblinear's LinearSVC fits them exactly: SGD loses about 0.03
macro-F1 on some corpora (a 20-class one in issue 19), however long it runs. Beyond that, every
candidate learns by SGD from the same chunks in the same passes (``partial_fit``), so memory
stays flat at 1M rows; after the first pass only the best third go on (successive halving,
``halving_survivors``), which takes the 9-candidate search from 27 candidate-passes to 15.
The choice is recorded (``params["solver"]``, the model's JSON).

The search tries regularisation (C or alpha) x label-weight power on one vectorisation, in a
fixed order, and when the best regularisation sits at an edge of the values tried, grows the
grid past that edge (``extended_value``); the chosen model never depends on how busy the
machine is.

Features (as the former TfidfVectorizer pair did): word 1-2-grams (accents stripped) and
char_wb 2-5-grams, both lowercased, sublinear tf (1 + log count), idf learned on the training
rows with columns seen in fewer than ``min_df`` rows zeroed, each block L2-normalised. Character
n-grams are hashed per distinct word and cached (the same hashes as scikit-learn's
HashingVectorizer): generating and hashing n-gram strings dominated scoring time.

Probabilities are a softmax of the decision scores with one temperature fitted on the
validation rows (temperature scaling, Guo et al. 2017): it keeps the argmax, so balanced class
weights still count.
"""

from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier

from tasks.calibration import fit_temperature, label_targets
from tasks.candidates.tfidf.config import TfidfConfig
from tasks.candidates.tfidf.model import HashedTfidf, TfidfClassifier
from tasks.metrics import macro_f1_of_labels

log = logging.getLogger(__name__)


@dataclass
class TfidfTrainResult:
    params: dict
    val_macro_f1: float
    train_seconds: float
    candidates_tried: int
    train_rows: int


def _count_chunk(job: tuple[dict[str, Any], list[str], np.ndarray, str]) -> tuple[np.ndarray, np.ndarray]:
    """Vectorise one chunk of rows to ``path``-word/char.npz; return its document frequencies."""
    params, texts, rows, path = job
    features = _process_features.get(json.dumps(params, sort_keys=True))
    if features is None:  # one per process, so its word cache lasts across chunks
        features = _process_features[json.dumps(params, sort_keys=True)] = HashedTfidf(
            tuple(params["word_ngram_range"]), tuple(params["char_ngram_range"]),
            params["word_features_log2"], params["char_features_log2"])
    word, char = features.counts(texts)
    sparse.save_npz(f"{path}-word.npz", word, compressed=False)
    sparse.save_npz(f"{path}-char.npz", char, compressed=False)
    np.save(f"{path}-rows.npy", rows)
    return (np.bincount(word.indices, minlength=word.shape[1]),
            np.bincount(char.indices, minlength=char.shape[1]))


_process_features: dict[str, HashedTfidf] = {}


def _map_in_processes(function, jobs: list) -> list:
    """``map`` over forked worker processes (n-gram extraction holds the GIL), one per core;
    in order, in this process when forking is not possible (e.g. inside a daemonic process)."""
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                return list(pool.map(function, jobs))
        except (AssertionError, OSError, BrokenProcessPool) as exc:
            log.warning("vectorising in one process (no worker processes: %s)", exc)
    return [function(job) for job in jobs]


def _class_weights(train_labels: Sequence[str], classes: list[str], mode: str | None) -> dict[str, float]:
    counts = {label: 0 for label in classes}
    for label in train_labels:
        counts[label] += 1
    n, k = len(train_labels), sum(1 for c in counts.values() if c)
    if mode != "balanced":
        return dict.fromkeys(classes, 1.0)
    return {label: (n / (k * count) if count else 1.0) for label, count in counts.items()}


def choose_solver(cfg: TfidfConfig, rows: int, nonzeros: int, n_classes: int) -> str:
    """"exact" (liblinear, all rows in memory) while the rows and their feature non-zeros fit
    under the configured thresholds, else "sgd" (streamed chunks); ``cfg.solver`` forces one."""
    if cfg.solver != "auto":
        return cfg.solver
    fits = rows <= cfg.exact_max_rows and nonzeros <= cfg.exact_max_nonzeros
    return "exact" if fits and n_classes >= 2 else "sgd"


def extended_value(scores: dict[float, float], grid: Sequence[float]) -> float | None:
    """The next regularisation value to try when the best-scoring value (``scores``: the best
    validation score of each value tried) is the smallest or largest tried and strictly better
    than every other: one step further, the step being the grid's own ratio (its geometric mean
    ratio). None when the best lies inside, on a plateau of ties, or is the only value tried
    (no slope to follow)."""
    best = max(scores, key=lambda v: scores[v])
    if len(scores) < 2 or any(scores[v] >= scores[best] for v in scores if v != best):
        return None
    ordered = sorted(set(grid))
    step = (ordered[-1] / ordered[0]) ** (1 / (len(ordered) - 1)) if len(ordered) > 1 else 3.0
    if best == min(scores):
        return best / step
    if best == max(scores):
        return best * step
    return None


def halving_survivors(scores: dict[int, float]) -> list[int]:
    """The candidates that go on learning after the first pass: the best third by validation
    score (at least two, ties broken by grid order), in grid order. SGD's ranking after one pass
    rarely changes among candidates that far apart, and the passes left cost the same for each."""
    keep = max(2, -(-len(scores) // 3))
    ranked = sorted(scores, key=lambda i: (-scores[i], i))
    return sorted(ranked[:keep])


@dataclass
class _Candidate:
    value: float  # C (exact) or alpha (sgd)
    power: float
    model: Any
    score: float


def _search(fit: Any, values: Sequence[float], powers: Sequence[float], cfg: TfidfConfig) -> list[_Candidate]:
    """Fit the grid in grid order, then, while the best regularisation is at an edge of the
    values tried, one more value past it with the best weight power (at most
    ``cfg.max_grid_extensions`` times); ``cfg.max_candidates`` fits in all. ``fit`` takes a list
    of (value, power) and returns (model, validation score) for each."""
    grid = list(itertools.product(values, powers))[: cfg.max_candidates]
    candidates = [_Candidate(v, p, m, s) for (v, p), (m, s) in zip(grid, fit(grid), strict=True)]
    for _ in range(min(cfg.max_grid_extensions, cfg.max_candidates - len(candidates))):
        best = max(candidates, key=lambda c: c.score)
        scores: dict[float, float] = {}
        for c in candidates:
            scores[c.value] = max(scores.get(c.value, -1.0), c.score)
        value = extended_value(scores, values)
        if value is None:
            break
        (model, score), = fit([(value, best.power)])
        candidates.append(_Candidate(value, best.power, model, score))
    return candidates


def train_tfidf(
    train_texts: Sequence[str],
    train_labels: Sequence[str],
    val_texts: Sequence[str],
    val_labels: Sequence[str],
    labels: Sequence[str],
    cfg: TfidfConfig,
    train_weights: Sequence[float] | None = None,
) -> tuple[TfidfClassifier, TfidfTrainResult]:
    """Vectorise the training rows once (chunk by chunk, to a scratch directory), choose the
    solver (``choose_solver``), search its grid (``_search``) and keep the best by validation
    macro-F1 over the whole label set; fit its softmax temperature on the validation rows."""
    started = time.perf_counter()
    labels = list(labels)
    # The fitters learn label indices, never the label strings: scikit-learn reads targets such as
    # "0", "1", "2" as numbers ("The classes, [0, 1, 2], are not in class_weight").
    index = {label: i for i, label in enumerate(labels)}
    y = np.asarray([index[label] for label in train_labels], dtype=np.int64)
    n = len(y)
    if n == 0:
        raise ValueError("no training rows")
    weights = np.ones(n) if train_weights is None else np.asarray(train_weights, dtype=float)
    powers = cfg.weight_powers if np.ptp(weights) > 0 else (0.0,)
    features = HashedTfidf(cfg.word_ngram_range, cfg.char_ngram_range, cfg.word_features_log2,
                           cfg.char_features_log2)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(n)  # chunks of shuffled rows: SGD must not see one label at a time
    texts = list(train_texts)
    class_weight = {index[label]: weight
                    for label, weight in _class_weights(list(train_labels), labels, cfg.class_weight).items()}
    x_val = None
    with tempfile.TemporaryDirectory(prefix="textclf-tfidf-") as scratch:
        jobs = [(features.params(), [texts[i] for i in order[start : start + cfg.chunk_rows]],
                 order[start : start + cfg.chunk_rows], str(Path(scratch) / f"chunk-{number}"))
                for number, start in enumerate(range(0, n, cfg.chunk_rows))]
        chunks = [Path(job[3]) for job in jobs]
        df_word = np.zeros(2**cfg.word_features_log2, dtype=np.int64)
        df_char = np.zeros(2**cfg.char_features_log2, dtype=np.int64)
        for word_df, char_df in _map_in_processes(_count_chunk, jobs):
            df_word += word_df
            df_char += char_df
        features.fit_idf(df_word, df_char, n, cfg.min_df)
        vectorised = time.perf_counter()
        log.info("vectorised %d training rows in %d chunks in %.1f s", n, len(chunks), vectorised - started)
        nonzeros = int(df_word.sum() + df_char.sum())  # each row's distinct columns, summed
        present = sorted(set(y.tolist()))
        solver = choose_solver(cfg, n, nonzeros, len(present))
        x_val = features.transform(list(val_texts))

        def score(model: Any) -> float:
            return macro_f1_of_labels(list(val_labels), [labels[p] for p in model.predict(x_val)], labels)

        if solver == "exact":
            x = sparse.vstack([_weighted_chunk(features, path) for path in chunks], format="csr",
                              dtype=np.float64)  # liblinear wants float64: convert once, not per fit
            rows = np.concatenate([np.load(f"{path}-rows.npy") for path in chunks])
            fit = _exact_fitter(x, y[rows], weights[rows], {c: class_weight[c] for c in present}, cfg, score)
            candidates = _search(fit, cfg.cs, powers, cfg)
            del x
        else:
            fit = _sgd_fitter(features, chunks, y, weights, np.arange(len(labels)), class_weight, cfg, score)
            candidates = _search(fit, cfg.alphas, powers, cfg)
    log.info("searched %d %s candidates in %.1f s", len(candidates), solver, time.perf_counter() - vectorised)
    best = max(candidates, key=lambda c: c.score)  # the first of equals: grid order
    model = best.model
    decision = model.decision_function(x_val)
    classes = [labels[c] for c in model.classes_]
    rows, targets = label_targets(list(val_labels), classes)
    temperature = fit_temperature(decision[rows], targets)
    classifier = TfidfClassifier(features, model.coef_, model.intercept_, classes, labels, temperature,
                                 solver=solver)
    regularisation = {"C": best.value} if solver == "exact" else {"alpha": best.value}
    result = TfidfTrainResult(
        params={"solver": solver, **regularisation, "weight_power": best.power, "class_weight": cfg.class_weight,
                "epochs": cfg.epochs if solver == "sgd" else None, "min_df": cfg.min_df,
                "temperature": temperature, "train_nonzeros": nonzeros, **features.params(),
                "candidate_scores": [round(c.score, 6) for c in candidates],
                "candidate_grid": [[c.value, c.power] for c in candidates]},
        val_macro_f1=float(best.score),
        train_seconds=time.perf_counter() - started,
        candidates_tried=len(candidates),
        train_rows=n,
    )
    return classifier, result


def _weighted_chunk(features: HashedTfidf, path: Path) -> sparse.csr_matrix:
    """A chunk's TF-IDF rows, weighted once (idf needs every row's counts) and kept on disk."""
    weighted = Path(f"{path}-x.npz")
    if weighted.exists():
        return sparse.load_npz(weighted)
    x = features.weight(sparse.load_npz(f"{path}-word.npz"), sparse.load_npz(f"{path}-char.npz"))
    sparse.save_npz(weighted, x, compressed=False)
    return x


_exact_problem: dict[str, Any] = {}  # the rows of the exact fits, shared with forked workers


def _fit_exact(point: tuple[float, float]) -> Any:
    from sklearn.svm import LinearSVC

    c, power = point
    problem = _exact_problem
    model = LinearSVC(C=c, class_weight=problem["class_weight"], max_iter=problem["max_iter"],
                      random_state=problem["seed"])
    with warnings.catch_warnings():  # a capped iteration count is a choice, not a fault
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(problem["x"], problem["y"], sample_weight=None if power == 0 else problem["weights"] ** power)
    return model


def _exact_fitter(x: sparse.csr_matrix, y: np.ndarray, weights: np.ndarray, class_weight: dict[int, float],
                  cfg: TfidfConfig, score: Any) -> Any:
    def fit(points: list[tuple[float, float]]) -> list[tuple[Any, float]]:
        # In forked processes, one per core: liblinear seeds the C library's global rand(), so
        # fits in parallel threads would not be reproducible. The children share the rows
        # copy-on-write; each holds liblinear's own copy while it fits.
        _exact_problem.update(x=x, y=y, weights=weights, class_weight=class_weight, seed=cfg.seed,
                              max_iter=1000)
        try:
            models = _map_in_processes(_fit_exact, points)
        finally:
            _exact_problem.clear()
        return [(model, score(model)) for model in models]

    return fit


def _sgd_fitter(features: HashedTfidf, chunks: list[Path], y: np.ndarray, weights: np.ndarray,
                classes: np.ndarray, class_weight: dict[int, float], cfg: TfidfConfig, score: Any) -> Any:
    rounds = itertools.count()

    def fit(points: list[tuple[float, float]]) -> list[tuple[Any, float]]:
        rng = np.random.default_rng([cfg.seed, next(rounds)])
        models = [SGDClassifier(loss="hinge", alpha=alpha, average=cfg.average, class_weight=class_weight,
                                random_state=cfg.seed) for alpha, _ in points]

        def learn(model: SGDClassifier, power: float, x: sparse.csr_matrix, rows: np.ndarray) -> None:
            model.partial_fit(x, y[rows], classes=classes,
                              sample_weight=None if power == 0 else weights[rows] ** power)

        learning = list(range(len(models)))
        scores: dict[int, float] = {}
        # scikit-learn's SGD inner loop releases the GIL: candidates learn in parallel threads.
        with ThreadPoolExecutor(max_workers=max(1, min(len(models), os.cpu_count() or 1))) as pool:
            for epoch in range(cfg.epochs):
                for chunk in rng.permutation(len(chunks)):
                    x = _weighted_chunk(features, chunks[chunk])
                    rows = np.load(f"{chunks[chunk]}-rows.npy")
                    list(pool.map(lambda i: learn(models[i], points[i][1], x, rows), learning))  # noqa: B023
                if epoch == 0 and cfg.successive_halving and cfg.epochs > 1:
                    scores = {i: score(models[i]) for i in learning}
                    learning = halving_survivors(scores)
        # A candidate stopped after the first pass keeps that pass's model and score.
        return [(model, score(model) if i in learning or i not in scores else scores[i])
                for i, model in enumerate(models)]

    return fit
