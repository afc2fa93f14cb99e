"""Temperature scaling: the fit against a brute-force grid search of the NLL, the scaling of
probabilities against softmax of scaled logits, and calibration recovered by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tasks.calibration import (
    fit_temperature,
    label_targets,
    log_probabilities,
    negative_log_likelihood,
    softmax,
    temperature_scaled,
)
from tasks.evaluate import expected_calibration_error


def brute_force_nll(scores: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    total = 0.0
    for row, target in zip(scores, targets, strict=True):
        exps = [math.exp(s / temperature) for s in row]
        total -= math.log(exps[target] / sum(exps))
    return total / len(targets)


def simulated(n_rows: int, n_classes: int, sharpness: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a calibrated model times ``sharpness`` (> 1: over-confident), and labels drawn
    from the calibrated probabilities, so the true temperature is ``sharpness``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, size=(n_rows, n_classes))
    probabilities = softmax(logits)
    targets = np.array([rng.choice(n_classes, p=p) for p in probabilities])
    return logits * sharpness, targets


@pytest.mark.parametrize(("sharpness", "n_classes", "seed"), [(3.0, 3, 0), (0.4, 4, 1), (1.0, 2, 2)])
def test_fit_matches_a_brute_force_grid_search_of_the_nll(sharpness, n_classes, seed):
    scores, targets = simulated(150, n_classes, sharpness, seed)
    grid = np.geomspace(0.05, 20.0, 1500)
    losses = [brute_force_nll(scores, targets, t) for t in grid]
    best = int(np.argmin(losses))

    fitted = fit_temperature(scores, targets)

    assert negative_log_likelihood(scores, targets, fitted) == pytest.approx(brute_force_nll(scores, targets, fitted))
    assert brute_force_nll(scores, targets, fitted) <= losses[best] + 1e-9
    step = math.log(grid[1] / grid[0])
    assert abs(math.log(fitted) - math.log(grid[best])) <= step


def test_fit_on_a_binary_margin_equals_the_fit_on_its_two_columns():
    rng = np.random.default_rng(3)
    margin = rng.normal(0, 2, 200)
    targets = (rng.random(200) < 1 / (1 + np.exp(-margin))).astype(int)
    assert fit_temperature(margin, targets) == pytest.approx(
        fit_temperature(np.column_stack([-margin, margin]), targets), rel=1e-6)


def test_temperature_scaled_probabilities_are_softmax_of_scaled_logits_and_invert():
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 3, size=(50, 5))
    probabilities = softmax(logits)
    for temperature in (0.3, 1.0, 2.5):
        scaled = temperature_scaled(probabilities, temperature)
        assert scaled == pytest.approx(softmax(logits, temperature), abs=1e-12)
        assert temperature_scaled(scaled, 1 / temperature) == pytest.approx(probabilities, abs=1e-12)
        assert (scaled.argmax(axis=1) == probabilities.argmax(axis=1)).all()
    with_zero = np.array([[0.7, 0.3, 0.0], [0.0, 0.0, 1.0]])
    scaled = temperature_scaled(with_zero, 2.0)
    assert scaled[0, 2] == 0 and scaled[1].tolist() == [0, 0, 1]
    assert scaled[0, :2] == pytest.approx(np.sqrt([0.7, 0.3]) / np.sqrt([0.7, 0.3]).sum())
    # Fitting on log-probabilities is fitting on the logits (log softmax = logits - a row constant).
    targets = rng.integers(0, 5, 50)
    assert fit_temperature(log_probabilities(probabilities), targets) == pytest.approx(
        fit_temperature(logits, targets), rel=1e-5)


def test_simulated_overconfidence_is_undone_and_ece_drops():
    """A model 3x too sharp: the fitted T recovers about 3 on 4,000 validation rows, and the
    ECE of fresh test rows falls from well above 0.03 to below it."""
    val_scores, val_targets = simulated(4000, 3, 3.0, seed=10)
    test_scores, test_targets = simulated(4000, 3, 3.0, seed=11)
    fitted = fit_temperature(val_scores, val_targets)
    assert 2.7 < fitted < 3.3

    def ece(temperature: float) -> float:
        p = softmax(test_scores, temperature)
        return expected_calibration_error(p.max(axis=1), p.argmax(axis=1) == test_targets)

    assert ece(1.0) > 0.1
    assert ece(fitted) < 0.03


def test_no_rows_keeps_t_at_one_and_unknown_labels_are_left_out():
    assert fit_temperature(np.zeros((0, 3)), []) == 1.0
    rows, targets = label_targets(["b", "x", "a"], ["a", "b"])
    assert rows.tolist() == [0, 2] and targets.tolist() == [1, 0]
    with pytest.raises(ValueError, match="finite"):
        fit_temperature(np.array([[0.0, -np.inf]]), [0])
