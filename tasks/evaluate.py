"""Score candidate models and the champion on one frozen test split.

Every model is scored against the same texts and the same label order, so
predictions are comparable row by row (paired bootstrap, McNemar).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse, stats

from tasks.calibration import temperature_scaled
from tasks.candidates.base import TextClassifier
from tasks.metrics import (
    confusion_counts,
    f1_from_counts,
    label_indices,
    macro_f1_score,
    present_mean,
    safe_divide,
)

ECE_BINS = 15
LOG_LOSS_EPS = 1e-15
# Resampled index arrays are built in chunks of at most this many elements.
_BOOTSTRAP_CHUNK_ELEMENTS = 2_000_000


@dataclass(kw_only=True)
class ModelEvaluation:
    """Metrics of one model on the test split; `predictions` index into `labels`."""

    name: str
    kind: str
    labels: list[str]
    n: int
    accuracy: float
    macro_f1: float
    weighted_f1: float
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[int]]
    log_loss: float
    ece: float
    latency_ms_per_1000: float
    predictions: list[int]
    reliability_bins: list[dict[str, float]] = field(default_factory=list)
    # A model calibrated by temperature scaling (tasks.calibration): its T, and the ECE and
    # reliability bins of its probabilities before scaling (T = 1).
    temperature: float | None = None
    ece_uncalibrated: float | None = None
    reliability_bins_uncalibrated: list[dict[str, float]] = field(default_factory=list)
    # ECE with each distinct text (split key) counted once: copies of one text move together
    # (one retweet is 128 of the demo's 3,029 test rows), which the row ECE counts 128 times.
    ece_distinct_texts: float | None = None
    size_bytes: int | None = None
    train_seconds: float | None = None
    peak_memory_bytes: int | None = None
    probabilities: list[list[float]] | None = None
    # The classes macro_f1 averages over: present in the test rows as truth or prediction (a
    # label of the set that is neither is named in the report, not scored 0).
    macro_f1_labels: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelEvaluation:
        return cls(**data)


@dataclass(kw_only=True)
class Comparison:
    """Challenger minus champion macro-F1 with a paired bootstrap interval and McNemar test.

    The resamples themselves are kept (``diff_resamples``; per class, champion F1 minus
    challenger F1 in ``class_drop_resamples``) so that the promotion policy can test any margin
    on the same draws; ``summary()`` leaves them out for the database.
    """

    challenger: str
    champion: str
    macro_f1_diff: float
    ci_low: float
    ci_high: float
    n_resamples: int
    seed: int
    mcnemar_statistic: float
    mcnemar_p_value: float
    b: int  # rows only the challenger gets right
    c: int  # rows only the champion gets right
    confidence: float = 0.95
    diff_resamples: list[float] = field(default_factory=list)
    class_drop_resamples: dict[str, list[float]] = field(default_factory=dict)
    class_support: dict[str, int] = field(default_factory=dict)
    rows_compared: int | None = None  # fewer than the test rows when a model saw some of them
    groups_compared: int | None = None  # distinct split keys among them: the bootstrap's units

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items()
                if k not in ("diff_resamples", "class_drop_resamples")}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Comparison:
        return cls(**data)


@dataclass(kw_only=True)
class EvaluationReport:
    """All evaluations of one run plus each challenger's comparison with the champion.

    `y_true` (indices into `labels`) is kept so comparisons can be recomputed later.
    """

    evaluations: list[ModelEvaluation]
    comparisons: list[Comparison]
    champion_name: str | None = None
    labels: list[str] = field(default_factory=list)
    y_true: list[int] = field(default_factory=list)

    def evaluation(self, name: str) -> ModelEvaluation:
        for evaluation in self.evaluations:
            if evaluation.name == name:
                return evaluation
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "evaluations": [e.to_dict() for e in self.evaluations],
            "comparisons": [c.to_dict() for c in self.comparisons],
            "champion_name": self.champion_name,
            "labels": list(self.labels),
            "y_true": list(self.y_true),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationReport:
        return cls(
            evaluations=[ModelEvaluation.from_dict(e) for e in data["evaluations"]],
            comparisons=[Comparison.from_dict(c) for c in data["comparisons"]],
            champion_name=data.get("champion_name"),
            labels=list(data.get("labels", [])),
            y_true=list(data.get("y_true", [])),
        )


# ---------------------------------------------------------------- metrics


def reliability_bins(
    confidences: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS
) -> list[dict[str, float]]:
    """Equal-width bins (lower, upper] on confidence, with count, mean confidence and accuracy."""
    confidences = np.asarray(confidences, dtype=float)
    correct = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_index = np.searchsorted(edges[1:-1], confidences, side="left")
    counts = np.bincount(bin_index, minlength=n_bins)
    confidence_sums = np.bincount(bin_index, weights=confidences, minlength=n_bins)
    correct_sums = np.bincount(bin_index, weights=correct, minlength=n_bins)
    mean_confidence = safe_divide(confidence_sums, counts)
    accuracy = safe_divide(correct_sums, counts)
    return [
        {
            "lower": float(edges[i]),
            "upper": float(edges[i + 1]),
            "count": int(counts[i]),
            "confidence": float(mean_confidence[i]),
            "accuracy": float(accuracy[i]),
        }
        for i in range(n_bins)
    ]


def expected_calibration_error(
    confidences: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS
) -> float:
    """Count-weighted mean |accuracy - confidence| over equal-width confidence bins."""
    bins = reliability_bins(confidences, correct, n_bins)
    total = sum(b["count"] for b in bins)
    if total == 0:
        return 0.0
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / total)


def grouped_calibration_error(
    confidences: np.ndarray, correct: np.ndarray, groups: Sequence[Any] | np.ndarray,
    n_bins: int = ECE_BINS,
) -> float:
    """ECE with each group (a distinct text) as one observation: its mean confidence and the
    share of its rows predicted right, binned as ``expected_calibration_error`` bins rows."""
    _, group_of_row = np.unique(np.asarray(groups), return_inverse=True)
    group_of_row = group_of_row.ravel()
    sizes = np.bincount(group_of_row)
    mean_confidence = np.bincount(group_of_row, weights=np.asarray(confidences, dtype=float)) / sizes
    share_right = np.bincount(group_of_row, weights=np.asarray(correct, dtype=float)) / sizes
    return expected_calibration_error(mean_confidence, share_right, n_bins)


def align_probabilities(
    probabilities: np.ndarray, model_labels: Sequence[str], labels: Sequence[str]
) -> np.ndarray:
    """Reorder columns from the model's label order to `labels`; labels the model lacks get 0."""
    if len(set(model_labels)) != len(model_labels):
        raise ValueError(f"model labels are not unique: {list(model_labels)}")
    target_column = {label: i for i, label in enumerate(labels)}
    aligned = np.zeros((probabilities.shape[0], len(labels)))
    for source_column, label in enumerate(model_labels):
        if label in target_column:
            aligned[:, target_column[label]] = probabilities[:, source_column]
    return aligned


