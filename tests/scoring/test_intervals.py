"""Split-conformal intervals: the rank rule by hand, coverage on fresh data, refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.scoring.intervals import (
    apply_conformal,
    conformal_rank,
    fit_conformal,
    fit_normalised_conformal,
)
from pipeline.scoring.metrics import coverage

# Nine calibration points whose scores |log(y / yhat)| are 0.1, 0.2, ..., 0.9 shuffled.
SCORES = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6])
SIGNS = np.array([1, -1, 1, -1, -1, 1, 1, -1, 1])


def _calibration_pairs() -> tuple[np.ndarray, np.ndarray]:
    y_pred = np.full((9, 1), 50.0)
    y_true = y_pred * np.exp(SIGNS * SCORES)[:, None]
    return y_true, y_pred


@pytest.mark.parametrize(
    ("level", "rank", "expected"),
    [
        # ceil(10 * 0.5) = 5 -> the 5th smallest score.
        (0.5, 5, 0.5),
        # ceil(10 * 0.7) = 7: exactly 7 despite 10 * 0.7 being float arithmetic.
        (0.7, 7, 0.7),
        # ceil(10 * 0.75) = ceil(7.5) = 8.
        (0.75, 8, 0.8),
        (0.8, 8, 0.8),
        # ceil(10 * 0.9) = 9 = n -> the largest score.
        (0.9, 9, 0.9),
        # ceil(10 * 0.95) = 10 > n -> too few points: infinite.
        (0.95, 10, math.inf),
    ],
)
def test_quantile_rank_rule_on_nine_points(level: float, rank: int, expected: float) -> None:
    assert conformal_rank(9, level) == rank
    y_true, y_pred = _calibration_pairs()
    q = fit_conformal(y_true, y_pred, level)
    assert q.shape == (1,)
    assert q[0] == pytest.approx(expected)


def test_each_horizon_step_gets_its_own_quantile() -> None:
    y_true, y_pred = _calibration_pairs()
    # Step 2's errors are twice step 1's.
    y_true = np.hstack([y_true, y_pred * np.exp(2 * SIGNS * SCORES)[:, None]])
    y_pred = np.hstack([y_pred, y_pred])
    np.testing.assert_allclose(fit_conformal(y_true, y_pred, 0.5), [0.5, 1.0])


def test_apply_conformal_scales_each_step() -> None:
    y_pred = np.array([[100.0, 200.0], [50.0, 10.0]])
    q = np.array([0.1, math.log(2.0)])
    lower, upper = apply_conformal(y_pred, q)
    factor = math.exp(0.1)
    np.testing.assert_allclose(lower, [[100.0 / factor, 100.0], [50.0 / factor, 5.0]])
    np.testing.assert_allclose(upper, [[100.0 * factor, 400.0], [50.0 * factor, 20.0]])


def test_an_infinite_quantile_gives_an_unbounded_interval() -> None:
    lower, upper = apply_conformal(np.array([[3.0]]), np.array([np.inf]))
    assert lower[0, 0] == 0.0
    assert upper[0, 0] == np.inf


@pytest.mark.parametrize("draw", ["normal", "student_t"])
def test_coverage_on_fresh_data_is_close_to_the_level(draw: str) -> None:
    rng = np.random.default_rng(20240604)
    scales = np.array([0.01, 0.02, 0.04])

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        y_pred = rng.uniform(20.0, 500.0, size=(n, 3))
        shape = (n, 3)
        noise = rng.normal(size=shape) if draw == "normal" else rng.standard_t(3, size=shape)
        return y_pred * np.exp(noise * scales), y_pred

    q = fit_conformal(*sample(5_000), level=0.9)
    assert np.all(np.diff(q) > 0)  # wider noise, wider interval
    y_true, y_pred = sample(10_000)
    lower, upper = apply_conformal(y_pred, q)
    for step in range(3):
        covered = coverage(y_true[:, step], lower[:, step], upper[:, step])
        assert abs(covered - 0.9) < 0.02


@pytest.mark.parametrize("level", [0.0, 1.0, -0.1, 1.5, float("nan"), True, "0.9"])
def test_fit_conformal_refuses_a_level_outside_zero_one(level: object) -> None:
    y_true, y_pred = _calibration_pairs()
    with pytest.raises(ValueError, match="level must be"):
        fit_conformal(y_true, y_pred, level)  # type: ignore[arg-type]


def test_fit_conformal_refuses_mismatched_or_flat_inputs() -> None:
    y_true, y_pred = _calibration_pairs()
    with pytest.raises(ValueError, match="same shape"):
        fit_conformal(y_true, np.hstack([y_pred, y_pred]), 0.9)
    with pytest.raises(ValueError, match="2-D"):
        fit_conformal(y_true.ravel(), y_pred.ravel(), 0.9)
    with pytest.raises(ValueError, match="2-D"):
        fit_conformal(np.empty((0, 2)), np.empty((0, 2)), 0.9)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_prices_must_be_positive_and_finite(bad: float) -> None:
    y_true, y_pred = _calibration_pairs()
    y_true[4, 0] = bad
    with pytest.raises(ValueError, match=r"y_true must be positive and finite.*index \(4, 0\)"):
        fit_conformal(y_true, y_pred, 0.9)
    with pytest.raises(ValueError, match="y_pred must be positive"):
        apply_conformal(y_true, np.array([0.1]))


def test_apply_conformal_refuses_bad_quantiles() -> None:
    y_pred = np.ones((2, 2))
    with pytest.raises(ValueError, match="one value per horizon step"):
        apply_conformal(y_pred, np.array([0.1]))
    with pytest.raises(ValueError, match="non-negative"):
        apply_conformal(y_pred, np.array([0.1, -0.1]))
    with pytest.raises(ValueError, match="non-negative"):
        apply_conformal(y_pred, np.array([0.1, np.nan]))


def test_normalised_scores_divide_each_error_by_its_predicted_scale() -> None:
    # Errors |log(y / yhat)| of 0.1 .. 0.9 over scales 1 or 2: scores 0.05 .. 0.9.
    y_true, y_pred = _calibration_pairs()
    scale = np.where(np.arange(9) % 2 == 0, 1.0, 2.0)[:, None]
    scores = np.sort(SCORES / scale[:, 0])
    # ceil(10 * 0.5) = 5 -> the 5th smallest normalised score.
    assert fit_normalised_conformal(y_true, y_pred, scale, 0.5)[0] == pytest.approx(scores[4])
    assert fit_normalised_conformal(y_true, y_pred, scale, 0.95)[0] == np.inf  # k = 10 > 9
    with pytest.raises(ValueError, match="scale must be positive"):
        fit_normalised_conformal(y_true, y_pred, np.zeros_like(scale), 0.5)
    with pytest.raises(ValueError, match="same shape"):
        fit_normalised_conformal(y_true, y_pred, scale[:5], 0.5)


def test_normalised_intervals_keep_their_coverage_when_the_volatility_moves() -> None:
    rng = np.random.default_rng(3)
    sigma = np.exp(rng.normal(-4.0, 0.7, size=4000))  # calm and turbulent days
    y_pred = np.full(4000, 100.0)
    y_true = y_pred * np.exp(sigma * rng.standard_normal(4000))
    calibration, fresh = slice(0, 2000), slice(2000, 4000)
    m = fit_normalised_conformal(
        y_true[calibration, None], y_pred[calibration, None], sigma[calibration, None], 0.9
    )[0]
    lower, upper = (
        y_pred[fresh] * np.exp(-m * sigma[fresh]),
        y_pred[fresh] * np.exp(m * sigma[fresh]),
    )
    turbulent = sigma[fresh] > np.quantile(sigma[fresh], 0.8)
    assert 0.88 <= coverage(y_true[fresh], lower, upper) <= 0.92
    inside = (lower <= y_true[fresh]) & (y_true[fresh] <= upper)
    assert 0.85 <= inside[turbulent].mean() <= 0.95  # a static width would miss these
    q = fit_conformal(y_true[calibration, None], y_pred[calibration, None], 0.9)[0]
    static_inside = np.abs(np.log(y_true[fresh] / y_pred[fresh])) <= q
    assert static_inside[turbulent].mean() < 0.8
