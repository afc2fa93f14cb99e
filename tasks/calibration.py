"""Temperature scaling (Guo et al. 2017), shared by every candidate kind, so that one
`confidence` column means the same thing whichever model wrote it.

One scalar T is fitted on the validation rows by minimising the negative log-likelihood of
softmax(scores / T); predictions divide their scores by T. It never changes the argmax, so
accuracy and F1 stay as they are; only the probabilities move. Scores are logits, linear
decision scores, or log-probabilities (softmax(log p / T) is p ** (1 / T) renormalised), so a
kind that only has probabilities (a mapped pre-trained checkpoint) is calibrated the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

TEMPERATURE_BOUNDS = (0.01, 100.0)
_LOG_FLOOR = 1e-12  # probabilities below count as this when fitting (a 0 would make the loss infinite)


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of scores / T. A 1-D array is a binary linear model's margin of the
    positive class (scikit-learn's decision_function): it becomes the columns [-m, m]."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim == 1:
        scores = np.column_stack([-scores, scores])
    z = scores / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Scores for fitting from probabilities: log p, with p floored at 1e-12."""
    return np.log(np.clip(np.asarray(probabilities, dtype=float), _LOG_FLOOR, 1.0))


def temperature_scaled(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T) for probabilities p: a probability of 0 stays 0."""
    probabilities = np.asarray(probabilities, dtype=float)
    if temperature == 1.0 or probabilities.size == 0:
        return probabilities
    with np.errstate(divide="ignore"):
        logs = np.where(probabilities > 0, np.log(np.where(probabilities > 0, probabilities, 1.0)), -np.inf)
    return softmax(logs, temperature)


def negative_log_likelihood(scores: np.ndarray, targets: Sequence[int] | np.ndarray, temperature: float) -> float:
    """Mean -log softmax(scores / T)[target] (``targets``: column indices)."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim == 1:
        scores = np.column_stack([-scores, scores])
    z = scores / temperature
    targets = np.asarray(targets, dtype=int)
    return float(np.mean(logsumexp(z, axis=1) - z[np.arange(len(targets)), targets]))


def fit_temperature(scores: np.ndarray, targets: Sequence[int] | np.ndarray) -> float:
    """The T in TEMPERATURE_BOUNDS with the lowest validation NLL; 1.0 without rows.

    The NLL is convex in 1/T (a log-sum-exp minus a linear term), so it has one minimum on
    log T too, which bounded Brent search finds to about 1e-7 in log T.
    """
    targets = np.asarray(targets, dtype=int)
    if len(targets) == 0:
        return 1.0
    scores = np.asarray(scores, dtype=float)
    if scores.ndim == 1:
        scores = np.column_stack([-scores, scores])
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite (use log_probabilities for probabilities)")
    low, high = np.log(TEMPERATURE_BOUNDS)
    result = minimize_scalar(lambda log_t: negative_log_likelihood(scores, targets, float(np.exp(log_t))),
                             bounds=(low, high), method="bounded", options={"xatol": 1e-7})
    return float(np.exp(result.x))


def label_targets(true_labels: Sequence[str], columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, column indices) of the labels found among ``columns``; others are left out."""
    index = {label: i for i, label in enumerate(columns)}
    known = [(row, index[label]) for row, label in enumerate(true_labels) if label in index]
    if not known:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    rows, targets = zip(*known, strict=True)
    return np.asarray(rows, dtype=int), np.asarray(targets, dtype=int)