def directory_size_bytes(path: str | os.PathLike[str]) -> int:
    """Total size of the regular files under `path` (a saved model directory)."""
    root = Path(path)
    if root.is_file():
        return root.stat().st_size
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


# ---------------------------------------------------------------- evaluation


def _predict_in_batches(
    model: TextClassifier, texts: Sequence[str], batch_size: int
) -> tuple[np.ndarray, float]:
    """Concatenated `predict_proba` output and the seconds spent inside `predict_proba`."""
    batches = []
    seconds = 0.0
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        started = time.perf_counter()
        probabilities = model.predict_proba(batch)
        seconds += time.perf_counter() - started
        batches.append(np.asarray(probabilities, dtype=float))
    return np.concatenate(batches, axis=0), seconds


@dataclass(frozen=True)
class ScoredTestRows:
    """A model's probabilities on the test rows (columns in label-set order), computed
    elsewhere: on the GPU worker for a GPU kind (``score_test_rows``)."""

    kind: str
    probabilities: np.ndarray
    latency_ms_per_1000: float
    temperature: float | None = None  # the model's calibration temperature, if it has one


def score_test_rows(model: TextClassifier, texts: Sequence[str], labels: Sequence[str],
                    batch_size: int = 256) -> ScoredTestRows:
    """``model``'s probabilities for ``texts`` in the column order of ``labels``, timed."""
    if len(texts) == 0:
        raise ValueError("cannot evaluate on an empty test split")
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    raw, predict_seconds = _predict_in_batches(model, texts, batch_size)
    if raw.shape != (len(texts), len(model.labels)):
        raise ValueError(f"{model.kind}: predict_proba returned shape {raw.shape}, expected "
                         f"{(len(texts), len(model.labels))}")
    return ScoredTestRows(str(model.kind), align_probabilities(raw, model.labels, list(labels)),
                          predict_seconds * 1000.0 / len(texts) * 1000.0,
                          getattr(model, "calibration_temperature", None))


