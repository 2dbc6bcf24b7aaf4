"""Baselines on tiny series computed by hand, with no look-ahead, and their refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.evaluate.baselines import (
    BASELINES,
    MAX_ABS_PHI,
    ar1_log_returns,
    drift,
    fit_ar1,
    get_baseline,
    naive,
)

SERIES = np.array([10.0, 12.0, 11.0, 15.0])


def _random_walk(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(0.0005, 0.02, size=n)))


def _exact_ar1_prices(c: float, phi: float, first_return: float, n: int) -> np.ndarray:
    """Prices whose log returns follow ``r_t = c + phi * r_{t-1}`` with no noise."""
    prices = [100.0, 100.0 * math.exp(first_return)]
    previous = first_return
    for _ in range(n - 2):
        previous = c + phi * previous
        prices.append(prices[-1] * math.exp(previous))
    return np.array(prices)


def test_naive_repeats_the_last_observed_value() -> None:
    forecasts = naive(SERIES, np.array([1, 3]), horizon=3)
    np.testing.assert_array_equal(forecasts, [[12.0, 12.0, 12.0], [15.0, 15.0, 15.0]])


def test_drift_extends_the_average_change_since_fit_start() -> None:
    forecasts = drift(SERIES, np.array([2, 3]), horizon=2)
    # Origin 2: (11 - 10) / 2 = 0.5 a step. Origin 3: (15 - 10) / 3 a step.
    np.testing.assert_allclose(forecasts, [[11.5, 12.0], [15 + 5 / 3, 15 + 10 / 3]])


def test_drift_estimates_from_fit_start_only() -> None:
    forecasts = drift(SERIES, np.array([3]), horizon=2, fit_start=1)
    # (15 - 12) / 2 = 1.5 a step.
    np.testing.assert_allclose(forecasts, [[16.5, 18.0]])


def test_ar1_recovers_the_coefficients_of_an_exact_ar1() -> None:
    prices = _exact_ar1_prices(c=0.001, phi=0.5, first_return=0.02, n=12)
    params = fit_ar1(prices, fit_start=0, fit_end=11)
    assert params.phi == pytest.approx(0.5, abs=1e-9)
    assert params.c == pytest.approx(0.001, abs=1e-12)


def test_ar1_recovers_a_negative_phi_on_a_later_span() -> None:
    prices = _exact_ar1_prices(c=0.002, phi=-0.7, first_return=0.03, n=15)
    params = fit_ar1(prices, fit_start=4, fit_end=14)
    assert params.phi == pytest.approx(-0.7, abs=1e-9)
    assert params.c == pytest.approx(0.002, abs=1e-12)


def test_ar1_forecasts_match_a_hand_loop() -> None:
    prices = _random_walk(60, seed=3)
    fit_start, fit_end, horizon = 5, 40, 4
    origins = np.array([40, 47, 59])
    # Independent fit: a straight line through (r_{t-1}, r_t) pairs of the span.
    returns = np.diff(np.log(prices[fit_start : fit_end + 1]))
    phi, c = np.polyfit(returns[:-1], returns[1:], deg=1)
    assert abs(phi) < MAX_ABS_PHI
    forecasts = ar1_log_returns(prices, origins, horizon, fit_start, fit_end)
    assert forecasts.shape == (3, horizon)
    for row, origin in enumerate(origins):
        previous = math.log(prices[origin] / prices[origin - 1])
        price = prices[origin]
        for step in range(horizon):
            previous = c + phi * previous
            price *= math.exp(previous)
            assert forecasts[row, step] == pytest.approx(price, rel=1e-12)


@pytest.mark.parametrize("phi", [0.5, -0.7])
def test_ar1_on_an_exact_ar1_continues_the_series(phi: float) -> None:
    prices = _exact_ar1_prices(c=0.001, phi=phi, first_return=0.02, n=15)
    forecasts = ar1_log_returns(prices[:10], np.array([9]), 5, fit_start=0, fit_end=9)
    np.testing.assert_allclose(forecasts[0], prices[10:15], rtol=1e-12)


def test_ar1_clips_an_explosive_phi() -> None:
    # Returns grow by half each step: the OLS phi is 1.5, which is clipped.
    returns = 0.001 * 1.5 ** np.arange(6)
    prices = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(returns)]))
    params = fit_ar1(prices, fit_start=0, fit_end=6)
    assert params.phi == MAX_ABS_PHI == 0.99
    lagged_mean = sum(returns[:-1]) / 5
    current_mean = sum(returns[1:]) / 5
    assert params.c == pytest.approx(current_mean - 0.99 * lagged_mean, abs=1e-15)


def test_ar1_with_constant_returns_falls_back_to_constant_drift() -> None:
    prices = 50.0 * np.exp(0.01 * np.arange(8))
    params = fit_ar1(prices, fit_start=0, fit_end=7)
    assert params.phi == 0.0
    assert params.c == pytest.approx(0.01)
    forecasts = ar1_log_returns(prices, np.array([7]), 2, fit_start=0, fit_end=7)
    np.testing.assert_allclose(forecasts[0], 50.0 * np.exp(0.01 * np.array([8, 9])))


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_no_baseline_looks_ahead(name: str) -> None:
    forecast = get_baseline(name)
    history = _random_walk(80, seed=11)
    origins = np.arange(30, 75, 4)
    fit_start, fit_end, horizon = 10, 30, 5
    original = forecast(history, origins, horizon, fit_start, fit_end)
    assert original.shape == (len(origins), horizon)
    assert np.all(np.isfinite(original))
    rng = np.random.default_rng(0)
    for row, origin in enumerate(origins):
        perturbed = history.copy()
        perturbed[origin + 1 :] *= rng.uniform(0.5, 2.0, size=history.size - origin - 1)
        changed = forecast(perturbed, origins, horizon, fit_start, fit_end)
        np.testing.assert_array_equal(changed[row], original[row])
        # The perturbation was real: some later origin's forecast moved.
        if row < len(origins) - 1:
            assert not np.array_equal(changed[row + 1 :], original[row + 1 :])


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_forecasts_may_target_points_past_the_end(name: str) -> None:
    history = _random_walk(20, seed=5)
    forecasts = get_baseline(name)(history, np.array([19]), 3, 0, 10)
    assert forecasts.shape == (1, 3)


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize(
    ("origins", "horizon", "fit_start", "fit_end", "message"),
    [
        (np.array([25]), 1, 0, 10, r"origins must lie in \[0, 19\]"),
        (np.array([-1]), 1, 0, None, "origins must lie"),
        (np.array([], dtype=int), 1, 0, None, "non-empty"),
        (np.array([12.0]), 1, 0, 10, "integer indices"),
        (np.array([12]), 0, 0, 10, "horizon must be a positive integer"),
        (np.array([12, 15]), 2, 0, 14, "fit_end must lie"),
        (np.array([12]), 2, 13, None, "fit_start must lie"),
    ],
)
def test_bad_arguments_are_refused(
    name: str,
    origins: np.ndarray,
    horizon: int,
    fit_start: int,
    fit_end: int | None,
    message: str,
) -> None:
    history = _random_walk(20, seed=2)
    with pytest.raises(ValueError, match=message):
        get_baseline(name)(history, origins, horizon, fit_start, fit_end)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_a_nan_in_history_is_refused(name: str) -> None:
    history = _random_walk(20, seed=2)
    history[7] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite value.*index 7"):
        get_baseline(name)(history, np.array([15]), 2, 0, 10)


def test_drift_needs_an_origin_after_fit_start() -> None:
    with pytest.raises(ValueError, match="at least two points"):
        drift(SERIES, np.array([1]), 1, fit_start=1)


def test_ar1_needs_a_training_span_and_positive_prices() -> None:
    history = _random_walk(20, seed=2)
    with pytest.raises(ValueError, match="needs fit_end"):
        ar1_log_returns(history, np.array([15]), 2, 0, None)
    with pytest.raises(ValueError, match="at least 4 prices"):
        ar1_log_returns(history, np.array([15]), 2, 8, 10)
    history[12] = -1.0
    with pytest.raises(ValueError, match="positive prices, got -1.0 at index 12"):
        ar1_log_returns(history, np.array([15]), 2, 0, 10)


def test_fit_ar1_refuses_a_span_outside_the_history() -> None:
    with pytest.raises(ValueError, match="outside a history of 20 points"):
        fit_ar1(_random_walk(20, seed=2), fit_start=10, fit_end=20)


def test_unknown_baseline_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        get_baseline("prophet")
