"""Classification metrics from label indices. Pure numpy.

There is one macro-F1 in textclf: the unweighted mean of the F1 of every class present in the
rows judged, as truth or as prediction (scikit-learn's ``f1_score(average="macro",
zero_division=0)`` with its default labels). A class of the label set that is neither (a label
retired from the source, a rare class with no test rows that nobody predicts) is left out
instead of scoring 0: it would cap a perfect model at (k-1)/k. A predicted class with no true
rows still counts, with F1 0. Validation, early stopping, the TF-IDF search and test evaluation
all call ``macro_f1_score``, so their numbers are comparable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def safe_divide(numerator, denominator) -> np.ndarray:
    """Elementwise division that yields 0 where the denominator is 0 (zero_division=0)."""
    numerator = np.asarray(numerator, dtype=float)
    denominator = np.asarray(denominator, dtype=float)
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def f1_from_counts(true_positives, support, predicted) -> np.ndarray:
    """Per-class F1 = 2tp / (support + predicted); works on any leading axes."""
    return safe_divide(2 * np.asarray(true_positives), np.asarray(support) + np.asarray(predicted))


def confusion_counts(y_true, y_pred, n_labels: int) -> np.ndarray:
    """Confusion matrix with rows = true label, columns = predicted label."""
    codes = np.asarray(y_true, dtype=np.int64) * n_labels + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(codes, minlength=n_labels * n_labels).reshape(n_labels, n_labels)


def per_class_f1(y_true, y_pred, n_labels: int) -> np.ndarray:
    confusion = confusion_counts(y_true, y_pred, n_labels)
    return f1_from_counts(np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0))


def present_mean(f1, support, predicted) -> np.ndarray:
    """Mean of the per-class ``f1`` over the classes with a true or a predicted row (last axis);
    0 when there is none."""
    present = (np.asarray(support) + np.asarray(predicted)) > 0
    return safe_divide((np.asarray(f1) * present).sum(axis=-1), present.sum(axis=-1))


def macro_f1_score(y_true, y_pred, n_labels: int) -> float:
    """Macro-F1 over the classes present as truth or prediction (see the module docstring)."""
    confusion = confusion_counts(y_true, y_pred, n_labels)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    return float(present_mean(f1_from_counts(np.diag(confusion), support, predicted), support, predicted))


def label_indices(values: Sequence[str] | Sequence[int] | np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Label strings (or already-computed indices) as an int array of indices into ``labels``."""
    values = list(values)
    if all(isinstance(v, int | np.integer) for v in values):
        indices = np.asarray(values, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(labels)):
            raise ValueError("label index out of range")
        return indices
    index_of = {label: i for i, label in enumerate(labels)}
    unknown = sorted({str(v) for v in values if v not in index_of})
    if unknown:
        raise ValueError(f"labels not in the label set {list(labels)}: {unknown[:10]}")
    return np.asarray([index_of[v] for v in values], dtype=np.int64)


def macro_f1_of_labels(true_labels: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> float:
    """``macro_f1_score`` for label strings; ``labels`` is the whole label set."""
    return macro_f1_score(label_indices(true_labels, labels), label_indices(predicted, labels), len(labels))