def evaluate_model(
    name: str,
    model: TextClassifier | ScoredTestRows,
    texts: Sequence[str],
    true_labels: Sequence[str],
    labels: Sequence[str],
    *,
    size_bytes: int | None = None,
    train_seconds: float | None = None,
    peak_memory_bytes: int | None = None,
    batch_size: int = 256,
    keep_probabilities: bool = False,
    groups: Sequence[Any] | np.ndarray | None = None,
) -> ModelEvaluation:
    """Score `model` on `texts` (or take its ``ScoredTestRows``); metrics use the column order of
    `labels` (``groups``: a key per row, for the ECE over distinct texts).

    Log loss uses the true label's probability clipped at 1e-15 and is not renormalised,
    so mass a model puts on labels outside `labels` counts against it.
    """
    labels = list(labels)
    if len(texts) != len(true_labels):
        raise ValueError(f"{len(texts)} texts but {len(true_labels)} true labels")
    y_true = label_indices(list(true_labels), labels)
    scores = model if isinstance(model, ScoredTestRows) else score_test_rows(model, texts, labels, batch_size)
    if scores.probabilities.shape != (len(y_true), len(labels)):
        raise ValueError(f"{name}: {scores.probabilities.shape} scores for {len(y_true)} test rows "
                         f"and {len(labels)} labels")
    evaluation = evaluation_from_probabilities(
        name, scores.kind, labels, y_true, scores.probabilities,
        latency_ms_per_1000=scores.latency_ms_per_1000, size_bytes=size_bytes,
        train_seconds=train_seconds, peak_memory_bytes=peak_memory_bytes,
        keep_probabilities=keep_probabilities,
    )
    if groups is not None:
        probabilities = scores.probabilities
        evaluation.ece_distinct_texts = grouped_calibration_error(
            probabilities.max(axis=1), probabilities.argmax(axis=1) == y_true, groups)
    temperature = scores.temperature
    if temperature is not None:
        # softmax(log p * T) undoes the scaling exactly: the probabilities the model had at T = 1.
        before = temperature_scaled(scores.probabilities, 1.0 / temperature)
        confidences, correct = before.max(axis=1), before.argmax(axis=1) == y_true
        evaluation.temperature = float(temperature)
        evaluation.ece_uncalibrated = expected_calibration_error(confidences, correct)
        evaluation.reliability_bins_uncalibrated = reliability_bins(confidences, correct)
    return evaluation


def evaluation_from_probabilities(
    name: str,
    kind: str,
    labels: list[str],
    y_true: np.ndarray,
    probabilities: np.ndarray,
    *,
    latency_ms_per_1000: float = 0.0,
    size_bytes: int | None = None,
    train_seconds: float | None = None,
    peak_memory_bytes: int | None = None,
    keep_probabilities: bool = False,
) -> ModelEvaluation:
    """Every metric from probabilities whose columns follow ``labels`` (``y_true``: indices)."""
    n, n_labels = len(y_true), len(labels)
    y_pred = probabilities.argmax(axis=1)
    confusion = confusion_counts(y_true, y_pred, n_labels)
    true_positives = np.diag(confusion)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = safe_divide(true_positives, predicted)
    recall = safe_divide(true_positives, support)
    f1 = f1_from_counts(true_positives, support, predicted)

    confidences = probabilities.max(axis=1)
    correct = y_pred == y_true
    true_label_probability = np.clip(probabilities[np.arange(n), y_true], LOG_LOSS_EPS, 1.0)

    return ModelEvaluation(
        name=name,
        kind=kind,
        labels=labels,
        n=n,
        accuracy=float(correct.mean()),
        macro_f1=float(present_mean(f1, support, predicted)),
        macro_f1_labels=[label for i, label in enumerate(labels) if support[i] + predicted[i] > 0],
        weighted_f1=float((f1 * support).sum() / n),
        per_class={
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        confusion_matrix=confusion.tolist(),
        log_loss=float(-np.log(true_label_probability).mean()),
        ece=expected_calibration_error(confidences, correct),
        latency_ms_per_1000=latency_ms_per_1000,
        predictions=[int(p) for p in y_pred],
        reliability_bins=reliability_bins(confidences, correct),
        size_bytes=None if size_bytes is None else int(size_bytes),
        train_seconds=None if train_seconds is None else float(train_seconds),
        peak_memory_bytes=None if peak_memory_bytes is None else int(peak_memory_bytes),
        probabilities=probabilities.tolist() if keep_probabilities else None,
    )


# ---------------------------------------------------------------- paired tests


def bootstrap_indices(rng: np.random.Generator, n_rows: int) -> np.ndarray:
    """One resample of row indices; the contract any reference implementation must follow."""
    return rng.integers(0, n_rows, size=n_rows)


def _pattern_to_class_counts(
    truth: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_labels: int
) -> sparse.csr_array:
    """Sparse 0/1 matrix, patterns x (5 * n_labels), mapping pattern counts to class counts.

    Column blocks: support, A's predictions, B's predictions, A's hits, B's hits.
    """
    n_patterns = len(truth)
    patterns = np.arange(n_patterns)
    a_right = pred_a == truth
    b_right = pred_b == truth
    row_index = np.concatenate([patterns, patterns, patterns, patterns[a_right], patterns[b_right]])
    column_index = np.concatenate(
        [
            truth,
            n_labels + pred_a,
            2 * n_labels + pred_b,
            3 * n_labels + truth[a_right],
            4 * n_labels + truth[b_right],
        ]
    )
    ones = np.ones(len(row_index), dtype=np.int64)
    return sparse.csr_array((ones, (row_index, column_index)), shape=(n_patterns, 5 * n_labels))


@dataclass(frozen=True)
class PairedBootstrap:
    """Per-class F1 of models a and b on the same ``n_resamples`` resamples of the rows."""

    class_f1_a: np.ndarray  # (n_resamples, n_labels)
    class_f1_b: np.ndarray
    # Whether each class is present (true or predicted) in each resample, for a and for b:
    # macro-F1 averages over those (tasks/metrics.py).
    present_a: np.ndarray | None = None
    present_b: np.ndarray | None = None

    @property
    def macro_f1_diffs(self) -> np.ndarray:
        """macro-F1(a) - macro-F1(b) of every resample."""
        def macro(f1: np.ndarray, present: np.ndarray | None) -> np.ndarray:
            present = np.ones_like(f1, dtype=bool) if present is None else present
            return safe_divide((f1 * present).sum(axis=1), present.sum(axis=1))

        return macro(self.class_f1_a, self.present_a) - macro(self.class_f1_b, self.present_b)


def paired_bootstrap(
    y_true: Sequence[int] | np.ndarray,
    pred_a: Sequence[int] | np.ndarray,
    pred_b: Sequence[int] | np.ndarray,
    n_labels: int,
    n_resamples: int = 1000,
    seed: int = 0,
    groups: Sequence[Any] | np.ndarray | None = None,
) -> PairedBootstrap:
    """Both models scored on the same resampled rows; resample r uses
    ``bootstrap_indices(rng, n)`` as the r-th draw from ``np.random.default_rng(seed)``.

    ``groups`` (one key per row, e.g. its split key) makes it a cluster bootstrap: rows that
    share a key are drawn together, ``bootstrap_indices(rng, g)`` over the g distinct keys in
    sorted order. Copies of one text are one observation, not many: the 128 copies of one
    retweet among the demo's 3,029 test rows would otherwise count as 128 independent rows and
    make the interval too narrow. When every key is distinct it is the row bootstrap, draw for
    draw."""
    y_true = np.asarray(y_true, dtype=np.int64)
    pred_a = np.asarray(pred_a, dtype=np.int64)
    pred_b = np.asarray(pred_b, dtype=np.int64)
    n = len(y_true)
    if n == 0 or len(pred_a) != n or len(pred_b) != n:
        raise ValueError("y_true, pred_a and pred_b must be non-empty and of equal length")
    if groups is not None and len(groups) != n:
        raise ValueError(f"{len(groups)} groups for {n} rows")
    if n_resamples < 1:
        raise ValueError("n_resamples must be positive")
    every_index = np.concatenate([y_true, pred_a, pred_b])
    if every_index.min() < 0 or every_index.max() >= n_labels:
        raise ValueError(f"labels must be indices in [0, {n_labels})")

    # The counts a resample needs depend only on each row's (truth, a, b) triple, so rows
    # are mapped to distinct triples ("patterns"): one gather and one bincount per chunk
    # give pattern counts per resample, and a sparse matrix sums them into class counts.
    triple = (y_true * n_labels + pred_a) * n_labels + pred_b
    triples, pattern_of_row = np.unique(triple, return_inverse=True)
    n_patterns = len(triples)
    to_class_counts = _pattern_to_class_counts(
        triples // (n_labels * n_labels), triples // n_labels % n_labels, triples % n_labels, n_labels
    )

    # With groups, a resample draws groups: each group's pattern counts (a sparse groups x
    # patterns matrix) are added up, as often as the group was drawn.
    group_patterns = None
    if groups is not None:
        _, group_of_row = np.unique(np.asarray(groups), return_inverse=True)
        # Keys are drawn in sorted order; only when that is the rows' own order is drawing rows
        # the same draw (and cheaper).
        if not np.array_equal(group_of_row.ravel(), np.arange(n)):
            n_groups = int(group_of_row.max()) + 1
            group_patterns = sparse.csr_array(
                (np.ones(n, dtype=np.int64), (group_of_row.ravel(), pattern_of_row.ravel())),
                shape=(n_groups, n_patterns))
    draws = n if group_patterns is None else group_patterns.shape[0]

    rng = np.random.default_rng(seed)
    chunk_size = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n)
    f1_a = np.empty((n_resamples, n_labels))
    f1_b = np.empty((n_resamples, n_labels))
    present_a = np.empty((n_resamples, n_labels), dtype=bool)
    present_b = np.empty((n_resamples, n_labels), dtype=bool)
    for chunk_start in range(0, n_resamples, chunk_size):
        chunk = min(chunk_size, n_resamples - chunk_start)
        drawn = np.stack([bootstrap_indices(rng, draws) for _ in range(chunk)])
        if group_patterns is None:
            # Each resample gets its own block of bins, so one bincount covers the whole chunk.
            codes = pattern_of_row[drawn] + np.arange(chunk, dtype=np.int64)[:, None] * n_patterns
            pattern_counts = np.bincount(codes.ravel(), minlength=chunk * n_patterns).reshape(chunk, n_patterns)
        else:
            codes = drawn + np.arange(chunk, dtype=np.int64)[:, None] * draws
            group_counts = np.bincount(codes.ravel(), minlength=chunk * draws).reshape(chunk, draws)
            pattern_counts = np.asarray((group_patterns.T @ group_counts.T).T)
        class_counts = np.asarray(pattern_counts @ to_class_counts)
        support, predicted_a, predicted_b, hits_a, hits_b = np.split(class_counts, 5, axis=1)
        f1_a[chunk_start : chunk_start + chunk] = f1_from_counts(hits_a, support, predicted_a)
        f1_b[chunk_start : chunk_start + chunk] = f1_from_counts(hits_b, support, predicted_b)
        present_a[chunk_start : chunk_start + chunk] = (support + predicted_a) > 0
        present_b[chunk_start : chunk_start + chunk] = (support + predicted_b) > 0
    return PairedBootstrap(f1_a, f1_b, present_a, present_b)


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must lie in (0, 1)")
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def paired_bootstrap_macro_f1(
    y_true: Sequence[int] | np.ndarray,
    pred_a: Sequence[int] | np.ndarray,
    pred_b: Sequence[int] | np.ndarray,
    n_labels: int,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    groups: Sequence[Any] | np.ndarray | None = None,
) -> tuple[float, float, float]:
    """Macro-F1(a) - macro-F1(b) on the full data and its percentile bootstrap interval
    (``groups``: a cluster bootstrap, as in ``paired_bootstrap``)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must lie in (0, 1)")
    resamples = paired_bootstrap(y_true, pred_a, pred_b, n_labels, n_resamples, seed, groups)
    low, high = percentile_interval(resamples.macro_f1_diffs, confidence)
    diff = macro_f1_score(y_true, pred_a, n_labels) - macro_f1_score(y_true, pred_b, n_labels)
    return float(diff), low, high


def mcnemar(
    y_true: Sequence[int] | np.ndarray,
    pred_a: Sequence[int] | np.ndarray,
    pred_b: Sequence[int] | np.ndarray,
) -> tuple[float, float, int, int]:
    """Exact McNemar test on paired correctness: (statistic, p_value, b, c).

    b = rows only A gets right, c = rows only B gets right. Under the null each discordant row
    is A's with probability 1/2, so the two-sided p-value is the exact binomial one,
    min(1, 2 * P(Binomial(b + c, 1/2) <= min(b, c))), for every count (the chi-square
    approximation is off for small counts and its continuity correction can exceed 1).
    The statistic is min(b, c).
    """
    y_true = np.asarray(y_true)
    correct_a = np.asarray(pred_a) == y_true
    correct_b = np.asarray(pred_b) == y_true
    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    if b + c == 0:
        return 0.0, 1.0, b, c
    p_value = min(1.0, 2.0 * float(stats.binom.cdf(min(b, c), b + c, 0.5)))
    return float(min(b, c)), p_value, b, c


def compare(
    challenger: ModelEvaluation,
    champion: ModelEvaluation,
    y_true: Sequence[str] | Sequence[int] | np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    rows: Sequence[int] | np.ndarray | None = None,
    groups: Sequence[Any] | np.ndarray | None = None,
) -> Comparison:
    """Paired comparison of two evaluations made on the same rows and label order; ``rows``
    (indices) restricts it to those rows, e.g. the test rows neither model was trained on;
    ``groups`` (one key per row of ``y_true``) resamples rows sharing a key together."""
    if challenger.labels != champion.labels:
        raise ValueError("evaluations use different label orders; re-evaluate with the same labels")
    if not (challenger.n == champion.n == len(y_true)):
        raise ValueError("evaluations and y_true cover different numbers of rows")
    y = label_indices(y_true, challenger.labels)
    predicted_a, predicted_b = np.asarray(challenger.predictions), np.asarray(champion.predictions)
    if rows is not None:
        rows = np.asarray(rows, dtype=int)
        if len(rows) == 0:
            raise ValueError("no rows to compare on")
        y, predicted_a, predicted_b = y[rows], predicted_a[rows], predicted_b[rows]
        if groups is not None:
            groups = np.asarray(groups)[rows]
    n_labels = len(challenger.labels)
    resamples = paired_bootstrap(y, predicted_a, predicted_b, n_labels, n_resamples, seed, groups)
    diffs = resamples.macro_f1_diffs
    low, high = percentile_interval(diffs, confidence)
    diff = macro_f1_score(y, predicted_a, n_labels) - macro_f1_score(y, predicted_b, n_labels)
    drops = resamples.class_f1_b - resamples.class_f1_a  # champion minus challenger, per class
    statistic, p_value, b, c = mcnemar(y, predicted_a, predicted_b)
    return Comparison(
        challenger=challenger.name,
        champion=champion.name,
        macro_f1_diff=diff,
        ci_low=low,
        ci_high=high,
        n_resamples=n_resamples,
        seed=seed,
        mcnemar_statistic=statistic,
        mcnemar_p_value=p_value,
        b=b,
        c=c,
        confidence=confidence,
        diff_resamples=np.round(diffs, 6).tolist(),
        class_drop_resamples={label: np.round(drops[:, i], 6).tolist()
                              for i, label in enumerate(challenger.labels)},
        class_support={label: int(np.sum(y == i)) for i, label in enumerate(challenger.labels)},
        rows_compared=len(y),
        groups_compared=None if groups is None else len(np.unique(np.asarray(groups))),
    )


def evaluate_all(
    models: Mapping[str, TextClassifier | ScoredTestRows],
    texts: Sequence[str],
    true_labels: Sequence[str],
    labels: Sequence[str],
    champion_name: str | None,
    *,
    size_bytes: Mapping[str, int] | None = None,
    train_seconds: Mapping[str, float] | None = None,
    peak_memory_bytes: Mapping[str, int] | None = None,
    batch_size: int = 256,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    comparison_rows: Sequence[int] | np.ndarray | None = None,
    groups: Sequence[Any] | np.ndarray | None = None,
) -> EvaluationReport:
    """Evaluate every model, then compare each non-champion with the champion (if any).

    `models` holds the candidates plus the champion (loaded, or their ``ScoredTestRows``);
    per-model extras are keyed by name. `comparison_rows` (indices) restricts the comparisons to
    those rows (every row when None); with none at all there is no comparison, so nothing can be
    judged better than the champion. `groups` (a key per row: the split key, so copies and
    near-copies of one text share one) makes the bootstrap resample texts, not rows, and adds
    the ECE with each distinct text counted once.
    """
    if not models:
        raise ValueError("no models to evaluate")
    if champion_name is not None and champion_name not in models:
        raise ValueError(f"champion {champion_name!r} is not among the models {sorted(models)}")
    size_bytes = size_bytes or {}
    train_seconds = train_seconds or {}
    peak_memory_bytes = peak_memory_bytes or {}
    labels = list(labels)
    y_true = label_indices(list(true_labels), labels)

    evaluations = [
        evaluate_model(
            name,
            model,
            texts,
            true_labels,
            labels,
            size_bytes=size_bytes.get(name),
            train_seconds=train_seconds.get(name),
            peak_memory_bytes=peak_memory_bytes.get(name),
            batch_size=batch_size,
            groups=groups,
        )
        for name, model in models.items()
    ]
    comparisons = []
    if champion_name is not None and (comparison_rows is None or len(comparison_rows) > 0):
        champion = next(e for e in evaluations if e.name == champion_name)
        comparisons = [
            compare(e, champion, y_true, n_resamples=n_resamples, seed=seed, confidence=confidence,
                    rows=comparison_rows, groups=groups)
            for e in evaluations
            if e.name != champion_name
        ]
    return EvaluationReport(
        evaluations=evaluations,
        comparisons=comparisons,
        champion_name=champion_name,
        labels=labels,
        y_true=[int(i) for i in y_true],
    )
